"""The node client: an asyncio library a service embeds to join the registry."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import random
import re
import socket
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from registry_app.events import (
    NODE_ID_PATTERN,
    Capability,
    HeartbeatPayload,
    IntrospectionPayload,
    NodeDeregistered,
    NodeExpired,
    NodeHeartbeat,
    NodeIntrospection,
    NodeRegistered,
    NodeShutdown,
    RegistrationFailed,
    RequestIntrospection,
    ShutdownPayload,
    registry_event_adapter,
)
from registry_app.topic_names import HEARTBEAT as HEARTBEAT_TOPIC
from registry_app.topic_names import INTROSPECTION as INTROSPECTION_TOPIC
from registry_app.topic_names import REGISTRY_EVENTS as REGISTRY_EVENTS_TOPIC
from registry_app.topic_names import REQUESTS as REQUESTS_TOPIC

SCHEME_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

logger = logging.getLogger(__name__)

CapabilitySource = (
    Iterable[Capability | Mapping[str, Any] | str]
    | Mapping[str, Any]
    | BaseModel
    | Callable[[], Any]
    | None
)


# --- capabilities ---------------------------------------------------------------------


def normalize_capabilities(source: CapabilitySource) -> list[Capability]:
    """The capabilities a node offers, from any of the accepted forms.

    - a list of `Capability`, of dicts shaped like one, or of names;
    - a mapping of name to details (see `_from_details`);
    - a pydantic model: each field is a capability named after it (its alias if
      any), its value the details, its `Field(description=...)` the description;
    - a callable returning any of the above, called once per extraction.
    """
    if callable(source) and not isinstance(source, BaseModel | Mapping | type):
        source = source()
    if source is None:
        return []
    if isinstance(source, Capability):
        found: list[Capability | None] = [source]
    elif isinstance(source, BaseModel):
        found = _from_model(source)
    elif isinstance(source, Mapping):
        found = [_from_details(name, details) for name, details in source.items()]
    elif isinstance(source, str | bytes) or not isinstance(source, Iterable):
        raise TypeError(
            "capabilities must be a list, a mapping, a pydantic model or a callable, "
            f"not {type(source).__name__}"
        )
    else:
        found = [_from_item(item) for item in source]
    capabilities = [c for c in found if c is not None]
    names = [c.name for c in capabilities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        # The registry keeps one row per (node, tool): a name twice is ambiguous.
        raise ValueError(f"capability names offered twice: {', '.join(duplicates)}")
    return capabilities


def _from_item(item: Any) -> Capability:
    if isinstance(item, Capability):
        return item
    if isinstance(item, str):
        return Capability(name=item)
    if isinstance(item, Mapping):
        return Capability.model_validate(dict(item))
    raise TypeError(
        f"a capability in a list must be a Capability, a dict or a name, "
        f"not {type(item).__name__}"
    )


def _from_details(
    name: str, details: Any, description: str | None = None
) -> Capability | None:
    """One named capability: True offers it bare, False or None leaves it out, a
    string is its version, a mapping or model gives `version`, `description` and
    `attributes` (every other key is an attribute too)."""
    if details is False or details is None:
        return None  # a feature switched off, or an optional one left unset
    if details is True:
        return Capability(name=name, description=description)
    if isinstance(details, Capability):
        return details.model_copy(update={"name": name})
    if isinstance(details, BaseModel):
        details = details.model_dump(mode="json", by_alias=True)
    if isinstance(details, str):
        return Capability(name=name, version=details, description=description)
    if isinstance(details, Mapping):
        fields = dict(details)
        version = fields.pop("version", None)
        described = fields.pop("description", description)
        attributes = {**dict(fields.pop("attributes", None) or {}), **fields}
        return Capability(
            name=name,
            version=None if version is None else str(version),
            description=described,
            attributes=attributes,
        )
    raise TypeError(
        f"capability {name!r}: details must be a bool, None, a version string, a "
        f"mapping or a pydantic model, not {type(details).__name__}"
    )


def _from_model(model: BaseModel) -> list[Capability | None]:
    found: list[Capability | None] = []
    for field_name, field in type(model).model_fields.items():
        name = field.serialization_alias or field.alias or field_name
        found.append(_from_details(name, getattr(model, field_name), field.description))
    for name, value in (model.model_extra or {}).items():
        found.append(_from_details(name, value))
    return found


# --- identity and address -------------------------------------------------------------


def default_node_id(hostname: str | None = None) -> str:
    """`<hostname>-<8 hex>`: unique per process, recognisable in the registry."""
    base = re.sub(r"[^A-Za-z0-9._:-]", "-", hostname or socket.gethostname())
    base = base.lstrip("._:-")[:100] or "node"
    return f"{base}-{uuid.uuid4().hex[:8]}"


def discover_host(bootstrap_servers: str) -> str:
    """The local address this machine uses to reach the first bootstrap server.

    A UDP "connect" only picks a route, it sends nothing. Falls back to the hostname
    when there is no route (or the broker name does not resolve).
    """
    first = bootstrap_servers.split(",")[0].strip()
    broker, _, port = first.rpartition(":")
    if not broker:
        broker, port = first, "9092"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            broker.strip("[]"), int(port), type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            local = probe.getsockname()[0]
    except (OSError, ValueError):
        return socket.gethostname()
    return local if local not in ("", "0.0.0.0", "::") else socket.gethostname()


def port_from_endpoints(endpoints: Mapping[str, str]) -> int | None:
    """The port of the first endpoint URL: explicit, or its scheme's default."""
    for url in endpoints.values():
        parts = urlsplit(url)
        try:
            explicit = parts.port
        except ValueError:
            return None
        return explicit if explicit is not None else SCHEME_PORTS.get(parts.scheme)
    return None


def partition_for(
    key: bytes, partitions: Iterable[int], partitioner: Any = None
) -> int:
    """The partition a keyed message lands on: aiokafka's default partitioner
    (murmur2, as Kafka's Java client) unless the producer was given another."""
    ordered = sorted(partitions)
    return (partitioner or DefaultPartitioner())(key, ordered, ordered)


# --- heartbeat schedule ---------------------------------------------------------------


class HeartbeatSchedule:
    """Beat k is due at start + k * interval + a jitter drawn for that beat alone.

    The schedule never depends on when a beat was sent, so slow sends cause no
    drift; beats whose slot has passed are skipped, never sent in a burst.
    """

    def __init__(
        self,
        start: float,
        interval: float,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter is a fraction of the interval, in [0, 1)")
        self.start = start
        self.interval = interval
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.last = 0  # the most recent beat number handed out

    def nominal(self, beat: int) -> float:
        return self.start + beat * self.interval

    def next_beat(self, now: float) -> tuple[int, float, int]:
        """(beat number, due time, beats skipped) of the next beat after `now`."""
        current = math.floor((now - self.start) / self.interval) + 1
        beat = max(self.last + 1, current)
        skipped = beat - self.last - 1
        self.last = beat
        spread = self.jitter * self.interval / 2
        return beat, self.nominal(beat) + self.rng.uniform(-spread, spread), skipped


# --- the client -----------------------------------------------------------------------


class ConnectionState(Enum):
    STARTING = "starting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"
    WAITING_FOR_TOPICS = "waiting-for-topics"
    STOPPED = "stopped"


class _TopicsMissing(Exception):
    """Kafka answers, but the registry has not created its topics yet."""


class NodeClient:
    """One node's link to the registry: introspection, heartbeats, requests, shutdown.

    Use as `async with NodeClient(...) as node:` or call `start()` and `stop()`.
    Kafka being down never makes `start()` raise nor blocks the caller's loop: the
    client connects in the background, with backoff, and catches up once it can.
    """

    def __init__(
        self,
        *,
        node_type: str,
        node_version: str,
        node_id: str | None = None,
        capabilities: CapabilitySource = None,
        endpoints: Mapping[str, str] | None = None,
        host: str | None = None,
        port: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        bootstrap_servers: str = "127.0.0.1:9092",
        topic_prefix: str = "registry",
        heartbeat_interval: float = 30.0,
        jitter: float = 0.1,
        connect_timeout: float = 5.0,
        send_timeout: float = 10.0,
        max_backoff: float = 30.0,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.node_id = node_id or default_node_id()
        if not re.fullmatch(NODE_ID_PATTERN, self.node_id):
            raise ValueError(
                f"node id {self.node_id!r} does not match {NODE_ID_PATTERN}"
            )
        self.node_type = node_type
        self.node_version = node_version
        self.endpoints = dict(endpoints or {})
        self.metadata = dict(metadata or {})
        self.tags = list(tags)
        self.bootstrap_servers = bootstrap_servers
        self.host = host or discover_host(bootstrap_servers)
        found_port = port if port is not None else port_from_endpoints(self.endpoints)
        if found_port is None:
            raise ValueError(
                "port is required: pass port= or an endpoint URL with a port"
            )
        self.port = found_port
        self.heartbeat_interval = heartbeat_interval
        self.jitter = jitter
        HeartbeatSchedule(0.0, heartbeat_interval, jitter)  # validates both
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.max_backoff = max_backoff
        self.kafka_options = dict(kafka_options or {})
        _check_kafka_options(self.kafka_options)
        self.topics = {
            name: f"{topic_prefix}.{name}"
            for name in (
                INTROSPECTION_TOPIC,
                HEARTBEAT_TOPIC,
                REGISTRY_EVENTS_TOPIC,
                REQUESTS_TOPIC,
            )
        }
        self._key = self.node_id.encode()
        self._capability_source = capabilities
        self._capabilities: list[Capability] | None = None
        self.active_operations = 0  # the host may update it; sent with each heartbeat

        self.node_epoch: str | None = None
        self.state = ConnectionState.STOPPED
        self.registration: NodeRegistered | None = None
        self.last_introspection: NodeIntrospection | None = None
        self.last_shutdown: NodeShutdown | None = None
        self.beats_sent = 0
        self.beats_skipped = 0
        self.requests_received = 0
        self.requests_answered = 0

        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task] = []
        self._announced = asyncio.Event()
        self._registered = asyncio.Event()
        self._introspection_ids: deque[uuid.UUID] = deque(maxlen=64)
        self._owed: str | None = None  # reason of an introspection not sent yet
        self._partition: int | None = None  # where our events land, and answers
        self._started_at = 0.0

    # --- public API -------------------------------------------------------------------

    @property
    def capabilities(self) -> list[Capability]:
        """The capabilities, extracted from their source once and then cached."""
        if self._capabilities is None:
            self._capabilities = normalize_capabilities(self._capability_source)
        return self._capabilities

    @property
    def running(self) -> bool:
        return self.state is not ConnectionState.STOPPED

    async def start(self) -> None:
        """Start in the background; wait up to `connect_timeout` for the first
        introspection to be published. Raises only for invalid node details."""
        if self.running:
            raise RuntimeError(f"node client {self.node_id} is already running")
        self._payload("startup")  # invalid details fail here, not in a task
        loop = asyncio.get_running_loop()
        self.node_epoch = uuid.uuid4().hex
        self._started_at = loop.time()
        self._announced.clear()
        self._registered.clear()
        self.registration = None
        self.last_introspection = self.last_shutdown = None
        self._introspection_ids.clear()
        self._owed = "startup"
        self.state = ConnectionState.STARTING
        schedule = HeartbeatSchedule(
            self._started_at, self.heartbeat_interval, self.jitter
        )
        self._tasks = [
            asyncio.create_task(self._connect(), name=f"{self.node_id}-connect"),
            asyncio.create_task(
                self._heartbeats(schedule), name=f"{self.node_id}-heartbeat"
            ),
        ]
        if self.connect_timeout > 0:
            await self.wait_announced(self.connect_timeout)

    async def stop(self, reason: str = "graceful") -> None:
        """Stop answering, publish NODE_SHUTDOWN if connected, close the clients.

        Prompt when Kafka was never reached; when it went away after connecting,
        the shutdown and the final flush each give up after `send_timeout`.
        """
        if not self.running:
            return
        # Stop the tasks first: an introspection answered after the shutdown
        # would only be noise.
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._producer is not None:
            assert self.node_epoch is not None
            shutdown = NodeShutdown(
                node_id=self.node_id,
                node_epoch=self.node_epoch,
                payload=ShutdownPayload(reason=reason),
            )
            if await self._publish(HEARTBEAT_TOPIC, shutdown):
                self.last_shutdown = shutdown
                logger.info("node %s: shutdown published", self.node_id)
        await self._close_clients()
        self._announced.clear()
        self.state = ConnectionState.STOPPED

    async def __aenter__(self) -> NodeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # The waits take a timeout, as callers of a wait expect (ASYNC109 prefers not).
    async def wait_announced(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> bool:
        """True once the startup introspection is on Kafka; False after `timeout`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._announced.wait(), timeout)
        return self._announced.is_set()

    async def wait_registered(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> NodeRegistered:
        """The registry's NODE_REGISTERED for this process's introspection.

        Raises TimeoutError after `timeout` seconds. Heartbeats carry on meanwhile:
        the registry events are read by a task of their own.
        """
        if not self.running:
            raise RuntimeError(f"node client {self.node_id} is not running")
        async with asyncio.timeout(timeout):
            # An expiry may clear it again before this task resumes: wait again.
            while self.registration is None:
                await self._registered.wait()
        return self.registration

    async def refresh_capabilities(
        self, capabilities: CapabilitySource | None = None
    ) -> bool:
        """Extract the capabilities again (from a new source if one is given) and
        publish a NODE_INTROSPECTION with reason "refresh". False if it could not be
        sent now; the next heartbeat then sends it."""
        source = self._capability_source if capabilities is None else capabilities
        fresh = normalize_capabilities(source)
        previous = self._capabilities
        self._capabilities = fresh
        try:
            self._payload("refresh")
        except ValueError:
            self._capabilities = previous  # keep announcing what was valid
            raise
        self._capability_source = source
        if await self.introspect("refresh"):
            return True
        self._owed = self._owed or "refresh"  # the next heartbeat sends it
        return False

    async def introspect(
        self, reason: str = "refresh", correlation_id: uuid.UUID | None = None
    ) -> bool:
        """Publish a NODE_INTROSPECTION now; False if Kafka did not take it."""
        if self.node_epoch is None or self._producer is None:
            return False
        event = NodeIntrospection(
            node_id=self.node_id,
            node_epoch=self.node_epoch,
            correlation_id=correlation_id,
            payload=self._payload(reason),
        )
        # Remember it before sending: the registry may answer before send returns.
        self._introspection_ids.append(event.event_id)
        if not await self._publish(INTROSPECTION_TOPIC, event):
            return False
        self.last_introspection = event
        return True

    # --- events -----------------------------------------------------------------------

    def _payload(self, reason: str) -> IntrospectionPayload:
        payload = IntrospectionPayload(
            node_type=self.node_type,
            node_version=self.node_version,
            host=self.host,
            port=self.port,
            capabilities=self.capabilities,
            endpoints=self.endpoints,
            metadata=self.metadata,
            tags=self.tags,
            reason=reason,
        )
        payload.model_dump_json()  # metadata must be JSON
        return payload

    async def _publish(self, topic: str, event: BaseModel) -> bool:
        """Send one event keyed by node id; track reachability from the outcome."""
        producer = self._producer
        if producer is None:
            return False
        try:
            sent = await asyncio.wait_for(
                producer.send_and_wait(
                    self.topics[topic], event.model_dump_json().encode(), key=self._key
                ),
                self.send_timeout,
            )
        except Exception as error:
            self._set_state(ConnectionState.UNREACHABLE, error)
            return False
        self._set_state(ConnectionState.CONNECTED)
        landed = getattr(sent, "partition", None)
        if topic == INTROSPECTION_TOPIC and landed not in (None, self._partition):
            # The registry answers on the partition our events land on.
            logger.warning(
                "node %s: introspection landed on partition %d, not %s as computed; "
                "is the partitioner deterministic? wait_registered may not see the "
                "registry's answer",
                self.node_id,
                landed,
                self._partition,
            )
            self._partition = landed  # warn once, not with every introspection
        return True

    def _set_state(
        self, state: ConnectionState, error: BaseException | None = None
    ) -> None:
        """Log each change of state once, however many attempts repeat it."""
        if state is self.state:
            return
        self.state = state
        if state is ConnectionState.CONNECTED:
            logger.info(
                "node %s: connected to Kafka at %s",
                self.node_id,
                self.bootstrap_servers,
            )
        elif state is ConnectionState.WAITING_FOR_TOPICS:
            logger.warning(
                "node %s: Kafka at %s has no registry topics yet (%s); "
                "waiting for the registry to create them",
                self.node_id,
                self.bootstrap_servers,
                error,
            )
        elif state is ConnectionState.UNREACHABLE:
            logger.warning(
                "node %s: Kafka at %s unreachable (%s); retrying, heartbeats due "
                "meanwhile are skipped",
                self.node_id,
                self.bootstrap_servers,
                error or "no answer",
            )

    # --- background tasks -------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect until it works (backoff), then announce the node and read."""

        def failed(retry_state: RetryCallState) -> None:
            assert retry_state.outcome is not None
            error = retry_state.outcome.exception()
            missing = isinstance(error, _TopicsMissing)
            self._set_state(
                ConnectionState.WAITING_FOR_TOPICS
                if missing
                else ConnectionState.UNREACHABLE,
                error,
            )
            logger.debug(
                "node %s: connect attempt %d failed: %r",
                self.node_id,
                retry_state.attempt_number,
                error,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.5, max=self.max_backoff)
            + wait_random(0, 0.5),
            before_sleep=failed,
            reraise=True,
        )
        self._producer, self._consumer = await retrying(self._connect_once)
        await self._pay_owed_introspection()
        # The consumer's positions are pinned already: reading later loses nothing.
        self._tasks.append(
            asyncio.create_task(self._consume(), name=f"{self.node_id}-consume")
        )

    async def _pay_owed_introspection(self) -> bool:
        """Send the introspection still owed (at start, or a failed refresh)."""
        reason = self._owed
        if reason is None:
            return True
        if not await self.introspect(reason):
            return False
        self._owed = None
        self._announced.set()
        return True

    async def _connect_once(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        common = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": f"node-{self.node_id}",
        }
        producer = AIOKafkaProducer(
            **{
                **common,
                "linger_ms": 5,
                # Give up on a message when we do: nothing stale waits in the buffer.
                "request_timeout_ms": int(self.send_timeout * 1000),
                **_options_for(AIOKafkaProducer, self.kafka_options),
            }
        )
        consumer = AIOKafkaConsumer(
            **{
                **common,
                **_options_for(AIOKafkaConsumer, self.kafka_options),
                "group_id": None,  # every node reads every request: no group
                "enable_auto_commit": False,
                "auto_offset_reset": "latest",
            }
        )
        try:
            await producer.start()
            await consumer.start()
            existing = await consumer.topics()
            missing = sorted(set(self.topics.values()) - existing)
            if missing:
                raise _TopicsMissing(", ".join(missing))
            requests = self.topics[REQUESTS_TOPIC]
            events = self.topics[REGISTRY_EVENTS_TOPIC]
            # Requests may be keyed by anything: all partitions. Registry events
            # about this node are keyed by its id: one partition. (The topics
            # exist, so asking the producer for them creates nothing.)
            assigned = [
                TopicPartition(requests, p)
                for p in sorted(await producer.partitions_for(requests))
            ]
            # The registry announces on the partition the node's events arrive on.
            self._partition = partition_for(
                self._key,
                await producer.partitions_for(self.topics[INTROSPECTION_TOPIC]),
                self.kafka_options.get("partitioner"),
            )
            assigned.append(TopicPartition(events, self._partition))
            consumer.assign(assigned)
            # Pin "latest" now, before the introspection goes out, so the answer
            # to it is read however soon it comes.
            await consumer.seek_to_end(*assigned)
            for partition in assigned:
                await consumer.position(partition)
        except BaseException:
            await _stop_quietly(consumer, producer)
            raise
        return producer, consumer

    async def _heartbeats(self, schedule: HeartbeatSchedule) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, due, skipped = schedule.next_beat(loop.time())
            self.beats_skipped += skipped
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self._producer is None:
                self.beats_skipped += 1  # not connected yet: skip, never queue
                continue
            try:
                sent = await self._beat(loop.time() - self._started_at)
            except Exception:
                # A bug must not end the heartbeats: the node would expire.
                logger.exception("node %s: heartbeat failed", self.node_id)
                sent = False
            if sent:
                self.beats_sent += 1
            else:
                self.beats_skipped += 1

    async def _beat(self, uptime: float) -> bool:
        if not await self._pay_owed_introspection():
            return False  # the registry must know the node first
        assert self.node_epoch is not None
        beat = NodeHeartbeat(
            node_id=self.node_id,
            node_epoch=self.node_epoch,
            payload=HeartbeatPayload(
                uptime_seconds=max(0.0, uptime),
                active_operations=max(0, int(self.active_operations)),
            ),
        )
        return await self._publish(HEARTBEAT_TOPIC, beat)

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        requests = self.topics[REQUESTS_TOPIC]
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except Exception as error:
                logger.debug("node %s: fetch failed: %r", self.node_id, error)
                await asyncio.sleep(1.0)
                continue
            for partition, messages in batches.items():
                for message in messages:
                    try:
                        if partition.topic == requests:
                            await self._on_request(message.value)
                        elif message.key == self._key:
                            self._on_registry_event(message.value)
                    except Exception:
                        # One bad message must not stop the answers to the next.
                        logger.exception(
                            "node %s: could not handle %s[%d]@%d",
                            self.node_id,
                            message.topic,
                            message.partition,
                            message.offset,
                        )

    async def _on_request(self, value: bytes | None) -> None:
        try:
            request = RequestIntrospection.model_validate_json(value or b"")
        except ValidationError:
            logger.debug("node %s: ignored an unreadable request", self.node_id)
            return
        self.requests_received += 1
        if not request.is_for(self.node_id, self.node_type):
            return
        if await self.introspect("requested", correlation_id=request.event_id):
            self.requests_answered += 1
            logger.info(
                "node %s: introspected on request (%s)",
                self.node_id,
                request.payload.reason,
            )

    def _on_registry_event(self, value: bytes | None) -> None:
        try:
            event = registry_event_adapter.validate_json(value or b"")
        except ValidationError:
            logger.debug("node %s: ignored an unreadable registry event", self.node_id)
            return
        ours = event.correlation_id in self._introspection_ids
        if isinstance(event, NodeRegistered):
            if not ours:
                return  # the answer to another process's introspection
            first = self.registration is None
            self.registration = event
            self._registered.set()
            if first:
                logger.info(
                    "node %s: registered (generation %d)",
                    self.node_id,
                    event.payload.generation,
                )
        elif isinstance(event, NodeExpired | NodeDeregistered):
            current = self.registration
            if (
                current is None
                or event.payload.generation <= current.payload.generation
            ):
                return  # about an older registration than ours
            self.registration = None
            self._registered.clear()
            logger.warning(
                "node %s: the registry reports it %s",
                self.node_id,
                "expired" if isinstance(event, NodeExpired) else "deregistered",
            )
        elif isinstance(event, RegistrationFailed) and ours:
            logger.error(
                "node %s: the registry refused the registration (%s: %s)",
                self.node_id,
                event.payload.backend,
                event.payload.detail,
            )

    async def _close_clients(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        await _stop_quietly(consumer, producer)


# Set by the client itself: options may not change them.
_FIXED_OPTIONS = frozenset(
    {
        "bootstrap_servers",
        "loop",
        "group_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "key_serializer",
        "value_serializer",
        "key_deserializer",
        "value_deserializer",
    }
)


def _options_for(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options this aiokafka class accepts: one mapping serves both clients."""
    accepted = inspect.signature(cls).parameters
    return {k: v for k, v in options.items() if k in accepted}


def _check_kafka_options(options: Mapping[str, Any]) -> None:
    fixed = sorted(_FIXED_OPTIONS & set(options))
    if fixed:
        raise ValueError(f"kafka_options may not set {', '.join(fixed)}")
    known = set(inspect.signature(AIOKafkaProducer).parameters)
    known |= set(inspect.signature(AIOKafkaConsumer).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"kafka_options unknown to aiokafka: {', '.join(unknown)}")


async def _stop_quietly(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    for client in clients:
        if client is None:
            continue
        try:
            await client.stop()
        except Exception as error:
            logger.debug("closing %s failed: %r", type(client).__name__, error)
