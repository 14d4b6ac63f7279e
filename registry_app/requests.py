"""REQUEST_INTROSPECTION: the registry asking nodes to announce themselves again."""

from __future__ import annotations

import logging

import faust

from registry_app.events import RequestIntrospection, RequestIntrospectionPayload
from registry_app.liveness import RequestLimiter

logger = logging.getLogger(__name__)

REGISTRY_ID = "registry"


class IntrospectionRequests:
    """Sends requests to nodes, rate-limited so a noisy fleet cannot cause a storm."""

    def __init__(self, topic: faust.TopicT, min_interval_seconds: float) -> None:
        self.topic = topic
        self._per_node = RequestLimiter(min_interval_seconds)
        self._broadcast = RequestLimiter(min_interval_seconds)

    async def ask_node(self, node_id: str, *, reason: str) -> bool:
        """Ask one node, at most once per interval; keyed by it, so on its partition."""
        if not self._per_node.allow(node_id):
            return False
        request = RequestIntrospection(
            node_id=REGISTRY_ID,
            payload=RequestIntrospectionPayload(target_node_id=node_id, reason=reason),
        )
        await self.topic.send(
            key=node_id.encode(), value=request.model_dump_json().encode()
        )
        logger.info("node %s: asked to introspect (%s)", node_id, reason)
        return True

    async def ask_everyone(self, *, reason: str) -> bool:
        """Ask every node, at most once per interval from this worker."""
        if not self._broadcast.allow("*"):
            return False
        request = RequestIntrospection(
            node_id=REGISTRY_ID, payload=RequestIntrospectionPayload(reason=reason)
        )
        await self.topic.send(
            key=REGISTRY_ID.encode(), value=request.model_dump_json().encode()
        )
        logger.info("asked every node to introspect (%s)", reason)
        return True
