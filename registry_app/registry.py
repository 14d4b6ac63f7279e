"""The registry worker: topics, tables, agents, expiry ticks and the backend writer."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import EventT

from registry_app import lifecycle
from registry_app.announcements import announcement, past_tense, registration_failed
from registry_app.backends.consul import ConsulCatalog
from registry_app.backends.postgres import PostgresRegistry
from registry_app.dead_letter import dead_letter_value
from registry_app.decoding import InvalidEvent, decode_node_event
from registry_app.events import (
    NodeHeartbeat,
    NodeIntrospection,
    NodeShutdown,
    RegistrationFailed,
    registry_event_adapter,
)
from registry_app.lifecycle import HeartbeatVerdict
from registry_app.liveness import ExpiryIndex, MassExpiryGuard
from registry_app.metrics import RegistryMetrics, install_metrics_view
from registry_app.requests import IntrospectionRequests
from registry_app.settings import Settings
from registry_app.tables.liveness import Liveness, create_liveness_table
from registry_app.tables.nodes import (
    NodeState,
    create_node_table,
    dump_state,
    load_state,
)
from registry_app.topics import RegistryTopics, create_topics, ensure_topics
from registry_app.web import install_views
from registry_app.writer import (
    PendingRegistration,
    RegistrationOutcome,
    RegistrationWriter,
)

logger = logging.getLogger(__name__)

# A tick is the registry's own clock event on a heartbeat partition: processed in order
# with the heartbeats, it tells the partition "time has reached T" (see on_tick).
TICK_HEADER = "registry-tick"


class RegistryApp(faust.App):
    """Faust's app, with one step before anything subscribes: make the topics exist."""

    before_subscribing: Callable[[], Awaitable[None]] | None = None

    async def on_first_start(self) -> None:
        await super().on_first_start()
        if self.before_subscribing is not None:
            await self.before_subscribing()


class Registry:
    """Everything one worker runs, built from settings; `app` is the Faust app."""

    def __init__(
        self, settings: Settings, *, backends: Sequence[Any] | None = None
    ) -> None:
        self.settings = settings
        self.app = RegistryApp(
            settings.consumer_group,
            broker=settings.kafka_broker_urls,
            store=settings.store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication_factor,
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_enabled=True,
            autodiscover=False,
            # Our events are JSON decoded by our own validators, not Faust's codecs.
            key_serializer="raw",
            value_serializer="raw",
        )
        self.app.before_subscribing = lambda: ensure_topics(settings)
        self.topics: RegistryTopics = create_topics(self.app, settings)
        self.nodes = create_node_table(self.app, settings)
        self.liveness = create_liveness_table(self.app, settings)
        self.metrics = RegistryMetrics()

        self.writer = RegistrationWriter(
            backends
            if backends is not None
            else [ConsulCatalog(settings), PostgresRegistry(settings)],
            on_registered=self.on_registered,
            on_refused=self.on_refused,
            heartbeat_flush_seconds=settings.heartbeat_flush_seconds,
            metrics=self.metrics,
        )
        self.app.add_dependency(self.writer)

        self.expiry_index = ExpiryIndex()
        self.expiry_guard = MassExpiryGuard(
            ratio=settings.expiry_guard_ratio,
            min_nodes=settings.expiry_guard_min_nodes,
            hold_seconds=settings.expiry_guard_hold_seconds,
        )
        self.requests = IntrospectionRequests(
            self.topics.requests, settings.reintrospection_min_interval_seconds
        )

        self.nodes.on_recover(self.on_nodes_recovered)
        self.liveness.on_recover(self.on_liveness_recovered)
        self.app.on_partitions_revoked.connect(self.on_partitions_revoked)
        self.app.timer(settings.expiry_tick_seconds)(self.publish_ticks)
        self._install_agents()
        install_metrics_view(self)
        install_views(self)

    # --- agents ----------------------------------------------------------------------

    def _install_agents(self) -> None:
        app, topics = self.app, self.topics

        @app.agent(topics.introspection, name="registry.introspection")
        async def introspection_agent(stream: faust.StreamT) -> None:
            """Accept each node's introspection into the table and queue its writes."""
            async for event in stream.events():
                await self.on_introspection_message(event)
                self.metrics.processed(event.message)

        @app.agent(topics.heartbeat, name="registry.liveness")
        async def liveness_agent(stream: faust.StreamT) -> None:
            """Heartbeats, shutdowns and ticks: keep deadlines, expire the silent."""
            async for event in stream.events():
                await self.on_liveness_message(event)
                self.metrics.processed(event.message)

        @app.agent(topics.registry_events, name="registry.confirmations")
        async def confirmation_agent(stream: faust.StreamT) -> None:
            """Mark nodes in sync once the writer confirmed every backend."""
            async for event in stream.events():
                self.on_registry_event_message(event)
                self.metrics.processed(event.message)

        self.introspection_agent = introspection_agent
        self.liveness_agent = liveness_agent
        self.confirmation_agent = confirmation_agent

    async def on_introspection_message(self, event: EventT) -> None:
        node_event = await self._decode(event, NodeIntrospection)
        if node_event is None:
            return
        node_id = node_event.node_id

        state = load_state(self.nodes.get(node_id))
        new_state = lifecycle.apply_introspection(state, node_event)
        if new_state is not None:
            self._store(
                new_state,
                partition=event.message.partition,
                correlation_id=node_event.event_id,
            )
            logger.debug(
                "node %s: introspection accepted (generation %d)",
                node_id,
                new_state.generation,
            )
        current = new_state or state
        if current is not None and current.status.alive:
            # An introspection is a sign of life too.
            self._refresh_liveness(
                node_id,
                event.message.partition,
                node_event.node_epoch,
                node_event.event_time,
            )

    async def on_liveness_message(self, event: EventT) -> None:
        message = event.message
        if _is_tick(message):
            tick_time = json.loads(message.value)["tick_time"]
            lag = self._lag_behind(message)
            if lag > self.settings.expiry_max_lag_messages:
                logger.info(
                    "partition %d: %d messages behind, expiry waits for a later tick",
                    message.partition,
                    lag,
                )
                return
            await self.on_tick(message.partition, tick_time)
            return

        node_event = await self._decode(event, (NodeHeartbeat, NodeShutdown))
        if node_event is None:
            return
        node_id = node_event.node_id
        state = load_state(self.nodes.get(node_id))

        if isinstance(node_event, NodeShutdown):
            # Known gap: a shutdown read before its own introspection (they travel on
            # two topics) finds no node and is dropped; the node then expires instead.
            new_state = lifecycle.apply_shutdown(state, node_event)
            if new_state is not None:
                self._store(
                    new_state,
                    partition=message.partition,
                    correlation_id=node_event.event_id,
                )
                self._forget_liveness(node_id)
                logger.info("node %s: shut down, deregistering", node_id)
            return

        liveness = Liveness.load(self.liveness.get(node_id))
        verdict = lifecycle.judge_heartbeat(state, liveness, node_event)
        self.metrics.heartbeats.labels(verdict.value).inc()
        if verdict in (HeartbeatVerdict.ALIVE, HeartbeatVerdict.NEW_EPOCH):
            self._refresh_liveness(
                node_id,
                message.partition,
                node_event.node_epoch,
                node_event.event_time,
                current=liveness,
            )
            self.writer.note_heartbeat(node_id, node_event.event_time.timestamp())
        if verdict in (HeartbeatVerdict.UNKNOWN, HeartbeatVerdict.NEW_EPOCH):
            await self.requests.ask_node(node_id, reason=verdict.value)

    def on_registry_event_message(self, event: EventT) -> None:
        try:
            announced = registry_event_adapter.validate_json(event.message.value)
        except ValueError:
            logger.warning(
                "unreadable event on %s[%d]@%d",
                event.message.topic,
                event.message.partition,
                event.message.offset,
            )
            return
        if isinstance(announced, RegistrationFailed):
            return

        node_id = announced.node_id
        state = load_state(self.nodes.get(node_id))
        new_state = lifecycle.apply_registered(
            state, announced.payload.generation, now=datetime.now(UTC)
        )
        if new_state is None:
            return
        self.nodes[node_id] = dump_state(new_state)
        self.metrics.node_stored(new_state)
        logger.info(
            "node %s: %s in both backends (type %s, generation %d)",
            node_id,
            past_tense(announced),
            new_state.node_type,
            announced.payload.generation,
        )

    # --- liveness and expiry ---------------------------------------------------------

    def _refresh_liveness(
        self,
        node_id: str,
        partition: int,
        epoch: str,
        event_time: datetime,
        current: Liveness | None = None,
    ) -> None:
        """Move the deadline forward; `current` is the entry if the caller read it."""
        seen = event_time.timestamp()
        if current is None:
            current = Liveness.load(self.liveness.get(node_id))
        if current is not None and current.last_seen >= seen:
            return
        deadline = seen + self.settings.liveness_timeout
        self.liveness[node_id] = Liveness(partition, epoch, seen, deadline).dump()
        self.expiry_index.track(partition, node_id, deadline)

    def _lag_behind(self, message) -> int:
        """Messages after this one already in its partition (0 when unknown)."""
        try:
            highwater = self.app.consumer.highwater(message.tp)
        except (KeyError, AttributeError, ConsumerNotStarted):
            return 0
        if highwater is None or highwater < 0:
            return 0
        return max(0, highwater - message.offset - 1)

    def _forget_liveness(self, node_id: str) -> None:
        if self.liveness.get(node_id) is not None:
            del self.liveness[node_id]
        self.expiry_index.forget(node_id)

    async def publish_ticks(self) -> None:
        """Put the time on every heartbeat partition this worker owns."""
        topic_name = self.topics.heartbeat.get_topic_name()
        owned = [
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == topic_name
        ]
        body = json.dumps({"tick_time": datetime.now(UTC).timestamp()}).encode()
        for partition in owned:
            await self.topics.heartbeat.send(
                key=TICK_HEADER.encode(),
                value=body,
                partition=partition,
                headers={TICK_HEADER: b"1"},
            )

    async def on_tick(self, partition: int, tick_time: float) -> None:
        """Expire the partition's nodes whose deadline is before the tick's time.

        The tick was appended after every heartbeat published before it, so when it is
        processed the partition has seen those heartbeats: a worker that was down, slow
        or lagging judges deadlines by how far the partition has got, never by the wall
        clock, and does not expire nodes whose heartbeats are still queued.
        """
        due = self.expiry_index.due(partition, tick_time)
        if not due:
            return
        if not self.expiry_guard.allows(
            partition, len(due), self.expiry_index.tracked(partition)
        ):
            self.metrics.expiries_held.inc()
            return

        partition_time = datetime.fromtimestamp(tick_time, UTC)
        for node_id in due:
            liveness = Liveness.load(self.liveness.get(node_id))
            if liveness is not None and liveness.deadline >= tick_time:
                continue  # refreshed since it was indexed
            state = load_state(self.nodes.get(node_id))
            new_state = lifecycle.apply_expiry(state, partition_time=partition_time)
            self._forget_liveness(node_id)
            if new_state is None:
                continue
            details = {
                "last_heartbeat": liveness.last_seen_at if liveness else None,
                "deadline": liveness.deadline_at if liveness else partition_time,
            }
            self._store(
                new_state, partition=partition, correlation_id=None, details=details
            )
            self.metrics.expiries.inc()
            logger.info(
                "node %s: expired, last sign of life %s (partition %d)",
                node_id,
                details["last_heartbeat"],
                partition,
            )

    # --- writer and recovery callbacks -----------------------------------------------

    def _store(
        self,
        state: NodeState,
        *,
        partition: int,
        correlation_id: uuid.UUID | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Write the node's new state and hand what the backends must hold to them."""
        state = state.model_copy(update={"partition": partition})
        self.nodes[state.node_id] = dump_state(state)
        self.metrics.node_stored(state)
        self.writer.submit(
            PendingRegistration(
                record=state.to_record(),
                generation=state.generation,
                correlation_id=correlation_id,
                details=details or {},
                partition=partition,
            )
        )

    async def on_registered(self, outcomes: Sequence[RegistrationOutcome]) -> None:
        """Announce each node both backends now hold: to the node and to our table."""
        for outcome in outcomes:
            self.metrics.registration_outcome(outcome)
            # On the node's own partition number: the confirmation agent then reads
            # it where the node's table entry lives.
            await self.topics.registry_events.send(
                key=outcome.node_id.encode(),
                value=announcement(outcome).model_dump_json().encode(),
                partition=outcome.partition,
            )

    async def on_refused(self, pending: PendingRegistration, error: Exception) -> None:
        self.metrics.registration_refused()
        await self.topics.registry_events.send(
            key=pending.record.node_id.encode(),
            value=registration_failed(pending, error).model_dump_json().encode(),
            partition=pending.partition,
        )

    async def on_partitions_revoked(self, sender, revoked, **kwargs) -> None:
        """Faust revokes every partition at the start of a rebalance: stop writing."""
        dropped = self.writer.backlog
        self.writer.clear()
        if dropped:
            logger.info(
                "rebalance: %d pending write(s) left to the partitions' next owners",
                dropped,
            )

    async def on_nodes_recovered(self) -> None:
        """After a restart or rebalance, finish the writes the table holds pending."""
        resubmitted = 0
        self.metrics.forget_nodes()
        for _key, raw in self.nodes.items():
            state = load_state(raw)
            if state is not None:
                self.metrics.node_stored(state)
            if state is not None and not state.in_sync:
                self.writer.submit(
                    PendingRegistration(
                        record=state.to_record(),
                        generation=state.generation,
                        correlation_id=_uuid_or_none(state.last_event_id),
                        partition=state.partition,
                    )
                )
                resubmitted += 1
        if resubmitted:
            logger.info("recovered %d node(s) with pending backend writes", resubmitted)
        # Nodes may have changed while partitions moved or the registry was down;
        # their introspection makes the backends converge.
        await self.requests.ask_everyone(reason="registry-recovered")

    async def on_liveness_recovered(self) -> None:
        """Rebuild the expiry index of the partitions this worker now owns."""
        self.expiry_index.clear()
        for node_id, raw in self.liveness.items():
            liveness = Liveness.load(raw)
            if liveness is not None:
                self.expiry_index.track(liveness.partition, node_id, liveness.deadline)
        logger.info("tracking liveness of %d node(s)", len(self.expiry_index))

    # --- bad input -------------------------------------------------------------------

    async def _decode(self, event: EventT, expected):
        """The event as one of the `expected` types, or None once dead-lettered."""
        message = event.message
        try:
            node_event = decode_node_event(message.value)
            if not isinstance(node_event, expected):
                raise InvalidEvent(
                    f"{node_event.event_type} does not belong on {message.topic}"
                )
            ahead = (node_event.event_time - datetime.now(UTC)).total_seconds()
            if ahead > self.settings.max_clock_skew_seconds:
                raise InvalidEvent(
                    f"event_time is {ahead:.0f}s ahead of the registry's clock; "
                    f"the limit is {self.settings.max_clock_skew_seconds:.0f}s"
                )
            key = message.key.decode() if message.key is not None else None
            if key != node_event.node_id:
                raise InvalidEvent(
                    f"message key {key!r} is not the node id {node_event.node_id!r}"
                )
        except (InvalidEvent, UnicodeDecodeError) as exc:
            await self.dead_letter(event, str(exc))
            return None
        return node_event

    async def dead_letter(self, event: EventT, reason: str) -> None:
        """Park a refused event, with the reason, and carry on with the next one."""
        message = event.message
        self.metrics.dead_lettered.labels(message.topic).inc()
        logger.warning(
            "dead-lettered %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
        )
        await self.topics.dead_letter.send(
            key=message.key, value=dead_letter_value(message, reason)
        )


def _is_tick(message) -> bool:
    headers = message.headers or ()
    if isinstance(headers, dict):
        return TICK_HEADER in headers
    return any(name == TICK_HEADER for name, _ in headers)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
