"""The worker's JSON views, on its own Faust web server, after real registrations."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from tests.factories import introspection_factory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

ALPHA, BETA = "web-alpha", "web-beta"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
async def http(registry_env):
    base = f"http://127.0.0.1:{registry_env['WEB_PORT']}"
    async with aiohttp.ClientSession(base_url=base) as session:
        yield session


async def get(http, path: str, **params) -> tuple[int, dict]:
    async with http.get(path, params=params) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


@pytest.fixture(scope="module")
async def published(fleet, http):
    """Five nodes, three of one type, two of another, each active in both backends."""
    events = [
        introspection_factory(
            node_type=ALPHA if i < 3 else BETA,
            capabilities=[{"name": "summarize", "version": "2"}]
            + ([{"name": "ocr"}] if i % 2 == 0 else []),
        )
        for i in range(5)
    ]
    for event in events:
        await fleet.publish(event)
    for event in events:

        async def active(node_id=event.node_id):
            status, body = await get(http, f"/nodes/{node_id}")
            return status == 200 and body["status"] == "active"

        await wait_for(active, within=60, what=f"{event.node_id} active")
    return events


async def test_one_node_with_its_liveness(http, published):
    event = published[0]
    status, body = await get(http, f"/nodes/{event.node_id}")

    assert status == 200
    registered_at = datetime.fromisoformat(body["registered_at"])
    assert registered_at >= event.event_time
    assert body["partition"] in range(4)
    seen = event.event_time.timestamp()
    assert body == {
        "node_id": event.node_id,
        "node_type": ALPHA,
        "node_version": "1.4.2",
        "node_epoch": "boot-1",
        "host": "10.1.2.3",
        "port": 8080,
        "capabilities": [c.model_dump(mode="json") for c in event.payload.capabilities],
        "endpoints": {
            "http": "http://10.1.2.3:8080",
            "metrics": "http://10.1.2.3:9100",
        },
        "metadata": {"region": "eu-west", "rack": 7},
        "tags": ["blue"],
        "status": "active",
        "last_event_time": _iso(seen),
        "last_event_id": str(event.event_id),
        "generation": 1,
        "synced_generation": 1,
        "registered_at": body["registered_at"],
        "changed_at": _iso(seen),
        "partition": body["partition"],
        "in_sync": True,
        "last_seen": _iso(seen),
        "deadline": _iso(seen + 90.0),  # three default heartbeat intervals
    }


async def test_unknown_node_is_a_json_404(http, published):
    status, body = await get(http, "/nodes/no-such-node")
    assert status == 404
    assert body == {"error": "unknown node id 'no-such-node'", "status": 404}


async def test_filters_by_status_type_and_tool(http, published):
    alpha = sorted(e.node_id for e in published if e.payload.node_type == ALPHA)
    status, body = await get(http, "/nodes", status="active", node_type=ALPHA)
    assert status == 200
    assert [n["node_id"] for n in body["nodes"]] == alpha
    assert body["next_cursor"] is None
    assert body["partitions"] == [0, 1, 2, 3]

    ocr = sorted(e.node_id for i, e in enumerate(published) if i % 2 == 0)
    _, body = await get(http, "/nodes", tool="ocr")
    assert [n["node_id"] for n in body["nodes"]] == ocr

    _, body = await get(http, "/nodes", status="expired")
    assert body["nodes"] == []


async def test_pages_walk_every_node_once(http, published):
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, body = await get(http, "/nodes", **params)
        assert status == 200
        assert len(body["nodes"]) <= 2
        seen.extend(n["node_id"] for n in body["nodes"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(e.node_id for e in published)
    assert pages == 3


async def test_counts(http, published):
    status, body = await get(http, "/counts")
    assert status == 200
    assert body == {
        "total": 5,
        "by_status": {"registering": 0, "active": 5, "expired": 0, "deregistered": 0},
        "by_node_type": {ALPHA: 3, BETA: 2},
        "partitions": [0, 1, 2, 3],
    }


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"limit": "abc"}, "limit: 'abc' is not an integer"),
        ({"limit": "0"}, "limit: 0 is not between 1 and 1000"),
        ({"limit": "1001"}, "limit: 1001 is not between 1 and 1000"),
        (
            {"status": "bogus"},
            "status: 'bogus' is not one of registering, active, expired, deregistered",
        ),
        ({"node_type": ""}, "node_type: empty"),
        (
            {"colour": "blue"},
            "unknown query parameter(s): colour; "
            "allowed: cursor, limit, node_type, status, tool",
        ),
    ],
)
async def test_bad_query_parameters_are_a_json_400(http, params, reason):
    status, body = await get(http, "/nodes", **params)
    assert status == 400
    assert body == {"error": reason, "status": 400}


async def test_health(http, published):
    assert await get(http, "/health/live") == (200, {"status": "live"})
    assert await get(http, "/health/ready") == (200, {"ready": True, "reasons": []})


async def test_partitions_lists_every_owned_partition_with_its_lag(
    http, published, settings
):
    status, body = await get(http, "/partitions")
    assert status == 200
    entries = body["partitions"]
    assert [e["partition"] for e in entries] == list(range(settings.topic_partitions))
    for entry in entries:
        assert entry["role"] == "active"
        assert entry["recovering"] is False
        assert entry["lag"] >= 0
        assert {t["topic"] for t in entry["topics"]} == {
            settings.topic_name("node-introspection.v1"),
            settings.topic_name("node-heartbeat.v1"),
            settings.topic_name("registry-events.v1"),
        }
        for topic in entry["topics"]:
            assert topic["highwater"] >= 0
            assert topic["lag"] >= 0
