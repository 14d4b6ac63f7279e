"""State transitions of one node, without Kafka or backends."""

from datetime import UTC, datetime, timedelta

from registry_app import lifecycle
from registry_app.tables.nodes import NodeStatus
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
