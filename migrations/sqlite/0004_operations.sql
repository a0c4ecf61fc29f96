-- Coordination in the store: every change an operation, liveness and leadership as leases, and a
-- deployment id that marks what this store's deployment made. These replace the per-process busy
-- set, the lock files in the data directory and the `claimed_by` column: several processes (and,
-- later, several hosts) read the same truth, and a crash is an expired lease.

-- One row: this store's deployment. Its id is stamped on every container and volume
-- (`dbroker.deployment`), so a second deployment on the same engine never touches them, whatever
-- prefix it uses.
CREATE TABLE deployment (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    id          TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- A change to an instance, recorded before its first side effect and kept afterwards as history.
CREATE TABLE operations (
    -- Insertion order, for paging; `id` is what the API shows.
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL CONSTRAINT operations_id_unique UNIQUE CHECK (length(id) = 16),
    -- Not a foreign key: a create's operation is written before its instance, and a delete's
    -- outlives it.
    instance_id     TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN (
                        'create', 'delete', 'start', 'stop', 'restart', 'resize', 'rotate', 'adopt', 'repair')),
    -- pending: recorded, its worker has not begun; running: under way; then succeeded or failed.
    state           TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    -- Who asked (a user's name, or "dbroker"), and the user whose instance it is, who may read it.
    requested_by    TEXT NOT NULL,
    owner_id        INTEGER,
    -- The process running it, and until when (Unix milliseconds) its lease holds: it renews the
    -- lease while it works; once the lease has expired, another process takes the operation over.
    holder          TEXT,
    lease_until     INTEGER,
    -- What the operation was asked to do, as JSON (a resize's memory, a repair's name).
    input           TEXT NOT NULL DEFAULT '{}',
    -- The steps done so far, as a JSON array of {"step", "at"}.
    steps           TEXT NOT NULL DEFAULT '[]',
    -- A failed operation's problem detail, as JSON.
    error           TEXT,
    -- The client's Idempotency-Key and a hash of the request it came with (see below).
    idempotency_key TEXT,
    request_hash    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
);

-- At most one operation in flight per instance, across every process: the second insert fails,
-- and that failure is the "busy" answer. Valid in SQLite and PostgreSQL alike.
CREATE UNIQUE INDEX operations_one_in_flight
    ON operations (instance_id) WHERE state IN ('pending', 'running');
-- An idempotency key is one request per user: a retry finds the first operation here.
CREATE UNIQUE INDEX operations_idempotency
    ON operations (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- An instance's operations, newest first.
CREATE INDEX operations_by_instance ON operations (instance_id, seq);
-- Expired leases, for take-over.
CREATE INDEX operations_in_flight ON operations (lease_until) WHERE state IN ('pending', 'running');

-- Named leases with a holder and an expiry: leadership of the reconciler ("reconciler").
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    until       INTEGER NOT NULL
);

-- A rotation stores the new password here before the server is changed, and moves it to
-- password_enc once the server has it: a crash in between leaves both, and whoever takes over
-- tries each (AES-256-GCM, as password_enc).
ALTER TABLE instances ADD COLUMN pending_password_enc BLOB;
-- Repairs that keep failing back off: how many failed in a row, when to try again (Unix
-- milliseconds), and why, which the owner sees as "needs attention".
ALTER TABLE instances ADD COLUMN repair_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN repair_after INTEGER;
ALTER TABLE instances ADD COLUMN attention TEXT;
-- Replaced by the operations' leases.
ALTER TABLE instances DROP COLUMN claimed_by;
