"""Writes accepted registrations to every backend in batches, retrying until they land.

The agents decide what each backend must hold and hand it here; this service batches
the writes, runs each backend on its own so one outage does not hold the other back,
and reports each node once every backend holds its newest generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mode import Service
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential_jitter,
)

from registry_app.backends.base import BackendError, NodeRecord, RegistrationBackend

if TYPE_CHECKING:
    from registry_app.metrics import RegistryMetrics

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingRegistration:
    """The newest registration of one node that some backend does not hold yet."""

    record: NodeRecord
    generation: int
    correlation_id: uuid.UUID | None
    # Extra fields for the event that announces the outcome (e.g. the last heartbeat).
    details: dict[str, Any] = field(default_factory=dict)
    partition: int | None = None  # where the node's events arrive; see NodeState
    submitted_at: float = field(default_factory=time.monotonic)
    done: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class RegistrationOutcome:
    """What the writer reports for a node: every backend holds `generation`."""

    node_id: str
    node_type: str
    status: str  # what the backends now hold: active, expired or deregistered
    generation: int
    correlation_id: uuid.UUID | None
    details: dict[str, Any]
    partition: int | None
    seconds: float


OnRegistered = Callable[[Sequence[RegistrationOutcome]], Awaitable[None]]
OnRefused = Callable[[PendingRegistration, BackendError], Awaitable[None]]


def _is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, BackendError) and exc.retriable


class RegistrationWriter(Service):
    """One per worker; holds the registrations not yet confirmed by every backend."""

    def __init__(
        self,
        backends: Sequence[RegistrationBackend],
        on_registered: OnRegistered,
        on_refused: OnRefused | None = None,
        *,
        batch_size: int = 256,
        max_backoff_seconds: float = 10.0,
        heartbeat_flush_seconds: float = 5.0,
        metrics: RegistryMetrics | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.backends = list(backends)
        self.metrics = metrics
        self._on_registered = on_registered
        self._on_refused = on_refused
        self._heartbeat_flush_seconds = heartbeat_flush_seconds
        # Newest heartbeat time per node, written to backends that keep it, in batches.
        self._heartbeats: dict[str, float] = {}
        self._batch_size = batch_size
        self._max_backoff = max_backoff_seconds
        self._pending: dict[str, PendingRegistration] = {}
        # Per backend: node ids waiting for it, oldest first (dicts keep order).
        self._queues: dict[str, dict[str, None]] = {b.name: {} for b in self.backends}
        self._wakeups: dict[str, asyncio.Event] = {
            b.name: asyncio.Event() for b in self.backends
        }
        self._solo: dict[str, set[str]] = {b.name: set() for b in self.backends}
        self._connected: set[str] = set()
        self._ready = asyncio.Event()

    # --- what the agents call --------------------------------------------------------

    def submit(self, pending: PendingRegistration) -> None:
        """Queue a node's registration for every backend; a newer one replaces older."""
        node_id = pending.record.node_id
        current = self._pending.get(node_id)
        if current is not None and current.generation > pending.generation:
            return
        self._pending[node_id] = pending
        for name, queue in self._queues.items():
            queue[node_id] = None
            self._wakeups[name].set()

    def clear(self) -> None:
        """Forget every pending registration: the partitions are moving.

        The table keeps them; whichever worker recovers a partition resubmits its
        pending nodes, so an old owner never writes over a newer one's work. A batch
        already in flight still lands; it is one generation old at worst.
        """
        self._pending.clear()
        for queue in self._queues.values():
            queue.clear()
        for solo in self._solo.values():
            solo.clear()

    def note_heartbeat(self, node_id: str, event_time: float) -> None:
        """Remember a heartbeat for the next batched write of last-heartbeat times."""
        if event_time > self._heartbeats.get(node_id, 0.0):
            self._heartbeats[node_id] = event_time

    @property
    def backlog(self) -> int:
        """Registrations some backend has not confirmed yet."""
        return len(self._pending)

    # --- service lifecycle -----------------------------------------------------------

    async def on_start(self) -> None:
        for backend in self.backends:
            self.add_future(self._connect_then_drain(backend))
        self.add_future(self._flush_heartbeats_forever())

    async def on_stop(self) -> None:
        for backend in self.backends:
            await backend.close()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def _connect_then_drain(self, backend: RegistrationBackend) -> None:
        # A backend that is down at start-up delays registrations; it never stops the
        # worker, so connect with the same patience as any write.
        async for attempt in self._retrying(backend.name, "connect"):
            with attempt:
                try:
                    await backend.start()
                except BackendError:
                    raise
                except Exception as exc:
                    raise BackendError(backend.name, repr(exc), retriable=True) from exc
        logger.info("%s: connected", backend.name)
        self._connected.add(backend.name)
        if len(self._connected) == len(self.backends):
            self._ready.set()
        await self._drain(backend)

    async def _drain(self, backend: RegistrationBackend) -> None:
        queue = self._queues[backend.name]
        wakeup = self._wakeups[backend.name]
        while not self.should_stop:
            if not queue:
                wakeup.clear()
                await self.wait(wakeup)
                continue

            node_ids = list(queue)[: self._batch_size]
            solo = self._solo[backend.name]
            if solo:
                # Members of a refused batch are retried one by one, to find the
                # record the backend refuses.
                suspects = [n for n in node_ids if n in solo] or [next(iter(solo))]
                node_ids = suspects[:1]
                solo.discard(node_ids[0])
                if node_ids[0] not in queue:
                    continue
            for node_id in node_ids:
                del queue[node_id]
            batch = [self._pending[n] for n in node_ids if n in self._pending]
            if not batch:
                continue
            generations = {p.record.node_id: p.generation for p in batch}

            try:
                async for attempt in self._retrying(backend.name, "write"):
                    with attempt, self._timed_write(backend.name):
                        await backend.register([p.record for p in batch])
                if attempt.retry_state.attempt_number > 1:
                    logger.info(
                        "%s: writing again after %d tries",
                        backend.name,
                        attempt.retry_state.attempt_number,
                    )
            except BackendError as exc:
                await self._refused(backend, batch, exc)
                continue

            await self._mark_done(backend.name, generations)

    async def _refused(
        self, backend: RegistrationBackend, batch: list[PendingRegistration], exc
    ) -> None:
        # Not retriable: the backend refuses these records as they are. Try each
        # alone so one bad record does not sink its batch, then report the ones left.
        # They stay pending in the table: a newer introspection, or the resubmission
        # after the next rebalance, tries again.
        if len(batch) > 1:
            for pending in batch:
                self._queues[backend.name][pending.record.node_id] = None
                self._solo[backend.name].add(pending.record.node_id)
            return
        pending = batch[0]
        logger.error(
            "%s refused node %s (generation %d): %s",
            backend.name,
            pending.record.node_id,
            pending.generation,
            exc,
        )
        if self._on_refused is not None:
            await self._on_refused(pending, exc)

    async def _flush_heartbeats_forever(self) -> None:
        keepers = [b for b in self.backends if hasattr(b, "record_heartbeats")]
        while not self.should_stop and keepers:
            await self.sleep(self._heartbeat_flush_seconds)
            if not self._heartbeats:
                continue
            batch, self._heartbeats = self._heartbeats, {}
            for backend in keepers:
                try:
                    await backend.record_heartbeats(batch)
                except BackendError as exc:
                    # Best effort: the next beats carry newer times anyway.
                    logger.warning(
                        "%s: last-heartbeat write failed: %s", backend.name, exc
                    )
                    for node_id, seen in batch.items():
                        self.note_heartbeat(node_id, seen)

    async def _mark_done(self, backend_name: str, generations: dict[str, int]) -> None:
        finished: list[RegistrationOutcome] = []
        now = time.monotonic()
        for node_id, generation in generations.items():
            pending = self._pending.get(node_id)
            # A newer generation arrived while this one was written: it is queued again.
            if pending is None or pending.generation != generation:
                continue
            pending.done.add(backend_name)
            if len(pending.done) == len(self.backends):
                del self._pending[node_id]
                finished.append(
                    RegistrationOutcome(
                        node_id=node_id,
                        node_type=pending.record.node_type,
                        status=pending.record.status,
                        generation=generation,
                        correlation_id=pending.correlation_id,
                        details=pending.details,
                        partition=pending.partition,
                        seconds=now - pending.submitted_at,
                    )
                )
        if finished:
            await self._on_registered(finished)

    def _timed_write(self, backend_name: str):
        """Each write attempt, timed and counted when the writer has metrics."""
        if self.metrics is None:
            return nullcontext()
        return self.metrics.backend_write(backend_name)

    def _retrying(self, backend_name: str, what: str) -> AsyncRetrying:
        def log_retry(state: RetryCallState) -> None:
            # One warning when a backend starts failing, then every tenth try, so an
            # outage is visible without flooding the log.
            if state.attempt_number == 1 or state.attempt_number % 10 == 0:
                logger.warning(
                    "%s: %s failed (try %d), retrying: %s",
                    backend_name,
                    what,
                    state.attempt_number,
                    state.outcome.exception() if state.outcome else "?",
                )

        return AsyncRetrying(
            retry=retry_if_exception(_is_retriable),
            wait=wait_exponential_jitter(
                multiplier=0.05, max=self._max_backoff, jitter=0.25
            ),
            before_sleep=log_retry,
            reraise=True,
        )
