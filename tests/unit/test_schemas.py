"""The checked-in JSON Schemas and AsyncAPI document match the models and the topics."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from registry_app import schemas
from registry_app.dead_letter import dead_letter_value
from registry_app.decoding import InvalidEvent, decode_node_event
from registry_app.events import (
    BackendOutcome,
    DeregisteredPayload,
    EventType,
    ExpiredPayload,
    NodeDeregistered,
    NodeExpired,
    NodeRegistered,
    NodeShutdown,
    RegisteredPayload,
    RegistrationFailed,
    RegistrationFailedPayload,
    RequestIntrospection,
    RequestIntrospectionPayload,
)
from registry_app.settings import Settings
from registry_app.topics import ALL_TOPICS
from tests.factories import heartbeat_factory, introspection_factory

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
NODE_EVENTS = (
    EventType.NODE_INTROSPECTION,
    EventType.NODE_HEARTBEAT,
    EventType.NODE_SHUTDOWN,
)


def checked_in(relative: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / relative).read_text(encoding="utf-8"))


def validator(event_type: EventType) -> Draft202012Validator:
    # With the format checker, so a malformed uuid is refused too.
    return Draft202012Validator(
        checked_in(schemas.event_file(event_type)),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def wire(event: BaseModel) -> dict[str, Any]:
    """The event as the registry or a node puts it on Kafka."""
    return json.loads(event.model_dump_json())


def real_events() -> list[tuple[EventType, BaseModel]]:
    """One or more events of every type, built by the models as in production."""
    node = introspection_factory("node-a")
    now = datetime.now(UTC)
    ok = BackendOutcome(ok=True)
    return [
        (EventType.NODE_INTROSPECTION, node),
        (EventType.NODE_HEARTBEAT, heartbeat_factory(node)),
        (EventType.NODE_SHUTDOWN, NodeShutdown(node_id="node-a", node_epoch="b")),
        (EventType.REQUEST_INTROSPECTION, RequestIntrospection(node_id="registry")),
        (
            EventType.REQUEST_INTROSPECTION,
            RequestIntrospection(
                node_id="registry",
                payload=RequestIntrospectionPayload(
                    target_node_id="node-a", reason="unknown node"
                ),
            ),
        ),
        (
            EventType.NODE_REGISTERED,
            NodeRegistered(
                node_id="node-a",
                correlation_id=node.event_id,
                payload=RegisteredPayload(
                    node_type="t", generation=3, consul=ok, postgres=ok
                ),
            ),
        ),
        (
            EventType.NODE_EXPIRED,
            NodeExpired(
                node_id="node-a",
                payload=ExpiredPayload(
                    node_type="t",
                    generation=4,
                    last_heartbeat=None,
                    deadline=now + timedelta(seconds=90),
                ),
            ),
        ),
        (
            EventType.NODE_DEREGISTERED,
            NodeDeregistered(
                node_id="node-a",
                payload=DeregisteredPayload(node_type="t", generation=5),
            ),
        ),
        (
            EventType.REGISTRATION_FAILED,
            RegistrationFailed(
                node_id="node-a",
                payload=RegistrationFailedPayload(
                    node_type="t", generation=6, backend="consul", detail="400"
                ),
            ),
        ),
    ]


# --- drift ---------------------------------------------------------------------------


def test_checked_in_files_are_what_the_models_generate_now():
    problems = schemas.check(SCHEMAS_DIR)

    assert not problems, (
        "schemas/ is out of date with the models:\n  "
        + "\n  ".join(problems)
        + f"\nrun: {schemas.WRITE_COMMAND}"
    )


def test_check_reports_drift_and_write_repairs_it(tmp_path, capsys):
    assert schemas.main(["write", str(tmp_path)]) == 0
    assert schemas.check(tmp_path) == []

    (tmp_path / schemas.event_file(EventType.NODE_HEARTBEAT)).write_text("{}\n")
    (tmp_path / "events" / "NODE_EXPLODED.schema.json").write_text("{}\n")
    (tmp_path / schemas.ASYNCAPI_FILE).unlink()
    capsys.readouterr()

    assert schemas.main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "NODE_HEARTBEAT.schema.json: differs from the models" in err
    assert "NODE_EXPLODED.schema.json: no model produces it" in err
    assert "asyncapi.json: missing" in err
    assert schemas.WRITE_COMMAND in err

    schemas.write(tmp_path)
    assert schemas.check(tmp_path) == []
    assert not (tmp_path / "events" / "NODE_EXPLODED.schema.json").exists()


def test_generated_files_do_not_depend_on_the_environment(monkeypatch):
    before = schemas.generated_files()
    monkeypatch.setenv("TOPIC_PREFIX", "elsewhere")
    monkeypatch.setenv("TOPIC_PARTITIONS", "3")

    assert schemas.generated_files() == before


@pytest.mark.parametrize("event_type", list(EventType))
def test_validation_and_serialization_schemas_agree(event_type):
    """One schema serves producers and consumers only while both modes agree."""
    model = schemas.EVENT_MODELS[event_type]

    assert model.model_json_schema(mode="validation") == model.model_json_schema(
        mode="serialization"
    )


# --- event schemas -------------------------------------------------------------------


def test_there_is_one_schema_per_event_type_with_id_and_title():
    files = sorted(p.name for p in (SCHEMAS_DIR / "events").iterdir())

    assert files == sorted(f"{t.value}.schema.json" for t in EventType)
    for event_type in EventType:
        schema = checked_in(schemas.event_file(event_type))
        Draft202012Validator.check_schema(schema)
        assert schema["title"] == event_type.value
        assert schema["$id"] == f"urn:registry-app:schema:event:{event_type.value}:v1"
        assert schema["description"]
        assert schema["properties"]["event_type"] == {
            "const": event_type.value,
            "title": "Event Type",
            "type": "string",
        }
        assert "event_type" in schema["required"]


@pytest.mark.parametrize(
    ("event_type", "event"), real_events(), ids=lambda v: getattr(v, "value", "")
)
def test_every_schema_accepts_what_the_models_produce(event_type, event):
    errors = [e.message for e in validator(event_type).iter_errors(wire(event))]

    assert errors == []


@pytest.mark.parametrize("event_type", NODE_EVENTS)
def test_an_event_with_only_the_required_fields_is_accepted_by_schema_and_decoder(
    event_type,
):
    schema = checked_in(schemas.event_file(event_type))
    minimal_payloads = {
        EventType.NODE_INTROSPECTION: {
            "node_type": "t",
            "node_version": "1",
            "host": "h",
            "port": 1,
        },
        EventType.NODE_HEARTBEAT: {"uptime_seconds": 0},
    }
    event = {"event_type": event_type.value, "node_id": "n", "node_epoch": "e"}
    if event_type in minimal_payloads:
        event["payload"] = minimal_payloads[event_type]
    assert sorted(event) == sorted(schema["required"])

    validator(event_type).validate(event)
    assert decode_node_event(json.dumps(event).encode()).event_type == event_type


def _without(data: dict, *path: str) -> dict:
    data = json.loads(json.dumps(data))
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


def _with(data: dict, value: Any, *path: str) -> dict:
    data = json.loads(json.dumps(data))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


GOOD = wire(introspection_factory("node-a"))
INVALID_INTROSPECTIONS = {
    "node id starting with a dash": _with(GOOD, "-node", "node_id"),
    "node id with a space": _with(GOOD, "node a", "node_id"),
    "node id of 129 characters": _with(GOOD, "n" * 129, "node_id"),
    "node id not a string": _with(GOOD, 7, "node_id"),
    "missing payload.host": _without(GOOD, "payload", "host"),
    "missing payload.port": _without(GOOD, "payload", "port"),
    "missing payload": _without(GOOD, "payload"),
    "missing event_type": _without(GOOD, "event_type"),
    "another event_type": _with(GOOD, "NODE_HEARTBEAT", "event_type"),
    "schema_version 2": _with(GOOD, 2, "schema_version"),
    "unknown field": _with(GOOD, "x", "colour"),
    "unknown payload field": _with(GOOD, "x", "payload", "colour"),
    "port out of range": _with(GOOD, 70000, "payload", "port"),
    "port as a string": _with(GOOD, "8080", "payload", "port"),
    "event_id not a uuid": _with(GOOD, "not-a-uuid", "event_id"),
    "capability without a name": _with(
        GOOD, [{"version": "1"}], "payload", "capabilities"
    ),
    "empty tag": _with(GOOD, [""], "payload", "tags"),
}


@pytest.mark.parametrize(
    "event", INVALID_INTROSPECTIONS.values(), ids=INVALID_INTROSPECTIONS.keys()
)
def test_the_introspection_schema_refuses_invalid_events(event):
    assert list(validator(EventType.NODE_INTROSPECTION).iter_errors(event))


@pytest.mark.parametrize(
    "event",
    [e for k, e in INVALID_INTROSPECTIONS.items() if k != "port as a string"],
    ids=[k for k in INVALID_INTROSPECTIONS if k != "port as a string"],
)
def test_what_the_schema_refuses_the_decoder_refuses_too(event):
    # Except "8080" for a port: pydantic's lax mode takes it, the schema is stricter.
    with pytest.raises(InvalidEvent):
        decode_node_event(json.dumps(event).encode())


def test_the_heartbeat_schema_refuses_a_negative_uptime_and_a_missing_payload():
    good = wire(heartbeat_factory(introspection_factory("node-a")))
    check = validator(EventType.NODE_HEARTBEAT)

    assert check.is_valid(good)
    assert not check.is_valid(_with(good, -1, "payload", "uptime_seconds"))
    assert not check.is_valid(_without(good, "payload", "uptime_seconds"))
    assert not check.is_valid(_without(good, "payload"))


# --- dead letters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"node-a", b'{"event_type": "NODE_INTROSPECTION"'),
        (None, None),
        (b"\xff", b"\xfe"),
    ],
)
def test_the_dead_letter_schema_matches_what_the_registry_writes(key, value):
    message = SimpleNamespace(
        topic="registry.node-introspection.v1",
        partition=3,
        offset=41,
        key=key,
        value=value,
    )
    letter = json.loads(dead_letter_value(message, "Invalid JSON: ..."))

    Draft202012Validator(checked_in(schemas.DEAD_LETTER_FILE)).validate(letter)
    if value is not None:
        assert base64.b64decode(letter["value_base64"]) == value


# --- AsyncAPI ------------------------------------------------------------------------


def _resolve_local(document: dict, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    target: Any = document
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def test_asyncapi_names_exactly_the_registry_topics():
    document = checked_in(schemas.ASYNCAPI_FILE)
    prefix = document["components"]["parameters"]["prefix"]

    assert document["asyncapi"] == "3.0.0"
    assert sorted(c["address"] for c in document["channels"].values()) == sorted(
        "{prefix}." + topic for topic in ALL_TOPICS
    )
    assert prefix["default"] == Settings.model_fields["topic_prefix"].default
    assert document["servers"]["kafka"]["host"] == "{bootstrap}"
    partitions = Settings.model_fields["topic_partitions"].default
    for channel in document["channels"].values():
        assert channel["bindings"]["kafka"]["partitions"] == partitions
        assert channel["x-published-by"]


def test_every_asyncapi_message_references_an_existing_schema():
    document = checked_in(schemas.ASYNCAPI_FILE)
    messages = document["components"]["messages"]

    seen_event_types = set()
    for name, message in messages.items():
        ref = message["payload"]["$ref"]
        if ref.startswith("#/"):
            assert _resolve_local(document, ref)["type"] == "object"
            continue
        schema = json.loads((SCHEMAS_DIR / ref).read_text(encoding="utf-8"))
        if name in EventType.__members__:
            assert schema["title"] == name
            seen_event_types.add(name)
        assert message["bindings"]["kafka"]["key"]
    assert seen_event_types == set(EventType.__members__)


def test_every_asyncapi_reference_inside_the_document_resolves():
    document = checked_in(schemas.ASYNCAPI_FILE)

    for channel in document["channels"].values():
        for message in channel["messages"].values():
            assert _resolve_local(document, message["$ref"])
    for operation in document["operations"].values():
        channel = _resolve_local(document, operation["channel"]["$ref"])
        assert operation["action"] in ("send", "receive")
        for message in operation["messages"]:
            # An operation's messages must be its channel's.
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/")
            assert _resolve_local(document, message["$ref"]) in (
                channel["messages"].values()
            )


def test_each_event_type_travels_on_one_topic():
    document = checked_in(schemas.ASYNCAPI_FILE)
    homes = {
        name: [
            c["address"] for c in document["channels"].values() if name in c["messages"]
        ]
        for name in EventType.__members__
    }

    assert all(len(addresses) == 1 for addresses in homes.values()), homes
    assert homes["NODE_INTROSPECTION"] == ["{prefix}.node-introspection.v1"]
    assert homes["NODE_SHUTDOWN"] == ["{prefix}.node-heartbeat.v1"]


def test_schema_ids_are_unique():
    ids = [
        checked_in(relative)["$id"]
        for relative in schemas.generated_files()
        if relative.endswith(".schema.json")
    ]

    assert len(ids) == len(set(ids))
