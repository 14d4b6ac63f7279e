"""The events nodes and the registry exchange over Kafka, as versioned models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
)

SCHEMA_VERSION = 1

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""Node ids: 1 to 128 characters, letters, digits and . _ : -, starting alphanumeric."""

NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class EventType(StrEnum):
    NODE_INTROSPECTION = "NODE_INTROSPECTION"
    NODE_HEARTBEAT = "NODE_HEARTBEAT"
    NODE_SHUTDOWN = "NODE_SHUTDOWN"
    REQUEST_INTROSPECTION = "REQUEST_INTROSPECTION"
    NODE_REGISTERED = "NODE_REGISTERED"
    NODE_EXPIRED = "NODE_EXPIRED"
    NODE_DEREGISTERED = "NODE_DEREGISTERED"
    REGISTRATION_FAILED = "REGISTRATION_FAILED"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Capability(_Model):
    """One tool or capability a node offers; the registry indexes nodes by its name."""

    name: ShortText
    version: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=1024)
    attributes: dict[str, Any] = Field(default_factory=dict)


class IntrospectionPayload(_Model):
    """What a node says about itself: identity, where to reach it, what it offers."""

    node_type: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    ]
    node_version: ShortText
    host: ShortText
    port: Annotated[int, Field(ge=0, le=65535)]
    capabilities: list[Capability] = Field(default_factory=list, max_length=1000)
    endpoints: dict[ShortText, ShortText] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[ShortText] = Field(default_factory=list, max_length=64)
    reason: Literal["startup", "requested", "refresh", "periodic"] = "startup"

    @field_validator("capabilities")
    @classmethod
    def _capability_names_unique(
        cls, capabilities: list[Capability]
    ) -> list[Capability]:
        # The registry indexes tools by (node, name): a name offered twice is ambiguous.
        seen: set[str] = set()
        for capability in capabilities:
            if capability.name in seen:
                raise ValueError(f"capability {capability.name!r} is listed twice")
            seen.add(capability.name)
        return capabilities


class HeartbeatPayload(_Model):
    uptime_seconds: Annotated[float, Field(ge=0)]
    active_operations: Annotated[int, Field(ge=0)] = 0
    memory_bytes: Annotated[int, Field(ge=0)] | None = None
    cpu_percent: Annotated[float, Field(ge=0)] | None = None


class ShutdownPayload(_Model):
    reason: str = Field("graceful", max_length=256)


class _Envelope(_Model):
    """Fields every event carries, whoever publishes it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    correlation_id: uuid.UUID | None = None
    node_id: NodeId
    node_epoch: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    event_time: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))


class NodeIntrospection(_Envelope):
    event_type: Literal[EventType.NODE_INTROSPECTION] = EventType.NODE_INTROSPECTION
    payload: IntrospectionPayload


class NodeHeartbeat(_Envelope):
    event_type: Literal[EventType.NODE_HEARTBEAT] = EventType.NODE_HEARTBEAT
    payload: HeartbeatPayload


class NodeShutdown(_Envelope):
    event_type: Literal[EventType.NODE_SHUTDOWN] = EventType.NODE_SHUTDOWN
    payload: ShutdownPayload = Field(default_factory=ShutdownPayload)


NodeEvent = Annotated[
    NodeIntrospection | NodeHeartbeat | NodeShutdown,
    Field(discriminator="event_type"),
]
"""Any event a node publishes."""

node_event_adapter: TypeAdapter[NodeIntrospection | NodeHeartbeat | NodeShutdown] = (
    TypeAdapter(NodeEvent)
)


class BackendOutcome(_Model):
    ok: bool
    detail: str | None = None


class RegisteredPayload(_Model):
    node_type: str
    generation: Annotated[int, Field(ge=1)]
    consul: BackendOutcome
    postgres: BackendOutcome


class NodeRegistered(_Envelope):
    """The registry's answer once a node is written to both backends."""

    event_type: Literal[EventType.NODE_REGISTERED] = EventType.NODE_REGISTERED
    node_epoch: str = "registry"
    payload: RegisteredPayload


class RequestIntrospectionPayload(_Model):
    """Which nodes should introspect again: all, one node type, or one node id."""

    node_type: str | None = None
    target_node_id: NodeId | None = None
    reason: str = Field("registry-startup", max_length=256)


class RequestIntrospection(_Envelope):
    """Registry -> nodes: publish your NODE_INTROSPECTION again.

    `node_id` is the registry's own id; a targeted request is keyed by the target node
    id, so it lands on that node's partition. Nodes read every partition of the topic.
    """

    event_type: Literal[EventType.REQUEST_INTROSPECTION] = (
        EventType.REQUEST_INTROSPECTION
    )
    node_epoch: str = "registry"
    payload: RequestIntrospectionPayload = Field(
        default_factory=RequestIntrospectionPayload
    )

    def is_for(self, node_id: str, node_type: str) -> bool:
        """True when a node with this id and type should answer."""
        target = self.payload
        if target.target_node_id is not None:
            return target.target_node_id == node_id
        if target.node_type is not None:
            return target.node_type == node_type
        return True


class ExpiredPayload(_Model):
    node_type: str
    generation: Annotated[int, Field(ge=1)]
    last_heartbeat: AwareDatetime | None
    deadline: AwareDatetime


class NodeExpired(_Envelope):
    event_type: Literal[EventType.NODE_EXPIRED] = EventType.NODE_EXPIRED
    node_epoch: str = "registry"
    payload: ExpiredPayload


class DeregisteredPayload(_Model):
    node_type: str
    generation: Annotated[int, Field(ge=1)]
    reason: str = Field("shutdown", max_length=256)


class NodeDeregistered(_Envelope):
    event_type: Literal[EventType.NODE_DEREGISTERED] = EventType.NODE_DEREGISTERED
    node_epoch: str = "registry"
    payload: DeregisteredPayload


class RegistrationFailedPayload(_Model):
    node_type: str
    generation: Annotated[int, Field(ge=1)]
    backend: str
    detail: str = Field(max_length=2048)


class RegistrationFailed(_Envelope):
    event_type: Literal[EventType.REGISTRATION_FAILED] = EventType.REGISTRATION_FAILED
    node_epoch: str = "registry"
    payload: RegistrationFailedPayload


RegistryEvent = Annotated[
    NodeRegistered | NodeExpired | NodeDeregistered | RegistrationFailed,
    Field(discriminator="event_type"),
]
"""Any event the registry publishes about a node."""

registry_event_adapter: TypeAdapter[
    NodeRegistered | NodeExpired | NodeDeregistered | RegistrationFailed
] = TypeAdapter(RegistryEvent)
