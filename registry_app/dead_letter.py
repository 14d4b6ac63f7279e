"""What a refused event looks like on the dead-letter topic."""

from __future__ import annotations

import base64
import json

from faust.types import Message


def dead_letter_value(message: Message, reason: str) -> bytes:
    """The refused event with the reason and where it came from, as JSON.

    `value` is the text for people; `value_base64` the exact bytes, to replay it.
    """
    raw = message.value
    return json.dumps(
        {
            "reason": reason,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": message.key.decode("utf-8", "replace") if message.key else None,
            "value": raw.decode("utf-8", "replace") if raw is not None else None,
            "value_base64": base64.b64encode(raw).decode() if raw is not None else None,
        }
    ).encode()
