"""Which nodes are due to expire, per partition, and the guard against mass expiry."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

logger = logging.getLogger(__name__)


class ExpiryIndex:
    """In-memory deadlines by partition, rebuilt from the liveness table on recovery.

    The table is the durable truth; this index only makes a tick cheap (no table scan).
    """

    def __init__(self) -> None:
        self._deadlines: dict[int, dict[str, float]] = defaultdict(dict)
        self._partition_of: dict[str, int] = {}

    def track(self, partition: int, node_id: str, deadline: float) -> None:
        previous = self._partition_of.get(node_id)
        if previous is not None and previous != partition:
            self._deadlines[previous].pop(node_id, None)
        self._deadlines[partition][node_id] = deadline
        self._partition_of[node_id] = partition

    def forget(self, node_id: str) -> None:
        partition = self._partition_of.pop(node_id, None)
        if partition is not None:
            self._deadlines[partition].pop(node_id, None)

    def clear(self) -> None:
        self._deadlines.clear()
        self._partition_of.clear()

    def due(self, partition: int, partition_time: float) -> list[str]:
        """Nodes of the partition whose deadline is before the partition's time."""
        return [
            node_id
            for node_id, deadline in self._deadlines.get(partition, {}).items()
            if deadline < partition_time
        ]

    def tracked(self, partition: int) -> int:
        return len(self._deadlines.get(partition, ()))

    def __len__(self) -> int:
        return len(self._partition_of)


class MassExpiryGuard:
    """Holds an expiry that would remove a large share of a partition's nodes at once.

    So many nodes going silent together is more often the registry's or the network's
    fault than the fleet's. The hold is reported; if the expiry is still due after
    `hold_seconds`, it is a real outage and is applied.
    """

    def __init__(self, *, ratio: float, min_nodes: int, hold_seconds: float) -> None:
        self.ratio = ratio
        self.min_nodes = min_nodes
        self.hold_seconds = hold_seconds
        self._held_since: dict[int, float] = {}
        self._last_report: dict[int, float] = {}
        self.holds = 0

    def allows(self, partition: int, due: int, tracked: int) -> bool:
        """True when `due` of `tracked` nodes may expire now."""
        if tracked < self.min_nodes or due <= self.ratio * tracked:
            self._held_since.pop(partition, None)
            return True

        now = time.monotonic()
        since = self._held_since.setdefault(partition, now)
        if now - since >= self.hold_seconds:
            logger.error(
                "partition %d: %d of %d nodes still silent after %.0fs; expiring them",
                partition,
                due,
                tracked,
                now - since,
            )
            del self._held_since[partition]
            return True

        self.holds += 1
        # Once when the hold starts, then once a minute: not on every tick.
        if now - self._last_report.get(partition, -60.0) < 60.0 and since != now:
            return False
        self._last_report[partition] = now
        logger.warning(
            "partition %d: holding the expiry of %d of %d nodes (over %.0f%% at once); "
            "applied only if still due in %.0fs",
            partition,
            due,
            tracked,
            self.ratio * 100,
            self.hold_seconds - (now - since),
        )
        return False

    @property
    def held_partitions(self) -> list[int]:
        return sorted(self._held_since)


class RequestLimiter:
    """At most one request per key per `interval` seconds, in bounded memory."""

    def __init__(self, interval: float, *, max_keys: int = 100_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.pop(key, None)
        if last is not None and now - last < self.interval:
            self._last[key] = last
            return False

        if len(self._last) >= self.max_keys:
            # Keys sit oldest first (each allow re-inserts its key). Drop the stale
            # ones and, if all are recent, the older half: forgetting a key only risks
            # one early request.
            cutoff = now - self.interval
            recent = [(k, t) for k, t in self._last.items() if t >= cutoff]
            if len(recent) >= self.max_keys:
                recent = recent[len(recent) // 2 :]
            self._last = dict(recent)

        self._last[key] = now
        return True
