"""The liveness table: each node's newest sign of life and the deadline it sets.

Kept apart from the node table so a heartbeat writes a few dozen bytes, not a node's
whole registration. Each value also records its partition, so the expiry index can be
rebuilt per partition after recovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from registry_app.settings import Settings
from registry_app.tables import node_keyed_table

LIVENESS_TABLE_NAME = "liveness"


@dataclass(frozen=True, slots=True)
class Liveness:
    """Newest heartbeat (or introspection) time of one node, and when it expires."""

    partition: int
    node_epoch: str
    last_seen: float  # event time, seconds since the epoch
    deadline: float

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> Liveness | None:
        if raw is None:
            return None
        return cls(
            partition=raw["p"],
            node_epoch=raw["e"],
            last_seen=raw["l"],
            deadline=raw["d"],
        )

    def dump(self) -> dict[str, Any]:
        return {
            "p": self.partition,
            "e": self.node_epoch,
            "l": self.last_seen,
            "d": self.deadline,
        }

    @property
    def last_seen_at(self) -> datetime:
        return datetime.fromtimestamp(self.last_seen, UTC)

    @property
    def deadline_at(self) -> datetime:
        return datetime.fromtimestamp(self.deadline, UTC)


def create_liveness_table(app: faust.App, settings: Settings) -> faust.Table:
    """The liveness table, partitioned like the node table."""
    return node_keyed_table(
        app,
        settings,
        LIVENESS_TABLE_NAME,
        help="Node id -> newest sign of life and deadline (JSON).",
    )
