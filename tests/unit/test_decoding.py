"""Decoding node events from raw Kafka bytes."""

import json

import pytest

from registry_app.decoding import MAX_EVENT_BYTES, InvalidEvent, decode_node_event
from registry_app.events import NodeIntrospection
from tests.factories import introspection_factory


def test_valid_introspection_round_trips():
    event = introspection_factory("node-a")

    decoded = decode_node_event(event.model_dump_json().encode())

    assert isinstance(decoded, NodeIntrospection)
    assert decoded == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (b"null", "event"),
        (json.dumps({"event_type": "NODE_EXPLODED"}).encode(), "event_type"),
    ],
)
def test_malformed_events_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as refused:
        decode_node_event(raw)

    assert reason in refused.value.reason


def test_node_id_outside_the_pattern_is_refused():
    body = json.loads(introspection_factory("node-a").model_dump_json())
    body["node_id"] = "has space/and slash"

    with pytest.raises(InvalidEvent) as refused:
        decode_node_event(json.dumps(body).encode())

    assert refused.value.reason.startswith("NODE_INTROSPECTION.node_id")


def test_oversized_event_is_refused_before_parsing():
    with pytest.raises(InvalidEvent) as refused:
        decode_node_event(b" " * (MAX_EVENT_BYTES + 1))

    assert "limit" in refused.value.reason


def test_unsupported_schema_version_is_refused():
    body = json.loads(introspection_factory("node-a").model_dump_json())
    body["schema_version"] = 2

    with pytest.raises(InvalidEvent) as refused:
        decode_node_event(json.dumps(body).encode())

    assert "schema_version" in refused.value.reason
