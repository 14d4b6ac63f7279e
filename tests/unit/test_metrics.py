"""Metric names the reference PromQL relies on, and the counters the code moves."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry_app.backends.base import BackendError
from registry_app.metrics import RegistryMetrics
from registry_app.registry import Registry
from registry_app.settings import Settings
from registry_app.writer import (
    PendingRegistration,
    RegistrationOutcome,
    RegistrationWriter,
)
from tests.factories import heartbeat_factory, introspection_factory


def samples(metrics: RegistryMetrics) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition, as {(name, sorted labels): value}."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: RegistryMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def outcome(status: str = "active", seconds: float = 0.02) -> RegistrationOutcome:
    return RegistrationOutcome(
        node_id=f"node-{uuid.uuid4().hex[:6]}",
        node_type="reducer",
        status=status,
        generation=1,
        correlation_id=None,
        details={},
        partition=0,
        seconds=seconds,
    )


def test_names_are_the_ones_the_reference_promql_uses():
    names = {name for name, _ in samples(RegistryMetrics())}
    assert {
        "registry_registration_duration_seconds_bucket",
        "registry_registration_duration_seconds_count",
        "registry_registration_duration_seconds_sum",
        "registry_successful_registrations_total",
        "registry_failed_registrations_total",
        "registry_total_registrations_total",
        "registry_expiries_total",
        "registry_expiries_held_total",
        "registry_nodes",
        "registry_retry_backlog",
    } <= names
    # No doubled suffix from prometheus_client's counter naming.
    assert not any(name.endswith("_total_total") for name in names)


def test_duration_buckets_run_from_a_millisecond_to_ten_seconds():
    les = sorted(
        float(dict(labels)["le"])
        for name, labels in samples(RegistryMetrics())
        if name == "registry_registration_duration_seconds_bucket"
    )
    assert les[0] == 0.001
    assert les[-2:] == [10.0, float("inf")]


def test_outcomes_move_the_registration_counters():
    metrics = RegistryMetrics()
    metrics.registration_outcome(outcome("active", 0.02))
    metrics.registration_outcome(outcome("active", 3.0))
    metrics.registration_outcome(outcome("expired"))  # not a registration
    metrics.registration_refused()

    assert value(metrics, "registry_successful_registrations_total") == 2
    assert value(metrics, "registry_failed_registrations_total") == 1
    assert value(metrics, "registry_total_registrations_total") == 3
    assert value(metrics, "registry_registration_duration_seconds_count") == 2
    assert value(metrics, "registry_registration_duration_seconds_sum") == 3.02
    assert (
        value(metrics, "registry_registration_duration_seconds_bucket", le="0.025") == 1
    )


def test_each_metrics_object_has_its_own_registry():
    first, second = RegistryMetrics(), RegistryMetrics()
    first.registration_refused()
    assert value(first, "registry_failed_registrations_total") == 1
    assert value(second, "registry_failed_registrations_total") == 0


def test_backend_write_times_attempts_and_counts_failures():
    metrics = RegistryMetrics()
    with metrics.backend_write("consul"):
        pass
    with (
        pytest.raises(BackendError),
        metrics.backend_write("consul"),
    ):
        raise BackendError("consul", "503", retriable=True)
    with (
        pytest.raises(BackendError),
        metrics.backend_write("postgres"),
    ):
        raise BackendError("postgres", "constraint", retriable=False)

    assert value(metrics, "registry_backend_write_seconds_count", backend="consul") == 2
    assert (
        value(
            metrics,
            "registry_backend_failures_total",
            backend="consul",
            retriable="true",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "registry_backend_failures_total",
            backend="postgres",
            retriable="false",
        )
        == 1
    )


def test_node_counts_follow_status_transitions():
    metrics = RegistryMetrics()

    class State:
        def __init__(self, node_id: str, status: str) -> None:
            self.node_id, self.status = node_id, status

    metrics.node_stored(State("a", "registering"))
    metrics.node_stored(State("b", "registering"))
    metrics.node_stored(State("a", "active"))
    metrics.node_stored(State("a", "active"))
    metrics.node_stored(State("b", "expired"))

    assert value(metrics, "registry_nodes", status="active") == 1
    assert value(metrics, "registry_nodes", status="registering") == 0
    assert value(metrics, "registry_nodes", status="expired") == 1

    metrics.forget_nodes()
    assert value(metrics, "registry_nodes", status="active") == 0


class FlakyBackend:
    """Refuses its first write with a retriable error, then takes every write."""

    def __init__(self, name: str, failures: int = 0) -> None:
        self.name = name
        self.failures = failures
        self.written: list[str] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def register(self, records) -> None:
        if self.failures:
            self.failures -= 1
            raise BackendError(self.name, "try again", retriable=True)
        self.written.extend(r.node_id for r in records)


async def test_writer_reports_each_backend_attempt():
    metrics = RegistryMetrics()
    done = asyncio.Event()
    outcomes: list[RegistrationOutcome] = []

    async def on_registered(finished):
        outcomes.extend(finished)
        for item in finished:
            metrics.registration_outcome(item)
        done.set()

    writer = RegistrationWriter(
        [FlakyBackend("consul", failures=1), FlakyBackend("postgres")],
        on_registered=on_registered,
        metrics=metrics,
    )
    state_record = _record("node-w")
    await writer.start()
    try:
        writer.submit(
            PendingRegistration(record=state_record, generation=1, correlation_id=None)
        )
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await writer.stop()

    assert [o.node_id for o in outcomes] == ["node-w"]
    assert value(metrics, "registry_backend_write_seconds_count", backend="consul") == 2
    assert (
        value(metrics, "registry_backend_write_seconds_count", backend="postgres") == 1
    )
    assert (
        value(
            metrics,
            "registry_backend_failures_total",
            backend="consul",
            retriable="true",
        )
        == 1
    )
    assert value(metrics, "registry_successful_registrations_total") == 1


def _record(node_id: str):
    from registry_app.lifecycle import apply_introspection

    state = apply_introspection(None, introspection_factory(node_id))
    return state.to_record()


# --- the agents, in Faust's test context ---------------------------------------------


class RecordingBackend(FlakyBackend):
    pass


@pytest.fixture
def registry(tmp_path):
    settings = Settings(store="memory://", data_dir=tmp_path, topic_partitions=1)
    return Registry(
        settings, backends=[RecordingBackend("consul"), RecordingBackend("postgres")]
    )


async def test_agents_count_nodes_heartbeats_and_dead_letters(registry):
    node = introspection_factory("node-a", event_time=datetime.now(UTC))
    async with registry.introspection_agent.test_context() as agent:
        await agent.put(node.model_dump_json().encode(), key=b"node-a")
        await agent.put(b"{not json", key=b"node-a")

    async with registry.liveness_agent.test_context() as agent:
        beat = heartbeat_factory(node, at=datetime.now(UTC))
        await agent.put(beat.model_dump_json().encode(), key=b"node-a")

    metrics = registry.metrics
    assert value(metrics, "registry_nodes", status="registering") == 1
    assert value(metrics, "registry_heartbeats_total", verdict="alive") == 1
    topic = registry.topics.introspection.get_topic_name()
    assert value(metrics, "registry_dead_lettered_total", topic=topic) == 1
    assert value(metrics, "registry_retry_backlog") == 1


def test_two_registries_build_their_metrics_side_by_side(tmp_path):
    settings = Settings(store="memory://", data_dir=tmp_path, topic_partitions=1)
    first = Registry(settings, backends=[RecordingBackend("consul")])
    second = Registry(settings, backends=[RecordingBackend("consul")])
    assert first.metrics.registry is not second.metrics.registry
