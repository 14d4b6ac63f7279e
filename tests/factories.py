"""Builders of valid events for the tests; each test changes what it is about."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from registry_app.events import (
    HeartbeatPayload,
    IntrospectionPayload,
    NodeHeartbeat,
    NodeIntrospection,
)


def introspection_factory(
    node_id: str | None = None,
    *,
    node_type: str = "orchestrator",
    node_version: str = "1.4.2",
    node_epoch: str = "boot-1",
    host: str = "10.1.2.3",
    port: int = 8080,
    event_time: datetime | None = None,
    capabilities: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> NodeIntrospection:
    """A NODE_INTROSPECTION event as a well-behaved node would publish it."""
    return NodeIntrospection(
        node_id=node_id or f"node-{uuid.uuid4().hex[:12]}",
        node_epoch=node_epoch,
        event_time=event_time or datetime.now(UTC),
        payload=IntrospectionPayload(
            node_type=node_type,
            node_version=node_version,
            host=host,
            port=port,
            capabilities=capabilities
            if capabilities is not None
            else [
                {"name": "summarize", "version": "2"},
                {"name": "translate", "attributes": {"languages": ["en", "fr"]}},
            ],
            endpoints={
                "http": f"http://{host}:{port}",
                "metrics": f"http://{host}:9100",
            },
            metadata=metadata
            if metadata is not None
            else {"region": "eu-west", "rack": 7},
            tags=tags if tags is not None else ["blue"],
        ),
    )


def later(
    event: NodeIntrospection, seconds: float = 1.0, **changes: Any
) -> NodeIntrospection:
    """The same node's next introspection, `seconds` later, with payload changes."""
    payload = IntrospectionPayload.model_validate(
        {**event.payload.model_dump(), **changes}
    )
    return event.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "event_time": event.event_time + timedelta(seconds=seconds),
            "payload": payload,
        }
    )


def heartbeat_factory(
    node: NodeIntrospection,
    *,
    at: datetime | None = None,
    epoch: str | None = None,
) -> NodeHeartbeat:
    """A NODE_HEARTBEAT from the node that published `node` (its epoch by default)."""
    return NodeHeartbeat(
        node_id=node.node_id,
        node_epoch=epoch or node.node_epoch,
        event_time=at or datetime.now(UTC),
        payload=HeartbeatPayload(uptime_seconds=12.5, active_operations=3),
    )
