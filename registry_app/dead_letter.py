"""What a refused event looks like on the dead-letter topic."""

from __future__ import annotations

import base64
import hashlib
import json

from faust.types import Message

# Kafka refuses messages over about 1 MB by default, and the JSON below carries the
# event twice (text and base64): past this size only a prefix and a digest are kept.
MAX_KEPT_BYTES = 256 * 1024


def dead_letter_value(message: Message, reason: str) -> bytes:
    """The refused event with the reason and where it came from, as JSON.

    `value` is the text for people; `value_base64` the exact bytes, to replay it. An
    event over MAX_KEPT_BYTES keeps its first MAX_KEPT_BYTES, with `value_size` and
    `value_sha256` of the whole, and `value_truncated` set.
    """
    raw = message.value
    record = {
        "reason": reason,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key.decode("utf-8", "replace") if message.key else None,
        "value": None,
        "value_base64": None,
    }
    if raw is not None:
        kept = raw[:MAX_KEPT_BYTES]
        record["value"] = kept.decode("utf-8", "replace")
        record["value_base64"] = base64.b64encode(kept).decode()
        if len(raw) > MAX_KEPT_BYTES:
            record["value_truncated"] = True
            record["value_size"] = len(raw)
            record["value_sha256"] = hashlib.sha256(raw).hexdigest()
    return json.dumps(record).encode()
