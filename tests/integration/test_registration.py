"""A node's introspection, through real Kafka, lands in real Consul and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from tests.factories import introspection_factory, later
from tests.integration.conftest import read_topic, read_topic_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]


async def pg_node(db, node_id: str):
    return await db.fetchrow("SELECT * FROM nodes WHERE node_id = $1", node_id)


async def pg_tools(db, node_id: str) -> dict[str, dict]:
    rows = await db.fetch(
        "SELECT tool, version, description, attributes FROM node_tools "
        "WHERE node_id = $1 ORDER BY tool",
        node_id,
    )
    return {
        r["tool"]: {**dict(r), "attributes": json.loads(r["attributes"])} for r in rows
    }


async def registered_in_both(db, consul, node_id: str, *, port: int | None = None):
    async def probe():
        row = await pg_node(db, node_id)
        services = await consul.services()
        if row is None or node_id not in services:
            return None
        if port is not None and (
            row["port"] != port or services[node_id]["Port"] != port
        ):
            return None
        return row, services[node_id]

    return await wait_for(probe, within=60, what=f"{node_id} in Consul and PostgreSQL")


async def test_introspection_registers_the_node_in_consul_and_postgres(
    fleet, db, consul
):
    event = introspection_factory(
        node_type="reducer", host="10.20.30.40", port=7001, tags=["gpu", "blue"]
    )

    await fleet.publish(event)
    row, service = await registered_in_both(db, consul, event.node_id)

    assert row["node_type"] == "reducer"
    assert row["node_version"] == "1.4.2"
    assert row["node_epoch"] == "boot-1"
    assert row["status"] == "active"
    assert (row["host"], row["port"]) == ("10.20.30.40", 7001)
    assert json.loads(row["endpoints"]) == {
        "http": "http://10.20.30.40:7001",
        "metrics": "http://10.20.30.40:9100",
    }
    assert json.loads(row["metadata"]) == {"region": "eu-west", "rack": 7}
    assert row["last_event_time"] == event.event_time
    assert await pg_tools(db, event.node_id) == {
        "summarize": {
            "tool": "summarize",
            "version": "2",
            "description": None,
            "attributes": {},
        },
        "translate": {
            "tool": "translate",
            "version": None,
            "description": None,
            "attributes": {"languages": ["en", "fr"]},
        },
    }

    assert service["Service"] == "reducer"
    assert (service["Address"], service["Port"]) == ("10.20.30.40", 7001)
    assert service["Tags"] == ["registry-app", "gpu", "blue"]
    assert service["Meta"]["node_version"] == "1.4.2"
    assert service["Meta"]["meta_region"] == "eu-west"
    checks = [
        c for c in await consul.checks("reducer") if c["ServiceID"] == event.node_id
    ]
    assert [c["Status"] for c in checks] == ["passing"]


async def test_repeated_event_changes_nothing_and_leaves_one_instance(
    fleet, db, consul
):
    event = introspection_factory(node_type="repeater")
    await fleet.publish(event)
    row, service = await registered_in_both(db, consul, event.node_id)

    for _ in range(3):
        await fleet.publish(event)
    # A marker node published after the repeats: once it is registered, the repeats
    # ahead of it on the same worker have been processed too.
    marker = introspection_factory(
        node_id=event.node_id + "-marker", node_type="repeater"
    )
    await fleet.publish(marker)
    await registered_in_both(db, consul, marker.node_id)
    await asyncio.sleep(1)

    row_after = await pg_node(db, event.node_id)
    assert row_after["updated_at"] == row["updated_at"]
    instances = [
        i for i in await consul.instances("repeater") if i["ServiceID"] == event.node_id
    ]
    assert len(instances) == 1
    assert instances[0]["ModifyIndex"] == service["ModifyIndex"]


async def test_changed_introspection_updates_both_backends(fleet, db, consul):
    event = introspection_factory(node_type="mover", port=8000)
    await fleet.publish(event)
    await registered_in_both(db, consul, event.node_id, port=8000)

    moved = later(
        event, 5, port=9000, node_version="2.0.0", capabilities=[{"name": "summarize"}]
    )
    await fleet.publish(moved)
    row, service = await registered_in_both(db, consul, event.node_id, port=9000)

    assert row["node_version"] == "2.0.0"
    assert service["Meta"]["node_version"] == "2.0.0"
    assert list(await pg_tools(db, event.node_id)) == ["summarize"]
    assert (
        len(
            [
                i
                for i in await consul.instances("mover")
                if i["ServiceID"] == event.node_id
            ]
        )
        == 1
    )


async def test_older_event_arriving_late_does_not_win(fleet, db, consul):
    event = introspection_factory(node_type="ordered", port=8100)
    newer = later(event, 10, port=8200)
    older = later(event, 5, port=8150)

    await fleet.publish(event)
    await fleet.publish(newer)
    await fleet.publish(older)
    marker = introspection_factory(
        node_id=event.node_id + "-marker", node_type="ordered"
    )
    await fleet.publish(marker)
    await registered_in_both(db, consul, marker.node_id)
    await registered_in_both(db, consul, event.node_id, port=8200)
    await asyncio.sleep(1)

    assert (await pg_node(db, event.node_id))["port"] == 8200
    assert (await consul.services())[event.node_id]["Port"] == 8200


async def test_a_burst_of_nodes_is_registered_exactly_once_each(fleet, db, consul):
    events = [introspection_factory(node_type="burst") for _ in range(300)]

    await asyncio.gather(*(fleet.publish(e) for e in events))

    async def all_there():
        count = await db.fetchval(
            "SELECT count(*) FROM nodes WHERE node_id = ANY($1::text[])",
            [e.node_id for e in events],
        )
        instances = await consul.instances("burst")
        return count == 300 and len(instances) == 300 and instances

    instances = await wait_for(all_there, within=90, what="300 nodes in both backends")
    assert sorted(i["ServiceID"] for i in instances) == sorted(
        e.node_id for e in events
    )


async def test_malformed_event_is_dead_lettered_and_the_next_one_registers(
    fleet, db, consul, settings
):
    good = introspection_factory(node_type="survivor")
    # Same key as the good event: the same partition, just before it.
    await fleet.publish_raw(
        good.node_id.encode(), b'{"event_type": "NODE_INTROSPECTION"'
    )
    await fleet.publish(good)

    await registered_in_both(db, consul, good.node_id)

    dead = await read_topic(
        settings.topic_name("dead-letter.v1"), key=good.node_id.encode()
    )
    assert len(dead) == 1
    assert dead[0]["value"] == '{"event_type": "NODE_INTROSPECTION"'
    assert "Invalid JSON" in dead[0]["reason"]


async def test_registry_announces_the_registration_to_the_node(
    fleet, db, consul, settings
):
    event = introspection_factory(node_type="listener")
    await fleet.publish(event)
    await registered_in_both(db, consul, event.node_id)

    async def announced():
        return await read_topic(
            settings.topic_name("registry-events.v1"), key=event.node_id.encode()
        )

    [registered] = await wait_for(announced, within=30, what="NODE_REGISTERED")
    assert registered["event_type"] == "NODE_REGISTERED"
    assert registered["correlation_id"] == str(event.event_id)
    assert registered["payload"]["consul"] == {"ok": True, "detail": None}
    assert registered["payload"]["postgres"] == {"ok": True, "detail": None}


async def test_metadata_past_consul_limits_is_cut_for_consul_but_whole_in_postgres(
    fleet, db, consul
):
    metadata = {f"label/{i:03d}": "v" * 700 for i in range(100)}
    metadata["nested"] = {"deeper": {"key with spaces": True}}
    metadata["consul-reserved"] = "dropped"
    event = introspection_factory(node_type="wide", metadata=metadata)

    await fleet.publish(event)
    row, service = await registered_in_both(db, consul, event.node_id)

    assert json.loads(row["metadata"]) == metadata
    meta = service["Meta"]
    assert len(meta) == 64
    assert all(len(value) <= 512 for value in meta.values())
    assert all(key.replace("_", "").replace("-", "").isalnum() for key in meta)
    assert meta["meta_label_000"] == "v" * 512
    assert meta["node_id"] == event.node_id


async def test_a_node_whose_client_partitions_differently_is_confirmed_once(
    fleet, db, consul, settings
):
    # Regression: librdkafka's default partitioner is not murmur2. The registry must
    # announce on the partition the node's events use, or its confirmation agent
    # looks for the node in the wrong table partition and the node never gets in
    # sync, so every repeat of its introspection is written and announced again.
    from aiokafka.partitioner import DefaultPartitioner

    event = introspection_factory(node_type="crc-client")
    key = event.node_id.encode()
    partitions = list(range(settings.topic_partitions))
    usual = DefaultPartitioner()(key, partitions, partitions)
    chosen = (usual + 1) % settings.topic_partitions
    topic = settings.topic_name("node-introspection.v1")

    await fleet.producer.send_and_wait(
        topic, event.model_dump_json().encode(), key=key, partition=chosen
    )
    await registered_in_both(db, consul, event.node_id)
    await asyncio.sleep(2)  # the confirmation reaches the table
    repeat = later(event, 1)
    await fleet.producer.send_and_wait(
        topic, repeat.model_dump_json().encode(), key=key, partition=chosen
    )
    marker = introspection_factory(node_id=event.node_id + "-m", node_type="crc-client")
    await fleet.publish(marker)
    await registered_in_both(db, consul, marker.node_id)
    await asyncio.sleep(1)

    records = [
        r
        for r in await read_topic_records(settings.topic_name("registry-events.v1"))
        if r.key == key
    ]
    assert [json.loads(r.value)["event_type"] for r in records] == ["NODE_REGISTERED"]
    assert records[0].partition == chosen


async def test_an_event_dated_in_the_future_is_dead_lettered_and_pins_nothing(
    fleet, db, consul, settings
):
    event = introspection_factory(node_type="time-traveller")
    future = event.model_copy(
        update={"event_time": event.event_time + timedelta(days=365)}
    )

    await fleet.publish(future)
    await fleet.publish(event)
    row, _ = await registered_in_both(db, consul, event.node_id)

    assert row["last_event_time"] == event.event_time
    dead = await read_topic(
        settings.topic_name("dead-letter.v1"), key=event.node_id.encode()
    )
    assert len(dead) == 1
    assert "ahead of the registry's clock" in dead[0]["reason"]


async def test_an_event_too_large_to_dead_letter_whole_is_kept_in_part(
    fleet, db, consul, settings
):
    big = introspection_factory(node_type="heavy")
    oversized = (
        big.model_dump_json().encode()[:-1] + b', "x": "' + b"y" * 900_000 + b'"}'
    )
    follower = introspection_factory(node_id=big.node_id, node_type="heavy")

    await fleet.publish_raw(big.node_id.encode(), oversized)
    await fleet.publish(follower)
    await registered_in_both(db, consul, big.node_id)

    [dead] = await read_topic(
        settings.topic_name("dead-letter.v1"), key=big.node_id.encode()
    )
    assert "limit" in dead["reason"]
    assert dead["value_truncated"] is True
    assert dead["value_size"] == len(oversized)
