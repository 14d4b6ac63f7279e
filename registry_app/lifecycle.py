"""How one event changes one node's state: pure functions, no I/O.

Every rule about ordering lives here, so the agents only read, decide and write.
The states and their transitions are listed on NodeStatus (tables/nodes.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from registry_app.events import NodeHeartbeat, NodeIntrospection, NodeShutdown
from registry_app.tables.liveness import Liveness
from registry_app.tables.nodes import NodeState, NodeStatus

# The smallest step that keeps `changed_at` strictly growing with the generation.
_TICK = timedelta(microseconds=1)


def _next_change_time(state: NodeState | None, when: datetime) -> datetime:
    if state is None or when > state.changed_at:
        return when
    return state.changed_at + _TICK


def apply_introspection(
    state: NodeState | None, event: NodeIntrospection
) -> NodeState | None:
    """The node's new state after an introspection, or None when nothing changes.

    Nothing changes for a redelivered event, an event older than the state, one that
    repeats what the backends already hold, or one from before the node expired or
    shut down (only a newer introspection brings a node back).
    """
    if state is not None:
        if str(event.event_id) == state.last_event_id:
            return None
        if event.event_time <= state.last_event_time:
            return None
        if not state.status.alive and event.event_time <= state.changed_at:
            return None
        if state.status.alive and state.same_registration(event) and state.in_sync:
            return None

    payload = event.payload
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
        generation=1 if state is None else state.generation + 1,
        synced_generation=0 if state is None else state.synced_generation,
        registered_at=None if state is None else state.registered_at,
        changed_at=_next_change_time(state, event.event_time),
    )


def apply_registered(
    state: NodeState | None, generation: int, *, now: datetime
) -> NodeState | None:
    """The state once both backends confirmed `generation`, or None if it is moot."""
    if state is None or generation <= state.synced_generation:
        return None
    synced = min(generation, state.generation)
    becomes_active = (
        synced >= state.generation and state.status is NodeStatus.REGISTERING
    )
    return state.model_copy(
        update={
            "synced_generation": synced,
            "status": NodeStatus.ACTIVE if becomes_active else state.status,
            "registered_at": state.registered_at or (now if becomes_active else None),
        }
    )


def apply_expiry(
    state: NodeState | None, *, partition_time: datetime
) -> NodeState | None:
    """The state of a node whose deadline passed, or None if it is not alive."""
    if state is None or not state.status.alive:
        return None
    return state.model_copy(
        update={
            "status": NodeStatus.EXPIRED,
            "generation": state.generation + 1,
            "changed_at": _next_change_time(state, partition_time),
        }
    )


def apply_shutdown(state: NodeState | None, event: NodeShutdown) -> NodeState | None:
    """The state after a graceful NODE_SHUTDOWN, or None for a stale or moot one."""
    if state is None or state.status is NodeStatus.DEREGISTERED:
        return None
    # A shutdown from an older process of the node (older epoch, older time) is stale.
    if (
        event.node_epoch != state.node_epoch
        and event.event_time <= state.last_event_time
    ):
        return None
    if event.event_time < state.last_event_time:
        return None
    return state.model_copy(
        update={
            "status": NodeStatus.DEREGISTERED,
            "generation": state.generation + 1,
            "changed_at": _next_change_time(state, event.event_time),
        }
    )


class HeartbeatVerdict(Enum):
    """What a heartbeat means for the node it names."""

    ALIVE = "alive"  # refreshes the deadline
    UNKNOWN = "unknown"  # the registry does not know this node (alive): ask it
    NEW_EPOCH = "new-epoch"  # the node restarted without introspecting: ask it
    STALE = "stale"  # older than what the registry already knows: ignore


def judge_heartbeat(
    state: NodeState | None, liveness: Liveness | None, event: NodeHeartbeat
) -> HeartbeatVerdict:
    """Classify a heartbeat against the node's state and newest sign of life."""
    if state is None:
        return HeartbeatVerdict.UNKNOWN
    if not state.status.alive:
        # After expiry or shutdown only a newer sign of life counts, and then the
        # node must introspect to come back.
        if event.event_time > state.changed_at:
            return HeartbeatVerdict.UNKNOWN
        return HeartbeatVerdict.STALE
    if event.node_epoch != state.node_epoch:
        if event.event_time > state.last_event_time:
            return HeartbeatVerdict.NEW_EPOCH
        return HeartbeatVerdict.STALE
    if liveness is not None and event.event_time.timestamp() <= liveness.last_seen:
        return HeartbeatVerdict.STALE
    return HeartbeatVerdict.ALIVE
