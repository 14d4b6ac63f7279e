"""PostgreSQL: the durable, queryable registry of nodes and the tools they offer."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from importlib import resources

import asyncpg
from yoyo import get_backend, read_migrations

from registry_app.backends.base import BackendError, NodeRecord
from registry_app.settings import Settings

logger = logging.getLogger(__name__)

# One statement for a whole batch: arrays in, unnest, upsert.  A row changes only when
# the event is newer than the row's, so a redelivered or stale event is a no-op.
UPSERT_NODES = """
INSERT INTO nodes AS n (
    node_id, node_type, node_version, node_epoch, status, host, port,
    capabilities, endpoints, metadata, tags, last_event_time
)
SELECT node_id, node_type, node_version, node_epoch, status, host, port,
       capabilities::jsonb, endpoints::jsonb, metadata::jsonb, tags::jsonb,
       last_event_time
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
    $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[]
) AS batch(
    node_id, node_type, node_version, node_epoch, status, host, port,
    capabilities, endpoints, metadata, tags, last_event_time
)
ON CONFLICT (node_id) DO UPDATE SET
    node_type = EXCLUDED.node_type,
    node_version = EXCLUDED.node_version,
    node_epoch = EXCLUDED.node_epoch,
    status = EXCLUDED.status,
    host = EXCLUDED.host,
    port = EXCLUDED.port,
    capabilities = EXCLUDED.capabilities,
    endpoints = EXCLUDED.endpoints,
    metadata = EXCLUDED.metadata,
    tags = EXCLUDED.tags,
    last_event_time = EXCLUDED.last_event_time,
    updated_at = now()
WHERE n.last_event_time < EXCLUDED.last_event_time
"""

# Tools of the nodes whose row now holds this batch's event (not of nodes the upsert
# skipped as stale): remove the ones a node no longer offers, then set the rest.
DELETE_DROPPED_TOOLS = """
DELETE FROM node_tools t
USING nodes n, unnest($1::text[], $2::timestamptz[]) AS written(node_id, event_time)
WHERE t.node_id = n.node_id
  AND n.node_id = written.node_id
  AND n.last_event_time = written.event_time
  AND NOT EXISTS (
      SELECT 1 FROM unnest($3::text[], $4::text[]) AS keep(node_id, tool)
      WHERE keep.node_id = t.node_id AND keep.tool = t.tool
  )
"""

UPSERT_TOOLS = """
INSERT INTO node_tools AS t (node_id, tool, version, description, attributes)
SELECT batch.node_id, batch.tool, batch.version, batch.description,
       batch.attributes::jsonb
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]
)
     AS batch(node_id, tool, version, description, attributes, event_time)
JOIN nodes n ON n.node_id = batch.node_id AND n.last_event_time = batch.event_time
ON CONFLICT (node_id, tool) DO UPDATE SET
    version = EXCLUDED.version,
    description = EXCLUDED.description,
    attributes = EXCLUDED.attributes
WHERE (t.version, t.description, t.attributes)
      IS DISTINCT FROM (EXCLUDED.version, EXCLUDED.description, EXCLUDED.attributes)
"""

# Newest heartbeat per node, for many nodes in one statement; never moves backwards.
RECORD_HEARTBEATS = """
UPDATE nodes AS n SET last_heartbeat = beat.seen
FROM unnest($1::text[], $2::timestamptz[]) AS beat(node_id, seen)
WHERE n.node_id = beat.node_id
  AND (n.last_heartbeat IS NULL OR n.last_heartbeat < beat.seen)
"""

# asyncpg's errors that say "the server or the network", not "your statement".
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def apply_migrations(dsn: str) -> int:
    """Bring the schema up to date; safe when several workers start at once.

    Returns how many migrations were applied. Blocking: run it in a thread.
    """
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1
    )
    backend = get_backend(url)
    with resources.as_file(resources.files("registry_app") / "migrations") as folder:
        migrations = read_migrations(str(folder))
        # yoyo's lock table serialises concurrent workers: the second one waits, then
        # finds nothing left to apply.
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    return len(pending)


class PostgresRegistry:
    """Writes node registrations to PostgreSQL through an asyncpg pool."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        dsn = self._settings.postgres_dsn_str
        applied = await asyncio.to_thread(apply_migrations, dsn)
        if applied:
            logger.info("PostgreSQL schema: applied %d migration(s)", applied)
        self._pool = await asyncpg.create_pool(
            dsn,
            min_size=self._settings.postgres_pool_min_size,
            max_size=self._settings.postgres_pool_max_size,
            command_timeout=self._settings.postgres_command_timeout_seconds,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise BackendError(self.name, "not started", retriable=True)
        return self._pool

    async def register(self, records: list[NodeRecord]) -> None:
        """Upsert the nodes and their tools in one transaction.

        Each node id may appear once: PostgreSQL cannot upsert one row twice in a
        statement, and the caller already keeps only a node's newest record.
        """
        if not records:
            return
        node_columns = list(
            zip(
                *(
                    (
                        r.node_id,
                        r.node_type,
                        r.node_version,
                        r.node_epoch,
                        r.status,
                        r.host,
                        r.port,
                        _json(r.capabilities),
                        _json(r.endpoints),
                        _json(r.metadata),
                        _json(r.tags),
                        r.last_event_time,
                    )
                    for r in records
                ),
                strict=True,
            )
        )
        tool_rows = [
            (
                r.node_id,
                cap["name"],
                cap.get("version"),
                cap.get("description"),
                _json(cap.get("attributes") or {}),
                r.last_event_time,
            )
            for r in records
            for cap in r.capabilities
        ]
        tool_columns = list(zip(*tool_rows, strict=True)) if tool_rows else [[]] * 6

        try:
            async with self.pool.acquire() as connection, connection.transaction():
                await connection.execute(UPSERT_NODES, *node_columns)
                await connection.execute(
                    DELETE_DROPPED_TOOLS,
                    [r.node_id for r in records],
                    [r.last_event_time for r in records],
                    tool_columns[0],
                    tool_columns[1],
                )
                if tool_rows:
                    await connection.execute(UPSERT_TOOLS, *tool_columns)
        except _TRANSIENT as exc:
            raise BackendError(
                self.name, f"unavailable: {exc!r}", retriable=True
            ) from exc
        except asyncpg.PostgresError as exc:
            raise BackendError(
                self.name, f"write refused: {exc!r}", retriable=False
            ) from exc

    async def record_heartbeats(self, last_seen: dict[str, float]) -> None:
        """Write the newest heartbeat time of each node (seconds since the epoch)."""
        node_ids = list(last_seen)
        times = [datetime.fromtimestamp(last_seen[n], UTC) for n in node_ids]
        try:
            await self.pool.execute(RECORD_HEARTBEATS, node_ids, times)
        except _TRANSIENT as exc:
            raise BackendError(
                self.name, f"unavailable: {exc!r}", retriable=True
            ) from exc
