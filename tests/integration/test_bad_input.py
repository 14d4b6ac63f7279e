"""Bad messages on the node topics: each is dead-lettered once, with its reason and its
exact bytes, and the partition carries on with the next message."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from registry_app.events import HeartbeatPayload, NodeHeartbeat
from tests.factories import introspection_factory
from tests.integration.conftest import read_topic_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

WORKER_SETTINGS = {
    # One partition per topic: a message published after the bad ones is processed
    # after them.
    "TOPIC_PARTITIONS": "1",
    "HEARTBEAT_FLUSH_SECONDS": "0.5",
    "LIVENESS_TIMEOUT_SECONDS": "3600",
}

INTROSPECTION = "node-introspection.v1"
HEARTBEAT = "node-heartbeat.v1"
RUN = uuid.uuid4().hex[:6]


def valid_event(topic: str, node_id: str) -> dict:
    """A valid event for the topic, as JSON-ready data."""
    if topic == INTROSPECTION:
        return introspection_factory(node_id=node_id).model_dump(mode="json")
    return heartbeat_for(node_id).model_dump(mode="json")


def heartbeat_for(node_id: str, at: datetime | None = None) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id,
        node_epoch="boot-1",
        event_time=at or datetime.now(UTC),
        payload=HeartbeatPayload(uptime_seconds=3.0),
    )


def dumps(data: dict) -> bytes:
    return json.dumps(data).encode()


def with_changes(topic: str, key: str, **changes) -> bytes:
    """A valid event for the node `key`, with some envelope fields changed."""
    return dumps({**valid_event(topic, key), **changes})


def nan_field(topic: str, node_id: str) -> bytes:
    data = valid_event(topic, node_id)
    if topic == INTROSPECTION:
        data["payload"]["port"] = float("nan")
    else:
        data["payload"]["uptime_seconds"] = float("nan")
    raw = dumps(data)  # json writes the literal NaN
    assert b"NaN" in raw
    return raw


def nul_in_string(topic: str, node_id: str) -> bytes:
    raw = with_changes(topic, node_id, node_epoch="boot\x001")
    assert b"\\u0000" in raw
    return raw


def duplicate_keys(topic: str, node_id: str) -> bytes:
    body = dumps(valid_event(topic, node_id)).decode()
    assert body.startswith("{")
    return ('{"node_id": ' + json.dumps(node_id) + ", " + body[1:]).encode()


def other_topics_event(topic: str, node_id: str) -> bytes:
    other = HEARTBEAT if topic == INTROSPECTION else INTROSPECTION
    return dumps(valid_event(other, node_id))


@dataclass(frozen=True)
class BadMessage:
    topic: str
    case: str
    key: str
    value: bytes
    # Words the dead letter's reason must contain (case-insensitive).
    words: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.topic.split('.')[0]}-{self.case}"


def bad_messages(topic: str) -> list[BadMessage]:
    short = topic.split(".")[0].removeprefix("node-")

    def key(case: str) -> str:
        return f"bad-{RUN}-{short}-{case}"

    this_type = "NODE_INTROSPECTION" if topic == INTROSPECTION else "NODE_HEARTBEAT"
    other_type = "NODE_HEARTBEAT" if topic == INTROSPECTION else "NODE_INTROSPECTION"
    cases = [
        (
            "invalid-json",
            b'{"event_type": "' + this_type.encode() + b'", "node_id": ',
            ("Invalid JSON",),
        ),
        ("invalid-utf8", b"\xff\xfe", ("Invalid UTF-8",)),
        ("nan", nan_field(topic, key("nan")), ("NaN",)),
        ("nul", nul_in_string(topic, key("nul")), ("NUL", "node_epoch")),
        ("duplicate-key", duplicate_keys(topic, key("duplicate-key")), ("duplicate",)),
        (
            "unknown-type",
            with_changes(topic, key("unknown-type"), event_type="NODE_DANCING"),
            ("event_type", "NODE_DANCING"),
        ),
        (
            "schema-2",
            with_changes(topic, key("schema-2"), schema_version=2),
            ("schema_version 2",),
        ),
        (
            "node-id-space",
            with_changes(topic, key("node-id-space"), node_id="bad node"),
            ("node_id", "pattern"),
        ),
        (
            "wrong-topic",
            other_topics_event(topic, key("wrong-topic")),
            (other_type, "does not belong"),
        ),
        (
            "key-not-node-id",
            with_changes(topic, key("key-not-node-id"), node_id=f"other-{RUN}"),
            ("message key", key("key-not-node-id"), f"other-{RUN}"),
        ),
    ]
    return [
        BadMessage(topic, case, key(case), value, words) for case, value, words in cases
    ]


BAD = bad_messages(INTROSPECTION) + bad_messages(HEARTBEAT)


@dataclass
class Outcome:
    dead_letters: list[tuple[str | None, dict]]  # (key, envelope), in topic order
    valid_node: str
    heartbeat_at: datetime


async def read_dead_letters(settings) -> list[tuple[str | None, dict]]:
    records = await read_topic_records(settings.topic_name("dead-letter.v1"))
    return [
        (r.key.decode() if r.key is not None else None, json.loads(r.value))
        for r in records
    ]


@pytest.fixture(scope="module")
async def outcome(fleet, db, consul, settings) -> Outcome:
    """Publish every bad message, each topic's followed by a valid one, and wait until
    the valid ones went through."""
    good = introspection_factory(node_type="after-the-bad")
    for message in (m for m in BAD if m.topic == INTROSPECTION):
        await fleet.publish_raw(message.key.encode(), message.value, INTROSPECTION)
    await fleet.publish(good)

    async def registered():
        row = await db.fetchrow(
            "SELECT status FROM nodes WHERE node_id = $1", good.node_id
        )
        checks = {c["ServiceID"]: c["Status"] for c in await consul.node_checks()}
        return (
            row is not None
            and row["status"] == "active"
            and checks.get(good.node_id) == "passing"
        )

    await wait_for(registered, within=60, what="the valid node in both backends")

    for message in (m for m in BAD if m.topic == HEARTBEAT):
        await fleet.publish_raw(message.key.encode(), message.value, HEARTBEAT)
    beat = heartbeat_for(good.node_id)
    await fleet.publish(beat, topic=HEARTBEAT)

    async def heartbeat_recorded():
        seen = await db.fetchval(
            "SELECT last_heartbeat FROM nodes WHERE node_id = $1", good.node_id
        )
        return seen is not None and abs(seen - beat.event_time) < timedelta(
            milliseconds=1
        )

    await wait_for(heartbeat_recorded, within=30, what="the valid heartbeat recorded")

    # Both partitions are past the bad messages; their dead letters were sent first.
    expected = {m.key for m in BAD}

    async def all_dead_lettered():
        letters = await read_dead_letters(settings)
        return expected <= {key for key, _ in letters} and letters

    # If some never comes, each case's test reports its own.
    with contextlib.suppress(AssertionError):
        await wait_for(all_dead_lettered, within=10, what="every dead letter")
    await asyncio.sleep(1)  # a duplicate would be on the topic by now
    return Outcome(
        dead_letters=await read_dead_letters(settings),
        valid_node=good.node_id,
        heartbeat_at=beat.event_time,
    )


async def test_a_valid_node_published_after_the_bad_messages_registers_in_both_backends(
    outcome, db, consul
):
    row = await db.fetchrow(
        "SELECT status, node_type, last_heartbeat FROM nodes WHERE node_id = $1",
        outcome.valid_node,
    )
    assert (row["status"], row["node_type"]) == ("active", "after-the-bad")
    assert abs(row["last_heartbeat"] - outcome.heartbeat_at) < timedelta(milliseconds=1)
    instances = await consul.instances("after-the-bad")
    assert [i["ServiceID"] for i in instances] == [outcome.valid_node]


@pytest.mark.parametrize("message", BAD, ids=lambda m: m.id)
async def test_each_bad_message_is_dead_lettered_once_with_its_reason_and_bytes(
    outcome, message: BadMessage, settings
):
    letters = [envelope for key, envelope in outcome.dead_letters if key == message.key]
    assert len(letters) == 1, f"dead letters for {message.id}: {letters}"
    [letter] = letters

    reason = letter["reason"]
    assert reason.strip()
    for word in message.words:
        assert word.lower() in reason.lower(), f"{word!r} not in {reason!r}"
    assert letter["topic"] == settings.topic_name(message.topic)
    assert letter["key"] == message.key
    assert base64.b64decode(letter["value_base64"]) == message.value
    assert letter["value"] == message.value.decode("utf-8", "replace")


async def test_the_dead_letter_topic_holds_one_entry_per_bad_message_and_nothing_else(
    outcome,
):
    keys = sorted(key for key, _ in outcome.dead_letters)
    assert keys == sorted(m.key for m in BAD)
