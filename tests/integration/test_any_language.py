"""A node in any language: raw JSON built from the checked-in schemas registers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator

from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

WORKER_SETTINGS = {"HEARTBEAT_FLUSH_SECONDS": "0.5"}

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


# --- the producer side: schema files, standard library, jsonschema, aiokafka --------
# Nothing from registry_app here, as for a node written in another language; the
# fixtures only run the worker, read the backends and give the topic prefix.


def load(relative: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / relative).read_text(encoding="utf-8"))


def event_schema(event_type: str) -> dict[str, Any]:
    return load(f"events/{event_type}.schema.json")


def topic_for(event_type: str, prefix: str) -> str:
    """The topic the AsyncAPI document gives for the event, with our prefix."""
    channels = load("asyncapi.json")["channels"].values()
    [address] = [c["address"] for c in channels if event_type in c["messages"]]
    return address.replace("{prefix}", prefix)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checked(event_type: str, event: dict[str, Any]) -> bytes:
    """The event as bytes, once the schema accepts it and has every required field."""
    schema = event_schema(event_type)
    missing = set(schema["required"]) - set(event)
    assert not missing, f"{event_type} lacks required fields {missing}"
    Draft202012Validator(
        schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    ).validate(event)
    return json.dumps(event).encode("utf-8")


def introspection(node_id: str, at: datetime) -> dict[str, Any]:
    """A NODE_INTROSPECTION written by hand, constants taken from the schema."""
    properties = event_schema("NODE_INTROSPECTION")["properties"]
    return {
        "event_type": properties["event_type"]["const"],
        "schema_version": properties["schema_version"]["const"],
        "event_id": str(uuid.uuid4()),
        "correlation_id": None,
        "node_id": node_id,
        "node_epoch": "polyglot-boot-1",
        "event_time": rfc3339(at),
        "payload": {
            "node_type": "polyglot",
            "node_version": "0.9.1-rust",
            "host": "10.9.8.7",
            "port": 9443,
            "capabilities": [
                {"name": "ocr", "version": "3", "description": "Reads images"},
                {"name": "resize", "attributes": {"max_pixels": 4096}},
            ],
            "endpoints": {"grpc": "10.9.8.7:9443"},
            "metadata": {"language": "rust", "zone": {"name": "b"}},
            "tags": ["polyglot", "edge"],
            "reason": "startup",
        },
    }


def heartbeat(node_id: str, epoch: str, at: datetime) -> dict[str, Any]:
    properties = event_schema("NODE_HEARTBEAT")["properties"]
    return {
        "event_type": properties["event_type"]["const"],
        "schema_version": properties["schema_version"]["const"],
        "event_id": str(uuid.uuid4()),
        "node_id": node_id,
        "node_epoch": epoch,
        "event_time": rfc3339(at),
        "payload": {"uptime_seconds": 4.5, "active_operations": 2},
    }


@pytest.fixture
async def raw_producer(settings):
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()


async def publish(producer, topic: str, node_id: str, value: bytes) -> None:
    # Keyed by node id: the default partitioner (murmur2) puts it where the registry
    # expects the node.
    await producer.send_and_wait(topic, value, key=node_id.encode("utf-8"))


# --- verification ------------------------------------------------------------------


async def registered(db, consul, node_id: str):
    async def probe():
        row = await db.fetchrow("SELECT * FROM nodes WHERE node_id = $1", node_id)
        services = await consul.services()
        if row is None or row["status"] != "active" or node_id not in services:
            return None
        return row, services[node_id]

    return await wait_for(probe, within=60, what=f"{node_id} in both backends")


async def test_a_hand_built_introspection_and_heartbeat_register_the_node(
    raw_producer, settings, db, consul
):
    node_id = f"polyglot-{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC).replace(microsecond=123456)
    event = introspection(node_id, at)
    topic = topic_for("NODE_INTROSPECTION", settings.topic_prefix)
    assert topic == f"{settings.topic_prefix}.node-introspection.v1"

    await publish(raw_producer, topic, node_id, checked("NODE_INTROSPECTION", event))
    row, service = await registered(db, consul, node_id)

    payload = event["payload"]
    assert row["node_type"] == payload["node_type"]
    assert row["node_version"] == payload["node_version"]
    assert row["node_epoch"] == event["node_epoch"]
    assert (row["host"], row["port"]) == (payload["host"], payload["port"])
    assert json.loads(row["endpoints"]) == payload["endpoints"]
    assert json.loads(row["metadata"]) == payload["metadata"]
    assert json.loads(row["tags"]) == payload["tags"]
    assert row["last_event_time"] == at
    tools = await db.fetch(
        "SELECT tool, version, description, attributes FROM node_tools "
        "WHERE node_id = $1 ORDER BY tool",
        node_id,
    )
    assert [
        (t["tool"], t["version"], t["description"], json.loads(t["attributes"]))
        for t in tools
    ] == [
        ("ocr", "3", "Reads images", {}),
        ("resize", None, None, {"max_pixels": 4096}),
    ]

    assert service["Service"] == payload["node_type"]
    assert (service["Address"], service["Port"]) == (payload["host"], payload["port"])
    assert service["Tags"] == ["registry-app", *payload["tags"]]
    assert service["Meta"]["node_id"] == node_id
    assert service["Meta"]["node_version"] == payload["node_version"]
    assert service["Meta"]["node_epoch"] == event["node_epoch"]
    assert service["Meta"]["meta_language"] == "rust"
    assert service["Meta"]["meta_zone_name"] == "b"
    checks = [
        c
        for c in await consul.checks(payload["node_type"])
        if c["ServiceID"] == node_id
    ]
    assert [c["Status"] for c in checks] == ["passing"]

    beat_at = at + timedelta(seconds=2)
    beat = heartbeat(node_id, event["node_epoch"], beat_at)
    heartbeat_topic = topic_for("NODE_HEARTBEAT", settings.topic_prefix)
    await publish(
        raw_producer, heartbeat_topic, node_id, checked("NODE_HEARTBEAT", beat)
    )

    async def heartbeat_recorded():
        seen = await db.fetchval(
            "SELECT last_heartbeat FROM nodes WHERE node_id = $1", node_id
        )
        return seen is not None and abs(seen - beat_at) < timedelta(milliseconds=1)

    await wait_for(heartbeat_recorded, within=30, what="last_heartbeat in PostgreSQL")


async def test_an_introspection_with_only_the_required_fields_registers(
    raw_producer, settings, db, consul
):
    schema = event_schema("NODE_INTROSPECTION")
    payload_schema = schema["$defs"]["IntrospectionPayload"]
    node_id = f"minimal-{uuid.uuid4().hex[:8]}"
    event = {
        "event_type": schema["properties"]["event_type"]["const"],
        "node_id": node_id,
        "node_epoch": "1",
        "payload": {
            "node_type": "minimal",
            "node_version": "1",
            "host": "h",
            "port": 1,
        },
    }
    # Nothing more than the schema requires: the rest has defaults.
    assert sorted(event) == sorted(schema["required"])
    assert sorted(event["payload"]) == sorted(payload_schema["required"])

    topic = topic_for("NODE_INTROSPECTION", settings.topic_prefix)
    await publish(raw_producer, topic, node_id, checked("NODE_INTROSPECTION", event))
    row, service = await registered(db, consul, node_id)

    assert (row["node_type"], row["host"], row["port"]) == ("minimal", "h", 1)
    assert json.loads(row["tags"]) == []
    assert (service["Service"], service["Port"]) == ("minimal", 1)
