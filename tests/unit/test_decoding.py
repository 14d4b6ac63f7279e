"""Decoding node events from raw Kafka bytes."""

import json
import random

import pytest

from registry_app.decoding import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    InvalidEvent,
    decode_json_object,
    decode_node_event,
)
from registry_app.events import (
    HeartbeatPayload,
    NodeHeartbeat,
    NodeIntrospection,
    NodeShutdown,
)
from tests.factories import introspection_factory

EXPECTED_TYPES = "expected one of NODE_INTROSPECTION, NODE_HEARTBEAT, NODE_SHUTDOWN"


def valid_body() -> dict:
    return json.loads(introspection_factory("node-a").model_dump_json())


def refusal(raw: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as refused:
        decode_node_event(raw)
    return refused.value.reason


def nested(levels: int) -> object:
    """`levels` objects nested in one another, around a leaf."""
    value: object = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


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


# Accepted


def test_heartbeat_and_shutdown_events_are_accepted():
    heartbeat = NodeHeartbeat(
        node_id="node-a",
        node_epoch="boot-1",
        payload=HeartbeatPayload(uptime_seconds=12.5, cpu_percent=3.25),
    )
    shutdown = NodeShutdown(node_id="node-a", node_epoch="boot-1")

    assert decode_node_event(heartbeat.model_dump_json().encode()) == heartbeat
    assert decode_node_event(shutdown.model_dump_json().encode()) == shutdown


def test_non_ascii_text_is_accepted_raw_or_escaped():
    event = introspection_factory(
        "node-a",
        metadata={"city": "Zürich", "mood": "🚀", "名前": "ノード"},
        tags=["naïve", "𝄞"],
    )
    raw_utf8 = event.model_dump_json().encode()
    # json.dumps escapes non-ASCII, emoji as a surrogate pair: still one character.
    escaped = json.dumps(json.loads(raw_utf8)).encode()

    assert b"\\ud83d\\ude80" in escaped
    assert decode_node_event(raw_utf8) == event
    assert decode_node_event(escaped) == event


def test_a_missing_schema_version_means_version_one():
    body = valid_body()
    del body["schema_version"]

    assert decode_node_event(json.dumps(body).encode()).schema_version == 1


def test_a_node_id_of_128_characters_is_accepted():
    body = valid_body()
    body["node_id"] = "n" * 128

    assert decode_node_event(json.dumps(body).encode()).node_id == "n" * 128


def test_nesting_up_to_the_limit_is_accepted():
    body = valid_body()
    # The event, payload and metadata objects are the first three levels.
    body["payload"]["metadata"] = {"deep": nested(MAX_DEPTH - 3)}

    assert decode_node_event(json.dumps(body).encode()).payload.metadata == {
        "deep": nested(MAX_DEPTH - 3)
    }


def test_any_json_object_decodes_to_a_dict():
    raw = '{"a": [1, 2.5, "Zürich", null, true], "b": {}}'.encode()

    assert decode_json_object(raw) == {
        "a": [1, 2.5, "Zürich", None, True],
        "b": {},
    }


# Refused before parsing


def test_a_message_without_value_is_refused():
    assert refusal(None) == "empty message (no value)"


def test_the_size_limit_is_checked_before_anything_else():
    raw = b"\xff" * (MAX_EVENT_BYTES + 1)

    assert refusal(raw) == (
        f"event is {MAX_EVENT_BYTES + 1} bytes, the limit is {MAX_EVENT_BYTES}"
    )


def test_the_size_limit_of_decode_json_object_can_be_changed():
    with pytest.raises(InvalidEvent) as refused:
        decode_json_object(b'{"a": 1}', max_bytes=4)

    assert refused.value.reason == "event is 8 bytes, the limit is 4"


# Refused as bytes or JSON


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"node_id": "\xff"}', "invalid start byte (0xff) at byte offset 13"),
        # A surrogate encoded as UTF-8, which the standard forbids.
        (b'{"a": "\xed\xa0\x80"}', "invalid continuation byte (0xed) at byte offset 7"),
        (b'{"a": "\xc3', "unexpected end of data (0xc3) at byte offset 7"),
    ],
)
def test_bytes_that_are_not_utf8_are_refused_with_the_byte_offset(raw, reason):
    assert refusal(raw) == f"Invalid UTF-8: {reason}"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{\n  "a": 1,\n  oops\n}',
            "Expecting property name enclosed in double quotes at line 3 column 3",
        ),
        (b"{} {}", "Extra data at line 1 column 4"),
        (b"", "Expecting value at line 1 column 1"),
        # A byte order mark is not JSON.
        (b"\xef\xbb\xbf{}", "Expecting value at line 1 column 1"),
        # Unescaped, NUL is a control character, which json itself refuses.
        (b'{"a": "x\x00"}', "Invalid control character at line 1 column 9"),
        (b'{"a": "x}', "Unterminated string starting at line 1 column 7"),
        (b'{"a": "\\x"}', "Invalid \\escape at line 1 column 8"),
    ],
)
def test_invalid_json_is_refused_with_line_and_column(raw, reason):
    assert refusal(raw) == f"Invalid JSON: {reason}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(literal):
    raw = json.dumps(valid_body()).replace('"port": 8080', f'"port": {literal}')

    assert refusal(raw.encode()) == f"{literal} is not a valid JSON number"


def test_a_number_too_large_for_a_float_is_refused():
    raw = json.dumps(valid_body()).replace('"port": 8080', '"port": -1e400')

    assert refusal(raw.encode()) == "number '-1e400' is too large for a 64-bit float"


def test_an_integer_with_thousands_of_digits_is_refused():
    raw = json.dumps(valid_body()).replace('"port": 8080', f'"port": {"9" * 5000}')

    assert refusal(raw.encode()) == "Invalid JSON: a number has too many digits"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{"node_id": "a", "node_id": "b"}',
            "duplicate key 'node_id' in an object",
        ),
        (
            b'{"payload": {"tags": [{"x": 1, "y": 2, "x": 3}]}}',
            "duplicate key 'x' in an object",
        ),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(raw, reason):
    assert refusal(raw) == reason


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"null", "null"),
        (b"[]", "an array"),
        (b'"NODE_INTROSPECTION"', "a string"),
        (b"42", "a number"),
        (b"1.5", "a number"),
        (b"true", "a boolean"),
    ],
)
def test_a_top_level_that_is_not_an_object_is_refused(raw, kind):
    assert refusal(raw) == f"the event is {kind}, not a JSON object"


# Refused for PostgreSQL JSONB


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda body: body["payload"]["metadata"].update(note="a\x00b"),
            "payload.metadata.note: string contains the NUL character (\\u0000)",
        ),
        (
            lambda body: body["payload"]["metadata"].update({"a\x00": 1}),
            "payload.metadata: key 'a\\x00' contains the NUL character (\\u0000)",
        ),
        (
            lambda body: body["payload"]["tags"].append("\x00"),
            "payload.tags[1]: string contains the NUL character (\\u0000)",
        ),
        (
            lambda body: body.update({"\x00": 1}),
            "key '\\x00' contains the NUL character (\\u0000)",
        ),
        (
            lambda body: body["payload"].update(host="\ud800"),
            "payload.host: string contains a lone UTF-16 surrogate (\\ud800)",
        ),
        (
            lambda body: body["payload"].update(host="ab\udfff"),
            "payload.host: string contains a lone UTF-16 surrogate (\\udfff)",
        ),
        (
            # A high surrogate followed by something other than a low one.
            lambda body: body["payload"].update(host="\ud83dA"),
            "payload.host: string contains a lone UTF-16 surrogate (\\ud83d)",
        ),
        (
            lambda body: body["payload"]["capabilities"][1]["attributes"].update(
                {"\udc00": 1}
            ),
            "payload.capabilities[1].attributes: "
            "key '\\udc00' contains a lone UTF-16 surrogate (\\udc00)",
        ),
    ],
)
def test_nul_and_lone_surrogates_are_refused_anywhere(change, reason):
    body = valid_body()
    change(body)
    # json.dumps writes NUL as \u0000 and lone surrogates as \udxxx escapes.
    raw = json.dumps(body).encode()

    assert refusal(raw) == f"{reason}, which PostgreSQL JSONB rejects"


def test_nesting_past_the_limit_is_refused():
    body = valid_body()
    body["payload"]["metadata"] = {"deep": nested(MAX_DEPTH - 2)}

    assert refusal(json.dumps(body).encode()) == (
        f"objects and arrays nest deeper than the limit of {MAX_DEPTH} levels"
    )


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000])
def test_nesting_too_deep_for_the_parser_is_refused_the_same_way(raw):
    assert refusal(raw) == (
        f"objects and arrays nest deeper than the limit of {MAX_DEPTH} levels"
    )


# Refused as node events


def test_a_missing_event_type_is_refused_listing_the_node_event_types():
    body = valid_body()
    del body["event_type"]

    assert refusal(json.dumps(body).encode()) == (
        f"event_type is missing; {EXPECTED_TYPES}"
    )


@pytest.mark.parametrize(
    ("event_type", "shown"),
    [
        ("NODE_EXPLODED", "'NODE_EXPLODED'"),
        # The registry's own events are not node events.
        ("NODE_REGISTERED", "'NODE_REGISTERED'"),
        ("node_introspection", "'node_introspection'"),
        (None, "None"),
        (["NODE_INTROSPECTION"], "['NODE_INTROSPECTION']"),
    ],
)
def test_an_unknown_event_type_is_refused_listing_the_node_event_types(
    event_type, shown
):
    body = valid_body()
    body["event_type"] = event_type

    assert refusal(json.dumps(body).encode()) == (
        f"event_type {shown} is not a node event type; {EXPECTED_TYPES}"
    )


@pytest.mark.parametrize(
    ("version", "shown"), [(2, "2"), (0, "0"), ("1", "'1'"), (1.0, "1.0")]
)
def test_an_unsupported_schema_version_is_refused_naming_the_supported_ones(
    version, shown
):
    body = valid_body()
    body["schema_version"] = version

    assert refusal(json.dumps(body).encode()) == (
        f"unsupported schema_version {shown}; supported: 1"
    )


@pytest.mark.parametrize(
    ("node_id", "shown"),
    [
        ("has space/and slash", "'has space/and slash'"),
        ("-starts-with-a-dash", "'-starts-with-a-dash'"),
        ("node-a\n", "'node-a\\n'"),
        ("", "''"),
        ("n" * 129, "'" + "n" * 56 + "..."),
        (42, "42"),
    ],
)
def test_a_node_id_outside_the_pattern_is_refused_naming_node_id(node_id, shown):
    body = valid_body()
    body["node_id"] = node_id

    assert refusal(json.dumps(body).encode()) == (
        f"NODE_INTROSPECTION.node_id: {shown} does not match the node id pattern "
        "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
    )


def test_model_errors_are_summarised_with_field_paths():
    body = valid_body()
    del body["payload"]["host"]
    body["payload"]["port"] = 70000
    body["payload"]["tags"] = [""]
    body["payload"]["colour"] = "red"

    assert refusal(json.dumps(body).encode()) == (
        "NODE_INTROSPECTION.payload.host: Field required; "
        "NODE_INTROSPECTION.payload.port: Input should be less than or equal to 65535; "
        "NODE_INTROSPECTION.payload.tags[0]: String should have at least 1 character; "
        "and 1 more"
    )


def test_odd_keys_in_model_errors_are_quoted_on_one_line():
    body = valid_body()
    body["payload"]["metadata"] = {}
    body["payload"]["endpoints"] = {"": "x"}
    body["payload"]["bad\nkey"] = 1

    reason = refusal(json.dumps(body).encode())

    assert reason == (
        "NODE_INTROSPECTION.payload.endpoints[''].[key]: "
        "String should have at least 1 character; "
        "NODE_INTROSPECTION.payload['bad\\nkey']: Extra inputs are not permitted"
    )


# Properties


TRICKY = [
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"\\u0000",
    b"\\ud800",
    b"\\ud83d\\ude80",
    b"\xff",
    b"\xed\xa0\x80",
    b"\xf0\x9f",
    b"{",
    b"[",
    b"}",
    b'"',
    b",",
    b":",
    b"\\",
    b"\x00",
    b'"node_id": "x",',
    b'"event_type": "NODE_HEARTBEAT",',
    b"[" * 40,
]

ODD_VALUES = [None, True, 0, -1, 1.5, 2**70, "", "x" * 300, "\x00", "\ud800", [], {}]


def mutate(raw: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(raw) + 1)
    match rng.randrange(5):
        case 0:
            return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :]
        case 1:
            return raw[:at] + rng.choice(TRICKY) + raw[at:]
        case 2:
            return raw[:at] + raw[at + rng.randrange(1, 20) :]
        case 3:
            return raw[:at] + raw[at : at + rng.randrange(1, 40)] + raw[at:]
        case _:
            return raw[:at]


def change_a_field(body: dict, rng: random.Random) -> bytes:
    target = body if rng.random() < 0.5 else body["payload"]
    target[rng.choice([*target, "extra"])] = rng.choice(ODD_VALUES)
    return json.dumps(body).encode()


def test_decoding_raises_only_invalid_event_with_a_one_line_reason():
    rng = random.Random(20240601)
    valid = introspection_factory("node-a", metadata={"city": "Zürich"})
    raw_valid = valid.model_dump_json().encode()
    outcomes = {"accepted": 0, "refused": 0}

    for round_ in range(2000):
        if round_ % 4 == 0:
            raw = rng.randbytes(rng.randrange(64))
        elif round_ % 4 == 1:
            raw = change_a_field(json.loads(raw_valid), rng)
        else:
            raw = raw_valid
            for _ in range(rng.randrange(1, 4)):
                raw = mutate(raw, rng)

        try:
            event = decode_node_event(raw)
        except InvalidEvent as exc:
            outcomes["refused"] += 1
            assert exc.reason
            assert len(exc.reason.splitlines()) == 1, exc.reason
            # The reason is dead-lettered as UTF-8: no lone surrogates in it.
            exc.reason.encode()
        else:
            outcomes["accepted"] += 1
            assert isinstance(event, NodeIntrospection | NodeHeartbeat | NodeShutdown)

    # Mutations must reach the model too, not only the JSON checks.
    assert outcomes["accepted"] > 25
    assert outcomes["refused"] > 1000


def test_a_capability_listed_twice_is_refused():
    body = json.loads(introspection_factory("node-a").model_dump_json())
    body["payload"]["capabilities"] = [{"name": "search"}, {"name": "search"}]

    with pytest.raises(InvalidEvent) as refused:
        decode_node_event(json.dumps(body).encode())

    assert "capability 'search' is listed twice" in refused.value.reason
