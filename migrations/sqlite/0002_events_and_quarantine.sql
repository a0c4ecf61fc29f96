-- What happened to each instance, and containers found with no record.

-- An instance's history, as its owner sees it (GET /v1/instances/{id}/events). Not a foreign key:
-- the history of a deleted instance is kept, for admins and audits.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN (
                     'created', 'ready', 'stopped', 'started', 'restarted', 'resized', 'rotated',
                     'exited', 'repaired', 'deleted', 'failed')),
    -- The user who asked, or "dbroker" for what dbroker did by itself.
    actor        TEXT NOT NULL,
    detail       TEXT
);
CREATE INDEX events_by_instance ON events (instance_id, id);

-- A container labelled as this deployment's whose instance has no record: since the record is
-- always written first, the store lost rows (restored from an older backup, say). It may hold a
-- user's data, so it is stopped and kept here for an admin to adopt or remove; never deleted
-- automatically.
CREATE TABLE quarantine (
    container    TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    engine       TEXT,
    owner_label  TEXT,
    found_at     TEXT NOT NULL
);
