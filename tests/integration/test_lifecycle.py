"""Heartbeats, expiry, revival, shutdown and introspection requests, end to end."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from registry_app.events import (
    NodeShutdown,
)
from tests.factories import heartbeat_factory, introspection_factory, later
from tests.integration.conftest import (
    FAST_LIVENESS,
    FAST_LIVENESS_TIMEOUT,
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


async def node_row(db, node_id):
    return await db.fetchrow(
        "SELECT status, last_heartbeat, node_epoch FROM nodes WHERE node_id = $1",
        node_id,
    )


async def status_is(db, consul, node_id, status: str, check: str | None):
    """Wait for `status` in PostgreSQL and `check` in Consul (None: no service)."""

    async def probe():
        row = await node_row(db, node_id)
        statuses = {c["ServiceID"]: c["Status"] for c in await consul.node_checks()}
        if row is None or row["status"] != status:
            return None
        return statuses.get(node_id) == check and (row, statuses.get(node_id))

    return await wait_for(probe, within=30, what=f"{node_id} {status}/{check}")


async def events_for(settings, node_id, event_type):
    found = await read_topic(
        settings.topic_name("registry-events.v1"), key=node_id.encode()
    )
    return [e for e in found if e["event_type"] == event_type]


async def keep_beating(fleet, event, seconds: float, every: float = 0.5):
    for _ in range(int(seconds / every)):
        await fleet.publish(heartbeat_factory(event), topic="node-heartbeat.v1")
        await asyncio.sleep(every)


async def test_heartbeats_keep_a_node_active_past_the_timeout(fleet, db, consul):
    event = introspection_factory(node_type="beater")
    await fleet.publish(event)
    await status_is(db, consul, event.node_id, "active", "passing")

    await keep_beating(fleet, event, TIMEOUT * 2)

    row, check = await status_is(db, consul, event.node_id, "active", "passing")
    assert check == "passing"
    assert row["last_heartbeat"] > datetime.now(UTC) - timedelta(seconds=3)


async def test_a_silent_node_expires_once_in_both_backends(fleet, db, consul, settings):
    event = introspection_factory(node_type="quiet")
    await fleet.publish(event)
    await status_is(db, consul, event.node_id, "active", "passing")
    last_beat = datetime.now(UTC)
    await fleet.publish(
        heartbeat_factory(event, at=last_beat), topic="node-heartbeat.v1"
    )

    await status_is(db, consul, event.node_id, "expired", "critical")
    await asyncio.sleep(2)  # more ticks: a second expiry would show now

    expired = await events_for(settings, event.node_id, "NODE_EXPIRED")
    assert len(expired) == 1
    payload = expired[0]["payload"]
    assert payload["node_type"] == "quiet"
    last = datetime.fromisoformat(payload["last_heartbeat"])
    assert abs((last - last_beat).total_seconds()) < 0.001
    deadline = datetime.fromisoformat(payload["deadline"])
    assert deadline - last == timedelta(seconds=TIMEOUT)


async def test_an_expired_node_returns_with_a_newer_introspection(fleet, db, consul):
    event = introspection_factory(node_type="phoenix")
    await fleet.publish(event)
    await status_is(db, consul, event.node_id, "expired", "critical")

    reborn = later(event, 60, node_version="9.9.9")
    reborn = reborn.model_copy(update={"event_time": datetime.now(UTC)})
    await fleet.publish(reborn)

    await status_is(db, consul, event.node_id, "active", "passing")
    instances = await consul.instances("phoenix")
    assert [i["ServiceID"] for i in instances].count(event.node_id) == 1
    assert instances[0]["ServiceMeta"]["node_version"] == "9.9.9"


async def test_an_old_introspection_cannot_revive_an_expired_node(fleet, db, consul):
    event = introspection_factory(node_type="zombie")
    await fleet.publish(event)
    await status_is(db, consul, event.node_id, "expired", "critical")

    # Delayed in a queue somewhere: written before the expiry, arriving after it.
    delayed = later(event, 1, node_version="0.0.1")
    await fleet.publish(delayed)
    marker = introspection_factory(
        node_id=event.node_id + "-marker", node_type="zombie"
    )
    await fleet.publish(marker)
    await status_is(db, consul, marker.node_id, "active", "passing")

    row = await node_row(db, event.node_id)
    assert row["status"] == "expired"


async def test_heartbeat_from_an_unknown_node_asks_it_to_introspect_once(
    fleet, settings
):
    stranger = introspection_factory(node_type="stranger")

    for _ in range(5):
        await fleet.publish(heartbeat_factory(stranger), topic="node-heartbeat.v1")

    async def asked():
        return await read_topic(
            settings.topic_name("registry-requests.v1"), key=stranger.node_id.encode()
        )

    requests = await wait_for(asked, within=20, what="targeted REQUEST_INTROSPECTION")
    await asyncio.sleep(1)
    requests = await asked()
    assert len(requests) == 1
    assert requests[0]["event_type"] == "REQUEST_INTROSPECTION"
    assert requests[0]["payload"]["target_node_id"] == stranger.node_id
    assert requests[0]["payload"]["reason"] == "unknown"


async def test_heartbeat_from_a_restarted_node_asks_for_its_new_introspection(
    fleet, db, consul, settings
):
    event = introspection_factory(node_type="restarter", node_epoch="boot-1")
    await fleet.publish(event)
    await status_is(db, consul, event.node_id, "active", "passing")

    await fleet.publish(
        heartbeat_factory(event, epoch="boot-2"), topic="node-heartbeat.v1"
    )

    async def asked():
        return await read_topic(
            settings.topic_name("registry-requests.v1"), key=event.node_id.encode()
        )

    [request] = await wait_for(asked, within=20, what="REQUEST_INTROSPECTION")
    assert request["payload"]["reason"] == "new-epoch"


async def test_startup_asks_every_node_to_introspect(settings):
    async def broadcast():
        found = await read_topic(
            settings.topic_name("registry-requests.v1"), key=b"registry"
        )
        return [r for r in found if r["payload"]["target_node_id"] is None]

    [request] = await wait_for(broadcast, within=20, what="broadcast request")
    assert request["payload"]["node_type"] is None
    assert request["payload"]["reason"] == "registry-recovered"


async def test_shutdown_deregisters_at_once(fleet, db, consul, settings):
    event = introspection_factory(node_type="leaver")
    await fleet.publish(event)
    await status_is(db, consul, event.node_id, "active", "passing")

    shutdown = NodeShutdown(node_id=event.node_id, node_epoch=event.node_epoch)
    await fleet.publish(shutdown, topic="node-heartbeat.v1")

    await status_is(db, consul, event.node_id, "deregistered", None)
    assert event.node_id not in await consul.services()
    [gone] = await wait_for(
        lambda: events_for(settings, event.node_id, "NODE_DEREGISTERED"),
        within=20,
        what="NODE_DEREGISTERED",
    )
    assert gone["correlation_id"] == str(shutdown.event_id)
    assert json.loads(json.dumps(gone["payload"]))["node_type"] == "leaver"


async def test_shutdown_from_an_older_process_is_ignored(fleet, db, consul):
    old = introspection_factory(node_type="survivor2", node_epoch="boot-1")
    new = later(old, 10).model_copy(update={"node_epoch": "boot-2"})
    await fleet.publish(old)
    await fleet.publish(new)
    await status_is(db, consul, old.node_id, "active", "passing")

    stale = NodeShutdown(
        node_id=old.node_id, node_epoch="boot-1", event_time=old.event_time
    )
    await fleet.publish(stale, topic="node-heartbeat.v1")
    marker = introspection_factory(node_id=old.node_id + "-m", node_type="survivor2")
    await fleet.publish(marker)
    await fleet.publish(heartbeat_factory(new), topic="node-heartbeat.v1")
    await status_is(db, consul, marker.node_id, "active", "passing")
    await asyncio.sleep(1)

    row = await node_row(db, old.node_id)
    assert (row["status"], row["node_epoch"]) == ("active", "boot-2")
