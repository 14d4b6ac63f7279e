"""The mass-expiry guard: a few silent nodes expire, most of a partition at once do
not (held as a suspected registry or network fault)."""

from __future__ import annotations

import asyncio
import json

import pytest

from registry_app.events import NodeIntrospection
from tests.factories import introspection_factory
from tests.integration.conftest import (
    FAST_LIVENESS,
    FAST_LIVENESS_TIMEOUT,
    read_topic_records,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

TIMEOUT = FAST_LIVENESS_TIMEOUT
WORKER_SETTINGS = {
    **FAST_LIVENESS,
    # One partition, so every node counts against the same guard.
    "TOPIC_PARTITIONS": "1",
    "EXPIRY_GUARD_MIN_NODES": "5",
    "EXPIRY_GUARD_RATIO": "0.5",
    "EXPIRY_GUARD_HOLD_SECONDS": "3600",
}


async def pg_statuses(db, nodes: list[NodeIntrospection]) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT node_id, status FROM nodes WHERE node_id = ANY($1::text[])",
        [node.node_id for node in nodes],
    )
    return {r["node_id"]: r["status"] for r in rows}


async def consul_statuses(consul, nodes: list[NodeIntrospection]) -> dict[str, str]:
    checks = {c["ServiceID"]: c["Status"] for c in await consul.node_checks()}
    return {node.node_id: checks.get(node.node_id) for node in nodes}


async def expired_events(settings) -> list[str]:
    """Node ids of every NODE_EXPIRED on registry-events, one per event."""
    records = await read_topic_records(settings.topic_name("registry-events.v1"))
    return [
        r.key.decode()
        for r in records
        if json.loads(r.value)["event_type"] == "NODE_EXPIRED"
    ]


async def test_a_few_silent_nodes_expire_but_most_of_a_partition_at_once_is_held(
    fleet, db, consul, settings, worker
):
    fleet_nodes = [introspection_factory(node_type="guarded") for _ in range(10)]
    quitters, stayers = fleet_nodes[:2], fleet_nodes[2:]
    await asyncio.gather(*(fleet.publish(node) for node in fleet_nodes))

    # Every node beats until all ten are in both backends.
    async def all_active():
        await fleet.beat(fleet_nodes)
        pg = await pg_statuses(db, fleet_nodes)
        checks = await consul_statuses(consul, fleet_nodes)
        return (
            list(pg.values()).count("active") == 10
            and list(checks.values()).count("passing") == 10
        )

    await wait_for(all_active, within=60, what="ten nodes active in both backends")

    # Two of ten go silent: 2 <= 0.5 * 10, the guard lets them expire.
    async def quitters_expired():
        await fleet.beat(stayers)
        await asyncio.sleep(0.5)
        pg = await pg_statuses(db, quitters)
        checks = await consul_statuses(consul, quitters)
        return set(pg.values()) == {"expired"} and set(checks.values()) == {"critical"}

    await wait_for(
        quitters_expired, within=6 * TIMEOUT, what="the two silent nodes expired"
    )
    assert await pg_statuses(db, stayers) == {n.node_id: "active" for n in stayers}

    # Then the eight others, all at once: 8 of the 8 still tracked is over half.
    await fleet.beat(stayers)
    await asyncio.sleep(3 * TIMEOUT)

    assert await pg_statuses(db, stayers) == {n.node_id: "active" for n in stayers}
    assert await consul_statuses(consul, stayers) == {
        n.node_id: "passing" for n in stayers
    }
    assert await pg_statuses(db, quitters) == {n.node_id: "expired" for n in quitters}
    expired = await expired_events(settings)
    assert sorted(expired) == sorted(n.node_id for n in quitters)

    log = worker.log_path.read_text(errors="replace")
    assert "partition 0: holding the expiry of 8 of 8 nodes" in log
    assert "holding the expiry of 2 of" not in log
    assert "still silent after" not in log  # the hold (3600 s) is not over
