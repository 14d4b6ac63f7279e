"""A fleet of simulated nodes in one process, publishing what real nodes publish."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from registry_app.events import (
    Capability,
    HeartbeatPayload,
    IntrospectionPayload,
    NodeHeartbeat,
    NodeIntrospection,
)
from registry_app.settings import Settings
from registry_app.topics import HEARTBEAT, INTROSPECTION

logger = logging.getLogger(__name__)

NODE_TYPES = {
    "orchestrator": ["plan", "route", "schedule"],
    "reducer": ["aggregate", "summarize"],
    "indexer": ["embed", "search", "rank"],
    "gateway": ["authenticate", "rate-limit"],
}


def simulated_introspection(
    index: int, *, run: str, rng: random.Random
) -> NodeIntrospection:
    """The introspection of simulated node number `index`."""
    node_type = list(NODE_TYPES)[index % len(NODE_TYPES)]
    host = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    port = 8000 + index % 1000
    tools = rng.sample(
        NODE_TYPES[node_type], k=rng.randint(1, len(NODE_TYPES[node_type]))
    )
    return NodeIntrospection(
        node_id=f"sim-{run}-{index:06d}",
        node_epoch=uuid.uuid4().hex[:12],
        payload=IntrospectionPayload(
            node_type=node_type,
            node_version=f"1.{index % 5}.0",
            host=host,
            port=port,
            capabilities=[Capability(name=tool, version="1") for tool in sorted(tools)],
            endpoints={
                "http": f"http://{host}:{port}",
                "metrics": f"http://{host}:9100",
            },
            metadata={"zone": rng.choice(["a", "b", "c"]), "simulated": True},
            tags=["simulated"],
        ),
    )


class Fleet:
    """N simulated nodes sharing one Kafka producer."""

    def __init__(
        self, settings: Settings, size: int, *, run: str | None = None
    ) -> None:
        self.settings = settings
        self.run = run or uuid.uuid4().hex[:6]
        rng = random.Random(self.run)
        self.nodes = [
            simulated_introspection(i, run=self.run, rng=rng) for i in range(size)
        ]
        self._started = datetime.now(UTC)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5
        )

    async def __aenter__(self) -> Fleet:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._producer.stop()

    async def introspect(self) -> None:
        """Every node announces itself, as on start-up."""
        topic = self.settings.topic_name(INTROSPECTION)
        sends = [
            await self._producer.send(
                topic, node.model_dump_json().encode(), key=node.node_id.encode()
            )
            for node in self.nodes
        ]
        await asyncio.gather(*sends)
        logger.info(
            "%d nodes published their introspection to %s", len(self.nodes), topic
        )

    async def heartbeat(self) -> None:
        """One heartbeat from every node."""
        topic = self.settings.topic_name(HEARTBEAT)
        uptime = (datetime.now(UTC) - self._started).total_seconds()
        sends = []
        for node in self.nodes:
            beat = NodeHeartbeat(
                node_id=node.node_id,
                node_epoch=node.node_epoch,
                payload=HeartbeatPayload(uptime_seconds=uptime),
            )
            sends.append(
                await self._producer.send(
                    topic, beat.model_dump_json().encode(), key=node.node_id.encode()
                )
            )
        await asyncio.gather(*sends)
