"""The node table: every node's newest registration, keyed by node id.

The table lives in RocksDB (rocksdict) and is backed by a compacted changelog topic, so
a worker that restarts, or takes over a partition, recovers its nodes from Kafka.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import faust
from pydantic import BaseModel, ConfigDict

from registry_app.backends.base import NodeRecord
from registry_app.events import NodeIntrospection
from registry_app.settings import Settings
from registry_app.tables import node_keyed_table

NODE_TABLE_NAME = "nodes"


class NodeStatus(StrEnum):
    """Where a node is in its life, as the registry sees it.

    registering -> active     both backends confirmed the newest registration
    active -> registering     the node's introspection changed something
    registering|active -> expired       no heartbeat within the liveness timeout
    any -> deregistered       the node said NODE_SHUTDOWN
    expired|deregistered -> registering a newer introspection brings it back
    """

    REGISTERING = "registering"
    ACTIVE = "active"
    EXPIRED = "expired"
    DEREGISTERED = "deregistered"

    @property
    def alive(self) -> bool:
        return self in (NodeStatus.REGISTERING, NodeStatus.ACTIVE)


# What each table status asks the backends to hold.
_BACKEND_STATUS = {
    NodeStatus.REGISTERING: "active",
    NodeStatus.ACTIVE: "active",
    NodeStatus.EXPIRED: "expired",
    NodeStatus.DEREGISTERED: "deregistered",
}


class NodeState(BaseModel):
    """One table value: what the node said, and how far the backends have caught up.

    `generation` grows with every accepted change; a backend write carries the
    generation it wrote, and the node is in sync once `synced_generation` reaches
    `generation`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str
    node_type: str
    node_version: str
    node_epoch: str
    host: str
    port: int
    capabilities: list[dict[str, Any]]
    endpoints: dict[str, str]
    metadata: dict[str, Any]
    tags: list[str]
    status: NodeStatus
    last_event_time: datetime
    last_event_id: str
    generation: int
    synced_generation: int = 0
    registered_at: datetime | None = None
    # When the registry last changed this node (event time, or the partition's time
    # for an expiry); strictly grows with the generation, so backends can order writes.
    changed_at: datetime
    # The partition the node's events arrive on. The registry announces on the same
    # partition number, so its tables stay co-partitioned whatever partitioner the
    # node's Kafka client uses.
    partition: int | None = None

    @property
    def in_sync(self) -> bool:
        return self.synced_generation >= self.generation

    def to_record(self) -> NodeRecord:
        """The registration the backends should hold for this state."""
        return NodeRecord(
            node_id=self.node_id,
            node_type=self.node_type,
            node_version=self.node_version,
            node_epoch=self.node_epoch,
            # The backends see a node active as soon as its introspection is accepted;
            # `registering` only says the registry has not yet heard back from them.
            status=_BACKEND_STATUS[self.status],
            host=self.host,
            port=self.port,
            last_event_time=self.changed_at,
            capabilities=self.capabilities,
            endpoints=self.endpoints,
            metadata=self.metadata,
            tags=self.tags,
        )

    def same_registration(self, event: NodeIntrospection) -> bool:
        """True when the event would not change what the backends hold."""
        payload = event.payload
        return (
            self.node_epoch == event.node_epoch
            and self.node_type == payload.node_type
            and self.node_version == payload.node_version
            and self.host == payload.host
            and self.port == payload.port
            and self.capabilities
            == [c.model_dump(mode="json") for c in payload.capabilities]
            and self.endpoints == payload.endpoints
            and self.metadata == payload.metadata
            and self.tags == payload.tags
        )


def create_node_table(app: faust.App, settings: Settings) -> faust.Table:
    """The node table, partitioned like the topics that update it."""
    return node_keyed_table(
        app,
        settings,
        NODE_TABLE_NAME,
        help="Node id -> NodeState (JSON) of every node this registry knows.",
    )


def load_state(raw: dict[str, Any] | None) -> NodeState | None:
    return None if raw is None else NodeState.model_validate(raw)


def dump_state(state: NodeState) -> dict[str, Any]:
    return state.model_dump(mode="json")
