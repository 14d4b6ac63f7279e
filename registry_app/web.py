"""JSON views on Faust's own web server: nodes, counts, partitions and health.

A worker's tables hold only the partitions it owns, so /nodes and /counts describe this
worker's partitions (listed in each response); the cluster-wide view is PostgreSQL.
/nodes/{node_id} is routed to the worker that owns the node's partition.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from faust.web import Request, Response, View

from registry_app.tables.liveness import Liveness
from registry_app.tables.nodes import NodeState, NodeStatus, load_state

if TYPE_CHECKING:
    from registry_app.registry import Registry

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
LIST_PARAMS = frozenset({"status", "node_type", "tool", "limit", "cursor"})


class BadRequest(ValueError):
    """A query parameter the view cannot use; the message says which and why."""


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def node_json(state: NodeState, liveness: Liveness | None) -> dict[str, Any]:
    """A node as the views show it: its table state plus its liveness."""
    body = state.model_dump(mode="json")
    body["in_sync"] = state.in_sync
    body["last_seen"] = _timestamp(liveness.last_seen if liveness else None)
    body["deadline"] = _timestamp(liveness.deadline if liveness else None)
    return body


def parse_list_query(query: Any) -> dict[str, Any]:
    """Filters and page of GET /nodes, or BadRequest naming what is wrong."""
    unknown = sorted(set(query) - LIST_PARAMS)
    if unknown:
        raise BadRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(LIST_PARAMS))}"
        )
    for name in LIST_PARAMS:
        if len(query.getall(name, [])) > 1:
            raise BadRequest(f"{name}: given more than once")
    raw_limit = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise BadRequest(f"limit: {raw_limit!r} is not an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit: {limit} is not between 1 and {MAX_LIMIT}")
    status = query.get("status")
    if status is not None and status not in NodeStatus.__members__.values():
        raise BadRequest(
            f"status: {status!r} is not one of {', '.join(s.value for s in NodeStatus)}"
        )
    for name in ("node_type", "tool", "cursor"):
        if query.get(name) == "":
            raise BadRequest(f"{name}: empty")
    return {
        "status": status,
        "node_type": query.get("node_type"),
        "tool": query.get("tool"),
        "limit": limit,
        "cursor": query.get("cursor"),
    }


def _matches(state: NodeState, filters: dict[str, Any]) -> bool:
    if filters["status"] is not None and state.status != filters["status"]:
        return False
    if filters["node_type"] is not None and state.node_type != filters["node_type"]:
        return False
    tool = filters["tool"]
    return tool is None or any(c.get("name") == tool for c in state.capabilities)


def install_views(registry: Registry) -> None:
    """Add the registry's views to its Faust app's web server."""
    app = registry.app

    def error(view: View, status: int, message: str, **extra: Any) -> Response:
        return view.json({"error": message, "status": status, **extra}, status=status)

    def owned_partitions(topic_name: str, *, standby: bool = False) -> list[int]:
        tps = (
            app.assignor.assigned_standbys()
            if standby
            else app.assignor.assigned_actives()
        )
        return sorted(tp.partition for tp in tps if tp.topic == topic_name)

    def node_partitions() -> list[int]:
        return owned_partitions(registry.nodes.changelog_topic.get_topic_name())

    def states() -> list[NodeState]:
        found = []
        for _key, raw in registry.nodes.items():
            state = load_state(raw)
            if state is not None:
                found.append(state)
        return found

    def highwater(tp: TP) -> int | None:
        try:
            value = app.consumer.highwater(tp)
        except (KeyError, AttributeError, AssertionError, ConsumerNotStarted):
            return None
        return None if value is None or value < 0 else value

    def committed(tp: TP) -> int | None:
        try:
            return app.consumer._committed_offset.get(tp)
        except (AttributeError, ConsumerNotStarted):
            return None

    @app.page("/nodes", name="registry-nodes")
    class NodesView(View):
        """GET /nodes: this worker's nodes, filtered, sorted by id, a page at a time."""

        async def get(self, request: Request) -> Response:
            try:
                filters = parse_list_query(request.query)
            except BadRequest as exc:
                return error(self, 400, str(exc))
            cursor = filters["cursor"]
            selected = sorted(
                (
                    s
                    for s in states()
                    if _matches(s, filters) and (cursor is None or s.node_id > cursor)
                ),
                key=lambda s: s.node_id,
            )
            page = selected[: filters["limit"]]
            more = len(selected) > len(page)
            return self.json(
                {
                    "nodes": [
                        node_json(s, Liveness.load(registry.liveness.get(s.node_id)))
                        for s in page
                    ],
                    "next_cursor": page[-1].node_id if more else None,
                    "partitions": node_partitions(),
                }
            )

    @app.page("/nodes/{node_id}", name="registry-node")
    class NodeView(View):
        """GET /nodes/{node_id}: one node, answered by the worker that owns it."""

        @app.table_route(table=registry.nodes, match_info="node_id")
        async def get(self, request: Request, node_id: str) -> Response:
            state = load_state(registry.nodes.get(node_id))
            if state is None:
                return error(self, 404, f"unknown node id {node_id!r}")
            liveness = Liveness.load(registry.liveness.get(node_id))
            return self.json(node_json(state, liveness))

    @app.page("/counts", name="registry-counts")
    class CountsView(View):
        """GET /counts: this worker's nodes by status and by node type."""

        async def get(self, request: Request) -> Response:
            if request.query:
                return error(self, 400, "/counts takes no query parameters")
            found = states()
            by_status = {s.value: 0 for s in NodeStatus}
            by_status.update(Counter(s.status.value for s in found))
            by_type = Counter(s.node_type for s in found)
            return self.json(
                {
                    "total": len(found),
                    "by_status": by_status,
                    "by_node_type": dict(sorted(by_type.items())),
                    "partitions": node_partitions(),
                }
            )

    @app.page("/partitions", name="registry-partitions")
    class PartitionsView(View):
        """GET /partitions: each partition this worker owns, its role and lag."""

        async def get(self, request: Request) -> Response:
            recovery = app.tables.recovery
            source_topics = [
                t.get_topic_name()
                for t in (
                    registry.topics.introspection,
                    registry.topics.heartbeat,
                    registry.topics.registry_events,
                )
            ]
            changelogs = [
                registry.nodes.changelog_topic.get_topic_name(),
                registry.liveness.changelog_topic.get_topic_name(),
            ]
            actives = set(owned_partitions(changelogs[0]))
            standbys = set(owned_partitions(changelogs[0], standby=True)) - actives
            entries = []
            for partition in sorted(actives | standbys):
                active = partition in actives
                changelog_tps = [TP(name, partition) for name in changelogs]
                if active:
                    recovering = recovery.in_recovery and any(
                        tp in recovery.active_tps for tp in changelog_tps
                    )
                    topics = []
                    for name in source_topics:
                        tp = TP(name, partition)
                        high, done = highwater(tp), committed(tp)
                        lag = None if high is None else max(0, high - (done or 0))
                        topics.append(
                            {
                                "topic": name,
                                "highwater": high,
                                "committed_offset": done,
                                "lag": lag,
                            }
                        )
                else:
                    recovering = recovery.standbys_pending
                    topics = []
                    for tp in changelog_tps:
                        high = highwater(tp)
                        done = recovery.standby_offsets.get(tp)
                        position = 0 if done is None else done + 1
                        lag = None if high is None else max(0, high - position)
                        topics.append(
                            {
                                "topic": tp.topic,
                                "highwater": high,
                                "processed_offset": done,
                                "lag": lag,
                            }
                        )
                lags = [t["lag"] for t in topics if t["lag"] is not None]
                entries.append(
                    {
                        "partition": partition,
                        "role": "active" if active else "standby",
                        "recovering": bool(recovering),
                        "lag": sum(lags) if lags else None,
                        "topics": topics,
                    }
                )
            return self.json({"partitions": entries})

    @app.page("/health/live", name="registry-live")
    class LiveView(View):
        """GET /health/live: 200 while the worker runs."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "live"})

    @app.page("/health/ready", name="registry-ready")
    class ReadyView(View):
        """GET /health/ready: 200 once tables are recovered and backends connected."""

        async def get(self, request: Request) -> Response:
            reasons = []
            recovery = app.tables.recovery
            if app.rebalancing:
                reasons.append("rebalancing")
            if recovery.in_recovery or not recovery.completed.is_set():
                reasons.append("table recovery not complete")
            connected = registry.writer._connected
            for backend in registry.writer.backends:
                if backend.name not in connected:
                    reasons.append(f"{backend.name}: not connected")
            if reasons:
                return self.json({"ready": False, "reasons": reasons}, status=503)
            return self.json({"ready": True, "reasons": []})
