"""Fixtures that run the registry against the real local Kafka, Consul and PostgreSQL.

The servers come from `scripts/servers.sh start` (the test command starts them). Each
test session gets its own PostgreSQL database, topic prefix, consumer group and Consul
catalog node, so runs never see each other's nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from registry_app.events import NodeIntrospection
from registry_app.settings import Settings
from tests.factories import heartbeat_factory

pytestmark = pytest.mark.integration

# The same variables scripts/servers.sh reads, so both agree on where the servers are.
KAFKA = os.environ.get(
    "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
)
CONSUL_URL = f"http://127.0.0.1:{os.environ.get('CONSUL_HTTP_PORT', '8500')}"
POSTGRES_PORT = os.environ.get("POSTGRES_PORT", "5432")
POSTGRES_ADMIN_DSN = os.environ.get(
    "POSTGRES_ADMIN_DSN",
    f"postgresql://registry:registry@127.0.0.1:{POSTGRES_PORT}/postgres",
)

T = TypeVar("T")

FAST_LIVENESS_TIMEOUT = 4.0
FAST_LIVENESS = {
    "LIVENESS_TIMEOUT_SECONDS": str(FAST_LIVENESS_TIMEOUT),
    "EXPIRY_TICK_SECONDS": "0.5",
    "HEARTBEAT_FLUSH_SECONDS": "0.5",
    "REINTROSPECTION_MIN_INTERVAL_SECONDS": "3",
}
"""Worker settings that make expiry observable within a test: a module's
WORKER_SETTINGS can start from these."""


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def servers_running() -> None:
    """Fail, never skip, when a server is missing: a skipped proof proves nothing."""
    wanted = {
        "kafka": ("127.0.0.1", int(KAFKA.rsplit(":", 1)[1])),
        "consul": ("127.0.0.1", int(CONSUL_URL.rsplit(":", 1)[1])),
        "postgres": (
            "127.0.0.1",
            int(POSTGRES_ADMIN_DSN.rsplit(":", 1)[1].split("/")[0]),
        ),
    }
    missing = [
        name for name, (host, port) in wanted.items() if not _port_open(host, port)
    ]
    if missing:
        pytest.fail(
            f"local servers not running: {', '.join(missing)}; "
            "start them with scripts/servers.sh start",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
async def postgres_dsn(run_id: str):
    """A database of this test session's own, dropped at the end."""
    name = f"registry_test_{run_id}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield POSTGRES_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="module")
async def db(postgres_dsn: str):
    # Per module: the outage tests restart PostgreSQL, which closes every connection.
    connection = await asyncpg.connect(postgres_dsn)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def consul_http():
    async with aiohttp.ClientSession(base_url=CONSUL_URL) as session:
        yield session


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, within: float = 30.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"timed out after {within}s waiting for {what}; last: {last!r}"
    )


class WorkerProcess:
    """A real `faust -A registry_app.app worker` process with its own data directory."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.env = env
        self.workdir = workdir
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faust",
                "-A",
                "registry_app.app",
                "worker",
                "-l",
                "info",
            ],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, within: float = 90.0) -> None:
        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited: {self.log_tail()}")
            return "Ready" in self.log_path.read_text(errors="replace")

        await wait_for(ready, within=within, what=f"worker {self.name} ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        text = (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def registry_env(run_id: str, postgres_dsn: str, request) -> dict[str, str]:
    """Settings of this module's registry, as environment variables."""
    module = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "CONSUL_", "POSTGRES_", "TOPIC_", "CONSUMER_"))
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=KAFKA,
        CONSUMER_GROUP=f"registry-test-{run_id}-{module}",
        TOPIC_PREFIX=f"test-{run_id}-{module}",
        TOPIC_PARTITIONS="4",
        POSTGRES_DSN=postgres_dsn,
        CONSUL_PORT=CONSUL_URL.rsplit(":", 1)[1],
        CONSUL_CATALOG_NODE=f"fleet-{run_id}-{module}"[:63],
        WEB_PORT=str(free_port()),
    )
    # A module may tune its worker, e.g. short liveness timeouts for expiry tests.
    env.update(getattr(request.module, "WORKER_SETTINGS", {}))
    return env


@pytest.fixture(scope="module")
def settings(registry_env: dict[str, str]) -> Settings:
    """The same settings the worker reads, for topic names and the catalog node."""
    fields = {
        k.lower(): v
        for k, v in registry_env.items()
        if k.lower() in Settings.model_fields
    }
    return Settings(**fields)


@pytest.fixture(scope="module")
async def worker(registry_env: dict[str, str], tmp_path_factory):
    """One running registry worker for the module's tests."""
    workdir = tmp_path_factory.mktemp("worker")
    process = WorkerProcess(registry_env, workdir, "worker-1")
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()
        print(f"--- {process.name} log tail ---\n{process.log_tail(80)}")


@pytest.fixture(scope="session")
async def producer():
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=1)
    await producer.start()
    yield producer
    await producer.stop()


class Fleet:
    """Publishes node events the way nodes do: JSON values keyed by node id."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings

    async def publish(
        self, event: NodeIntrospection, topic: str = "node-introspection.v1"
    ) -> None:
        await self.publish_raw(
            event.node_id.encode(), event.model_dump_json().encode(), topic
        )

    async def beat(self, nodes: list[NodeIntrospection], at: datetime | None = None):
        """One heartbeat per node, all with one event time: their deadlines coincide."""
        at = at or datetime.now(UTC)
        await asyncio.gather(
            *(
                self.publish(heartbeat_factory(node, at=at), topic="node-heartbeat.v1")
                for node in nodes
            )
        )
        return at

    async def publish_raw(
        self, key: bytes | None, value: bytes, topic: str = "node-introspection.v1"
    ) -> None:
        await self.producer.send_and_wait(
            self.settings.topic_name(topic), value, key=key
        )


@pytest.fixture(scope="module")
def fleet(producer: AIOKafkaProducer, settings: Settings) -> Fleet:
    return Fleet(producer, settings)


class ConsulView:
    """Reads what Consul holds for this module's catalog node, via its HTTP API."""

    def __init__(self, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.http = http
        self.catalog_node = settings.consul_catalog_node

    async def services(self) -> dict[str, Any]:
        async with self.http.get(f"/v1/catalog/node/{self.catalog_node}") as response:
            if response.status == 404:
                return {}
            response.raise_for_status()
            body = await response.json()
            return (body or {}).get("Services") or {}

    async def instances(self, service_name: str) -> list[dict[str, Any]]:
        async with self.http.get(f"/v1/catalog/service/{service_name}") as response:
            response.raise_for_status()
            return [
                entry
                for entry in await response.json()
                if entry["Node"] == self.catalog_node
            ]

    async def node_checks(self) -> list[dict[str, Any]]:
        """Every check on the catalog node (one per fleet service)."""
        async with self.http.get(f"/v1/health/node/{self.catalog_node}") as response:
            response.raise_for_status()
            return [c for c in await response.json() if c["ServiceID"]]

    async def checks(self, service_name: str) -> list[dict[str, Any]]:
        async with self.http.get(f"/v1/health/checks/{service_name}") as response:
            response.raise_for_status()
            return [c for c in await response.json() if c["Node"] == self.catalog_node]


@pytest.fixture(scope="module")
def consul(consul_http: aiohttp.ClientSession, settings: Settings) -> ConsulView:
    return ConsulView(consul_http, settings)


async def read_topic_records(topic: str) -> list[ConsumerRecord]:
    """Every message on the topic, from the beginning, in order within a partition."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=KAFKA,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id=f"test-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        found: list[ConsumerRecord] = []
        batches = await consumer.getmany(timeout_ms=3000)
        while batches:
            for messages in batches.values():
                found.extend(messages)
            batches = await consumer.getmany(timeout_ms=500)
        return found
    finally:
        await consumer.stop()


async def read_topic(topic: str, *, key: bytes) -> list[dict]:
    """Every JSON value with this key on the topic, from the beginning."""
    return [
        json.loads(m.value) for m in await read_topic_records(topic) if m.key == key
    ]
