"""The node client without Kafka: capabilities, address, schedule, requests, waits."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import BaseModel, ConfigDict, Field

from registry_app import client as client_module
from registry_app import topics
from registry_app.client import (
    ConnectionState,
    HeartbeatSchedule,
    NodeClient,
    default_node_id,
    discover_host,
    normalize_capabilities,
    port_from_endpoints,
)
from registry_app.events import (
    NODE_ID_PATTERN,
    BackendOutcome,
    Capability,
    ExpiredPayload,
    NodeExpired,
    NodeHeartbeat,
    NodeIntrospection,
    NodeRegistered,
    RegisteredPayload,
    RequestIntrospection,
    RequestIntrospectionPayload,
)


def make_client(**changes) -> NodeClient:
    options = {
        "node_id": "node-1",
        "node_type": "summarizer",
        "node_version": "1.0.0",
        "host": "10.0.0.5",
        "port": 8080,
        "capabilities": ["summarize"],
        **changes,
    }
    return NodeClient(**options)


class Recorder:
    """Stands in for the client's Kafka producer: records what it would publish."""

    def __init__(self, send_seconds: float = 0.0, ok: bool = True) -> None:
        self.sent: list[tuple[str, BaseModel, float]] = []
        self.send_seconds = send_seconds
        self.ok = ok

    async def __call__(self, topic: str, event: BaseModel) -> bool:
        self.sent.append((topic, event, asyncio.get_running_loop().time()))
        if self.send_seconds:
            await asyncio.sleep(self.send_seconds)
        return self.ok

    def of(self, kind: type) -> list:
        return [event for _, event, _ in self.sent if isinstance(event, kind)]


def connected(node: NodeClient, recorder: Recorder) -> NodeClient:
    """A client that behaves as if start() had connected, publishing to `recorder`."""
    node._publish = recorder  # type: ignore[method-assign]
    node._producer = object()  # type: ignore[assignment]
    node.node_epoch = "epoch-1"
    node.state = ConnectionState.CONNECTED
    return node


# --- capabilities ------------------------------------------------------------------


def test_capabilities_from_models_dicts_and_names_in_a_list():
    found = normalize_capabilities(
        [
            Capability(name="summarize", version="2"),
            {"name": "translate", "attributes": {"languages": ["en", "fr"]}},
            "embed",
        ]
    )

    assert found == [
        Capability(name="summarize", version="2"),
        Capability(name="translate", attributes={"languages": ["en", "fr"]}),
        Capability(name="embed"),
    ]


def test_capabilities_from_a_mapping_of_name_to_details():
    found = normalize_capabilities(
        {
            "summarize": {"version": 2, "max_tokens": 4096},
            "translate": "1.1",
            "embed": {},
            "rank": True,
            "ocr": False,  # a feature that is off is not offered
            "sort": None,  # nor one left unset
            "search": {"description": "full text", "attributes": {"k": 10}},
        }
    )

    assert found == [
        Capability(name="summarize", version="2", attributes={"max_tokens": 4096}),
        Capability(name="translate", version="1.1"),
        Capability(name="embed"),
        Capability(name="rank"),
        Capability(name="search", description="full text", attributes={"k": 10}),
    ]


class Summarize(BaseModel):
    version: str = "2"
    max_tokens: int = 4096


class Tools(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    summarize: Summarize = Summarize()
    translate: bool = Field(True, description="any language pair")
    ocr: bool = False
    rank: str | None = None
    full_text_search: dict = Field(default={"version": "1"}, alias="full-text-search")


def test_capabilities_from_a_pydantic_model_one_per_field():
    found = normalize_capabilities(Tools())

    assert found == [
        Capability(name="summarize", version="2", attributes={"max_tokens": 4096}),
        Capability(name="translate", description="any language pair"),
        Capability(name="full-text-search", version="1"),
    ]


def test_capabilities_from_a_callable_and_from_nothing():
    assert normalize_capabilities(lambda: {"plan": "3"}) == [
        Capability(name="plan", version="3")
    ]
    assert normalize_capabilities(None) == []
    assert normalize_capabilities([]) == []


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("summarize", TypeError),
        (42, TypeError),
        ({"summarize": 3}, TypeError),
        ([3], TypeError),
        (["summarize", {"name": "summarize"}], ValueError),
        ([{"name": "x", "colour": "red"}], ValueError),
        ({"": True}, ValueError),
        (Tools, TypeError),
    ],
)
def test_capabilities_that_are_refused(source, error):
    with pytest.raises(error):
        normalize_capabilities(source)


async def test_capabilities_are_extracted_once_until_a_refresh():
    calls = []

    def extract():
        calls.append(1)
        return {"plan": str(len(calls))}

    recorder = Recorder()
    node = connected(make_client(capabilities=extract), recorder)

    assert (
        node.capabilities == node.capabilities == [Capability(name="plan", version="1")]
    )
    await node.introspect("startup")
    assert len(calls) == 1

    assert await node.refresh_capabilities()
    assert len(calls) == 2
    [first, refreshed] = recorder.of(NodeIntrospection)
    assert first.payload.capabilities == [Capability(name="plan", version="1")]
    assert refreshed.payload.capabilities == [Capability(name="plan", version="2")]
    assert refreshed.payload.reason == "refresh"


async def test_invalid_node_details_fail_start_not_a_background_task():
    node = make_client(node_type="not a type")

    with pytest.raises(ValueError):
        await node.start()
    assert not node.running


# --- identity and address ------------------------------------------------------------


def test_the_default_node_id_is_the_hostname_and_random_hex():
    node_id = default_node_id("web 01.example.com")

    assert re.fullmatch(r"web-01\.example\.com-[0-9a-f]{8}", node_id)
    assert default_node_id("web") != default_node_id("web")
    for odd in ("_weird host!", "-" * 300, "", "ünïcode"):
        assert re.match(NODE_ID_PATTERN, default_node_id(odd)), odd


def test_the_host_is_the_address_that_reaches_the_bootstrap_server():
    assert discover_host("127.0.0.1:9092,10.9.9.9:9092") == "127.0.0.1"
    assert make_client(host=None, bootstrap_servers="127.0.0.1:9092").host == (
        "127.0.0.1"
    )
    assert make_client(host="10.1.2.3").host == "10.1.2.3"


def test_the_host_falls_back_to_the_hostname_without_a_route(monkeypatch):
    def no_route(*args, **kwargs):
        raise socket.gaierror("no such broker")

    monkeypatch.setattr(socket, "getaddrinfo", no_route)
    monkeypatch.setattr(socket, "gethostname", lambda: "box-7")

    assert discover_host("kafka.invalid:9092") == "box-7"


def test_the_port_comes_from_the_argument_or_the_first_endpoint():
    endpoints = {"http": "http://10.0.0.5:8081", "metrics": "http://10.0.0.5:9100"}

    assert make_client(port=None, endpoints=endpoints).port == 8081
    assert make_client(port=7000, endpoints=endpoints).port == 7000
    assert port_from_endpoints({"api": "https://svc.example.com/v1"}) == 443
    assert port_from_endpoints({"grpc": "grpc://svc:50051"}) == 50051
    assert port_from_endpoints({}) is None


@pytest.mark.parametrize(
    "endpoints",
    [
        {},
        {"grpc": "grpc://svc", "http": "http://svc:8080"},  # the first one decides
        {"http": "http://svc:notaport"},
    ],
)
def test_without_a_port_the_client_refuses_to_start(endpoints):
    with pytest.raises(ValueError, match="port is required"):
        make_client(port=None, endpoints=endpoints)


def test_topic_names_match_the_registry_without_importing_faust():
    node = make_client(topic_prefix="fleet")

    assert set(node.topics.values()) == {
        f"fleet.{name}"
        for name in (
            topics.INTROSPECTION,
            topics.HEARTBEAT,
            topics.REGISTRY_EVENTS,
            topics.REQUESTS,
        )
    }
    probe = "import sys, registry_app.client; sys.exit('faust' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


# --- heartbeat schedule --------------------------------------------------------------


def test_beats_are_due_on_the_grid_however_long_each_takes():
    schedule = HeartbeatSchedule(start=100.0, interval=30.0)
    now = 100.0
    for k in range(1, 100_001):
        beat, due, skipped = schedule.next_beat(now)
        assert (beat, skipped) == (k, 0)
        assert due == pytest.approx(100.0 + 30.0 * k, abs=1e-6)
        now = due + 29.0  # a send that takes most of an interval

    # 100,000 beats later (five weeks of 30 s), still on the grid: no drift.
    assert due == pytest.approx(100.0 + 30.0 * 100_000, abs=1e-6)


def test_beats_whose_slot_passed_are_skipped_not_sent_in_a_burst():
    schedule = HeartbeatSchedule(start=0.0, interval=1.0)

    assert schedule.next_beat(0.0) == (1, 1.0, 0)
    # The send of beat 1 took 2.5 intervals: beats 2 and 3 are gone.
    assert schedule.next_beat(3.5) == (4, 4.0, 2)
    assert schedule.next_beat(4.01) == (5, 5.0, 0)


def test_jitter_is_bounded_and_never_accumulates():
    schedule = HeartbeatSchedule(
        start=0.0, interval=10.0, jitter=0.2, rng=random.Random(7)
    )
    offsets = []
    now = 0.0
    for k in range(1, 10_001):
        beat, due, _ = schedule.next_beat(now)
        assert beat == k
        offsets.append(due - 10.0 * k)
        now = due + 0.5

    assert max(abs(o) for o in offsets) <= 1.0  # 0.2 * 10 s, split either side
    assert min(offsets) < -0.9 and max(offsets) > 0.9  # it does jitter
    assert abs(sum(offsets) / len(offsets)) < 0.05  # centred on the grid


@pytest.mark.parametrize(("interval", "jitter"), [(0, 0.1), (-1, 0), (1, 1.0)])
def test_a_bad_interval_or_jitter_is_refused(interval, jitter):
    with pytest.raises(ValueError):
        make_client(heartbeat_interval=interval, jitter=jitter)


async def test_the_heartbeat_loop_keeps_time_when_sends_are_slow():
    interval, send = 0.1, 0.06
    recorder = Recorder(send_seconds=send)
    node = connected(make_client(heartbeat_interval=interval, jitter=0), recorder)
    loop = asyncio.get_running_loop()
    start = loop.time()

    task = asyncio.create_task(node._heartbeats(HeartbeatSchedule(start, interval)))
    await asyncio.sleep(interval * 15.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    times = [at - start for _, event, at in recorder.sent]
    assert len(times) >= 13
    assert all(isinstance(e, NodeHeartbeat) for e in recorder.of(BaseModel))
    # A loop that slept one interval after each send would be 15 * 0.06 s late.
    for k, at in enumerate(times, start=1):
        assert at == pytest.approx(k * interval, abs=0.05), (k, times)
    # The last send may still be in flight when the loop is cancelled.
    assert len(times) - 1 <= node.beats_sent <= len(times)
    assert node.beats_skipped == 0


async def test_heartbeats_before_kafka_answers_are_skipped_not_queued():
    recorder = Recorder()
    node = make_client(heartbeat_interval=0.05, jitter=0)
    node.node_epoch = "epoch-1"
    node._publish = recorder  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()

    task = asyncio.create_task(node._heartbeats(HeartbeatSchedule(loop.time(), 0.05)))
    await asyncio.sleep(0.28)
    node._producer = object()  # type: ignore[assignment]  # Kafka answers now
    node._owed = None
    await asyncio.sleep(0.12)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert node.beats_skipped >= 4
    # Only the beats due after connecting went out: nothing saved up.
    assert 1 <= node.beats_sent <= 3


async def test_an_introspection_owed_goes_out_before_the_next_heartbeat():
    recorder = Recorder()
    node = connected(make_client(heartbeat_interval=0.05, jitter=0), recorder)
    node._owed = "startup"
    loop = asyncio.get_running_loop()

    task = asyncio.create_task(node._heartbeats(HeartbeatSchedule(loop.time(), 0.05)))
    await asyncio.sleep(0.12)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    first, second = (event for _, event, _ in recorder.sent[:2])
    assert isinstance(first, NodeIntrospection) and first.payload.reason == "startup"
    assert isinstance(second, NodeHeartbeat)
    assert await node.wait_announced(0)


# --- requests ------------------------------------------------------------------------


def request(**target) -> RequestIntrospection:
    return RequestIntrospection(
        node_id="registry", payload=RequestIntrospectionPayload(**target)
    )


@pytest.mark.parametrize(
    ("target", "answers"),
    [
        ({}, True),
        ({"node_type": "summarizer"}, True),
        ({"node_type": "indexer"}, False),
        ({"target_node_id": "node-1"}, True),
        ({"target_node_id": "node-2"}, False),
        ({"target_node_id": "node-1", "node_type": "indexer"}, True),
        ({"target_node_id": "node-2", "node_type": "summarizer"}, False),
    ],
)
async def test_requests_are_answered_only_when_aimed_at_the_node(target, answers):
    recorder = Recorder()
    node = connected(make_client(), recorder)
    asked = request(**target)

    await node._on_request(asked.model_dump_json().encode())

    assert node.requests_received == 1
    assert node.requests_answered == int(answers)
    sent = recorder.of(NodeIntrospection)
    assert len(sent) == int(answers)
    if answers:
        assert sent[0].payload.reason == "requested"
        assert sent[0].correlation_id == asked.event_id
        assert sent[0].node_epoch == "epoch-1"


async def test_unreadable_requests_are_ignored():
    recorder = Recorder()
    node = connected(make_client(), recorder)

    for junk in (b"", b"{", b'{"event_type": "NODE_HEARTBEAT"}', None):
        await node._on_request(junk)

    assert (node.requests_received, recorder.sent) == (0, [])


async def test_a_request_that_cannot_be_answered_is_not_counted():
    node = connected(make_client(), Recorder(ok=False))

    await node._on_request(request().model_dump_json().encode())

    assert (node.requests_received, node.requests_answered) == (1, 0)


# --- registration --------------------------------------------------------------------


def registered(correlation_id, generation: int = 1, node_id: str = "node-1"):
    return NodeRegistered(
        node_id=node_id,
        correlation_id=correlation_id,
        payload=RegisteredPayload(
            node_type="summarizer",
            generation=generation,
            consul=BackendOutcome(ok=True),
            postgres=BackendOutcome(ok=True),
        ),
    )


async def test_wait_registered_returns_the_answer_to_this_process():
    node = connected(make_client(), Recorder())
    await node.introspect("startup")
    ours = node.last_introspection.event_id

    waiting = asyncio.create_task(node.wait_registered(timeout=5))
    await asyncio.sleep(0.01)
    # Another process's introspection (same node id, earlier epoch) is not ours.
    node._on_registry_event(registered(uuid.uuid4()).model_dump_json().encode())
    node._on_registry_event(b"not json")
    await asyncio.sleep(0.01)
    assert not waiting.done()

    answer = registered(ours)
    node._on_registry_event(answer.model_dump_json().encode())

    assert await waiting == answer
    assert await node.wait_registered(timeout=0) == answer


async def test_wait_registered_times_out_and_an_expiry_clears_the_registration():
    node = connected(make_client(), Recorder())
    await node.introspect("startup")

    with pytest.raises(TimeoutError):
        await node.wait_registered(timeout=0.05)

    node._on_registry_event(
        registered(node.last_introspection.event_id, 3).model_dump_json().encode()
    )
    assert node.registration is not None
    expiry = NodeExpired(
        node_id="node-1",
        payload=ExpiredPayload(
            node_type="summarizer",
            generation=2,  # about an older registration: changes nothing
            last_heartbeat=None,
            deadline="2026-01-01T00:00:00Z",
        ),
    )
    node._on_registry_event(expiry.model_dump_json().encode())
    assert node.registration is not None

    newer = expiry.model_copy(
        update={"payload": expiry.payload.model_copy(update={"generation": 4})}
    )
    node._on_registry_event(newer.model_dump_json().encode())
    assert node.registration is None
    with pytest.raises(TimeoutError):
        await node.wait_registered(timeout=0.05)


async def test_wait_registered_needs_a_running_client():
    with pytest.raises(RuntimeError):
        await make_client().wait_registered(timeout=1)


def test_the_client_module_logs_under_its_name():
    assert client_module.logger.name == "registry_app.client"


# --- reachability ------------------------------------------------------------------


class FlakyProducer:
    """An aiokafka producer stand-in whose sends fail while `down` is set."""

    def __init__(self, partition: int = 0) -> None:
        self.down = False
        self.partition = partition
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes):
        if self.down:
            raise KafkaConnectionError("broker gone")
        self.sent.append((topic, value, key))
        return SimpleNamespace(topic=topic, partition=self.partition)


async def test_each_change_of_reachability_is_logged_once(caplog):
    caplog.set_level(logging.INFO, logger="registry_app.client")
    producer = FlakyProducer()
    node = make_client()
    node._producer = producer  # type: ignore[assignment]
    node._partition = 0
    node.node_epoch = "epoch-1"
    node.state = ConnectionState.STARTING

    assert await node.introspect("startup")
    producer.down = True
    for _ in range(5):
        assert not await node.introspect("refresh")
    producer.down = False
    for _ in range(3):
        assert await node.introspect("refresh")

    assert [
        (r.levelname, r.getMessage().split(": ")[1][:14]) for r in caplog.records
    ] == [
        ("INFO", "connected to K"),
        ("WARNING", "Kafka at 127.0"),
        ("INFO", "connected to K"),
    ]
    [(topic, _, key)] = producer.sent[:1]
    assert (topic, key) == ("registry.node-introspection.v1", b"node-1")


async def test_a_refresh_that_cannot_be_sent_is_owed_to_the_next_heartbeat():
    node = connected(make_client(), Recorder(ok=False))
    node._owed = None

    assert not await node.refresh_capabilities(["plan"])

    assert node.capabilities == [Capability(name="plan")]
    assert node._owed == "refresh"


def test_the_answer_partition_follows_the_producer_partitioner():
    partitions = {3, 1, 0, 2}

    found = {
        client_module.partition_for(f"n-{i}".encode(), partitions) for i in range(40)
    }
    assert found == partitions
    assert client_module.partition_for(b"n-1", partitions, lambda k, a, _: a[-1]) == 3


async def test_an_introspection_on_an_unexpected_partition_is_warned_once(caplog):
    caplog.set_level(logging.WARNING, logger="registry_app.client")
    node = make_client()
    node._producer = FlakyProducer(partition=2)  # type: ignore[assignment]
    node._partition = 1
    node.node_epoch = "epoch-1"

    assert await node.introspect("startup")
    assert await node.introspect("refresh")

    assert node._partition == 2
    [warning] = caplog.records
    assert "partition 2, not 1" in warning.getMessage()


def test_kafka_options_go_to_the_client_that_takes_them():
    options = {"partitioner": object(), "fetch_max_wait_ms": 100, "client_id": "svc"}
    node = make_client(kafka_options=options)

    producer = client_module._options_for(client_module.AIOKafkaProducer, options)
    consumer = client_module._options_for(client_module.AIOKafkaConsumer, options)
    assert set(producer) == {"partitioner", "client_id"}
    assert set(consumer) == {"fetch_max_wait_ms", "client_id"}
    assert node.kafka_options == options


@pytest.mark.parametrize(
    ("options", "error"),
    [({"group_id": "mine"}, "may not set group_id"), ({"colour": 1}, "unknown")],
)
def test_kafka_options_that_are_refused(options, error):
    with pytest.raises(ValueError, match=error):
        make_client(kafka_options=options)


def test_an_invalid_node_id_is_refused_at_once():
    with pytest.raises(ValueError, match="does not match"):
        make_client(node_id="no spaces please")


async def test_a_refresh_to_invalid_capabilities_keeps_the_valid_ones():
    recorder = Recorder()
    node = connected(make_client(capabilities=["plan"]), recorder)

    with pytest.raises(ValueError):
        await node.refresh_capabilities([{"name": "x" * 300}])

    assert node.capabilities == [Capability(name="plan")]
    assert recorder.sent == []


async def test_a_failing_beat_is_logged_and_the_next_one_still_goes(caplog):
    recorder = Recorder()
    node = connected(make_client(heartbeat_interval=0.05, jitter=0), recorder)
    node.active_operations = "many"  # type: ignore[assignment]  # a host's bug
    loop = asyncio.get_running_loop()

    task = asyncio.create_task(node._heartbeats(HeartbeatSchedule(loop.time(), 0.05)))
    await asyncio.sleep(0.08)
    node.active_operations = 2
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert "heartbeat failed" in caplog.text
    assert node.beats_skipped >= 1 and node.beats_sent >= 1
    assert recorder.of(NodeHeartbeat)[-1].payload.active_operations == 2
