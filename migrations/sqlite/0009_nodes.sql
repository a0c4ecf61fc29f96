-- Nodes: the Docker hosts instances run on, each with its engine, the address instance ports are
-- published on, the host name clients are given, and the ports it hands out. Today the fleet is
-- one node, `local`, written at every start from the flags; many hosts will be more rows. A port
-- lease is unique per node, not across the fleet: two hosts may both hand out port 20000.
CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    -- The Docker engine's endpoint (`unix://…`, `tcp://…`); NULL for DOCKER_HOST or the local socket.
    engine          TEXT,
    publish_ip      TEXT NOT NULL,
    advertise_host  TEXT NOT NULL,
    port_first      INTEGER NOT NULL CHECK (port_first BETWEEN 1 AND 65535),
    port_last       INTEGER NOT NULL CHECK (port_last BETWEEN port_first AND 65535),
    updated_at      TEXT NOT NULL
);
-- Every instance so far ran on the one host there was: its row, until the first start writes the
-- flags into it.
INSERT INTO nodes (id, engine, publish_ip, advertise_host, port_first, port_last, updated_at)
    VALUES ('local', NULL, '127.0.0.1', '127.0.0.1', 20000, 29999, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- SQLite changes a column's constraint only by making the table again: `instances` as it was, with
-- its node, and its port unique per node.
CREATE TABLE instances_by_node (
    id                    TEXT PRIMARY KEY CHECK (length(id) = 12),
    owner_id              INTEGER REFERENCES users (id),
    name                  TEXT NOT NULL,
    engine                TEXT NOT NULL CHECK (engine IN ('mysql', 'redis', 'postgres')),
    version               TEXT NOT NULL,
    image                 TEXT NOT NULL,
    status                TEXT NOT NULL
                          CHECK (status IN ('provisioning', 'running', 'stopped', 'exited', 'failed', 'deleting')),
    status_reason         TEXT,
    exit_code             INTEGER,
    oom_killed            INTEGER NOT NULL DEFAULT 0 CHECK (oom_killed IN (0, 1)),
    memory_mb             INTEGER NOT NULL CHECK (memory_mb > 0),
    charset               TEXT,
    collation             TEXT,
    database              TEXT,
    node_id               TEXT NOT NULL REFERENCES nodes (id),
    port                  INTEGER CHECK (port BETWEEN 1 AND 65535),
    username              TEXT,
    password_enc          BLOB NOT NULL,
    created_at            TEXT NOT NULL,
    template_image        TEXT,
    pending_password_enc  BLOB,
    repair_failures       INTEGER NOT NULL DEFAULT 0,
    repair_after          INTEGER,
    attention             TEXT,
    CONSTRAINT instances_port_unique UNIQUE (node_id, port),
    CONSTRAINT instances_owner_name_unique UNIQUE (owner_id, name)
);
INSERT INTO instances_by_node (id, owner_id, name, engine, version, image, status, status_reason, exit_code,
        oom_killed, memory_mb, charset, collation, database, node_id, port, username, password_enc, created_at,
        template_image, pending_password_enc, repair_failures, repair_after, attention)
    SELECT id, owner_id, name, engine, version, image, status, status_reason, exit_code, oom_killed, memory_mb,
        charset, collation, database, 'local', port, username, password_enc, created_at, template_image,
        pending_password_enc, repair_failures, repair_after, attention
    FROM instances;
DROP TABLE instances;
ALTER TABLE instances_by_node RENAME TO instances;
CREATE INDEX instances_owner_engine ON instances (owner_id, engine, created_at);
