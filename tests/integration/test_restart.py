"""A registry restart: expiry is judged by the heartbeats queued meanwhile, not by
how long the registry itself was away."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from registry_app.events import NodeIntrospection
from tests.factories import introspection_factory
from tests.integration.conftest import (
    Fleet,
    WorkerProcess,
    read_topic_records,
    wait_for,
)

pytestmark = pytest.mark.integration

TIMEOUT = 4.0
OUTAGE = 3 * TIMEOUT  # at least 2.5 timeouts without a registry
BEAT_EVERY = 1.0
BEATING = 20

WORKER_SETTINGS = {
    "LIVENESS_TIMEOUT_SECONDS": str(TIMEOUT),
    "EXPIRY_TICK_SECONDS": "0.5",
    "HEARTBEAT_FLUSH_SECONDS": "0.5",
    "REINTROSPECTION_MIN_INTERVAL_SECONDS": "2",
    "TOPIC_PARTITIONS": "4",
    # Keep the mass-expiry guard out of the way: if the restarted registry judged the
    # fleet by its own downtime, the guard would hide that by holding the expiry.
    "EXPIRY_GUARD_MIN_NODES": "100000",
}


class Heartbeats:
    """Heartbeats every node still beating, all with one event time, every second."""

    def __init__(self, fleet: Fleet, nodes: list[NodeIntrospection]) -> None:
        self.fleet = fleet
        self.beating = {node.node_id: node for node in nodes}
        self.last_beat: dict[str, datetime] = {}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def silence(self, node_id: str) -> datetime:
        """Stop beating for the node; return the time of its last heartbeat."""
        async with self._lock:  # not in the middle of a round
            del self.beating[node_id]
            return self.last_beat[node_id]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def beat_once(self) -> None:
        async with self._lock:
            await self._beat()

    async def _beat(self) -> None:
        nodes = list(self.beating.values())
        at = await self.fleet.beat(nodes)
        for node in nodes:
            self.last_beat[node.node_id] = at

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.beat_once()
            await asyncio.sleep(max(0.0, BEAT_EVERY - (time.monotonic() - started)))


@dataclass
class Outage:
    """What the module's scenario did, for the tests to check."""

    beating: list[str]
    silent: str
    silent_last_beat: datetime
    first_log: Path
    restarted_log: Path
    seconds_down: float
    status_before_stop: dict[str, str] = field(default_factory=dict)


async def pg_statuses(db, node_ids: list[str]) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT node_id, status FROM nodes WHERE node_id = ANY($1::text[])", node_ids
    )
    return {r["node_id"]: r["status"] for r in rows}


async def consul_statuses(consul) -> dict[str, str]:
    return {c["ServiceID"]: c["Status"] for c in await consul.node_checks()}


async def registry_events(settings) -> list[tuple[str, dict]]:
    records = await read_topic_records(settings.topic_name("registry-events.v1"))
    return [(r.key.decode(), json.loads(r.value)) for r in records]


@pytest.fixture(scope="module")
async def outage(
    registry_env, tmp_path_factory, fleet, db, consul
) -> AsyncIterator[Outage]:
    """Register a fleet, stop the registry for 3 timeouts while the fleet keeps
    beating (all but one node, silent since just before the stop), start it again on
    the same data directory and let it run a few ticks past its recovery."""
    workdir = tmp_path_factory.mktemp("restart")
    first = WorkerProcess(registry_env, workdir, "worker-1")
    # Same environment and working directory, hence the same RocksDB data directory;
    # its own log file, so its readiness is not read from the first run's log.
    restarted = WorkerProcess(registry_env, workdir, "worker-1-restarted")

    beating = [introspection_factory(node_type="steady") for _ in range(BEATING)]
    silent = introspection_factory(node_type="fading")
    everyone = [*beating, silent]
    ids = [node.node_id for node in everyone]
    heartbeats = Heartbeats(fleet, everyone)

    first.start()
    try:
        await first.wait_ready()
        await asyncio.gather(*(fleet.publish(node) for node in everyone))
        heartbeats.start()

        async def all_registered():
            statuses = await pg_statuses(db, ids)
            checks = await consul_statuses(consul)
            return (
                list(statuses.values()).count("active") == len(ids)
                and all(checks.get(i) == "passing" for i in ids)
                and statuses
            )

        before = await wait_for(
            all_registered, within=60, what="the fleet active in both backends"
        )

        # The worker marks a node in sync once it reads its NODE_REGISTERED back;
        # stopped before that, it would rightly re-send the node after the restart.
        async def all_confirmed():
            log = first.log_path.read_text(errors="replace")
            return all(f"node {i}: registered in both backends" in log for i in ids)

        await wait_for(
            all_confirmed,
            within=30,
            what="the worker to read back every NODE_REGISTERED (its confirmation "
            "agent consumes registry-events.v1)",
        )

        silent_last_beat = await heartbeats.silence(silent.node_id)
        stopping = time.monotonic()
        await asyncio.to_thread(first.stop)
        assert first.process.returncode == 0, first.log_tail()

        await asyncio.sleep(OUTAGE)

        restarted.start()
        await restarted.wait_ready()
        seconds_down = time.monotonic() - stopping

        # The silent node's expiry shows that the restarted worker processes ticks
        # published after its recovery, hence after every heartbeat of the outage.
        async def silent_expired():
            return (await pg_statuses(db, [silent.node_id])).get(
                silent.node_id
            ) == "expired"

        await wait_for(silent_expired, within=60, what="the silent node expired")
        await asyncio.sleep(2 * TIMEOUT)  # 16 more ticks, the fleet still beating
        yield Outage(
            beating=[node.node_id for node in beating],
            silent=silent.node_id,
            silent_last_beat=silent_last_beat,
            first_log=first.log_path,
            restarted_log=restarted.log_path,
            seconds_down=seconds_down,
            status_before_stop=before,
        )
    finally:
        await heartbeats.stop()
        for process in (first, restarted):
            await asyncio.to_thread(process.stop)
            print(f"--- {process.name} log tail ---\n{process.log_tail(60)}")


async def test_registry_down_longer_than_the_timeout_expires_none_of_the_beating_nodes(
    outage, db, consul, settings
):
    assert outage.seconds_down > 2.5 * TIMEOUT
    assert outage.status_before_stop == dict.fromkeys(
        [*outage.beating, outage.silent], "active"
    )

    assert await pg_statuses(db, outage.beating) == dict.fromkeys(
        outage.beating, "active"
    )
    checks = await consul_statuses(consul)
    assert {n: checks.get(n) for n in outage.beating} == dict.fromkeys(
        outage.beating, "passing"
    )
    # The restarted worker keeps recording their heartbeats.
    stale = await db.fetch(
        "SELECT node_id, last_heartbeat FROM nodes WHERE node_id = ANY($1::text[]) "
        "AND NOT last_heartbeat > now() - interval '3 seconds'",
        outage.beating,
    )
    assert stale == []
    expired = [
        key
        for key, event in await registry_events(settings)
        if event["event_type"] == "NODE_EXPIRED" and key in outage.beating
    ]
    assert expired == []
    log = outage.restarted_log.read_text(errors="replace")
    assert "holding the expiry" not in log
    assert not [n for n in outage.beating if f"node {n}: expired" in log]


async def test_a_node_silent_before_the_outage_expires_once_after_the_restart(
    outage, db, consul, settings
):
    assert await pg_statuses(db, [outage.silent]) == {outage.silent: "expired"}
    assert (await consul_statuses(consul)).get(outage.silent) == "critical"

    events = [e for key, e in await registry_events(settings) if key == outage.silent]
    assert [e["event_type"] for e in events] == ["NODE_REGISTERED", "NODE_EXPIRED"]
    payload = events[1]["payload"]
    assert payload["node_type"] == "fading"
    last = datetime.fromisoformat(payload["last_heartbeat"])
    assert abs((last - outage.silent_last_beat).total_seconds()) < 0.001
    deadline = datetime.fromisoformat(payload["deadline"])
    assert abs((deadline - last) - timedelta(seconds=TIMEOUT)) < timedelta(
        milliseconds=1
    )

    # Expired by the restarted worker: the first one was stopped before its deadline.
    assert (
        f"node {outage.silent}: expired, last sign of life"
        not in outage.first_log.read_text(errors="replace")
    )
    restarted_log = outage.restarted_log.read_text(errors="replace")
    assert restarted_log.count(f"node {outage.silent}: expired, last sign of life") == 1
