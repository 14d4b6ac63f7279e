"""The registry worker: topics, the node table, the agents and the backend writer."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import EventT

from registry_app import lifecycle
from registry_app.backends.consul import ConsulCatalog
from registry_app.backends.postgres import PostgresRegistry
from registry_app.decoding import InvalidEvent, decode_node_event
from registry_app.events import (
    BackendOutcome,
    NodeIntrospection,
    NodeRegistered,
    RegisteredPayload,
)
from registry_app.settings import Settings
from registry_app.tables.nodes import create_node_table, dump_state, load_state
from registry_app.topics import RegistryTopics, create_topics
from registry_app.writer import (
    PendingRegistration,
    RegistrationOutcome,
    RegistrationWriter,
)

logger = logging.getLogger(__name__)


class Registry:
    """Everything one worker runs, built from settings; `app` is the Faust app."""

    def __init__(
        self, settings: Settings, *, backends: Sequence[Any] | None = None
    ) -> None:
        self.settings = settings
        self.app = faust.App(
            settings.consumer_group,
            broker=settings.kafka_broker_urls,
            store=settings.store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.topic_partitions,
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_enabled=True,
            autodiscover=False,
            # Our events are JSON decoded by our own validators, not Faust's codecs.
            key_serializer="raw",
            value_serializer="raw",
        )
        self.topics: RegistryTopics = create_topics(self.app, settings)
        self.nodes = create_node_table(self.app, settings)
        self.writer = RegistrationWriter(
            backends
            if backends is not None
            else [ConsulCatalog(settings), PostgresRegistry(settings)],
            on_registered=self.on_registered,
        )
        self.app.add_dependency(self.writer)
        self.nodes.on_recover(self.on_nodes_recovered)
        self.app.task(self.declare_topics)
        self._install_agents()

    # --- agents ----------------------------------------------------------------------

    def _install_agents(self) -> None:
        app, topics = self.app, self.topics

        @app.agent(topics.introspection, name="registry.introspection")
        async def introspection_agent(stream: faust.StreamT) -> None:
            """Accept each node's introspection into the table and queue its writes."""
            async for event in stream.events():
                await self.on_introspection_message(event)

        @app.agent(topics.registry_events, name="registry.confirmations")
        async def confirmation_agent(stream: faust.StreamT) -> None:
            """Mark nodes registered once the writer confirmed every backend."""
            async for event in stream.events():
                self.on_registry_event_message(event)

        self.introspection_agent = introspection_agent
        self.confirmation_agent = confirmation_agent

    async def on_introspection_message(self, event: EventT) -> None:
        message = event.message
        try:
            node_event = decode_node_event(message.value)
            if not isinstance(node_event, NodeIntrospection):
                raise InvalidEvent(
                    f"{node_event.event_type} does not belong on {message.topic}"
                )
            if message.key is not None and message.key.decode() != node_event.node_id:
                raise InvalidEvent(
                    f"message key {message.key!r} is not the node id "
                    f"{node_event.node_id!r}"
                )
        except (InvalidEvent, UnicodeDecodeError) as exc:
            await self.dead_letter(event, str(exc))
            return

        state = load_state(self.nodes.get(node_event.node_id))
        new_state = lifecycle.apply_introspection(state, node_event)
        if new_state is None:
            logger.debug("node %s: introspection changes nothing", node_event.node_id)
            return

        self.nodes[node_event.node_id] = dump_state(new_state)
        self.writer.submit(
            PendingRegistration(
                record=new_state.to_record(),
                generation=new_state.generation,
                correlation_id=node_event.event_id,
            )
        )

    def on_registry_event_message(self, event: EventT) -> None:
        try:
            registered = NodeRegistered.model_validate_json(event.message.value)
        except ValueError:
            # The registry's own topic also carries events nodes consume (expired, ...);
            # only NODE_REGISTERED confirms anything.
            return
        node_id = registered.node_id
        state = load_state(self.nodes.get(node_id))
        new_state = lifecycle.apply_registered(
            state, registered.payload.generation, now=datetime.now(UTC)
        )
        if new_state is not None:
            self.nodes[node_id] = dump_state(new_state)
            logger.info(
                "node %s registered (type %s, generation %d)",
                node_id,
                new_state.node_type,
                registered.payload.generation,
            )

    async def declare_topics(self) -> None:
        """Create the topics no agent consumes (Faust creates the others itself)."""
        for topic in (
            self.topics.heartbeat,
            self.topics.requests,
            self.topics.dead_letter,
        ):
            await topic.maybe_declare()

    # --- writer and recovery callbacks -----------------------------------------------

    async def on_registered(self, outcomes: Sequence[RegistrationOutcome]) -> None:
        """Tell nodes (and this registry's own table) that both backends hold them."""
        for outcome in outcomes:
            registered = NodeRegistered(
                node_id=outcome.node_id,
                correlation_id=outcome.correlation_id,
                payload=RegisteredPayload(
                    node_type=outcome.node_type,
                    generation=outcome.generation,
                    consul=BackendOutcome(ok=True),
                    postgres=BackendOutcome(ok=True),
                ),
            )
            await self.topics.registry_events.send(
                key=outcome.node_id.encode(),
                value=registered.model_dump_json().encode(),
            )

    async def on_nodes_recovered(self) -> None:
        """After a restart or rebalance, finish the writes the table holds pending."""
        resubmitted = 0
        for _key, raw in self.nodes.items():
            state = load_state(raw)
            if state is not None and not state.in_sync:
                self.writer.submit(
                    PendingRegistration(
                        record=state.to_record(),
                        generation=state.generation,
                        correlation_id=_uuid_or_new(state.last_event_id),
                    )
                )
                resubmitted += 1
        if resubmitted:
            logger.info("recovered %d node(s) with pending writes", resubmitted)

    async def dead_letter(self, event: EventT, reason: str) -> None:
        """Park a refused event, with the reason, and carry on with the next one."""
        message = event.message
        logger.warning(
            "dead-lettered %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
        )
        envelope = {
            "reason": reason,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": message.key.decode("utf-8", "replace") if message.key else None,
            "value": message.value.decode("utf-8", "replace")
            if message.value
            else None,
        }
        await self.topics.dead_letter.send(
            key=message.key, value=json.dumps(envelope).encode()
        )


def _uuid_or_new(text: str):
    import uuid

    try:
        return uuid.UUID(text)
    except ValueError:
        return uuid.uuid4()
