"""One backend down while nodes register: the other gets them at once, the missing one
once it is back, and each node is announced exactly once.

These tests stop and restart the local PostgreSQL and Consul servers (always starting
them again), so they must not run alongside another test session.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from tests.factories import introspection_factory
from tests.integration.conftest import (
    CONSUL_URL,
    POSTGRES_PORT,
    read_topic_records,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES = 50

WORKER_SETTINGS = {
    # Nothing publishes heartbeats here: keep expiry out of the picture.
    "LIVENESS_TIMEOUT_SECONDS": "3600",
    "TOPIC_PARTITIONS": "4",
}


async def servers(action: str, name: str) -> None:
    await asyncio.to_thread(
        subprocess.run,
        ["bash", "scripts/servers.sh", action, name],
        cwd=REPO_ROOT,
        check=True,
    )


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def postgres_up() -> bool:
    return listening(int(POSTGRES_PORT))


def consul_up() -> bool:
    return listening(int(CONSUL_URL.rsplit(":", 1)[1]))


async def pg_statuses(dsn: str, node_ids: list[str]) -> dict[str, str]:
    """Status per node id, on a connection of its own (the server may have restarted
    since the session's `db` connection was opened)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT node_id, status FROM nodes WHERE node_id = ANY($1::text[])",
            node_ids,
        )
    finally:
        await connection.close()
    return {r["node_id"]: r["status"] for r in rows}


async def consul_instances(consul, node_type: str) -> dict[str, str]:
    """Check status per service id of this node type on the catalog node; a service
    id seen twice would show as a count below the number of instances."""
    instances = await consul.instances(node_type)
    checks = {c["ServiceID"]: c["Status"] for c in await consul.checks(node_type)}
    ids = [i["ServiceID"] for i in instances]
    assert len(ids) == len(set(ids)), f"duplicate instances: {ids}"
    return {service_id: checks.get(service_id) for service_id in ids}


async def registered_events(settings, node_ids: list[str]) -> Counter[str]:
    """How many NODE_REGISTERED each of these nodes got on registry-events."""
    wanted = set(node_ids)
    records = await read_topic_records(settings.topic_name("registry-events.v1"))
    return Counter(
        r.key.decode()
        for r in records
        if r.key.decode() in wanted
        and json.loads(r.value)["event_type"] == "NODE_REGISTERED"
    )


async def announced_once_each(settings, node_ids: list[str]) -> None:
    async def all_announced():
        counts = await registered_events(settings, node_ids)
        return len(counts) == len(node_ids) and counts

    await wait_for(all_announced, within=30, what="a NODE_REGISTERED for every node")
    await asyncio.sleep(1)  # a duplicate announcement would be on the topic now
    counts = await registered_events(settings, node_ids)
    assert counts == Counter(dict.fromkeys(node_ids, 1))


async def test_postgres_down_consul_gets_the_nodes_at_once_postgres_once_it_is_back(
    fleet, consul, settings, postgres_dsn
):
    events = [introspection_factory(node_type="pg-outage") for _ in range(NODES)]
    ids = [e.node_id for e in events]

    await servers("stop", "postgres")
    try:
        assert not postgres_up()
        await asyncio.gather(*(fleet.publish(e) for e in events))

        async def all_in_consul():
            instances = await consul_instances(consul, "pg-outage")
            return instances == dict.fromkeys(ids, "passing") and instances

        await wait_for(all_in_consul, within=30, what="50 passing nodes in Consul")
        assert not postgres_up()
        # Announced only once both backends hold a node.
        assert await registered_events(settings, ids) == Counter()
    finally:
        await servers("start", "postgres")

    async def all_in_postgres():
        statuses = await pg_statuses(postgres_dsn, ids)
        return statuses == dict.fromkeys(ids, "active") and statuses

    # The writer retries with a backoff of up to 10 s.
    await wait_for(all_in_postgres, within=60, what="50 active nodes in PostgreSQL")
    assert await consul_instances(consul, "pg-outage") == dict.fromkeys(ids, "passing")
    await announced_once_each(settings, ids)


async def test_consul_down_postgres_gets_the_nodes_at_once_consul_once_it_is_back(
    fleet, consul, settings, postgres_dsn
):
    # A restarted Consul dev agent starts empty: only nodes published during the
    # outage are checked.
    events = [introspection_factory(node_type="consul-outage") for _ in range(NODES)]
    ids = [e.node_id for e in events]

    await servers("stop", "consul")
    try:
        assert not consul_up()
        await asyncio.gather(*(fleet.publish(e) for e in events))

        async def all_in_postgres():
            statuses = await pg_statuses(postgres_dsn, ids)
            return statuses == dict.fromkeys(ids, "active") and statuses

        await wait_for(all_in_postgres, within=30, what="50 active nodes in PostgreSQL")
        assert not consul_up()
        assert await registered_events(settings, ids) == Counter()
    finally:
        await servers("start", "consul")

    async def all_in_consul():
        instances = await consul_instances(consul, "consul-outage")
        return instances == dict.fromkeys(ids, "passing") and instances

    await wait_for(all_in_consul, within=60, what="50 passing nodes in Consul")
    assert await pg_statuses(postgres_dsn, ids) == dict.fromkeys(ids, "active")
    await announced_once_each(settings, ids)
