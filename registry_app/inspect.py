"""Read what the backends hold, for operators, the CLI and the demo."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import consul
import consul.aio

from registry_app.backends.base import BackendError
from registry_app.events import NODE_ID_PATTERN
from registry_app.settings import Settings

STATUSES = ("registering", "active", "expired", "deregistered")

_NODE_ID = re.compile(NODE_ID_PATTERN)


@asynccontextmanager
async def _postgres(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection, with every failure to get one as a one-line BackendError."""
    try:
        connection = await asyncpg.connect(
            settings.postgres_dsn_str, timeout=10, command_timeout=30
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BackendError(
            "postgres", f"cannot connect: {exc}", retriable=True
        ) from exc
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    try:
        yield connection
    except asyncpg.UndefinedTableError as exc:
        raise BackendError(
            "postgres",
            "the database has no registry tables yet; a worker creates them at start",
            retriable=True,
        ) from exc
    finally:
        await connection.close()


@asynccontextmanager
async def _consul(settings: Settings) -> AsyncIterator[consul.aio.Consul]:
    token = settings.consul_token
    client = consul.aio.Consul(
        host=settings.consul_host,
        port=settings.consul_port,
        scheme=settings.consul_scheme,
        token=token.get_secret_value() if token else None,
    )
    where = f"{settings.consul_host}:{settings.consul_port}"
    try:
        yield client
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise BackendError(
            "consul", f"unreachable at {where}: {exc}", retriable=True
        ) from exc
    except consul.ConsulException as exc:
        raise BackendError(
            "consul", f"error at {where}: {exc}", retriable=True
        ) from exc
    finally:
        await client.http.close()


async def registered_nodes(
    settings: Settings,
    *,
    prefix: str = "",
    status: str | None = None,
    node_type: str | None = None,
    tool: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """PostgreSQL's rows of the matching nodes, and the Consul check status of each
    fleet service whose node id starts with `prefix`."""
    async with _postgres(settings) as connection:
        rows = await connection.fetch(
            """
            SELECT n.node_id, n.node_type, n.node_version, n.node_epoch, n.status,
                   n.host, n.port, n.last_heartbeat, n.updated_at,
                   coalesce(array_agg(t.tool ORDER BY t.tool)
                            FILTER (WHERE t.tool IS NOT NULL), '{}') AS tools
            FROM nodes n LEFT JOIN node_tools t USING (node_id)
            WHERE starts_with(n.node_id, $1)
              AND ($2::text IS NULL OR n.status = $2)
              AND ($3::text IS NULL OR n.node_type = $3)
              AND ($4::text IS NULL OR EXISTS (
                    SELECT 1 FROM node_tools x
                    WHERE x.node_id = n.node_id AND x.tool = $4))
            GROUP BY n.node_id ORDER BY n.node_id
            """,
            prefix,
            status,
            node_type,
            tool,
        )
    async with _consul(settings) as client:
        _, checks = await client.health.node(settings.consul_catalog_node)
    statuses = {
        c["ServiceID"]: c["Status"]
        for c in checks or []
        if c["ServiceID"] and c["ServiceID"].startswith(prefix)
    }
    return [dict(row) for row in rows], statuses


async def node_details(settings: Settings, node_id: str) -> dict[str, Any] | None:
    """Everything PostgreSQL and Consul hold about one node; None if neither knows it.

    Keys: `postgres` (the row, or None), `tools` (rows of node_tools), `consul`
    (the catalog service, or None) and `checks` (its health checks).
    """
    if not _NODE_ID.match(node_id):
        raise ValueError(f"{node_id!r} is not a node id ({NODE_ID_PATTERN})")
    async with _postgres(settings) as connection:
        row = await connection.fetchrow(
            "SELECT * FROM nodes WHERE node_id = $1", node_id
        )
        tools = await connection.fetch(
            "SELECT tool, version, description, attributes FROM node_tools "
            "WHERE node_id = $1 ORDER BY tool",
            node_id,
        )
    # The node id passed the pattern above, so it is safe inside a filter expression.
    async with _consul(settings) as client:
        _, node = await client.catalog.node(
            settings.consul_catalog_node, filter_expr=f'ID == "{node_id}"'
        )
        _, checks = await client.health.node(
            settings.consul_catalog_node, filter_expr=f'ServiceID == "{node_id}"'
        )
    services = (node or {}).get("Services") or {}
    service = services.get(node_id)
    if row is None and service is None:
        return None
    return {
        "postgres": dict(row) if row is not None else None,
        "tools": [dict(tool) for tool in tools],
        "consul": service,
        "checks": checks or [],
    }
