"""The fleet simulator against a real registry worker: 1,000 nodes, churn, requests."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from registry_app.events import RequestIntrospection, RequestIntrospectionPayload
from registry_app.simulator import Fleet, FleetConfig
from tests.integration.conftest import read_topic, read_topic_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

LIVENESS = 6.0
WORKER_SETTINGS = {
    "HEARTBEAT_INTERVAL_SECONDS": "2",
    "LIVENESS_TIMEOUT_SECONDS": str(LIVENESS),
    "EXPIRY_TICK_SECONDS": "0.5",
    "HEARTBEAT_FLUSH_SECONDS": "1",
    # Crashed nodes must expire here, however many share a partition.
    "EXPIRY_GUARD_MIN_NODES": "100000",
}


def run_name(label: str) -> str:
    return f"{label}{uuid.uuid4().hex[:6]}"


async def statuses(db, prefix: str) -> dict[str, tuple[str, str]]:
    rows = await db.fetch(
        "SELECT node_id, status, node_epoch FROM nodes WHERE starts_with(node_id, $1)",
        prefix,
    )
    return {r["node_id"]: (r["status"], r["node_epoch"]) for r in rows}


async def consul_checks(consul, prefix: str) -> dict[str, str]:
    return {
        c["ServiceID"]: c["Status"]
        for c in await consul.node_checks()
        if c["ServiceID"].startswith(prefix)
    }


async def test_a_thousand_simulated_nodes_become_active(settings, db, consul):
    config = FleetConfig(
        nodes=1000,
        run=run_name("k"),
        heartbeat_interval=2.0,
        shutdown_at_end=True,
    )
    async with Fleet(settings, config) as fleet:
        simulation = asyncio.create_task(fleet.simulate())
        try:

            async def all_active():
                rows = await statuses(db, fleet.prefix)
                checks = await consul_checks(consul, fleet.prefix)
                active = Counter(status for status, _ in rows.values())["active"]
                passing = Counter(checks.values())["passing"]
                return (active, passing) == (1000, 1000) and (rows, checks)

            rows, checks = await wait_for(all_active, within=120, what="1,000 active")
            assert len(rows) == 1000 and len(checks) == 1000
            assert {epoch for _, epoch in rows.values()} == {
                epoch for _, epoch in fleet.states().values()
            }

            # Past the liveness timeout, heartbeats alone keep all of them active.
            await asyncio.sleep(LIVENESS + 2)
            rows, checks = await all_active()
            assert len(rows) == 1000 and len(checks) == 1000
        finally:
            fleet.stop()
            summary = await simulation

    assert summary["send_errors"] == 0
    assert summary["introspections"] == 1000
    # The sleep past the liveness timeout alone spans (LIVENESS + 2) / 2 s = 4 heartbeat
    # slots per node; on a loaded machine the first or last may fall outside it, so
    # count on 3: enough beats that every node outlived its deadline by beating.
    assert summary["heartbeats"] >= 1000 * 3
    assert summary["final_shutdowns"] == 1000

    async def all_deregistered():
        rows = await statuses(db, fleet.prefix)
        gone = Counter(status for status, _ in rows.values())["deregistered"] == 1000
        return gone and not await consul_checks(consul, fleet.prefix)

    await wait_for(all_deregistered, within=60, what="1,000 deregistered")


async def test_after_churn_the_registry_holds_what_the_summary_says(
    settings, db, consul
):
    config = FleetConfig(
        nodes=100,
        run=run_name("c"),
        heartbeat_interval=1.0,
        churn_per_minute=1.5,  # about 25 stops in 10 s
        crash_share=0.5,
        restart_after=2.0,  # sooner than the liveness timeout: no expiry
        bad_events_per_second=2.0,
    )
    async with Fleet(settings, config) as fleet:
        summary = await fleet.simulate(duration=10)
    assert summary["send_errors"] == 0
    assert summary["graceful_stops"] > 0 and summary["crashes"] > 0
    assert summary["restarts"] > 0
    assert 15 <= summary["bad_events"] <= 20  # 2 a second (exact in the unit tests)

    # Where each node ended: stopped ones deregistered, crashed ones expire, and the
    # rest expire too once the fleet is gone; each with its newest epoch.
    ending = {"stopped": "deregistered", "crashed": "expired", "running": "expired"}
    expected = {
        node_id: (ending[state], epoch)
        for node_id, (state, epoch) in fleet.states().items()
    }

    async def as_expected():
        found = await statuses(db, fleet.prefix)
        return found == expected and found

    found = await wait_for(as_expected, within=60, what="the fleet's ending")
    counts = Counter(status for status, _ in found.values())
    assert counts["deregistered"] == summary["stopped"]
    assert counts["expired"] == summary["crashed"] + summary["running"]
    checks = await consul_checks(consul, fleet.prefix)
    assert set(checks.values()) <= {"critical"}
    assert len(checks) == counts["expired"]

    # Every bad event was refused, and none changed a node.
    async def dead_letters():
        records = await read_topic_records(settings.topic_name("dead-letter.v1"))
        mine = [r for r in records if r.key and r.key.decode().startswith(fleet.prefix)]
        return len(mine) == summary["bad_events"] and mine

    await wait_for(dead_letters, within=30, what="the dead letters")


async def test_the_fleet_answers_introspection_requests(settings, producer):
    config = FleetConfig(nodes=5, run=run_name("r"), heartbeat_interval=1.0)
    async with Fleet(settings, config) as fleet:
        simulation = asyncio.create_task(fleet.simulate())

        async def started() -> bool:
            return fleet.running == 5

        async def answered() -> bool:
            return fleet.stats.answers >= 1

        try:
            # Nodes start once the fleet reads requests: from then on none is missed.
            await wait_for(started, within=10, what="the fleet started")
            target = fleet.nodes[2].node_id
            request = RequestIntrospection(
                node_id="registry",
                payload=RequestIntrospectionPayload(target_node_id=target, reason="t"),
            )
            await producer.send_and_wait(
                settings.topic_name("registry-requests.v1"),
                request.model_dump_json().encode(),
                key=target.encode(),
            )
            await wait_for(answered, within=20, what="an answer")
        finally:
            fleet.stop()
            await simulation

    sent = await read_topic(
        settings.topic_name("node-introspection.v1"), key=target.encode()
    )
    [answer] = [e for e in sent if e["correlation_id"] == str(request.event_id)]
    assert answer["payload"]["reason"] == "requested"
    assert answer["node_epoch"] == fleet.states()[target][1]
