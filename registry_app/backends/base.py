"""What every registration backend accepts, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as the backends store it: the newest introspection, with its status."""

    node_id: str
    node_type: str
    node_version: str
    node_epoch: str
    status: str
    host: str
    port: int
    last_event_time: datetime
    capabilities: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


class BackendError(Exception):
    """A write that did not happen; `retriable` says whether trying again can help."""

    def __init__(self, backend: str, message: str, *, retriable: bool) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.retriable = retriable


class RegistrationBackend(Protocol):
    """One place a registration is written to."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def register(self, records: list[NodeRecord]) -> None:
        """Make the backend hold each record's status: active and expired nodes are
        set, deregistered ones removed or marked. Idempotent; BackendError if any
        record was not written."""
