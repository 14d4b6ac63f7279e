"""The agents in Faust's test context: in-memory store, no Kafka, backends recorded."""

from __future__ import annotations

import pytest

from registry_app.registry import Registry
from registry_app.settings import Settings
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
