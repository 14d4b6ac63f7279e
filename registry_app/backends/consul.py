"""Consul: fleet nodes as services of one external catalog node, set in transactions.

Why the catalog and not the agent API: a service registered through an agent belongs to
that agent, and the agent's anti-entropy removes it when the agent goes away. Several
registry workers share the fleet, and a node moves between workers when partitions move;
so every worker writes to the catalog, under one external node that no agent owns
(`consul_catalog_node`). The service id is the node id, so whichever worker writes it,
there is exactly one instance per node.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import aiohttp
import consul
import consul.aio
from consul.callback import CB
from consul.exceptions import ClientError

from registry_app.backends.base import BackendError, NodeRecord
from registry_app.settings import Settings

logger = logging.getLogger(__name__)

# Consul takes at most 64 operations in one transaction; a node is two (service, check).
NODES_PER_TRANSACTION = 32

# Consul's limits on service metadata (see structs.ValidateServiceMetadata).
META_MAX_PAIRS = 64
META_KEY_MAX_LENGTH = 128
META_VALUE_MAX_LENGTH = 512
_META_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

SERVICE_TAG = "registry-app"


def check_id(node_id: str) -> str:
    return f"service:{node_id}"


def flatten_meta(record: NodeRecord) -> dict[str, str]:
    """Node metadata as Consul service meta: flat, safe keys, within Consul's limits.

    Nested mappings become `parent_child` keys; what does not fit is left out (the full
    metadata is in PostgreSQL).
    """
    meta = {
        "node_id": record.node_id,
        "node_version": record.node_version,
        "node_epoch": record.node_epoch,
    }

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for child_key, child_value in value.items():
                add(f"{key}_{child_key}", child_value)
            return
        key = _META_KEY_UNSAFE.sub("_", key)[:META_KEY_MAX_LENGTH]
        # Consul reserves the consul- prefix for itself.
        if not key or key.lower().startswith("consul-") or key in meta:
            return
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(meta) < META_MAX_PAIRS:
            meta[key] = text[:META_VALUE_MAX_LENGTH]

    for key, value in sorted(record.metadata.items()):
        add(f"meta_{key}", value)
    return meta


def service_definition(record: NodeRecord) -> dict[str, Any]:
    """The catalog service for one node: named by node type, found by tag and meta."""
    return {
        "ID": record.node_id,
        "Service": record.node_type,
        "Address": record.host,
        "Port": record.port,
        "Tags": [SERVICE_TAG, *record.tags],
        "Meta": flatten_meta(record),
    }


def health_check(record: NodeRecord, catalog_node: str) -> dict[str, Any]:
    """A check whose status the registry sets from the node's liveness."""
    passing = record.status == "active"
    return {
        "Node": catalog_node,
        "CheckID": check_id(record.node_id),
        "Name": "registry liveness",
        "Status": "passing" if passing else "critical",
        "Output": f"node status: {record.status}",
        "ServiceID": record.node_id,
        "ServiceName": record.node_type,
    }


class ConsulCatalog:
    """Registers fleet nodes in Consul's catalog; one instance per worker."""

    name = "consul"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._node = settings.consul_catalog_node
        self._client: consul.aio.Consul | None = None

    async def start(self) -> None:
        token = self._settings.consul_token
        self._client = consul.aio.Consul(
            host=self._settings.consul_host,
            port=self._settings.consul_port,
            scheme=self._settings.consul_scheme,
            token=token.get_secret_value() if token else None,
        )
        # Ask for the leader so that an unreachable or leaderless Consul shows at
        # start-up (and is retried there) rather than on the first registration.
        try:
            leader = await self._client.status.leader()
        except (aiohttp.ClientError, OSError, consul.ConsulException) as exc:
            await self.close()
            raise BackendError(
                self.name, f"unreachable: {exc}", retriable=True
            ) from exc
        if not leader:
            await self.close()
            raise BackendError(self.name, "no cluster leader yet", retriable=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.http.close()
            self._client = None

    async def register(self, records: list[NodeRecord]) -> None:
        """Set each node's service and check, in as few transactions as possible."""
        for start in range(0, len(records), NODES_PER_TRANSACTION):
            chunk = records[start : start + NODES_PER_TRANSACTION]
            operations: list[dict[str, Any]] = [self._node_operation()]
            for record in chunk:
                operations.extend(self._operations_for(record))
            await self._transaction(operations)

    def _operations_for(self, record: NodeRecord) -> list[dict[str, Any]]:
        # A deregistered node leaves discovery; an expired one stays, critical, so
        # `?passing` queries drop it while operators still see it went silent.
        if record.status == "deregistered":
            return [
                {
                    "Service": {
                        "Verb": "delete",
                        "Node": self._node,
                        "Service": {"ID": record.node_id, "Service": record.node_type},
                    }
                }
            ]
        return [
            {
                "Service": {
                    "Verb": "set",
                    "Node": self._node,
                    "Service": service_definition(record),
                }
            },
            {"Check": {"Verb": "set", "Check": health_check(record, self._node)}},
        ]

    def _node_operation(self) -> dict[str, Any]:
        # Setting the node in every transaction is cheap and recreates it if Consul lost
        # its state (a dev agent restarted), so a service never points at no node.
        return {
            "Node": {
                "Verb": "set",
                "Node": {
                    "Node": self._node,
                    "Address": self._settings.consul_catalog_node_address,
                    "Meta": {"external-node": "true", "external-probe": "false"},
                },
            }
        }

    async def _transaction(self, operations: list[dict[str, Any]]) -> None:
        if self._client is None:
            raise BackendError(self.name, "not started", retriable=True)

        # py-consul's txn.put sends no ACL token, so go through its HTTP layer directly.
        headers = self._client.prepare_headers()
        try:
            await self._client.http.put(
                CB.json(), "/v1/txn", data=json.dumps(operations), headers=headers
            )
        except consul.Timeout as exc:
            raise BackendError(self.name, "request timed out", retriable=True) from exc
        except (consul.ACLPermissionDenied, consul.ACLDisabled) as exc:
            raise BackendError(
                self.name, f"ACL refused: {exc}", retriable=False
            ) from exc
        except ClientError as exc:
            # 409: rolled back, the body names the operation; 429: rate limited.
            retriable = str(exc).startswith("429")
            raise BackendError(
                self.name, f"transaction refused: {exc}", retriable=retriable
            ) from exc
        except consul.ConsulException as exc:
            # 5xx: no leader, RPC failures; Consul's own transient faults.
            raise BackendError(
                self.name, f"server error: {exc}", retriable=True
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendError(
                self.name, f"unreachable: {exc!r}", retriable=True
            ) from exc

    # --- reads, for the CLI, the views and the tests --------------------------------

    async def services(self) -> dict[str, dict[str, Any]]:
        """Every fleet service on the catalog node, by node id."""
        if self._client is None:
            raise BackendError(self.name, "not started", retriable=True)
        _, node = await self._client.catalog.node(self._node)
        return dict(node["Services"]) if node else {}

    async def check_statuses(self) -> dict[str, str]:
        """The health status Consul reports for each fleet node, by node id."""
        if self._client is None:
            raise BackendError(self.name, "not started", retriable=True)
        _, checks = await self._client.health.node(self._node)
        return {c["ServiceID"]: c["Status"] for c in checks or [] if c["ServiceID"]}
