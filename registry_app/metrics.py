"""Prometheus metrics of one registry worker, served at /metrics by its web server.

Each `RegistryMetrics` has a `CollectorRegistry` of its own (not prometheus_client's
global one), so several registries, e.g. in unit tests, never share counters.

The registration names are the ones the reference PromQL uses:
`registry_registration_duration_seconds` (histogram),
`registry_successful_registrations_total`, `registry_failed_registrations_total` and
`registry_total_registrations_total` (prometheus_client adds `_total` to a counter's
name).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from registry_app.registry import Registry
    from registry_app.tables.nodes import NodeState
    from registry_app.writer import RegistrationOutcome

# From milliseconds (a quiet registry) to seconds (a backend retrying).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# The classic text format generate_latest writes (prometheus_client's
# CONTENT_TYPE_LATEST says version=1.0.0 from 0.22 on).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

NODE_STATUSES = ("registering", "active", "expired", "deregistered")


class RegistryMetrics:
    """Every metric of one worker; the agents and the writer call its methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.registration_duration = Histogram(
            "registry_registration_duration_seconds",
            "Time from the writer receiving a registration to every backend holding it",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.successful_registrations = Counter(
            "registry_successful_registrations",
            "Registrations every backend holds (status active)",
            registry=r,
        )
        self.failed_registrations = Counter(
            "registry_failed_registrations",
            "Registrations a backend refused for good (REGISTRATION_FAILED)",
            registry=r,
        )
        self.total_registrations = Counter(
            "registry_total_registrations",
            "Registrations that ended, successful plus failed",
            registry=r,
        )
        self.backend_write_seconds = Histogram(
            "registry_backend_write_seconds",
            "Duration of each write attempt to a backend",
            ["backend"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.backend_failures = Counter(
            "registry_backend_failures",
            "Failed write attempts per backend (retriable ones are tried again)",
            ["backend", "retriable"],
            registry=r,
        )
        self.heartbeats = Counter(
            "registry_heartbeats",
            "Heartbeats processed, by the registry's verdict",
            ["verdict"],
            registry=r,
        )
        self.expiries = Counter(
            "registry_expiries", "Nodes expired for lack of heartbeats", registry=r
        )
        self.expiries_held = Counter(
            "registry_expiries_held",
            "Ticks on which the mass-expiry guard held an expiry",
            registry=r,
        )
        self.dead_lettered = Counter(
            "registry_dead_lettered",
            "Refused events sent to the dead-letter topic, by the topic they came on",
            ["topic"],
            registry=r,
        )
        self.nodes = Gauge(
            "registry_nodes",
            "Nodes in this worker's partitions of the nodes table, by status",
            ["status"],
            registry=r,
        )
        self.retry_backlog = Gauge(
            "registry_retry_backlog",
            "Registrations some backend has not confirmed yet",
            registry=r,
        )
        self._status_of: dict[str, str] = {}
        self._status_counts: Tally[str] = Tally()
        for status in NODE_STATUSES:
            self.nodes.labels(status).set_function(
                lambda s=status: self._status_counts[s]
            )
        # Per (topic, partition): the offset of the last message an agent processed.
        self.processed_offsets: dict[tuple[str, int], int] = {}

    # --- registrations ---------------------------------------------------------------

    def registration_outcome(self, outcome: RegistrationOutcome) -> None:
        """The writer reported a node every backend holds."""
        if outcome.status != "active":
            return  # expiries and deregistrations are not registrations
        self.registration_duration.observe(outcome.seconds)
        self.successful_registrations.inc()
        self.total_registrations.inc()

    def registration_refused(self) -> None:
        self.failed_registrations.inc()
        self.total_registrations.inc()

    # --- backends (called by the writer) ---------------------------------------------

    @contextmanager
    def backend_write(self, backend: str) -> Iterator[None]:
        """Time one write attempt; count it as a failure if it raises."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            retriable = bool(getattr(exc, "retriable", False))
            self.backend_failures.labels(backend, str(retriable).lower()).inc()
            raise
        finally:
            self.backend_write_seconds.labels(backend).observe(
                time.perf_counter() - started
            )

    # --- node states -----------------------------------------------------------------

    def node_stored(self, state: NodeState) -> None:
        """A node's state was written to the table: keep the counts by status."""
        status = str(state.status)
        previous = self._status_of.get(state.node_id)
        if previous == status:
            return
        if previous is not None:
            self._status_counts[previous] -= 1
        self._status_counts[status] += 1
        self._status_of[state.node_id] = status

    def forget_nodes(self) -> None:
        """The partitions moved: counts are rebuilt from the recovered table."""
        self._status_of.clear()
        self._status_counts.clear()

    # --- consumer --------------------------------------------------------------------

    def processed(self, message: Any) -> None:
        self.processed_offsets[(message.topic, message.partition)] = message.offset

    def bind(self, registry: Registry) -> None:
        """Gauges read at scrape time from the running worker."""
        writer = registry.writer
        self.retry_backlog.set_function(lambda: writer.backlog)
        for backend in writer.backends:
            # Exposed from the start, so rate() sees the first write too.
            self.backend_write_seconds.labels(backend.name)
        self.registry.register(ConsumerLagCollector(registry.app, self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ConsumerLagCollector(Collector):
    """registry_consumer_lag{topic,partition}: messages not yet processed.

    The partition's high watermark (the offset the next message will get) minus the
    offset after the last message an agent processed, for every partition this worker
    is assigned and has processed something on.
    """

    def __init__(self, app: Any, metrics: RegistryMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "registry_consumer_lag",
            "Messages in the partition after the last one processed",
            labels=["topic", "partition"],
        )
        for (topic, partition), offset in sorted(
            self.metrics.processed_offsets.items()
        ):
            highwater = self._highwater(topic, partition)
            if highwater is None:
                continue
            family.add_metric(
                [topic, str(partition)], float(max(0, highwater - offset - 1))
            )
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []

    def _highwater(self, topic: str, partition: int) -> int | None:
        from faust.types import TP

        try:
            consumer = self.app.consumer
            tp = TP(topic, partition)
            if tp not in consumer.assignment():
                return None
            highwater = consumer.highwater(tp)
        except Exception:  # not started, rebalancing: no value this scrape
            return None
        if highwater is None or highwater < 0:
            return None
        return highwater


def install_metrics_view(registry: Registry) -> None:
    """Serve the worker's metrics at /metrics on its Faust web server."""
    metrics: RegistryMetrics = registry.metrics
    metrics.bind(registry)
    from faust import web

    @registry.app.page("/metrics", name="registry.metrics")
    class MetricsView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.bytes(
                metrics.exposition(), headers={"Content-Type": CONTENT_TYPE}
            )
