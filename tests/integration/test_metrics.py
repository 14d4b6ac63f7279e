"""/metrics of a real worker, scraped after real traffic through Kafka."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import introspection_factory
from tests.integration.conftest import wait_for
from tests.integration.test_registration import registered_in_both

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

N = 5


async def scrape(registry_env) -> dict[tuple[str, tuple], float]:
    url = f"http://127.0.0.1:{registry_env['WEB_PORT']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "version=0.0.4" in response.headers["Content-Type"]
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def get(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def wait_for_value(registry_env, name: str, expected: float, **labels: str):
    async def probe():
        return get(await scrape(registry_env), name, **labels) == expected

    try:
        await wait_for(probe, within=30, what=f"{name}{labels} == {expected}")
    except AssertionError:
        found = get(await scrape(registry_env), name, **labels)
        raise AssertionError(f"{name}{labels}: {found}, expected {expected}") from None


async def test_metrics_count_real_registrations_heartbeats_and_dead_letters(
    fleet, db, consul, registry_env, settings
):
    nodes = [introspection_factory(node_type="metered") for _ in range(N)]
    await asyncio.gather(*(fleet.publish(node) for node in nodes))
    for node in nodes:
        await registered_in_both(db, consul, node.node_id)

    # The counters move when the writer reports; the status once it is confirmed.
    await wait_for_value(registry_env, "registry_successful_registrations_total", N)
    await wait_for_value(registry_env, "registry_nodes", N, status="active")
    samples = await scrape(registry_env)
    assert get(samples, "registry_total_registrations_total") == N
    assert get(samples, "registry_failed_registrations_total") == 0
    assert get(samples, "registry_registration_duration_seconds_count") == N
    assert get(samples, "registry_registration_duration_seconds_sum") > 0
    for backend in ("consul", "postgres"):
        assert get(samples, "registry_backend_write_seconds_count", backend=backend) > 0
    assert get(samples, "registry_nodes", status="registering") == 0
    assert get(samples, "registry_retry_backlog") == 0
    assert get(samples, "registry_expiries_total") == 0
    lags = [
        value for (name, _), value in samples.items() if name == "registry_consumer_lag"
    ]
    assert lags and all(value >= 0 for value in lags)

    await fleet.beat(nodes)
    await wait_for_value(registry_env, "registry_heartbeats_total", N, verdict="alive")

    await fleet.publish_raw(nodes[0].node_id.encode(), b"{not json")
    topic = settings.topic_name("node-introspection.v1")
    await wait_for_value(registry_env, "registry_dead_lettered_total", 1, topic=topic)
    # Nothing else moved.
    samples = await scrape(registry_env)
    assert get(samples, "registry_total_registrations_total") == N
    assert get(samples, "registry_nodes", status="active") == N
