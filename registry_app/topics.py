"""The registry's Kafka topics: names, keys and who publishes on each."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from registry_app.settings import Settings

INTROSPECTION = "node-introspection.v1"
HEARTBEAT = "node-heartbeat.v1"
REGISTRY_EVENTS = "registry-events.v1"
REQUESTS = "registry-requests.v1"
DEAD_LETTER = "dead-letter.v1"


@dataclass(frozen=True)
class RegistryTopics:
    """Every topic is keyed by node id, so one node's events stay in order."""

    introspection: faust.TopicT  # nodes -> registry
    heartbeat: faust.TopicT  # nodes -> registry
    registry_events: faust.TopicT  # registry -> nodes, and back to the registry
    requests: faust.TopicT  # registry -> nodes: REQUEST_INTROSPECTION
    dead_letter: faust.TopicT  # refused events, with the reason


def create_topics(app: faust.App, settings: Settings) -> RegistryTopics:
    """Declare the topics; Faust creates missing ones (internal=True) at start-up."""

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
