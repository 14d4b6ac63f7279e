"""Bytes from Kafka to validated events, with a reason for everything refused."""

from __future__ import annotations

from pydantic import ValidationError

from registry_app.events import node_event_adapter

MAX_EVENT_BYTES = 256 * 1024


class InvalidEvent(ValueError):
    """An event the registry cannot accept; `reason` is safe to log and dead-letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item["loc"]) or "event"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def decode_node_event(raw: bytes | None):
    """Validate one node event; raise InvalidEvent saying why it is refused."""
    if raw is None:
        raise InvalidEvent("empty message (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {len(raw)} bytes, the limit is {MAX_EVENT_BYTES}")
    try:
        return node_event_adapter.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc)) from None
