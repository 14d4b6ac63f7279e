"""How a node becomes a Consul catalog service."""

from datetime import UTC, datetime

from registry_app.backends.base import NodeRecord
from registry_app.backends.consul import (
    META_MAX_PAIRS,
    META_VALUE_MAX_LENGTH,
    flatten_meta,
    health_check,
    service_definition,
)


def record(**changes) -> NodeRecord:
    fields = dict(
        node_id="node-a",
        node_type="orchestrator",
        node_version="1.0",
        node_epoch="boot-1",
        status="active",
        host="10.0.0.1",
        port=8080,
        last_event_time=datetime(2026, 1, 1, tzinfo=UTC),
        metadata={"region": "eu", "labels": {"team": "core"}, "rack": 7},
        tags=["blue"],
    )
    fields.update(changes)
    return NodeRecord(**fields)


def test_service_is_named_by_type_and_identified_by_node_id():
    service = service_definition(record())

    assert service["ID"] == "node-a"
    assert service["Service"] == "orchestrator"
    assert (service["Address"], service["Port"]) == ("10.0.0.1", 8080)
    assert service["Tags"] == ["registry-app", "blue"]


def test_nested_metadata_is_flattened_to_safe_keys():
    meta = flatten_meta(record())

    assert meta == {
        "node_id": "node-a",
        "node_version": "1.0",
        "node_epoch": "boot-1",
        "meta_labels_team": "core",
        "meta_rack": "7",
        "meta_region": "eu",
    }


def test_metadata_beyond_consul_limits_is_cut_to_fit():
    many = {f"key.{i:03d}": "x" * 1000 for i in range(100)}

    meta = flatten_meta(record(metadata=many))

    assert len(meta) == META_MAX_PAIRS
    assert all(len(v) <= META_VALUE_MAX_LENGTH for v in meta.values())
    assert "meta_key_000" in meta


def test_check_passes_only_for_active_nodes():
    assert health_check(record(), "fleet")["Status"] == "passing"
    assert health_check(record(status="expired"), "fleet")["Status"] == "critical"
