"""Bytes from Kafka to validated events, with a reason for everything refused."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, get_args

from pydantic import ValidationError

from registry_app.events import (
    NODE_ID_PATTERN,
    SCHEMA_VERSION,
    NodeEvent,
    NodeHeartbeat,
    NodeIntrospection,
    NodeShutdown,
    node_event_adapter,
)

MAX_EVENT_BYTES = 256 * 1024

MAX_DEPTH = 32
"""Most objects and arrays nested in one another, the top-level object counting 1."""

_TOO_DEEP = f"objects and arrays nest deeper than the limit of {MAX_DEPTH} levels"

# The models accept only `schema_version: Literal[SCHEMA_VERSION]`.
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)

# The event_type of each model in the events.NodeEvent union, in declared order.
NODE_EVENT_TYPES = tuple(
    str(model.model_fields["event_type"].default)
    for model in get_args(get_args(NodeEvent)[0])
)
_EXPECTED_TYPES = "expected one of " + ", ".join(NODE_EVENT_TYPES)

# PostgreSQL JSONB refuses NUL and UTF-16 surrogates; json turns escaped pairs
# into one code point, so any surrogate left in a parsed string is a lone one.
_FORBIDDEN_CHARS = re.compile(r"[\x00\ud800-\udfff]")

# The only way to write those in JSON: json refuses raw control characters and
# the UTF-8 decoder refuses encoded surrogates.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")

_NODE_ID = re.compile(NODE_ID_PATTERN)

_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class InvalidEvent(ValueError):
    """An event the registry cannot accept; `reason` is safe to log and dead-letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Problem(Exception):
    """A bad string found by the walk; each container on the way up adds its key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.path: list[str | int] = []


def _show(value: Any, limit: int = 60) -> str:
    """A value as one short line, for quoting client input in a reason."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_plain(key: str) -> bool:
    """Short, printable, no space or dot: safe to show unquoted in a dotted path."""
    return 0 < len(key) <= 64 and key.isprintable() and not (" " in key or "." in key)


def _format_path(parts: Iterable[str | int]) -> str:
    """`payload.capabilities[0].name`; odd keys are quoted so reasons stay one line."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _is_plain(part):
            text += f".{part}" if text else part
        else:
            text += f"[{_show(part)}]"
    return text


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        # Only for the refused: find the first key seen twice.
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidEvent(f"duplicate key {_show(key)} in an object")
            seen.add(key)
    return obj


def _refuse_constant(literal: str) -> None:
    raise InvalidEvent(f"{literal} is not a valid JSON number")


def _finite_float(literal: str) -> float:
    # json reads 1e400 as inf without complaint.
    value = float(literal)
    if math.isinf(value):
        raise InvalidEvent(f"number {_show(literal)} is too large for a 64-bit float")
    return value


# One decoder for all calls: json.loads with hooks would build one per call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
)


def _check_depth(value: dict | list, depth: int = 1) -> None:
    if depth > MAX_DEPTH:
        raise InvalidEvent(_TOO_DEEP)
    for item in value.values() if type(value) is dict else value:
        if type(item) is dict or type(item) is list:
            _check_depth(item, depth + 1)


def _check_text(text: str, *, key: bool = False) -> None:
    found = _FORBIDDEN_CHARS.search(text)
    if found is None:
        return

    char = found.group()
    if char == "\x00":
        name = "the NUL character (\\u0000)"
    else:
        name = f"a lone UTF-16 surrogate (\\u{ord(char):04x})"
    what = f"key {_show(text)}" if key else "string"
    raise _Problem(f"{what} contains {name}, which PostgreSQL JSONB rejects")


def _check_strings(value: Any) -> None:
    """Raise _Problem at the first key or string holding NUL or a lone surrogate."""
    if type(value) is str:
        _check_text(value)
    elif type(value) is dict:
        for key, item in value.items():
            _check_text(key, key=True)
            try:
                _check_strings(item)
            except _Problem as problem:
                problem.path.append(key)
                raise
    elif type(value) is list:
        for index, item in enumerate(value):
            try:
                _check_strings(item)
            except _Problem as problem:
                problem.path.append(index)
                raise


def decode_json_object(raw: bytes | None, *, max_bytes: int = MAX_EVENT_BYTES) -> dict:
    """Strictly parse one JSON object; raise InvalidEvent saying why it is refused.

    Refuses what json.loads lets through but PostgreSQL JSONB or our consumers do
    not: NaN and Infinity, NUL and lone surrogates, duplicate keys, deep nesting.
    """
    if raw is None:
        raise InvalidEvent("empty message (no value)")
    if len(raw) > max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes, the limit is {max_bytes}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(
            f"Invalid UTF-8: {exc.reason} (0x{raw[exc.start]:02x}) "
            f"at byte offset {exc.start}"
        ) from None

    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        # Some messages, like "Unterminated string starting at", end with their "at".
        message = exc.msg.removesuffix(" at")
        raise InvalidEvent(
            f"Invalid JSON: {message} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        # The C parser recurses per level; give up long before it could crash.
        raise InvalidEvent(_TOO_DEEP) from None
    except InvalidEvent:
        raise
    except ValueError:
        # Python refuses to convert integers with thousands of digits.
        raise InvalidEvent("Invalid JSON: a number has too many digits") from None

    if type(obj) is not dict:
        raise InvalidEvent(f"the event is {_JSON_KINDS[type(obj)]}, not a JSON object")

    # Fewer brackets than the limit cannot nest past it: most events skip the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH:
        _check_depth(obj)

    # Most events have no \u0000 or \ud800-\udfff escape and skip this walk.
    if _RISKY_ESCAPE.search(text):
        try:
            _check_strings(obj)
        except _Problem as problem:
            location = _format_path(reversed(problem.path))
            reason = f"{location}: {problem}" if location else str(problem)
            raise InvalidEvent(reason) from None

    return obj


def _check_envelope(obj: dict) -> None:
    """Refuse with a precise reason what pydantic would report less clearly."""
    if "event_type" not in obj:
        raise InvalidEvent(f"event_type is missing; {_EXPECTED_TYPES}")

    # Checked as str first: the value may be an unhashable list or object.
    event_type = obj["event_type"]
    if type(event_type) is not str or event_type not in NODE_EVENT_TYPES:
        raise InvalidEvent(
            f"event_type {_show(event_type)} is not a node event type; "
            f"{_EXPECTED_TYPES}"
        )

    if "schema_version" in obj:
        version = obj["schema_version"]
        if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
            raise InvalidEvent(
                f"unsupported schema_version {_show(version)}; supported: {supported}"
            )

    # A missing node_id is left to pydantic. fullmatch, because in Python's re `$`
    # also matches before a trailing newline.
    if "node_id" in obj:
        node_id = obj["node_id"]
        if type(node_id) is not str or not _NODE_ID.fullmatch(node_id):
            raise InvalidEvent(
                f"{event_type}.node_id: {_show(node_id)} does not match the node id "
                f"pattern {NODE_ID_PATTERN}"
            )


def _describe(error: ValidationError, limit: int = 3) -> str:
    errors = error.errors()
    parts = []
    for item in errors[:limit]:
        location = _format_path(item["loc"]) or "event"
        # Some messages quote the input, which may hold line breaks.
        message = " ".join(item["msg"].splitlines())
        parts.append(f"{location}: {message}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def decode_node_event(
    raw: bytes | None,
) -> NodeIntrospection | NodeHeartbeat | NodeShutdown:
    """Validate one node event; raise InvalidEvent saying why it is refused."""
    obj = decode_json_object(raw)

    _check_envelope(obj)

    try:
        return node_event_adapter.validate_python(obj)
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc)) from None
