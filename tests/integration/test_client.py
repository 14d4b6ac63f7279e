"""The node client against a real worker: register, beat, answer, leave, outlast."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from registry_app.client import ConnectionState, NodeClient
from registry_app.events import (
    NodeRegistered,
    RequestIntrospection,
    RequestIntrospectionPayload,
)
from tests.integration.conftest import (
    FAST_LIVENESS,
    FAST_LIVENESS_TIMEOUT,
    KAFKA,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

TIMEOUT = FAST_LIVENESS_TIMEOUT
WORKER_SETTINGS = {
    **FAST_LIVENESS,
    # The mass-expiry guard has tests of its own (test_expiry_guard.py).
    "EXPIRY_GUARD_MIN_NODES": "100000",
}
README = Path(__file__).resolve().parents[2] / "README.md"


class Ocr(BaseModel):
    version: str = "3"
    languages: list[str] = ["en", "de"]


class Tools(BaseModel):
    ocr: Ocr = Ocr()
    summarize: bool = Field(True, description="short summaries")
    translate: bool = False


def node_client(settings, **changes) -> NodeClient:
    options = {
        "node_id": f"client-{uuid.uuid4().hex[:10]}",
        "node_type": "embedded",
        "node_version": "2.1.0",
        "capabilities": Tools(),
        "endpoints": {"http": "http://127.0.0.1:7301", "metrics": "http://x:9100"},
        "metadata": {"region": "eu-west", "replicas": 2},
        "tags": ["client", "blue"],
        "bootstrap_servers": KAFKA,
        "topic_prefix": settings.topic_prefix,
        "heartbeat_interval": 1.0,
        **changes,
    }
    return NodeClient(**options)


async def pg_node(db, node_id: str):
    return await db.fetchrow("SELECT * FROM nodes WHERE node_id = $1", node_id)


async def until_status(db, consul, node_id: str, status: str, check: str | None):
    """Wait for `status` in PostgreSQL and `check` in Consul (None: no service)."""

    async def probe():
        row = await pg_node(db, node_id)
        checks = {c["ServiceID"]: c["Status"] for c in await consul.node_checks()}
        if row is None or row["status"] != status or checks.get(node_id) != check:
            return None
        return row

    return await wait_for(probe, within=30, what=f"{node_id} {status}/{check}")


async def published(settings, node_id: str, topic: str) -> list[dict]:
    return await read_topic(settings.topic_name(topic), key=node_id.encode())


async def test_an_embedded_node_registers_with_its_own_details(db, consul, settings):
    async with node_client(settings) as node:
        assert node.state is ConnectionState.CONNECTED
        registered = await node.wait_registered(timeout=30)

        assert isinstance(registered, NodeRegistered)
        assert registered.node_id == node.node_id
        sent = await published(settings, node.node_id, "node-introspection.v1")
        answered = [e for e in sent if e["event_id"] == str(registered.correlation_id)]
        assert [e["node_epoch"] for e in answered] == [node.node_epoch]

        row = await until_status(db, consul, node.node_id, "active", "passing")
        assert (row["node_type"], row["node_version"]) == ("embedded", "2.1.0")
        assert row["node_epoch"] == node.node_epoch
        # Discovered: the address that reaches Kafka, the first endpoint's port.
        assert (row["host"], row["port"]) == ("127.0.0.1", 7301)
        assert json.loads(row["capabilities"]) == [
            {
                "name": "ocr",
                "version": "3",
                "description": None,
                "attributes": {"languages": ["en", "de"]},
            },
            {
                "name": "summarize",
                "version": None,
                "description": "short summaries",
                "attributes": {},
            },
        ]
        assert json.loads(row["endpoints"]) == node.endpoints
        assert json.loads(row["metadata"]) == {"region": "eu-west", "replicas": 2}
        assert json.loads(row["tags"]) == ["client", "blue"]

        [service] = [
            s
            for s in await consul.instances("embedded")
            if s["ServiceID"] == node.node_id
        ]
        assert (service["ServiceAddress"], service["ServicePort"]) == (
            "127.0.0.1",
            7301,
        )
        assert service["ServiceMeta"]["node_version"] == "2.1.0"
        assert service["ServiceTags"] == ["registry-app", "client", "blue"]


async def test_heartbeats_keep_the_node_active_past_the_liveness_timeout(
    db, consul, settings
):
    async with node_client(settings, node_type="beating") as node:
        await node.wait_registered(timeout=30)
        first = await until_status(db, consul, node.node_id, "active", "passing")

        await asyncio.sleep(TIMEOUT * 2)

        row = await until_status(db, consul, node.node_id, "active", "passing")
        assert row["last_heartbeat"] is not None
        assert first["last_heartbeat"] is None or (
            row["last_heartbeat"] > first["last_heartbeat"]
        )
        assert row["last_heartbeat"] > datetime.now(UTC) - timedelta(seconds=3)
        assert node.beats_sent >= 2 * TIMEOUT - 1
        assert node.beats_skipped == 0
        assert node.registration is not None  # no NODE_EXPIRED came


async def test_requests_are_answered_when_aimed_at_the_node(
    producer, settings, db, consul
):
    async with (
        node_client(settings, node_type="answerer") as node,
        node_client(settings, node_type="bystander") as other,
    ):
        await node.wait_registered(timeout=30)
        await other.wait_registered(timeout=30)
        received, answered = node.requests_received, node.requests_answered

        def ask(**target) -> RequestIntrospection:
            return RequestIntrospection(
                node_id="test",
                payload=RequestIntrospectionPayload(reason="test", **target),
            )

        aimed = [
            ask(target_node_id=node.node_id),
            ask(node_type="answerer"),
            ask(),  # everyone
        ]
        not_aimed = [ask(target_node_id=other.node_id), ask(node_type="bystander")]
        requests = settings.topic_name("registry-requests.v1")
        for request in aimed + not_aimed:
            # Keyed as the registry keys them: by target node, else by its own id.
            key = (request.payload.target_node_id or "registry").encode()
            await producer.send_and_wait(
                requests, request.model_dump_json().encode(), key=key
            )

        async def all_read():
            return node.requests_received - received >= 5

        await wait_for(all_read, within=20, what="the five requests read")
        assert node.requests_answered - answered == 3

        async def answers():
            sent = await published(settings, node.node_id, "node-introspection.v1")
            return {
                e["correlation_id"]: e["payload"]["reason"]
                for e in sent
                if e["correlation_id"] is not None
            }

        found = await wait_for(answers, within=20, what="the answers on Kafka")
        for request in aimed:
            assert found.get(str(request.event_id)) == "requested"
        for request in not_aimed:
            assert str(request.event_id) not in found
        # The bystander answered its own two, and the broadcast.
        assert other.requests_answered >= 3


async def test_stop_deregisters_the_node_everywhere(db, consul, settings):
    node = node_client(settings, node_type="leaving")
    await node.start()
    await node.wait_registered(timeout=30)
    await until_status(db, consul, node.node_id, "active", "passing")

    started = time.monotonic()
    await node.stop()
    assert time.monotonic() - started < 5
    assert node.state is ConnectionState.STOPPED

    await until_status(db, consul, node.node_id, "deregistered", None)
    assert node.node_id not in await consul.services()

    async def deregistered():
        events = await published(settings, node.node_id, "registry-events.v1")
        return [e for e in events if e["event_type"] == "NODE_DEREGISTERED"]

    [gone] = await wait_for(deregistered, within=20, what="NODE_DEREGISTERED")
    assert node.last_shutdown is not None
    assert gone["correlation_id"] == str(node.last_shutdown.event_id)


async def test_unreachable_kafka_neither_fails_nor_blocks_the_host(caplog, settings):
    caplog.set_level(logging.INFO, logger="registry_app.client")
    node = node_client(
        settings,
        bootstrap_servers="127.0.0.1:1",
        heartbeat_interval=0.2,
        connect_timeout=0.5,
        max_backoff=0.5,
    )
    loop = asyncio.get_running_loop()

    started = loop.time()
    await node.start()  # no exception: the host service starts regardless
    assert loop.time() - started < 2
    assert node.running and node.state is ConnectionState.UNREACHABLE

    # The host's loop stays responsive while the client retries.
    worst = 0.0
    until = loop.time() + 3
    while loop.time() < until:
        before = loop.time()
        await asyncio.sleep(0.02)
        worst = max(worst, loop.time() - before - 0.02)
    assert worst < 0.25

    assert node.beats_sent == 0 and node.beats_skipped >= 10
    mine = [r for r in caplog.records if r.name == "registry_app.client"]
    assert [r.levelname for r in mine] == ["WARNING"]
    assert "unreachable" in mine[0].getMessage()

    stopping = loop.time()
    await node.stop()
    assert loop.time() - stopping < 1
    assert node.state is ConnectionState.STOPPED


def readme_example() -> str:
    section = README.read_text().split("## Node client (Python)\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_example_runs(tmp_path, db, consul, settings):
    script = tmp_path / "summarizer.py"
    script.write_text(readme_example())
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "TOPIC_PREFIX": settings.topic_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # The example prints "<node id> registered (generation N)"; logs start
        # with their level.
        printed = re.compile(r"^(\S+) registered \(generation \d+\)$")
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not (lines and printed.match(lines[-1])):
                line = (await process.stdout.readline()).decode()
                assert line, f"example exited: {''.join(lines)}"
                lines.append(line.rstrip("\n"))
        node_id = printed.match(lines[-1]).group(1)

        row = await until_status(db, consul, node_id, "active", "passing")
        assert (row["node_type"], row["port"]) == ("summarizer", 8080)
        assert [c["name"] for c in json.loads(row["capabilities"])] == [
            "summarize",
            "translate",
        ]

        process.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(30):
            rest, _ = await process.communicate()
        output = "\n".join(lines) + "\n" + rest.decode()
        assert process.returncode == 0, output
        assert "Traceback" not in output, output
        await until_status(db, consul, node_id, "deregistered", None)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
