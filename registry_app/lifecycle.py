"""How one event changes one node's state: pure functions, no I/O.

Every rule about ordering lives here, so the agents only read, decide and write.
"""

from __future__ import annotations

from datetime import datetime

from registry_app.events import NodeIntrospection
from registry_app.tables.nodes import NodeState, NodeStatus


def apply_introspection(
    state: NodeState | None, event: NodeIntrospection
) -> NodeState | None:
    """The node's new state after an introspection, or None when nothing changes.

    Nothing changes for a redelivered event, an event older than the state, or one that
    repeats what the backends already hold.
    """
    if state is not None:
        if str(event.event_id) == state.last_event_id:
            return None
        if event.event_time <= state.last_event_time:
            return None
        if state.same_registration(event) and state.in_sync:
            return None

    payload = event.payload
    generation = 1 if state is None else state.generation + 1
    return NodeState(
        node_id=event.node_id,
        node_type=payload.node_type,
        node_version=payload.node_version,
        node_epoch=event.node_epoch,
        host=payload.host,
        port=payload.port,
        capabilities=[c.model_dump(mode="json") for c in payload.capabilities],
        endpoints=dict(payload.endpoints),
        metadata=dict(payload.metadata),
        tags=list(payload.tags),
        status=NodeStatus.REGISTERING,
        last_event_time=event.event_time,
        last_event_id=str(event.event_id),
        generation=generation,
        synced_generation=0 if state is None else state.synced_generation,
        registered_at=None if state is None else state.registered_at,
    )


def apply_registered(
    state: NodeState | None, generation: int, *, now: datetime
) -> NodeState | None:
    """The state once both backends confirmed `generation`, or None if it is moot."""
    if state is None or generation <= state.synced_generation:
        return None
    synced = min(generation, state.generation)
    in_sync = synced >= state.generation
    return state.model_copy(
        update={
            "synced_generation": synced,
            "status": NodeStatus.ACTIVE if in_sync else state.status,
            "registered_at": state.registered_at or now,
        }
    )
