"""Names of the registry topics after the prefix; free of Faust, for node clients."""

INTROSPECTION = "node-introspection.v1"  # nodes -> registry
HEARTBEAT = "node-heartbeat.v1"  # nodes -> registry: heartbeats, shutdowns, ticks
REGISTRY_EVENTS = "registry-events.v1"  # registry -> nodes, and back to the registry
REQUESTS = "registry-requests.v1"  # registry -> nodes: REQUEST_INTROSPECTION
DEAD_LETTER = "dead-letter.v1"  # refused events, with the reason

ALL_TOPICS = (INTROSPECTION, HEARTBEAT, REGISTRY_EVENTS, REQUESTS, DEAD_LETTER)
