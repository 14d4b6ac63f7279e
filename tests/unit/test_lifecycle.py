"""State transitions of one node, without Kafka or backends."""

from datetime import UTC, datetime, timedelta

import pytest

from registry_app import lifecycle
from registry_app.events import HeartbeatPayload, NodeHeartbeat, NodeShutdown
from registry_app.tables.liveness import Liveness
from registry_app.tables.nodes import NodeState, NodeStatus
from tests.factories import introspection_factory, later

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_first_introspection_creates_a_registering_node_at_generation_one():
    event = introspection_factory("node-a")

    state = lifecycle.apply_introspection(None, event)

    assert state is not None
    assert state.status is NodeStatus.REGISTERING
    assert state.generation == 1
    assert state.synced_generation == 0
    assert state.node_type == "orchestrator"
    assert state.capabilities[0] == {
        "name": "summarize",
        "version": "2",
        "description": None,
        "attributes": {},
    }


def test_redelivered_event_changes_nothing():
    event = introspection_factory("node-a")
    state = lifecycle.apply_introspection(None, event)

    assert lifecycle.apply_introspection(state, event) is None


def test_older_event_never_overwrites_newer_state():
    first = introspection_factory("node-a")
    newer = later(first, 5, node_version="2.0.0")
    state = lifecycle.apply_introspection(None, newer)
    older = later(first, 1, node_version="0.9.0")

    assert lifecycle.apply_introspection(state, older) is None
    assert state.node_version == "2.0.0"


def test_same_registration_once_synced_changes_nothing():
    event = introspection_factory("node-a")
    state = lifecycle.apply_introspection(None, event)
    synced = lifecycle.apply_registered(state, 1, now=NOW)

    assert lifecycle.apply_introspection(synced, later(event)) is None


def test_changed_registration_bumps_generation_and_waits_for_backends():
    event = introspection_factory("node-a")
    synced = lifecycle.apply_registered(
        lifecycle.apply_introspection(None, event), 1, now=NOW
    )

    changed = lifecycle.apply_introspection(synced, later(event, port=9090))

    assert changed.generation == 2
    assert changed.synced_generation == 1
    assert changed.port == 9090
    assert not changed.in_sync


def test_confirmation_of_generation_makes_node_active_once():
    state = lifecycle.apply_introspection(None, introspection_factory("node-a"))

    active = lifecycle.apply_registered(state, 1, now=NOW)

    assert active.status is NodeStatus.ACTIVE
    assert active.registered_at == NOW
    assert lifecycle.apply_registered(active, 1, now=NOW + timedelta(seconds=1)) is None


def test_confirmation_of_an_old_generation_keeps_node_registering():
    event = introspection_factory("node-a")
    first = lifecycle.apply_introspection(None, event)
    second = lifecycle.apply_introspection(first, later(event, port=1))

    partly = lifecycle.apply_registered(second, 1, now=NOW)

    assert partly.synced_generation == 1
    assert partly.status is NodeStatus.REGISTERING


# --- helpers for the expiry, shutdown and heartbeat rules ----------------------------

T0 = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def registering(node_epoch: str = "boot-1", seconds: float = 0) -> NodeState:
    """A node whose introspection at T0 + `seconds` was accepted (generation 1)."""
    event = introspection_factory(
        "node-a", node_epoch=node_epoch, event_time=at(seconds)
    )
    return lifecycle.apply_introspection(None, event)


def active() -> NodeState:
    return lifecycle.apply_registered(registering(), 1, now=at(1))


def expired(partition_seconds: float = 100) -> NodeState:
    return lifecycle.apply_expiry(active(), partition_time=at(partition_seconds))


def shutdown(seconds: float, node_epoch: str = "boot-1") -> NodeShutdown:
    return NodeShutdown(node_id="node-a", node_epoch=node_epoch, event_time=at(seconds))


def heartbeat(seconds: float, node_epoch: str = "boot-1") -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id="node-a",
        node_epoch=node_epoch,
        event_time=at(seconds),
        payload=HeartbeatPayload(uptime_seconds=seconds),
    )


def seen(seconds: float, node_epoch: str = "boot-1") -> Liveness:
    last_seen = at(seconds).timestamp()
    return Liveness(
        partition=0, node_epoch=node_epoch, last_seen=last_seen, deadline=last_seen + 90
    )


# --- apply_expiry --------------------------------------------------------------------


def test_expiry_of_an_active_node_marks_it_expired_at_the_partition_time():
    state = active()

    new = lifecycle.apply_expiry(state, partition_time=at(100))

    assert new.status is NodeStatus.EXPIRED
    assert new.generation == 2
    assert new.synced_generation == 1
    assert not new.in_sync
    assert new.changed_at == at(100)
    assert new.last_event_time == at(0)


def test_expiry_of_a_registering_node_marks_it_expired():
    new = lifecycle.apply_expiry(registering(), partition_time=at(100))

    assert new.status is NodeStatus.EXPIRED
    assert new.generation == 2
    assert new.changed_at == at(100)


def test_expiry_at_a_partition_time_before_the_last_change_still_moves_changed_at_on():
    state = registering(seconds=50)

    new = lifecycle.apply_expiry(state, partition_time=at(10))

    assert new.changed_at == at(50) + MICROSECOND
    assert new.changed_at > state.changed_at


def test_expiry_at_exactly_the_last_change_time_moves_changed_at_on_by_a_microsecond():
    state = registering(seconds=50)

    new = lifecycle.apply_expiry(state, partition_time=at(50))

    assert new.changed_at == at(50) + MICROSECOND


def test_expiry_of_an_unknown_node_changes_nothing():
    assert lifecycle.apply_expiry(None, partition_time=at(100)) is None


def test_expiry_of_an_expired_node_changes_nothing():
    assert lifecycle.apply_expiry(expired(), partition_time=at(200)) is None


def test_expiry_of_a_deregistered_node_changes_nothing():
    gone = lifecycle.apply_shutdown(active(), shutdown(10))

    assert lifecycle.apply_expiry(gone, partition_time=at(200)) is None


# --- apply_shutdown ------------------------------------------------------------------


def test_shutdown_deregisters_the_node_at_the_event_time():
    new = lifecycle.apply_shutdown(active(), shutdown(10))

    assert new.status is NodeStatus.DEREGISTERED
    assert new.generation == 2
    assert new.synced_generation == 1
    assert new.changed_at == at(10)


def test_shutdown_at_the_time_of_the_last_event_deregisters_one_microsecond_later():
    new = lifecycle.apply_shutdown(active(), shutdown(0))

    assert new.status is NodeStatus.DEREGISTERED
    assert new.changed_at == at(0) + MICROSECOND


def test_shutdown_from_an_older_epoch_with_an_older_time_is_ignored():
    state = registering(node_epoch="boot-2", seconds=50)

    assert lifecycle.apply_shutdown(state, shutdown(40, node_epoch="boot-1")) is None


def test_shutdown_from_another_epoch_at_the_same_time_is_ignored():
    state = registering(node_epoch="boot-2", seconds=50)

    assert lifecycle.apply_shutdown(state, shutdown(50, node_epoch="boot-1")) is None


def test_shutdown_from_another_epoch_after_the_last_event_deregisters():
    state = registering(node_epoch="boot-2", seconds=50)

    new = lifecycle.apply_shutdown(state, shutdown(60, node_epoch="boot-1"))

    assert new.status is NodeStatus.DEREGISTERED
    assert new.changed_at == at(60)


def test_shutdown_older_than_the_last_event_of_the_same_epoch_is_ignored():
    state = registering(seconds=50)

    assert lifecycle.apply_shutdown(state, shutdown(49)) is None


def test_shutdown_of_an_unknown_node_changes_nothing():
    assert lifecycle.apply_shutdown(None, shutdown(10)) is None


def test_shutdown_of_a_deregistered_node_changes_nothing():
    gone = lifecycle.apply_shutdown(active(), shutdown(10))

    assert lifecycle.apply_shutdown(gone, shutdown(20)) is None


def test_an_expired_node_can_still_be_deregistered():
    state = expired(partition_seconds=100)

    new = lifecycle.apply_shutdown(state, shutdown(150))

    assert new.status is NodeStatus.DEREGISTERED
    assert new.generation == 3
    assert new.changed_at == at(150)


def test_a_shutdown_sent_before_the_expiry_still_deregisters_after_it():
    state = expired(partition_seconds=100)

    new = lifecycle.apply_shutdown(state, shutdown(50))

    assert new.status is NodeStatus.DEREGISTERED
    assert new.generation == 3
    assert new.changed_at == at(100) + MICROSECOND


# --- apply_introspection after expiry or shutdown ------------------------------------


def test_introspection_after_the_expiry_brings_the_node_back_as_registering():
    state = expired(partition_seconds=100)
    event = introspection_factory("node-a", event_time=at(120))

    new = lifecycle.apply_introspection(state, event)

    assert new.status is NodeStatus.REGISTERING
    assert new.generation == 3
    assert new.synced_generation == 1
    assert new.changed_at == at(120)
    assert new.last_event_time == at(120)
    assert new.last_event_id == str(event.event_id)


def test_introspection_from_before_the_expiry_does_not_bring_the_node_back():
    state = expired(partition_seconds=100)
    event = introspection_factory("node-a", event_time=at(60))

    assert lifecycle.apply_introspection(state, event) is None


def test_introspection_at_the_expiry_time_does_not_bring_the_node_back():
    state = expired(partition_seconds=100)
    event = introspection_factory("node-a", event_time=at(100))

    assert lifecycle.apply_introspection(state, event) is None


def test_introspection_after_the_shutdown_brings_the_node_back_as_registering():
    gone = lifecycle.apply_shutdown(active(), shutdown(10))
    event = introspection_factory("node-a", node_epoch="boot-2", event_time=at(20))

    new = lifecycle.apply_introspection(gone, event)

    assert new.status is NodeStatus.REGISTERING
    assert new.node_epoch == "boot-2"
    assert new.generation == 3
    assert new.changed_at == at(20)


def test_introspection_from_before_the_shutdown_does_not_bring_the_node_back():
    gone = lifecycle.apply_shutdown(active(), shutdown(10))
    event = introspection_factory("node-a", event_time=at(5))

    assert lifecycle.apply_introspection(gone, event) is None


def test_unchanged_introspection_after_expiry_still_brings_the_node_back():
    state = expired(partition_seconds=100)
    event = introspection_factory("node-a", event_time=at(120))
    assert state.same_registration(event)

    new = lifecycle.apply_introspection(state, event)

    assert new.status is NodeStatus.REGISTERING
    assert new.generation == 3


# --- judge_heartbeat -----------------------------------------------------------------


def test_heartbeat_of_an_unknown_node_is_unknown():
    verdict = lifecycle.judge_heartbeat(None, None, heartbeat(10))

    assert verdict is lifecycle.HeartbeatVerdict.UNKNOWN


def test_heartbeat_after_the_expiry_is_unknown_so_the_node_is_asked_to_introspect():
    verdict = lifecycle.judge_heartbeat(expired(100), None, heartbeat(101))

    assert verdict is lifecycle.HeartbeatVerdict.UNKNOWN


def test_heartbeat_from_before_the_expiry_is_stale():
    verdict = lifecycle.judge_heartbeat(expired(100), None, heartbeat(99))

    assert verdict is lifecycle.HeartbeatVerdict.STALE


def test_heartbeat_at_the_expiry_time_is_stale():
    verdict = lifecycle.judge_heartbeat(expired(100), None, heartbeat(100))

    assert verdict is lifecycle.HeartbeatVerdict.STALE


def test_heartbeat_after_the_shutdown_is_unknown():
    gone = lifecycle.apply_shutdown(active(), shutdown(10))

    verdict = lifecycle.judge_heartbeat(gone, None, heartbeat(11))

    assert verdict is lifecycle.HeartbeatVerdict.UNKNOWN


def test_heartbeat_from_before_the_shutdown_is_stale():
    gone = lifecycle.apply_shutdown(active(), shutdown(10))

    verdict = lifecycle.judge_heartbeat(gone, None, heartbeat(9))

    assert verdict is lifecycle.HeartbeatVerdict.STALE


def test_newer_heartbeat_from_another_epoch_is_a_new_epoch():
    verdict = lifecycle.judge_heartbeat(
        active(), seen(0), heartbeat(10, node_epoch="boot-2")
    )

    assert verdict is lifecycle.HeartbeatVerdict.NEW_EPOCH


def test_older_heartbeat_from_another_epoch_is_stale():
    state = registering(seconds=50)

    verdict = lifecycle.judge_heartbeat(
        state, seen(50), heartbeat(40, node_epoch="boot-0")
    )

    assert verdict is lifecycle.HeartbeatVerdict.STALE


def test_heartbeat_from_another_epoch_at_the_last_event_time_is_stale():
    state = registering(seconds=50)

    verdict = lifecycle.judge_heartbeat(state, None, heartbeat(50, node_epoch="boot-0"))

    assert verdict is lifecycle.HeartbeatVerdict.STALE


def test_heartbeat_no_newer_than_the_last_sign_of_life_is_stale():
    state = active()

    assert (
        lifecycle.judge_heartbeat(state, seen(30), heartbeat(30))
        is lifecycle.HeartbeatVerdict.STALE
    )
    assert (
        lifecycle.judge_heartbeat(state, seen(30), heartbeat(29))
        is lifecycle.HeartbeatVerdict.STALE
    )


def test_newer_heartbeat_of_a_live_node_is_alive():
    verdict = lifecycle.judge_heartbeat(active(), seen(30), heartbeat(31))

    assert verdict is lifecycle.HeartbeatVerdict.ALIVE


def test_heartbeat_of_a_live_node_without_liveness_is_alive():
    verdict = lifecycle.judge_heartbeat(registering(), None, heartbeat(5))

    assert verdict is lifecycle.HeartbeatVerdict.ALIVE


# --- to_record -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "backend_status"),
    [
        (NodeStatus.REGISTERING, "active"),
        (NodeStatus.ACTIVE, "active"),
        (NodeStatus.EXPIRED, "expired"),
        (NodeStatus.DEREGISTERED, "deregistered"),
    ],
)
def test_record_tells_the_backends_the_status_they_should_hold(status, backend_status):
    state = registering().model_copy(update={"status": status})

    assert state.to_record().status == backend_status


def test_record_last_event_time_is_when_the_registry_last_changed_the_node():
    state = expired(partition_seconds=100)

    record = state.to_record()

    assert record.last_event_time == at(100)
    assert record.last_event_time == state.changed_at
    assert record.last_event_time != state.last_event_time
    assert record.node_id == "node-a"
    assert record.node_epoch == "boot-1"
    assert record.host == "10.1.2.3"
    assert record.port == 8080
