"""Faust table definitions of the registry (shipped as registry_app.tables)."""

from __future__ import annotations

import faust

from registry_app.settings import Settings


def node_keyed_table(
    app: faust.App, settings: Settings, name: str, *, help: str
) -> faust.Table:
    """A table keyed by node id (text) holding JSON values, partitioned like the
    registry's topics, so an agent updates it from the partition its event came from."""
    return app.Table(
        name,
        default=None,
        partitions=settings.topic_partitions,
        schema=faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"
        ),
        help=help,
    )
