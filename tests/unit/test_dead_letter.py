"""The dead-letter record of a refused event."""

import base64
import hashlib
import json
from types import SimpleNamespace

from registry_app.dead_letter import MAX_KEPT_BYTES, dead_letter_value


def message(value: bytes | None, key: bytes | None = b"node-a"):
    return SimpleNamespace(
        value=value,
        key=key,
        topic="registry.node-introspection.v1",
        partition=3,
        offset=41,
    )


def test_a_refused_event_keeps_its_exact_bytes_and_origin():
    raw = b'{"bad": \xff}'

    record = json.loads(dead_letter_value(message(raw), "Invalid UTF-8"))

    assert record == {
        "reason": "Invalid UTF-8",
        "topic": "registry.node-introspection.v1",
        "partition": 3,
        "offset": 41,
        "key": "node-a",
        "value": '{"bad": \ufffd}',
        "value_base64": base64.b64encode(raw).decode(),
    }


def test_an_oversized_event_keeps_a_prefix_its_size_and_digest():
    raw = b"x" * (MAX_KEPT_BYTES * 4)

    value = dead_letter_value(message(raw), "too large")
    record = json.loads(value)

    assert len(value) < 1024 * 1024  # fits Kafka's default message size
    assert record["value_truncated"] is True
    assert record["value_size"] == len(raw)
    assert record["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(record["value_base64"]) == raw[:MAX_KEPT_BYTES]


def test_an_event_without_key_or_value_is_recorded_as_such():
    record = json.loads(dead_letter_value(message(None, key=None), "empty"))

    assert (record["key"], record["value"], record["value_base64"]) == (
        None,
        None,
        None,
    )
