"""JSON Schemas of the events and an AsyncAPI document of the topics, from models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from registry_app import topics
from registry_app.decoding import MAX_DEPTH, MAX_EVENT_BYTES
from registry_app.events import (
    NODE_ID_PATTERN,
    SCHEMA_VERSION,
    EventType,
    NodeDeregistered,
    NodeExpired,
    NodeHeartbeat,
    NodeIntrospection,
    NodeRegistered,
    NodeShutdown,
    RegistrationFailed,
    RequestIntrospection,
)
from registry_app.registry import TICK_HEADER as TICK_KEY
from registry_app.requests import REGISTRY_ID
from registry_app.settings import Settings

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"
DEAD_LETTER_FILE = "dead-letter.schema.json"
EVENTS_DIR = "events"
# Checked in under schemas/ for nodes in any language; `check` is run by
# scripts/check.sh and tests/unit/test_schemas.py so they cannot drift.
WRITE_COMMAND = "python -m registry_app.schemas write schemas/"

EVENT_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.NODE_INTROSPECTION: NodeIntrospection,
    EventType.NODE_HEARTBEAT: NodeHeartbeat,
    EventType.NODE_SHUTDOWN: NodeShutdown,
    EventType.REQUEST_INTROSPECTION: RequestIntrospection,
    EventType.NODE_REGISTERED: NodeRegistered,
    EventType.NODE_EXPIRED: NodeExpired,
    EventType.NODE_DEREGISTERED: NodeDeregistered,
    EventType.REGISTRATION_FAILED: RegistrationFailed,
}

# Defaults from the field definitions, not Settings(): the generated files must not
# depend on the environment of whoever runs the command.
DEFAULT_PREFIX: str = Settings.model_fields["topic_prefix"].default
DEFAULT_PARTITIONS: int = Settings.model_fields["topic_partitions"].default
DEFAULT_BOOTSTRAP: str = Settings.model_fields["kafka_bootstrap_servers"].default

_NODE_RULES = (
    "Beyond this schema the registry refuses, to the dead-letter topic: a message "
    f"key other than node_id, an event on another topic than its own, values over "
    f"{MAX_EVENT_BYTES} bytes, invalid UTF-8, "
    "duplicate object keys, NaN or Infinity, \\u0000 or lone surrogates in any "
    f"string, nesting deeper than {MAX_DEPTH}, an event_time without a UTC "
    "offset, and a capability name listed twice."
)


def _topic(name: str) -> str:
    return f"{DEFAULT_PREFIX}.{name}"


_EVENT_DESCRIPTIONS: dict[EventType, str] = {
    EventType.NODE_INTROSPECTION: (
        "A node announces itself: identity, where to reach it, what it offers. "
        f"Nodes publish it on {_topic(topics.INTROSPECTION)} keyed by node_id, at "
        "start-up, when it changes, and when asked by REQUEST_INTROSPECTION. "
        + _NODE_RULES
    ),
    EventType.NODE_HEARTBEAT: (
        "A node is alive. Nodes publish it on "
        f"{_topic(topics.HEARTBEAT)} keyed by node_id, every "
        "HEARTBEAT_INTERVAL_SECONDS. " + _NODE_RULES
    ),
    EventType.NODE_SHUTDOWN: (
        "A node is going away; the registry deregisters it. Nodes publish it on "
        f"{_topic(topics.HEARTBEAT)} keyed by node_id. " + _NODE_RULES
    ),
    EventType.REQUEST_INTROSPECTION: (
        "The registry asks nodes to publish NODE_INTROSPECTION again: every node, "
        "one node type, or one node (payload.target_node_id). Published on "
        f"{_topic(topics.REQUESTS)}, keyed by the target node id, or "
        f'"{REGISTRY_ID}" when not targeted; node_id is the registry\'s own id. '
        "Nodes read every partition."
    ),
    EventType.NODE_REGISTERED: (
        "Both Consul and PostgreSQL hold the node's newest registration. Published "
        f"by the registry on {_topic(topics.REGISTRY_EVENTS)} keyed by node_id; "
        "correlation_id is the event_id of the introspection that caused it."
    ),
    EventType.NODE_EXPIRED: (
        "No sign of life before the deadline: Consul check critical, PostgreSQL "
        f"status expired. Published by the registry on {_topic(topics.REGISTRY_EVENTS)}"
        " keyed by node_id."
    ),
    EventType.NODE_DEREGISTERED: (
        "The node sent NODE_SHUTDOWN: removed from Consul, PostgreSQL status "
        "deregistered. Published by the registry on "
        f"{_topic(topics.REGISTRY_EVENTS)} keyed by node_id."
    ),
    EventType.REGISTRATION_FAILED: (
        "A backend refused the node's registration for good (a 4xx, a constraint); "
        "tried again after the next rebalance or introspection. Published by the "
        f"registry on {_topic(topics.REGISTRY_EVENTS)} keyed by node_id."
    ),
}


def schema_id(name: str) -> str:
    """A stable identifier, not a URL: the files live wherever the repository is."""
    return f"urn:registry-app:schema:{name}:v{SCHEMA_VERSION}"


def event_file(event_type: EventType) -> str:
    """Where an event's schema lives, relative to the schemas folder."""
    return f"{EVENTS_DIR}/{event_type.value}.schema.json"


def event_schema(event_type: EventType) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event type, from its model."""
    # Validation mode: what the models accept, which is what a producer must satisfy.
    # For these models the serialization schema is identical (no computed fields or
    # custom serializers; a unit test keeps it so), so consumers can use it too.
    generated = EVENT_MODELS[event_type].model_json_schema(mode="validation")
    properties = generated.pop("properties")
    # The models default event_type, but it is what consumers (and the registry's
    # decoder) dispatch on: an event without it is refused, so it is required.
    event_type_property = {
        k: v for k, v in properties.pop("event_type").items() if k != "default"
    }
    generated.pop("title")
    generated.pop("description", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(f"event:{event_type.value}"),
        "title": event_type.value,
        "description": _EVENT_DESCRIPTIONS[event_type],
        "type": generated.pop("type"),
        "properties": {"event_type": event_type_property, **properties},
        "required": ["event_type", *generated.pop("required")],
        **generated,
    }


def dead_letter_schema() -> dict[str, Any]:
    """What registry_app.dead_letter writes; a plain dict there, so written by hand."""
    nullable_text = {"type": ["string", "null"]}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id("dead-letter"),
        "title": "DEAD_LETTER",
        "description": (
            "An event the registry refused, with the reason and where it came from. "
            f"Published by the registry on {_topic(topics.DEAD_LETTER)} with the "
            "refused message's key, unchanged."
        ),
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "Why, in one line."},
            "topic": {"type": "string"},
            "partition": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "key": {
                **nullable_text,
                "description": "The key as text (bad UTF-8 replaced); null if none.",
            },
            "value": {
                **nullable_text,
                "description": "The value as text, for people (bad UTF-8 replaced).",
            },
            "value_base64": {
                **nullable_text,
                "contentEncoding": "base64",
                "description": "The exact bytes of the value, to replay it.",
            },
            "value_truncated": {
                "const": True,
                "description": "Present when the value was too large to keep whole: "
                "value and value_base64 then hold its first bytes only.",
            },
            "value_size": {
                "type": "integer",
                "minimum": 0,
                "description": "Size of the whole value, when truncated.",
            },
            "value_sha256": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "SHA-256 of the whole value, when truncated.",
            },
        },
        "required": [
            "reason",
            "topic",
            "partition",
            "offset",
            "key",
            "value",
            "value_base64",
        ],
        "additionalProperties": False,
    }


# --- AsyncAPI ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Channel:
    id: str
    topic: str
    published_by: tuple[str, ...]
    messages: tuple[str, ...]
    description: str
    keys: str


_CHANNELS = (
    _Channel(
        id="nodeIntrospection",
        topic=topics.INTROSPECTION,
        published_by=("nodes",),
        messages=(EventType.NODE_INTROSPECTION,),
        description="Nodes announce themselves; the registry's introspection agent "
        "reads it.",
        keys="Keyed by node id, so one node's events stay in order on one partition.",
    ),
    _Channel(
        id="nodeHeartbeat",
        topic=topics.HEARTBEAT,
        published_by=("nodes", "registry"),
        messages=(EventType.NODE_HEARTBEAT, EventType.NODE_SHUTDOWN, "REGISTRY_TICK"),
        description="Nodes' signs of life and shutdowns; the registry's liveness "
        "agent reads it. The registry also appends its own ticks (header "
        "registry-tick) to every partition it owns, to judge deadlines in order "
        "with the heartbeats: other readers skip them.",
        keys="Node events are keyed by node id, on the same partition as the node's "
        "introspection; ticks are sent to an explicit partition.",
    ),
    _Channel(
        id="registryEvents",
        topic=topics.REGISTRY_EVENTS,
        published_by=("registry",),
        messages=(
            EventType.NODE_REGISTERED,
            EventType.NODE_EXPIRED,
            EventType.NODE_DEREGISTERED,
            EventType.REGISTRATION_FAILED,
        ),
        description="What the registry did about a node. Nodes may read it; the "
        "registry reads it back too (its confirmation agent marks the node in sync).",
        keys="Keyed by the node id the event is about.",
    ),
    _Channel(
        id="registryRequests",
        topic=topics.REQUESTS,
        published_by=("registry",),
        messages=(EventType.REQUEST_INTROSPECTION,),
        description="The registry asks nodes to introspect again (after a start or "
        "rebalance, or on a heartbeat from a node it does not know).",
        keys=f'Keyed by the target node id, or "{REGISTRY_ID}" for a request to '
        "every node or a node type: every node reads every partition.",
    ),
    _Channel(
        id="deadLetter",
        topic=topics.DEAD_LETTER,
        published_by=("registry",),
        messages=("DEAD_LETTER",),
        description="Events the registry refused, with the reason; for people and "
        "replay.",
        keys="Keyed by the refused message's own key, unchanged.",
    ),
)

# (operation id, action, channel id, message names, summary), from the registry's side.
_OPERATIONS = (
    (
        "receiveNodeIntrospection",
        "receive",
        "nodeIntrospection",
        (EventType.NODE_INTROSPECTION,),
        "Nodes send; the registry registers the node in Consul and PostgreSQL.",
    ),
    (
        "receiveNodeHeartbeat",
        "receive",
        "nodeHeartbeat",
        (EventType.NODE_HEARTBEAT, EventType.NODE_SHUTDOWN, "REGISTRY_TICK"),
        "Nodes send heartbeats and shutdowns; the registry keeps liveness, "
        "expires and deregisters.",
    ),
    (
        "sendRegistryTick",
        "send",
        "nodeHeartbeat",
        ("REGISTRY_TICK",),
        "Each worker ticks every heartbeat partition it owns, every "
        "EXPIRY_TICK_SECONDS.",
    ),
    (
        "sendRegistryEvents",
        "send",
        "registryEvents",
        (
            EventType.NODE_REGISTERED,
            EventType.NODE_EXPIRED,
            EventType.NODE_DEREGISTERED,
            EventType.REGISTRATION_FAILED,
        ),
        "The registry announces what it did; nodes may receive.",
    ),
    (
        "receiveRegistryEvents",
        "receive",
        "registryEvents",
        (
            EventType.NODE_REGISTERED,
            EventType.NODE_EXPIRED,
            EventType.NODE_DEREGISTERED,
            EventType.REGISTRATION_FAILED,
        ),
        "The registry reads its announcements back to mark nodes in sync.",
    ),
    (
        "sendIntrospectionRequests",
        "send",
        "registryRequests",
        (EventType.REQUEST_INTROSPECTION,),
        "The registry asks; nodes receive and answer with NODE_INTROSPECTION.",
    ),
    (
        "sendDeadLetters",
        "send",
        "deadLetter",
        ("DEAD_LETTER",),
        "The registry parks each refused event here and carries on.",
    ),
)

_NODE_ID_KEY = {
    "type": "string",
    "pattern": NODE_ID_PATTERN,
    "description": "The node id, as UTF-8 bytes.",
}
_KEYS: dict[str, dict[str, Any]] = {
    **{event_type: _NODE_ID_KEY for event_type in EVENT_MODELS},
    EventType.REQUEST_INTROSPECTION: {
        "type": "string",
        "pattern": NODE_ID_PATTERN,
        "description": "UTF-8 bytes: the target node id (payload.target_node_id), "
        f'or "{REGISTRY_ID}" for a request to every node or to a node type.',
    },
    "REGISTRY_TICK": {
        "type": "string",
        "const": TICK_KEY,
        "description": "UTF-8 bytes; the header, not the key, marks a tick.",
    },
    "DEAD_LETTER": {
        "type": ["string", "null"],
        "description": "The refused message's key bytes, unchanged (may be absent, "
        "or not UTF-8).",
    },
}

_TICK_SCHEMA = {
    "type": "object",
    "properties": {
        "tick_time": {
            "type": "number",
            "description": "The worker's clock, in seconds since the Unix epoch.",
        }
    },
    "required": ["tick_time"],
}


def _message(name: str) -> dict[str, Any]:
    if name == "REGISTRY_TICK":
        message = {
            "title": "Registry tick",
            "summary": "The registry's clock, in order with a partition's heartbeats.",
            "headers": {
                "type": "object",
                "properties": {TICK_KEY: {"const": "1"}},
                "required": [TICK_KEY],
            },
            "payload": {"$ref": "#/components/schemas/RegistryTick"},
        }
    elif name == "DEAD_LETTER":
        message = {
            "title": "Dead letter",
            "summary": "A refused event, with the reason and its exact bytes.",
            "payload": {"$ref": f"./{DEAD_LETTER_FILE}"},
        }
    else:
        event_type = EventType(name)
        message = {
            "title": name,
            "summary": _EVENT_DESCRIPTIONS[event_type].split(". ")[0] + ".",
            "payload": {"$ref": f"./{event_file(event_type)}"},
            "correlationId": {
                "description": "The event_id of the event that caused this one, "
                "if any.",
                "location": "$message.payload#/correlation_id",
            },
        }
    return {
        "name": name,
        "contentType": "application/json",
        **message,
        "bindings": {"kafka": {"key": _KEYS[name], "bindingVersion": "0.5.0"}},
    }


def asyncapi_document() -> dict[str, Any]:
    """The topics as an AsyncAPI 3.0 document, from the registry's side."""
    if {c.topic for c in _CHANNELS} != set(topics.ALL_TOPICS):
        raise RuntimeError("registry_app.schemas: a topic is missing from _CHANNELS")

    channels = {}
    for channel in _CHANNELS:
        channels[channel.id] = {
            "address": "{prefix}." + channel.topic,
            "title": _topic(channel.topic),
            "description": f"{channel.description} Published by "
            f"{' and '.join(channel.published_by)}. {channel.keys} "
            f"TOPIC_PARTITIONS partitions (default {DEFAULT_PARTITIONS}).",
            "parameters": {"prefix": {"$ref": "#/components/parameters/prefix"}},
            "messages": {
                str(name): {"$ref": f"#/components/messages/{name}"}
                for name in channel.messages
            },
            "bindings": {
                "kafka": {
                    "partitions": DEFAULT_PARTITIONS,
                    "bindingVersion": "0.5.0",
                }
            },
            "x-published-by": list(channel.published_by),
        }

    operations = {
        operation_id: {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": summary,
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{name}"}
                for name in messages
            ],
        }
        for operation_id, action, channel_id, messages, summary in _OPERATIONS
    }

    message_names = [str(n) for c in _CHANNELS for n in c.messages]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "registry-app topics",
            "version": str(SCHEMA_VERSION),
            "description": (
                "The Kafka topics of the node registry, seen from the registry: it "
                "receives what nodes send (introspection, heartbeats, shutdowns) and "
                "sends announcements, introspection requests and dead letters. A node "
                "does the mirror image. Values are UTF-8 JSON. Every topic has "
                "TOPIC_PARTITIONS partitions and is created by the registry when "
                "missing. Node events are keyed by node id, and all of one node's "
                "events must land on one partition: any deterministic partitioner of "
                "the key does (murmur2, librdkafka's crc32 default), random or "
                "round-robin partitioning does not. The registry announces on the "
                "partition the node's events arrive on. "
                "Generated from registry_app/events.py by "
                f"`{WRITE_COMMAND}`; do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster nodes and the registry share.",
                "variables": {
                    "bootstrap": {
                        "default": DEFAULT_BOOTSTRAP,
                        "description": "KAFKA_BOOTSTRAP_SERVERS: brokers, "
                        "comma-separated host:port.",
                    }
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "parameters": {
                "prefix": {
                    "default": DEFAULT_PREFIX,
                    "description": "TOPIC_PREFIX: the prefix of every topic name, "
                    "configurable per registry.",
                }
            },
            "schemas": {"RegistryTick": _TICK_SCHEMA},
            "messages": {name: _message(name) for name in dict.fromkeys(message_names)},
        },
    }


# --- files ---------------------------------------------------------------------------


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[str, str]:
    """Every file of the schemas folder, by path relative to it, as text."""
    files = {event_file(t): _dump(event_schema(t)) for t in EVENT_MODELS}
    files[DEAD_LETTER_FILE] = _dump(dead_letter_schema())
    files[ASYNCAPI_FILE] = _dump(asyncapi_document())
    return files


def _stale(folder: Path, expected: dict[str, str]) -> list[Path]:
    """Generated-looking event schemas no model produces any more."""
    events = folder / EVENTS_DIR
    if not events.is_dir():
        return []
    return sorted(
        path
        for path in events.glob("*.schema.json")
        if f"{EVENTS_DIR}/{path.name}" not in expected
    )


def write(folder: Path) -> list[Path]:
    """Write every file (and remove stale event schemas); return what changed."""
    changed = []
    for relative, text in generated_files().items():
        path = folder / relative
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(path)
    for path in _stale(folder, generated_files()):
        path.unlink()
        changed.append(path)
    return changed


def check(folder: Path) -> list[str]:
    """One line per file that differs from what the models generate now."""
    problems = []
    expected = generated_files()
    for relative, text in expected.items():
        path = folder / relative
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the models")
    problems.extend(
        f"{path}: no model produces it" for path in _stale(folder, expected)
    )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m registry_app.schemas",
        description="Write or check the JSON Schemas and AsyncAPI document.",
    )
    parser.add_argument("command", choices=["write", "check"])
    parser.add_argument("folder", type=Path, help="e.g. schemas/")
    args = parser.parse_args(argv)

    if args.command == "write":
        for path in write(args.folder):
            print(f"{'wrote' if path.exists() else 'removed'} {path}")
        return 0
    problems = check(args.folder)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"schemas are out of date; run: {WRITE_COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
