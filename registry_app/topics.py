"""The registry's Kafka topics: names, keys and who publishes on each."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from registry_app.settings import Settings
from registry_app.topic_names import (
    ALL_TOPICS,
    DEAD_LETTER,
    HEARTBEAT,
    INTROSPECTION,
    REGISTRY_EVENTS,
    REQUESTS,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryTopics:
    """Every topic is keyed by node id, so one node's events stay in order."""

    introspection: faust.TopicT  # nodes -> registry
    heartbeat: faust.TopicT  # nodes -> registry
    registry_events: faust.TopicT  # registry -> nodes, and back to the registry
    requests: faust.TopicT  # registry -> nodes: REQUEST_INTROSPECTION
    dead_letter: faust.TopicT  # refused events, with the reason


def create_topics(app: faust.App, settings: Settings) -> RegistryTopics:
    """The topics as Faust channels; ensure_topics creates them before subscribing."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            settings.topic_name(name),
            partitions=settings.topic_partitions,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
        )

    return RegistryTopics(
        introspection=topic(INTROSPECTION),
        heartbeat=topic(HEARTBEAT),
        registry_events=topic(REGISTRY_EVENTS),
        requests=topic(REQUESTS),
        dead_letter=topic(DEAD_LETTER),
    )


async def ensure_topics(settings: Settings, *, within: float = 30.0) -> None:
    """Create missing registry topics and wait until the cluster serves them.

    Runs before the worker subscribes: a consumer that subscribes to a topic the
    broker's metadata does not list yet drops it until its next metadata refresh
    (minutes), and its agent would read nothing. Safe when workers start together.
    """
    names = [settings.topic_name(name) for name in ALL_TOPICS]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        missing = sorted(set(names) - set(await admin.list_topics()))
        if missing:
            new = [
                NewTopic(
                    name,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor,
                )
                for name in missing
            ]
            try:
                await admin.create_topics(new)
                logger.info("created topics %s", ", ".join(missing))
            except TopicAlreadyExistsError:
                pass  # another worker was quicker

        deadline = asyncio.get_running_loop().time() + within
        while True:
            described = await admin.describe_topics(names)
            if all(_served(topic) for topic in described):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topics not served after {within}s: {names}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _served(description: dict) -> bool:
    """A topic whose every partition has a leader."""
    partitions = description.get("partitions") or []
    return (
        description.get("error_code", 0) == 0
        and bool(partitions)
        and all(p.get("leader", -1) >= 0 for p in partitions)
    )
