"""Read what the backends hold, for operators and the demo."""

from __future__ import annotations

import asyncpg

from registry_app.backends.consul import ConsulCatalog
from registry_app.settings import Settings


async def registered_nodes(
    settings: Settings,
) -> tuple[list[asyncpg.Record], dict[str, str]]:
    """Rows of PostgreSQL's node table, and the Consul health of each fleet service."""
    connection = await asyncpg.connect(settings.postgres_dsn_str)
    try:
        rows = await connection.fetch(
            """
            SELECT n.node_id, n.node_type, n.node_version, n.status, n.host, n.port,
                   coalesce(string_agg(t.tool, ',' ORDER BY t.tool), '') AS tools
            FROM nodes n LEFT JOIN node_tools t USING (node_id)
            GROUP BY n.node_id ORDER BY n.node_id
            """
        )
    finally:
        await connection.close()

    consul = ConsulCatalog(settings)
    await consul.start()
    try:
        statuses = await consul.check_statuses()
    finally:
        await consul.close()
    return rows, statuses
