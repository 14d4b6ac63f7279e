"""The agents in Faust's test context: in-memory store, no Kafka, backends recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from registry_app.events import (
    HeartbeatPayload,
    NodeHeartbeat,
    NodeShutdown,
    RequestIntrospection,
)
from registry_app.registry import Registry
from registry_app.settings import Settings
from registry_app.tables.liveness import Liveness
from registry_app.tables.nodes import NodeStatus, load_state
from tests.factories import introspection_factory, later


class RecordingBackend:
    """Stands in for a backend in the unit tier; the integration tests use real ones."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.written: list[str] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def register(self, records) -> None:
        self.written.extend(r.node_id for r in records)


@pytest.fixture
def registry(tmp_path):
    settings = Settings(store="memory://", data_dir=tmp_path, topic_partitions=1)
    return Registry(
        settings, backends=[RecordingBackend("consul"), RecordingBackend("postgres")]
    )


async def send(agent, event) -> None:
    await agent.put(event.model_dump_json().encode(), key=event.node_id.encode())


async def test_introspection_is_stored_and_queued_for_both_backends(registry):
    event = introspection_factory("node-a")

    async with registry.introspection_agent.test_context() as agent:
        await send(agent, event)

    state = load_state(registry.nodes["node-a"])
    assert state.status is NodeStatus.REGISTERING
    assert state.generation == 1
    assert registry.writer.backlog == 1


async def test_repeated_and_stale_introspections_queue_nothing_new(registry):
    event = introspection_factory("node-a")
    newer = later(event, 10, node_version="2.0")

    async with registry.introspection_agent.test_context() as agent:
        await send(agent, event)
        await send(agent, newer)
        await send(agent, newer)
        await send(agent, later(event, 5, node_version="1.5"))

    state = load_state(registry.nodes["node-a"])
    assert state.node_version == "2.0"
    assert state.generation == 2
    assert registry.writer.backlog == 1


async def test_event_keyed_by_another_node_is_refused(registry):
    event = introspection_factory("node-a")

    async with registry.introspection_agent.test_context() as agent:
        await agent.put(event.model_dump_json().encode(), key=b"node-b")

    assert registry.nodes.get("node-a") is None
    assert registry.writer.backlog == 0


# --- the liveness agent: heartbeats, shutdowns and ticks ------------------------------

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TIMEOUT = 90.0  # the default liveness timeout: 3 heartbeat intervals of 30 s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def heartbeat(node_id: str, seconds: float, node_epoch: str = "boot-1"):
    return NodeHeartbeat(
        node_id=node_id,
        node_epoch=node_epoch,
        event_time=at(seconds),
        payload=HeartbeatPayload(uptime_seconds=seconds),
    )


async def tick(agent, tick_time: float) -> None:
    await agent.put(
        json.dumps({"tick_time": tick_time}).encode(),
        key=b"registry-tick",
        headers={"registry-tick": b"1"},
    )


@pytest.fixture
def caught_up(registry, monkeypatch):
    """The partition's high-water mark, as if no message were queued behind a tick.

    The consumer is not started in Faust's test context, so its real high-water mark
    cannot be read; the test sets it.
    """
    highwater = {"value": 0}
    monkeypatch.setattr(
        registry.app.consumer, "highwater", lambda tp: highwater["value"]
    )
    return highwater


@pytest.fixture
def requests(registry, monkeypatch):
    """Every REQUEST_INTROSPECTION the registry sends, as (key, event)."""
    sent: list[tuple[bytes, RequestIntrospection]] = []

    async def record(*, key, value, **_kwargs):
        sent.append((key, RequestIntrospection.model_validate_json(value)))

    monkeypatch.setattr(registry.topics.requests, "send", record)
    return sent


async def introspect(registry, node_id: str = "node-a", seconds: float = 0) -> None:
    async with registry.introspection_agent.test_context() as agent:
        await send(agent, introspection_factory(node_id, event_time=at(seconds)))


def test_the_default_liveness_timeout_is_ninety_seconds(registry):
    assert registry.settings.liveness_timeout == TIMEOUT


async def test_introspection_sets_the_deadline_one_timeout_after_its_event_time(
    registry,
):
    await introspect(registry, seconds=0)

    seen = at(0).timestamp()
    assert Liveness.load(registry.liveness["node-a"]) == Liveness(
        partition=0, node_epoch="boot-1", last_seen=seen, deadline=seen + TIMEOUT
    )
    assert registry.expiry_index.tracked(0) == 1


async def test_heartbeat_of_a_known_node_moves_its_deadline_on(registry, requests):
    await introspect(registry, seconds=0)

    async with registry.liveness_agent.test_context() as agent:
        await send(agent, heartbeat("node-a", 30))

    seen = at(30).timestamp()
    assert Liveness.load(registry.liveness["node-a"]) == Liveness(
        partition=0, node_epoch="boot-1", last_seen=seen, deadline=seen + TIMEOUT
    )
    assert len(registry.expiry_index) == 1
    assert registry.expiry_index.due(0, seen + TIMEOUT) == []
    assert registry.expiry_index.due(0, seen + TIMEOUT + 0.001) == ["node-a"]
    assert requests == []


async def test_heartbeat_older_than_the_last_sign_of_life_keeps_the_deadline(
    registry, requests
):
    await introspect(registry, seconds=0)

    async with registry.liveness_agent.test_context() as agent:
        await send(agent, heartbeat("node-a", 30))
        await send(agent, heartbeat("node-a", 20))

    seen = at(30).timestamp()
    assert Liveness.load(registry.liveness["node-a"]).deadline == seen + TIMEOUT
    assert registry.expiry_index.due(0, seen + TIMEOUT) == []
    assert requests == []


async def test_heartbeat_of_an_unknown_node_asks_it_to_introspect_once(
    registry, requests
):
    async with registry.liveness_agent.test_context() as agent:
        await send(agent, heartbeat("node-b", 10))
        await send(agent, heartbeat("node-b", 40))

    assert len(requests) == 1
    key, request = requests[0]
    assert key == b"node-b"
    assert request.node_id == "registry"
    assert request.payload.target_node_id == "node-b"
    assert request.payload.reason == "unknown"
    assert registry.liveness.get("node-b") is None
    assert registry.nodes.get("node-b") is None
    assert len(registry.expiry_index) == 0


async def test_heartbeat_from_a_new_epoch_refreshes_the_deadline_and_asks_again(
    registry, requests
):
    await introspect(registry, seconds=0)

    async with registry.liveness_agent.test_context() as agent:
        await send(agent, heartbeat("node-a", 30, node_epoch="boot-2"))

    seen = at(30).timestamp()
    assert Liveness.load(registry.liveness["node-a"]) == Liveness(
        partition=0, node_epoch="boot-2", last_seen=seen, deadline=seen + TIMEOUT
    )
    assert [(key, r.payload.reason) for key, r in requests] == [
        (b"node-a", "new-epoch")
    ]


async def test_shutdown_deregisters_the_node_and_forgets_its_liveness(registry):
    await introspect(registry, seconds=0)

    async with registry.liveness_agent.test_context() as agent:
        await send(
            agent, NodeShutdown(node_id="node-a", node_epoch="boot-1", event_time=at(5))
        )

    state = load_state(registry.nodes["node-a"])
    assert state.status is NodeStatus.DEREGISTERED
    assert state.generation == 2
    assert state.changed_at == at(5)
    assert registry.liveness.get("node-a") is None
    assert len(registry.expiry_index) == 0
    assert registry.writer.backlog == 1
    pending = registry.writer._pending["node-a"]
    assert pending.generation == 2
    assert pending.record.status == "deregistered"


async def test_shutdown_of_an_unknown_node_stores_nothing(registry):
    async with registry.liveness_agent.test_context() as agent:
        await send(
            agent, NodeShutdown(node_id="node-b", node_epoch="boot-1", event_time=at(5))
        )

    assert registry.nodes.get("node-b") is None
    assert registry.writer.backlog == 0


async def test_tick_at_the_deadline_does_not_expire_the_node(registry, caught_up):
    await introspect(registry, seconds=0)
    deadline = at(0).timestamp() + TIMEOUT

    async with registry.liveness_agent.test_context() as agent:
        await tick(agent, deadline)

    state = load_state(registry.nodes["node-a"])
    assert state.status is NodeStatus.REGISTERING
    assert state.generation == 1
    assert registry.expiry_index.tracked(0) == 1
    assert registry.liveness.get("node-a") is not None


async def test_tick_past_the_deadline_expires_the_silent_node(registry, caught_up):
    await introspect(registry, seconds=0)
    deadline = at(0).timestamp() + TIMEOUT

    async with registry.liveness_agent.test_context() as agent:
        await tick(agent, deadline + 1)

    state = load_state(registry.nodes["node-a"])
    assert state.status is NodeStatus.EXPIRED
    assert state.generation == 2
    assert state.changed_at == at(TIMEOUT + 1)
    assert registry.liveness.get("node-a") is None
    assert len(registry.expiry_index) == 0
    pending = registry.writer._pending["node-a"]
    assert pending.generation == 2
    assert pending.record.status == "expired"
    assert pending.details == {"last_heartbeat": at(0), "deadline": at(TIMEOUT)}


async def test_a_heartbeat_before_the_tick_keeps_the_node_alive(registry, caught_up):
    await introspect(registry, seconds=0)

    async with registry.liveness_agent.test_context() as agent:
        await send(agent, heartbeat("node-a", 60))
        await tick(agent, at(TIMEOUT + 1).timestamp())
        alive = load_state(registry.nodes["node-a"])
        await tick(agent, at(60 + TIMEOUT + 1).timestamp())

    assert alive.status is NodeStatus.REGISTERING
    state = load_state(registry.nodes["node-a"])
    assert state.status is NodeStatus.EXPIRED
    assert state.changed_at == at(60 + TIMEOUT + 1)


async def test_tick_read_far_behind_the_partition_end_expires_nothing(
    registry, caught_up
):
    await introspect(registry, seconds=0)
    caught_up["value"] = registry.settings.expiry_max_lag_messages + 2

    async with registry.liveness_agent.test_context() as agent:
        await tick(agent, at(TIMEOUT + 1).timestamp())

    assert load_state(registry.nodes["node-a"]).status is NodeStatus.REGISTERING
    assert registry.expiry_index.tracked(0) == 1


async def test_tick_with_as_many_messages_behind_as_allowed_still_expires(
    registry, caught_up
):
    await introspect(registry, seconds=0)
    # The tick is the context's first message (offset 0): lag = highwater - 1.
    caught_up["value"] = registry.settings.expiry_max_lag_messages + 1

    async with registry.liveness_agent.test_context() as agent:
        await tick(agent, at(TIMEOUT + 1).timestamp())

    assert load_state(registry.nodes["node-a"]).status is NodeStatus.EXPIRED


async def test_heartbeat_after_the_expiry_asks_the_node_to_introspect(
    registry, caught_up, requests
):
    await introspect(registry, seconds=0)

    async with registry.liveness_agent.test_context() as agent:
        await tick(agent, at(TIMEOUT + 1).timestamp())
        await send(agent, heartbeat("node-a", TIMEOUT + 2))

    assert load_state(registry.nodes["node-a"]).status is NodeStatus.EXPIRED
    assert registry.liveness.get("node-a") is None
    assert [(key, r.payload.reason) for key, r in requests] == [(b"node-a", "unknown")]


async def test_newer_introspection_brings_an_expired_node_back_with_a_deadline(
    registry, caught_up
):
    await introspect(registry, seconds=0)
    async with registry.liveness_agent.test_context() as agent:
        await tick(agent, at(TIMEOUT + 1).timestamp())

    await introspect(registry, seconds=TIMEOUT + 10)

    state = load_state(registry.nodes["node-a"])
    assert state.status is NodeStatus.REGISTERING
    assert state.generation == 3
    seen = at(TIMEOUT + 10).timestamp()
    assert Liveness.load(registry.liveness["node-a"]).deadline == seen + TIMEOUT
    assert registry.expiry_index.tracked(0) == 1
