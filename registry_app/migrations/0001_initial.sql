-- The durable registry: one row per node, one row per tool/capability a node offers.

CREATE TABLE nodes (
    node_id          text PRIMARY KEY,
    node_type        text        NOT NULL,
    node_version     text        NOT NULL,
    node_epoch       text        NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('registering', 'active', 'expired', 'deregistered')),
    host             text        NOT NULL,
    port             integer     NOT NULL,
    capabilities     jsonb       NOT NULL DEFAULT '[]',
    endpoints        jsonb       NOT NULL DEFAULT '{}',
    metadata         jsonb       NOT NULL DEFAULT '{}',
    tags             jsonb       NOT NULL DEFAULT '[]',
    last_event_time  timestamptz NOT NULL,
    last_heartbeat   timestamptz,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX nodes_type_status ON nodes (node_type, status);

CREATE TABLE node_tools (
    node_id     text  NOT NULL REFERENCES nodes (node_id) ON DELETE CASCADE,
    tool        text  NOT NULL,
    version     text,
    description text,
    attributes  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (node_id, tool)
);

-- "Which nodes offer tool X" starts from the tool.
CREATE INDEX node_tools_tool ON node_tools (tool);
