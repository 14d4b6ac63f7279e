"""The fleet simulator's scheduling, churn and events, on a fake clock and producer."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest

from registry_app.decoding import InvalidEvent, decode_node_event
from registry_app.events import (
    NodeHeartbeat,
    NodeIntrospection,
    NodeShutdown,
    RequestIntrospection,
    RequestIntrospectionPayload,
)
from registry_app.settings import Settings
from registry_app.simulator import (
    BAD_EVENT_KINDS,
    TICK_SECONDS,
    Action,
    Fleet,
    FleetConfig,
    Members,
    Pace,
    Schedule,
    bad_event,
    first_beat,
    next_beat,
)
from registry_app.topic_names import HEARTBEAT, INTROSPECTION

SETTINGS = Settings(topic_prefix="unit")
HEARTBEAT_TOPIC = SETTINGS.topic_name(HEARTBEAT)
INTROSPECTION_TOPIC = SETTINGS.topic_name(INTROSPECTION)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeProducer:
    """Records what the fleet sends, and when by the fleet's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, str, bytes]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None = None):
        self.sent.append((self.clock.now, topic, key.decode(), value))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    def events(self, topic: str) -> list[tuple[float, dict]]:
        return [(t, json.loads(v)) for t, tp, _, v in self.sent if tp == topic]


def make_fleet(nodes: int, **config) -> tuple[Fleet, FakeProducer, Clock]:
    clock = Clock()
    producer = FakeProducer(clock)
    config.setdefault("run", "unit")
    config.setdefault("answer_requests", False)
    fleet = Fleet(
        SETTINGS,
        FleetConfig(nodes=nodes, **config),
        producer=producer,
        clock=clock,
    )
    return fleet, producer, clock


async def run_until(fleet: Fleet, clock: Clock, seconds: float, tick=TICK_SECONDS):
    """Step the fleet on the fake clock, tick by tick, as simulate() does."""
    steps = round(seconds / tick)
    start = clock.now
    for step in range(steps + 1):
        clock.now = start + step * tick  # no float drift over many ticks
        await fleet.step(clock.now)


# --- the pieces ----------------------------------------------------------------------


def test_the_schedule_pops_what_is_due_in_time_order():
    schedule = Schedule()
    schedule.push(3.0, Action.BEAT, 3, 0)
    schedule.push(1.0, Action.START, 1, 0)
    schedule.push(2.0, Action.BEAT, 2, 0)
    schedule.push(1.0, Action.BEAT, 4, 0)

    due = list(schedule.pop_due(2.0))

    assert [(at, index) for at, _, index, _ in due] == [(1.0, 1), (1.0, 4), (2.0, 2)]
    assert schedule.next_due() == 3.0
    assert list(schedule.pop_due(2.9)) == []


def test_the_first_beat_comes_a_full_interval_after_start_on_the_nodes_grid():
    # Grid of the node: 0.25 + k * 10.
    assert first_beat(started=0.0, phase=0.25, interval=10) == 10.25
    assert first_beat(started=0.25, phase=0.25, interval=10) == 10.25
    assert first_beat(started=3.0, phase=0.25, interval=10) == 20.25
    assert first_beat(started=47.0, phase=0.25, interval=10) == 60.25


def test_a_stalled_loop_skips_missed_beats_instead_of_sending_a_burst():
    assert next_beat(due=10.0, now=10.05, interval=2) == 12.0
    assert next_beat(due=10.0, now=15.0, interval=2) == 16.0
    assert next_beat(due=10.0, now=16.0, interval=2) == 18.0


def test_pace_turns_a_rate_into_exact_totals():
    pace = Pace(per_second=0.3)

    taken = [pace.take(0.05) for _ in range(2000)]  # 100 s

    assert sum(taken) == 30
    assert max(taken) == 1


def test_members_add_discard_and_pick_with_a_seed():
    members = Members()
    for index in range(10):
        members.add(index)
    members.discard(3)
    members.discard(9)
    members.discard(42)

    assert len(members) == 8
    assert sorted(members) == [0, 1, 2, 4, 5, 6, 7, 8]
    picks = [members.pick(random.Random(7)) for _ in range(3)]
    assert len(set(picks)) == 1 and picks[0] in members


# --- heartbeats ----------------------------------------------------------------------


async def test_heartbeats_are_spread_evenly_over_the_interval():
    fleet, producer, clock = make_fleet(1000, heartbeat_interval=10.0)

    await run_until(fleet, clock, 30.0)

    beats = producer.events(HEARTBEAT_TOPIC)
    # Steady state: every node beats once per interval (a beat goes out on the first
    # tick at or after it is due, hence the window a half tick off the grid)...
    half = TICK_SECONDS / 2
    window = [(t, e) for t, e in beats if 10.0 + half <= t < 20.0 + half]
    per_node = Counter(e["node_id"] for _, e in window)
    assert len(per_node) == 1000 and set(per_node.values()) == {1}
    # ...and the fleet's beats are level across it: 100 a second, 5 a tick.
    per_second = Counter(int(t - half) for t, _ in window)
    assert all(95 <= n <= 105 for n in per_second.values()), per_second
    per_tick = Counter(round(t / TICK_SECONDS) for t, _ in beats)
    assert max(per_tick.values()) <= 1000 * TICK_SECONDS / 10.0 + 1


async def test_no_heartbeat_before_a_node_has_run_a_full_interval():
    fleet, producer, clock = make_fleet(50, heartbeat_interval=2.0, ramp_up=5.0)

    await run_until(fleet, clock, 12.0)

    started = {e["node_id"]: t for t, e in producer.events(INTROSPECTION_TOPIC)}
    assert len(started) == 50
    assert max(started.values()) < 5.0
    for t, beat in producer.events(HEARTBEAT_TOPIC):
        assert t >= started[beat["node_id"]] + 2.0
        NodeHeartbeat.model_validate(beat)


async def test_the_whole_fleet_runs_on_one_task():
    clock_producer = FakeProducer(Clock())
    fleet = Fleet(
        SETTINGS,
        FleetConfig(
            nodes=2000,
            run="tasks",
            heartbeat_interval=0.2,
            churn_per_minute=6,
            answer_requests=False,
        ),
        producer=clock_producer,
    )
    before = len(asyncio.all_tasks())
    most = 0

    async def probe():
        nonlocal most
        while True:
            most = max(most, len(asyncio.all_tasks()))
            await asyncio.sleep(0.01)

    prober = asyncio.create_task(probe())
    async with fleet:
        summary = await fleet.simulate(duration=0.6)
    prober.cancel()

    assert most <= before + 1  # the probe itself; the fleet adds none
    assert summary["introspections"] >= 2000
    assert summary["heartbeats"] > 2000
    assert summary["messages"] == len(clock_producer.sent)


# --- churn ---------------------------------------------------------------------------


async def churn_run(seed: str, **config) -> tuple[Fleet, FakeProducer]:
    config = {"churn_per_minute": 0.5, "restart_after": None, **config}
    fleet, producer, clock = make_fleet(600, seed=seed, heartbeat_interval=5, **config)
    await run_until(fleet, clock, 60.0)
    return fleet, producer


async def test_churn_stops_the_configured_share_of_the_fleet_each_minute():
    fleet, producer = await churn_run("s1")

    stats = fleet.stats
    assert stats.graceful_stops + stats.crashes == 300  # 0.5 of 600, in one minute
    assert 0.4 < stats.crashes / 300 < 0.6  # crash_share 0.5
    summary = fleet.summary()
    assert (summary["running"], summary["stopped"], summary["crashed"]) == (
        300,
        stats.graceful_stops,
        stats.crashes,
    )
    # A graceful stop says NODE_SHUTDOWN, with the node's epoch; a crash says nothing.
    shutdowns = [
        e
        for _, e in producer.events(HEARTBEAT_TOPIC)
        if e["event_type"] == "NODE_SHUTDOWN"
    ]
    states = fleet.states()
    assert len(shutdowns) == stats.graceful_stops
    for event in shutdowns:
        NodeShutdown.model_validate(event)
        assert states[event["node_id"]] == ("stopped", event["node_epoch"])


async def test_churn_is_the_same_for_the_same_seed():
    first, _ = await churn_run("same")
    again, _ = await churn_run("same")
    other, _ = await churn_run("other")

    assert first.states() == again.states()
    assert first.states() != other.states()
    assert [n.payload for n in first.nodes] == [n.payload for n in again.nodes]


async def test_a_crash_share_of_one_never_says_goodbye():
    fleet, producer = await churn_run("crashy", crash_share=1.0)

    assert fleet.stats.crashes == 300 and fleet.stats.graceful_stops == 0
    assert not any(
        e["event_type"] == "NODE_SHUTDOWN" for _, e in producer.events(HEARTBEAT_TOPIC)
    )


async def test_stopped_nodes_restart_with_a_new_epoch_and_introspect_first():
    fleet, producer, clock = make_fleet(
        100, heartbeat_interval=1.0, churn_per_minute=6, restart_after=3.0
    )

    await run_until(fleet, clock, 30.0)

    assert fleet.stats.restarts > 0
    epochs_seen: dict[str, list[str]] = {}
    for _, _, key, value in producer.sent:
        event = json.loads(value)
        assert key == event["node_id"]
        epochs = epochs_seen.setdefault(key, [])
        if event["event_type"] == "NODE_INTROSPECTION":
            assert event["node_epoch"] not in epochs  # every start is a new process
            epochs.append(event["node_epoch"])
        else:  # a heartbeat or shutdown comes from the newest process only
            assert event["node_epoch"] == epochs[-1]
    restarted = sum(len(e) - 1 for e in epochs_seen.values())
    assert restarted == fleet.stats.restarts


async def test_shutdown_at_end_stops_every_running_node():
    clock = Clock()
    producer = FakeProducer(clock)
    fleet = Fleet(
        SETTINGS,
        FleetConfig(
            nodes=30,
            run="end",
            heartbeat_interval=0.1,
            answer_requests=False,
            shutdown_at_end=True,
        ),
        producer=producer,
    )
    async with fleet:
        summary = await fleet.simulate(duration=0.3)

    assert summary["final_shutdowns"] == 30 and summary["stopped"] == 30
    assert summary["running"] == 0
    assert summary["shutdowns"] == 30


# --- bad events and requests ---------------------------------------------------------


def refused_by_the_registry(topic: str, key: str, value: bytes) -> bool:
    """The registry's checks (registry.Registry._decode) on one message."""
    try:
        event = decode_node_event(value)
    except (InvalidEvent, UnicodeDecodeError):
        return True
    expected = (
        NodeIntrospection if topic == INTROSPECTION else (NodeHeartbeat, NodeShutdown)
    )
    return not isinstance(event, expected) or event.node_id != key


@pytest.mark.parametrize("kind", BAD_EVENT_KINDS)
def test_every_kind_of_bad_event_is_refused_by_the_registry(kind):
    topic, key, value = bad_event(kind, "sim-unit-000001", "abc")

    assert refused_by_the_registry(topic, key, value)


async def test_bad_events_come_at_their_rate_and_cover_every_kind():
    fleet, producer, clock = make_fleet(
        10, heartbeat_interval=5, bad_events_per_second=5
    )

    await run_until(fleet, clock, 40.0)

    assert fleet.stats.bad_events == 200
    assert set(fleet.stats.bad_by_kind) == set(BAD_EVENT_KINDS)
    topics = {INTROSPECTION_TOPIC: INTROSPECTION, HEARTBEAT_TOPIC: HEARTBEAT}
    refused = sum(
        refused_by_the_registry(topics[topic], key, value)
        for _, topic, key, value in producer.sent
    )
    assert refused == 200


async def test_the_fleet_answers_introspection_requests_for_its_running_nodes():
    fleet, producer, clock = make_fleet(12, heartbeat_interval=5)
    await run_until(fleet, clock, 1.0)
    await fleet._stop(fleet.nodes[0], clock.now)  # one node is down: it cannot answer
    node_type = fleet.nodes[1].payload.node_type
    same_type = sum(
        n.payload.node_type == node_type and n.index != 0 for n in fleet.nodes
    )
    sent_before = len(producer.sent)

    def request(**target) -> RequestIntrospection:
        return RequestIntrospection(
            node_id="registry", payload=RequestIntrospectionPayload(**target)
        )

    targeted = request(target_node_id=fleet.nodes[1].node_id)
    assert await fleet.answer(targeted) == 1
    assert await fleet.answer(request(target_node_id=fleet.nodes[0].node_id)) == 0
    assert await fleet.answer(request(target_node_id="somebody-else")) == 0
    assert await fleet.answer(request(node_type=node_type)) == same_type
    assert await fleet.answer(request()) == 11

    answers = [json.loads(v) for _, _, _, v in producer.sent[sent_before:]]
    assert len(answers) == 1 + same_type + 11 == fleet.stats.answers
    first = NodeIntrospection.model_validate(answers[0])
    assert first.correlation_id == targeted.event_id
    assert first.payload.reason == "requested"
    assert fleet.stats.requests == 5
