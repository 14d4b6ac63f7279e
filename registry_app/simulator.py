"""A fleet of simulated nodes in one process: introspection, heartbeats and churn."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.progress_bar import ProgressBar
from rich.table import Table

from registry_app.events import (
    Capability,
    HeartbeatPayload,
    IntrospectionPayload,
    NodeHeartbeat,
    NodeIntrospection,
    NodeShutdown,
    RequestIntrospection,
)
from registry_app.settings import Settings
from registry_app.topic_names import HEARTBEAT, INTROSPECTION, REQUESTS
from registry_app.topics import ensure_topics

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.05
"""How often the scheduler wakes; a heartbeat is sent at most this late."""

RUN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
"""Run names: they go into node ids, sim-RUN-000042."""

# Node types and the tools each may offer (a node offers a seeded subset).
NODE_TYPES: dict[str, tuple[str, ...]] = {
    "orchestrator": ("plan", "route", "schedule", "retry"),
    "reducer": ("aggregate", "summarize", "deduplicate"),
    "indexer": ("embed", "search", "rank", "tokenize"),
    "gateway": ("authenticate", "rate-limit", "proxy"),
    "transcoder": ("transcode", "thumbnail"),
}
REGIONS = ("eu-west", "us-east", "ap-south")
INSTANCE_SIZES = ("small", "medium", "large")


def node_id_for(run: str, index: int) -> str:
    return f"sim-{run}-{index:06d}"


def node_profile(index: int, *, run: str, rng: random.Random) -> IntrospectionPayload:
    """What simulated node number `index` says about itself."""
    node_type = list(NODE_TYPES)[index % len(NODE_TYPES)]
    tools = NODE_TYPES[node_type]
    offered = sorted(rng.sample(tools, k=rng.randint(1, len(tools))))
    host = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    port = 8000 + index % 1000
    region = rng.choice(REGIONS)
    endpoints = {
        "http": f"http://{host}:{port}",
        "health": f"http://{host}:{port}/healthz",
        "metrics": f"http://{host}:9100/metrics",
    }
    if rng.random() < 0.5:
        endpoints["grpc"] = f"grpc://{host}:{port + 1000}"
    tags = ["simulated", region]
    if rng.random() < 0.05:
        tags.append("canary")
    return IntrospectionPayload(
        node_type=node_type,
        node_version=f"1.{index % 7}.{rng.randint(0, 3)}",
        host=host,
        port=port,
        capabilities=[
            Capability(
                name=tool,
                version=str(rng.randint(1, 3)),
                description=f"{tool} ({node_type})",
                attributes={"max_concurrency": rng.choice([4, 8, 16, 32])},
            )
            for tool in offered
        ],
        endpoints=endpoints,
        metadata={
            "region": region,
            "zone": f"{region}-{rng.choice('abc')}",
            "instance": {
                "size": rng.choice(INSTANCE_SIZES),
                "cpus": rng.choice([2, 4]),
            },
            "build": f"{rng.getrandbits(28):07x}",
            "simulated": True,
            "run": run,
        },
        tags=tags,
    )


# --- scheduling: pure and clock-free, so the unit tests drive it -------------------


class Action(Enum):
    START = "start"
    BEAT = "beat"


class Schedule:
    """Every node's next due action in one heap: one task drives the whole fleet."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Action, int, int]] = []
        self._order = itertools.count()  # ties keep insertion order

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, action: Action, index: int, incarnation: int) -> None:
        heapq.heappush(self._heap, (at, next(self._order), action, index, incarnation))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[float, Action, int, int]]:
        """Entries due at `now`, earliest first; pushing while iterating is safe."""
        while self._heap and self._heap[0][0] <= now:
            at, _, action, index, incarnation = heapq.heappop(self._heap)
            yield at, action, index, incarnation


def first_beat(started: float, phase: float, interval: float) -> float:
    """The node's first heartbeat: the first point of its grid (phase + k * interval)
    at least one interval after it started, as a real node waits before beating."""
    steps = math.ceil((started + interval - phase) / interval - 1e-9)
    return phase + steps * interval


def next_beat(due: float, now: float, interval: float) -> float:
    """The beat after `due`, on the same grid, skipping any already missed."""
    later = due + interval
    if later <= now:  # the loop was stalled: do not send a burst of catch-up beats
        later += math.ceil((now - later) / interval + 1e-9) * interval
    return later


class Pace:
    """A rate as whole events per step, carrying the fraction: totals come out exact."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._carry = 0.0

    def take(self, seconds: float) -> int:
        self._carry += self.per_second * seconds
        events = math.floor(self._carry + 1e-9)
        self._carry -= events
        return events


class Members:
    """A set of node indices with O(1) add and remove, and a seeded random pick."""

    def __init__(self) -> None:
        self._items: list[int] = []
        self._where: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, index: int) -> bool:
        return index in self._where

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._items))  # a snapshot: callers await between items

    def add(self, index: int) -> None:
        if index not in self._where:
            self._where[index] = len(self._items)
            self._items.append(index)

    def discard(self, index: int) -> None:
        position = self._where.pop(index, None)
        if position is None:
            return
        last = self._items.pop()
        if last != index:  # move the last item into the hole
            self._items[position] = last
            self._where[last] = position

    def pick(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]


# --- bad events ---------------------------------------------------------------------


def _envelope(event_type: str, node_id: str, epoch: str, **extra: Any) -> dict:
    return {
        "event_type": event_type,
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "correlation_id": None,
        "node_id": node_id,
        "node_epoch": epoch,
        "event_time": "2026-01-01T00:00:00Z",
        "payload": {"uptime_seconds": 1.0},
        **extra,
    }


def _dumps(value: dict) -> bytes:
    return json.dumps(value).encode()


BAD_EVENT_KINDS = (
    "invalid-json",
    "invalid-utf8",
    "unknown-event-type",
    "schema-version",
    "bad-node-id",
    "nan",
    "missing-field",
    "key-mismatch",
    "wrong-topic",
)


def bad_event(kind: str, node_id: str, epoch: str) -> tuple[str, str, bytes]:
    """A malformed event naming a real node, as (topic, key, value).

    The registry's decoder or key check refuses each kind (it lands on the dead-letter
    topic); none can change the node, since none is a valid event keyed by its id.
    """
    heartbeat = _envelope("NODE_HEARTBEAT", node_id, epoch)
    match kind:
        case "invalid-json":
            return HEARTBEAT, node_id, b'{"event_type": "NODE_HEARTB'
        case "invalid-utf8":
            return INTROSPECTION, node_id, b'{"node_id": "\xff\xfe"}'
        case "unknown-event-type":
            return HEARTBEAT, node_id, _dumps({**heartbeat, "event_type": "NODE_DANCE"})
        case "schema-version":
            return HEARTBEAT, node_id, _dumps({**heartbeat, "schema_version": 9})
        case "bad-node-id":
            return HEARTBEAT, node_id, _dumps({**heartbeat, "node_id": f"{node_id} !"})
        case "nan":
            return HEARTBEAT, node_id, _dumps(heartbeat).replace(b"1.0}", b"NaN}")
        case "missing-field":
            introspection = _envelope(
                "NODE_INTROSPECTION", node_id, epoch, payload={"node_type": "x"}
            )
            return INTROSPECTION, node_id, _dumps(introspection)
        case "key-mismatch":
            return HEARTBEAT, f"{node_id}-other", _dumps(heartbeat)
        case "wrong-topic":
            return INTROSPECTION, node_id, _dumps(heartbeat)
    raise ValueError(f"unknown kind of bad event {kind!r}")


# --- the fleet ----------------------------------------------------------------------


class NodeState(Enum):
    PENDING = "pending"  # not started yet (ramp-up)
    RUNNING = "running"
    STOPPED = "stopped"  # sent NODE_SHUTDOWN
    CRASHED = "crashed"  # went silent without a word


@dataclass(slots=True)
class SimNode:
    index: int
    node_id: str
    payload: IntrospectionPayload
    epoch: str = ""
    state: NodeState = NodeState.PENDING
    incarnation: int = 0  # bumped when the node stops: its queued beats go stale
    started_at: float = 0.0
    phase: float = 0.0


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate; every rate is per the whole fleet."""

    nodes: int
    run: str | None = None
    seed: str | int | None = None  # default: the run name
    heartbeat_interval: float = 30.0
    ramp_up: float = 0.0  # seconds over which the nodes start
    churn_per_minute: float = 0.0  # share of the fleet that stops, per minute
    crash_share: float = 0.5  # of those stops, the share that crash (no shutdown)
    restart_after: float | None = 10.0  # None: stopped nodes stay down
    bad_events_per_second: float = 0.0
    answer_requests: bool = True
    shutdown_at_end: bool = False  # every running node says NODE_SHUTDOWN at the end


@dataclass
class FleetStats:
    """Counters of what the fleet sent; read by the live view from its own thread."""

    started: int = 0
    introspections: int = 0
    heartbeats: int = 0
    graceful_stops: int = 0
    crashes: int = 0
    restarts: int = 0
    final_shutdowns: int = 0
    bad_events: int = 0
    requests: int = 0
    answers: int = 0
    messages: int = 0
    send_errors: int = 0
    max_lag: float = 0.0
    bad_by_kind: Counter = field(default_factory=Counter)

    @property
    def shutdowns(self) -> int:
        return self.graceful_stops + self.final_shutdowns


class Producer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def flush(self) -> None: ...
    async def send(
        self, topic: str, value: bytes, key: bytes | None = None
    ) -> asyncio.Future: ...


class Fleet:
    """N simulated nodes sharing one Kafka producer and one scheduler task.

    Each node has a fixed phase in the heartbeat interval (its index over N), so the
    fleet's heartbeats are spread evenly; the scheduler keeps every node's next due
    action in one heap and, on each tick, sends what is due.
    """

    def __init__(
        self,
        settings: Settings,
        config: FleetConfig,
        *,
        producer: Producer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.config = config
        self.run = config.run or uuid.uuid4().hex[:6]
        seed = config.seed if config.seed is not None else self.run
        self._rng = random.Random(f"{seed}")
        # Heartbeat metrics draw from their own stream, so how many heartbeats a run
        # sends never changes which nodes churn.
        self._metrics_rng = random.Random(f"{seed}/metrics")
        self.nodes = [
            SimNode(
                i,
                node_id_for(self.run, i),
                node_profile(i, run=self.run, rng=self._rng),
            )
            for i in range(config.nodes)
        ]
        self._by_id = {node.node_id: node.index for node in self.nodes}
        self.stats = FleetStats()
        self._schedule = Schedule()
        self._running = Members()
        # Churn stops only nodes that have heartbeated since they started: a real
        # node rarely stops within moments of starting, and a NODE_SHUTDOWN that
        # overtakes its introspection (another topic) would leave the registry with
        # a different ending than the simulator's.
        self._settled = Members()
        self._churn = Pace(config.churn_per_minute * config.nodes / 60)
        self._churn_due = 0
        self._bad = Pace(config.bad_events_per_second)
        self._clock = clock
        self._began: float | None = None
        self._last: float | None = None
        self._stopping = False
        self._owns_producer = producer is None
        # aiokafka's producer must be made inside a running loop: in __aenter__.
        self._producer: Producer | None = producer
        self._topics = {
            name: settings.topic_name(name) for name in (INTROSPECTION, HEARTBEAT)
        }
        self.elapsed = 0.0

    @property
    def prefix(self) -> str:
        """Every node id of this fleet starts with this."""
        return f"sim-{self.run}-"

    @property
    def running(self) -> int:
        return len(self._running)

    async def __aenter__(self) -> Fleet:
        if self._owns_producer:
            # Create missing topics as the registry would: a producer's first send
            # would have the broker create them with its own partition count.
            await ensure_topics(self.settings)
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                linger_ms=5,
                client_id=f"simulator-{self.run}",
            )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._producer.stop()

    # --- modes -----------------------------------------------------------------------

    async def introspect(self) -> dict[str, Any]:
        """Every node announces itself once, as on start-up (the --once mode)."""
        began = self._clock()
        for node in self.nodes:
            await self._start(node, began)
        await self._producer.flush()
        self.elapsed = self._clock() - began
        logger.debug(
            "%d nodes published their introspection to %s",
            len(self.nodes),
            self._topics[INTROSPECTION],
        )
        return self.summary()

    async def simulate(self, duration: float | None = None) -> dict[str, Any]:
        """Run until `duration` seconds have passed or stop() is called; the summary.

        Requests are read from before the first node starts until the run ends.
        """
        responder = None
        if self.config.answer_requests:
            responder = await self._start_responder()
        began = self._clock()
        try:
            while not self._stopping:
                now = self._clock()
                if duration is not None and now - began >= duration:
                    break
                await self.step(now)
                spent = self._clock() - now
                await asyncio.sleep(max(0.0, TICK_SECONDS - spent))
        finally:
            self.elapsed = self._clock() - began
            if responder is not None:
                responder.cancel()
                await asyncio.gather(responder, return_exceptions=True)
            if self.config.shutdown_at_end:
                await self._shutdown_all()
            await self._producer.flush()  # delivery reports, hence send errors, are in
        return self.summary()

    def stop(self) -> None:
        """Make simulate() return after the current tick."""
        self._stopping = True

    # --- one tick --------------------------------------------------------------------

    async def step(self, now: float) -> None:
        """Send everything due at `now`: starts, heartbeats, churn and bad events."""
        if self._began is None:
            self._begin(now)
        elapsed = now - (self._last if self._last is not None else now)
        self._last = now
        interval = self.config.heartbeat_interval
        for at, action, index, incarnation in self._schedule.pop_due(now):
            node = self.nodes[index]
            if incarnation != node.incarnation:
                continue  # queued before the node stopped
            self.stats.max_lag = max(self.stats.max_lag, now - at)
            if action is Action.BEAT:
                await self._beat(node, now)
                self._settled.add(index)
                self._schedule.push(
                    next_beat(at, now, interval), Action.BEAT, index, incarnation
                )
            else:
                await self._start(node, now)
        # Stops wait for a settled node rather than vanish, so totals stay exact.
        self._churn_due += self._churn.take(elapsed)
        while self._churn_due and self._settled:
            self._churn_due -= 1
            await self._stop(self.nodes[self._settled.pick(self._rng)], now)
        if not self._running:
            self._churn_due = 0
        for _ in range(self._bad.take(elapsed)):
            await self._send_bad()

    def _begin(self, now: float) -> None:
        self._began = now
        size = len(self.nodes)
        for node in self.nodes:
            node.phase = now + self.config.heartbeat_interval * node.index / size
            start = now + self.config.ramp_up * node.index / size
            self._schedule.push(start, Action.START, node.index, node.incarnation)

    async def _start(self, node: SimNode, now: float) -> None:
        if node.state is NodeState.RUNNING:
            return
        if node.state is NodeState.PENDING:
            self.stats.started += 1
        else:
            self.stats.restarts += 1
        node.epoch = f"{self._rng.getrandbits(48):012x}"  # a new process
        node.state = NodeState.RUNNING
        node.started_at = now
        self._running.add(node.index)
        await self._introspect(node, reason="startup")
        beat = first_beat(now, node.phase, self.config.heartbeat_interval)
        self._schedule.push(beat, Action.BEAT, node.index, node.incarnation)

    async def _stop(self, node: SimNode, now: float) -> None:
        """Churn: the node shuts down gracefully or crashes; it may come back."""
        node.incarnation += 1
        self._running.discard(node.index)
        self._settled.discard(node.index)
        if self._rng.random() < self.config.crash_share:
            node.state = NodeState.CRASHED
            self.stats.crashes += 1
        else:
            node.state = NodeState.STOPPED
            self.stats.graceful_stops += 1
            await self._say_shutdown(node)
        if self.config.restart_after is not None:
            self._schedule.push(
                now + self.config.restart_after,
                Action.START,
                node.index,
                node.incarnation,
            )

    async def _shutdown_all(self) -> None:
        for index in self._running:
            node = self.nodes[index]
            node.incarnation += 1
            self._running.discard(index)
            self._settled.discard(index)
            node.state = NodeState.STOPPED
            self.stats.final_shutdowns += 1
            await self._say_shutdown(node)

    # --- what nodes send -------------------------------------------------------------

    async def _introspect(
        self,
        node: SimNode,
        *,
        reason: str,
        correlation_id: uuid.UUID | None = None,
    ) -> None:
        payload = node.payload
        if reason != payload.reason:
            payload = payload.model_copy(update={"reason": reason})
        event = NodeIntrospection(
            node_id=node.node_id,
            node_epoch=node.epoch,
            correlation_id=correlation_id,
            payload=payload,
        )
        self.stats.introspections += 1
        await self._send(INTROSPECTION, node.node_id, event.model_dump_json().encode())

    async def _beat(self, node: SimNode, now: float) -> None:
        rng = self._metrics_rng
        event = NodeHeartbeat(
            node_id=node.node_id,
            node_epoch=node.epoch,
            payload=HeartbeatPayload(
                uptime_seconds=round(now - node.started_at, 3),
                active_operations=rng.randrange(20),
                memory_bytes=rng.randrange(200, 2000) * 1024 * 1024,
                cpu_percent=round(rng.uniform(1, 90), 1),
            ),
        )
        self.stats.heartbeats += 1
        await self._send(HEARTBEAT, node.node_id, event.model_dump_json().encode())

    async def _say_shutdown(self, node: SimNode) -> None:
        event = NodeShutdown(node_id=node.node_id, node_epoch=node.epoch)
        await self._send(HEARTBEAT, node.node_id, event.model_dump_json().encode())

    async def _send_bad(self) -> None:
        kind = self._rng.choice(BAD_EVENT_KINDS)
        node = self.nodes[self._rng.randrange(len(self.nodes))]
        topic, key, value = bad_event(kind, node.node_id, node.epoch or "none")
        self.stats.bad_events += 1
        self.stats.bad_by_kind[kind] += 1
        await self._send(topic, key, value)

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        name = self._topics.get(topic) or self.settings.topic_name(topic)
        self.stats.messages += 1
        try:
            # Returns once the message is in a batch; the delivery report comes later.
            delivery = await self._producer.send(name, value, key=key.encode())
        except KafkaError as exc:  # the buffer stayed full, or the topic is unknown
            self._send_failed(exc)
            return
        delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Future) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self._send_failed(delivery.exception())

    def _send_failed(self, exc: BaseException) -> None:
        self.stats.send_errors += 1
        if self.stats.send_errors == 1 or self.stats.send_errors % 1000 == 0:
            logger.warning("send failed (%d so far): %r", self.stats.send_errors, exc)

    # --- REQUEST_INTROSPECTION -------------------------------------------------------

    async def answer(self, request: RequestIntrospection) -> int:
        """Introspect again every running node the request is for; how many did."""
        self.stats.requests += 1
        target = request.payload.target_node_id
        if target is not None:
            index = self._by_id.get(target)
            candidates = [] if index is None else [index]
        else:
            candidates = list(self._running)
        answered = 0
        for index in candidates:
            node = self.nodes[index]
            if node.state is NodeState.RUNNING and request.is_for(
                node.node_id, node.payload.node_type
            ):
                await self._introspect(
                    node, reason="requested", correlation_id=request.event_id
                )
                answered += 1
        self.stats.answers += answered
        return answered

    async def _start_responder(self) -> asyncio.Task:
        """One consumer for the whole fleet, reading every partition from now on."""
        topic = self.settings.topic_name(REQUESTS)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"simulator-{self.run}-requests",
        )
        # The producer waits for the topic's metadata (ensure_topics created it).
        partitions = await self._producer.partitions_for(topic)
        await consumer.start()
        # Assign and pin the end offsets before the first event goes out: a
        # subscription would find its partitions later, and miss early requests.
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for partition in assigned:
            await consumer.position(partition)
        return asyncio.create_task(self._answer_requests(consumer))

    async def _answer_requests(self, consumer: AIOKafkaConsumer) -> None:
        try:
            async for message in consumer:
                try:
                    request = RequestIntrospection.model_validate_json(message.value)
                except ValidationError:
                    continue  # not a request for nodes
                answered = await self.answer(request)
                logger.debug(
                    "request %s: %d node(s) answered", request.event_id, answered
                )
        finally:
            await consumer.stop()

    # --- results ---------------------------------------------------------------------

    def states(self) -> dict[str, tuple[str, str]]:
        """Each node's state and newest epoch, by node id."""
        return {node.node_id: (node.state.value, node.epoch) for node in self.nodes}

    def summary(self) -> dict[str, Any]:
        """What the run did and where it left the fleet; JSON-ready."""
        stats = self.stats
        by_state = Counter(node.state for node in self.nodes)
        seconds = self.elapsed
        return {
            "run": self.run,
            "prefix": self.prefix,
            "nodes": len(self.nodes),
            "seconds": round(seconds, 3),
            "heartbeat_interval": self.config.heartbeat_interval,
            "running": by_state[NodeState.RUNNING],
            "stopped": by_state[NodeState.STOPPED],
            "crashed": by_state[NodeState.CRASHED],
            "pending": by_state[NodeState.PENDING],
            "introspections": stats.introspections,
            "heartbeats": stats.heartbeats,
            "shutdowns": stats.shutdowns,
            "graceful_stops": stats.graceful_stops,
            "final_shutdowns": stats.final_shutdowns,
            "crashes": stats.crashes,
            "restarts": stats.restarts,
            "bad_events": stats.bad_events,
            "bad_events_by_kind": dict(sorted(stats.bad_by_kind.items())),
            "requests": stats.requests,
            "answers": stats.answers,
            "messages": stats.messages,
            "send_errors": stats.send_errors,
            "messages_per_second": round(stats.messages / seconds, 1) if seconds else 0,
            "max_lag_seconds": round(stats.max_lag, 3),
        }


# --- what the terminal shows --------------------------------------------------------


class FleetView:
    """Live counts of a running fleet, for rich.live.Live (rendered on each refresh)."""

    def __init__(self, fleet: Fleet, duration: float | None = None) -> None:
        self.fleet = fleet
        self.duration = duration
        self._began = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque(maxlen=50)

    def rate(self) -> float:
        """Messages per second over the last few seconds."""
        now = time.monotonic()
        self._samples.append((now, self.fleet.stats.messages))
        while len(self._samples) > 2 and now - self._samples[0][0] > 5:
            self._samples.popleft()
        (t0, m0), (t1, m1) = self._samples[0], self._samples[-1]
        return (m1 - m0) / (t1 - t0) if t1 > t0 else 0.0

    def __rich__(self) -> Table:
        fleet, stats = self.fleet, self.fleet.stats
        elapsed = time.monotonic() - self._began
        size = len(fleet.nodes)
        until = f"of {self.duration:.0f}s" if self.duration else "(Ctrl-C stops)"
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column()
        table.add_row(f"fleet {fleet.prefix}*", f"{elapsed:.0f}s", until)
        table.add_row(
            "nodes started",
            f"{stats.started:,}",
            ProgressBar(total=size, completed=stats.started, width=30),
        )
        down = stats.started - fleet.running  # started once, not running now
        table.add_row("nodes alive", f"{fleet.running:,}", f"{down:,} down")
        table.add_row("introspections", f"{stats.introspections:,}", "")
        table.add_row("heartbeats sent", f"{stats.heartbeats:,}", "")
        table.add_row("shutdowns", f"{stats.shutdowns:,}", "")
        table.add_row("crashes", f"{stats.crashes:,}", f"restarts {stats.restarts:,}")
        table.add_row("bad events", f"{stats.bad_events:,}", "")
        table.add_row(
            "requests answered",
            f"{stats.answers:,}",
            f"in {stats.requests:,} request(s)",
        )
        table.add_row("send errors", f"{stats.send_errors:,}", "")
        table.add_row("rate", f"{self.rate():,.0f}", "messages/s")
        return table


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run summary as a two-column table."""
    table = Table(title=f"fleet {summary['prefix']}*", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("nodes", summary["nodes"]),
        ("seconds", f"{summary['seconds']:.1f}"),
        ("running at the end", summary["running"]),
        ("stopped at the end", summary["stopped"]),
        ("crashed at the end", summary["crashed"]),
        ("introspections", summary["introspections"]),
        ("heartbeats", summary["heartbeats"]),
        ("shutdowns", summary["shutdowns"]),
        ("  of them at the end", summary["final_shutdowns"]),
        ("crashes", summary["crashes"]),
        ("restarts", summary["restarts"]),
        ("bad events", summary["bad_events"]),
        ("requests / answers", f"{summary['requests']} / {summary['answers']}"),
        ("messages", summary["messages"]),
        ("messages/s", f"{summary['messages_per_second']:,.1f}"),
        ("send errors", summary["send_errors"]),
        ("max scheduler lag", f"{summary['max_lag_seconds'] * 1000:.0f} ms"),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else value)
    return table
