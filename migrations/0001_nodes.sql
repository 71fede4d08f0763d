-- Nodes and their MACs. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- JSON documents are TEXT; times are Unix milliseconds.
CREATE TABLE nodes (
    uuid TEXT PRIMARY KEY NOT NULL,
    name TEXT UNIQUE,
    boot_mode TEXT NOT NULL,
    driver_info TEXT NOT NULL,
    instance_info TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    prepared TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE node_macs (
    mac TEXT PRIMARY KEY NOT NULL,
    node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE
);

CREATE INDEX node_macs_node_uuid ON node_macs (node_uuid);
CREATE INDEX nodes_target ON nodes (target);
