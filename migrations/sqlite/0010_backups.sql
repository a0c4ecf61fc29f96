-- Backups (issue 14): each backup's record, each instance's backup policy, and per-user backup
-- quotas. A backup is taken by an operation, so operations gain the kinds backups bring.

-- SQLite changes a column's CHECK only by making the table again: `operations` as it was, with the
-- kinds of backups, restores, clones, imports and verifications.
CREATE TABLE operations_with_backups (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL CONSTRAINT operations_id_unique UNIQUE CHECK (length(id) = 16),
    instance_id     TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN (
                        'create', 'delete', 'start', 'stop', 'restart', 'resize', 'rotate', 'adopt', 'repair',
                        'backup', 'restore', 'import')),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    requested_by    TEXT NOT NULL,
    owner_id        INTEGER,
    holder          TEXT,
    lease_until     INTEGER,
    input           TEXT NOT NULL DEFAULT '{}',
    steps           TEXT NOT NULL DEFAULT '[]',
    error           TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
);
INSERT INTO operations_with_backups (seq, id, instance_id, kind, state, requested_by, owner_id, holder, lease_until,
        input, steps, error, idempotency_key, request_hash, created_at, updated_at, finished_at)
    SELECT seq, id, instance_id, kind, state, requested_by, owner_id, holder, lease_until, input, steps, error,
        idempotency_key, request_hash, created_at, updated_at, finished_at
    FROM operations;
DROP TABLE operations;
ALTER TABLE operations_with_backups RENAME TO operations;
-- The indexes of 0004, which went with the old table.
CREATE UNIQUE INDEX operations_one_in_flight
    ON operations (instance_id) WHERE state IN ('pending', 'running');
CREATE UNIQUE INDEX operations_idempotency
    ON operations (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_by_instance ON operations (instance_id, seq);
CREATE INDEX operations_in_flight ON operations (lease_until) WHERE state IN ('pending', 'running');

-- One backup: a dump of an instance's data, stored as one object on a target. The row is written
-- (running) before the first byte is, so an object on a target that no row names is debris, and a
-- row left running by a process that died is found and failed (see store/backups.rs).
CREATE TABLE backups (
    -- Insertion order, for paging newest first; `id` is what the API shows.
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL CONSTRAINT backups_id_unique UNIQUE CHECK (length(id) = 16),
    -- Not a foreign key: a backup outlives its instance (until its retention ends), and is what
    -- a new instance is restored from once the old one is gone.
    instance_id     TEXT NOT NULL CHECK (length(instance_id) = 12),
    -- Whose it is (who may read, restore and delete it): a foreign key, so a user who still has
    -- backups is not removed from under them (their objects would be nobody's).
    owner_id        INTEGER NOT NULL REFERENCES users (id),
    -- What the dump is of, kept here because the instance may be gone when it is restored: which
    -- tools load it, and into which versions.
    engine          TEXT NOT NULL CHECK (engine IN ('mysql', 'redis', 'postgres')),
    version         TEXT NOT NULL,
    -- The configured target's name (the default resolved when the backup began), and the
    -- object's key on it. One object is one backup's: two rows never name the same one.
    target          TEXT NOT NULL,
    object_key      TEXT NOT NULL,
    -- manual: its owner asked; scheduled: its policy took it; safety: taken before a restore in
    -- place. Retention removes scheduled and safety backups only (see provision/backup_schedule.rs).
    kind            TEXT NOT NULL CHECK (kind IN ('manual', 'scheduled', 'safety')),
    -- running: being written; succeeded: complete, with its size and checksums; failed: see
    -- reason. A row never goes back to running.
    state           TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    -- Whether the object is encrypted (to the configured age recipient).
    encrypted       INTEGER NOT NULL CHECK (encrypted IN (0, 1)),
    -- The stored object's size in bytes and SHA-256 (hex), as written: a restore checks the
    -- object against them before it changes anything.
    size_bytes      INTEGER CHECK (size_bytes >= 0),
    sha256          TEXT CHECK (length(sha256) = 64),
    -- A checksum of the data's content, taken when the backup was, which a verification compares
    -- with the restored server's.
    content_digest  TEXT,
    -- Why a failed backup failed.
    reason          TEXT,
    -- The operation that takes it: while that is in flight the backup is being written; once it
    -- is not, a backup still running was left by a process that died.
    operation_id    TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    -- The last verification's outcome: when it succeeded, or why it failed; never both.
    verified_at     TEXT,
    verify_error    TEXT,
    CONSTRAINT backups_object_unique UNIQUE (target, object_key),
    -- Only a running backup is unfinished; a succeeded one has its size and checksum; a failed
    -- one its reason.
    CHECK ((state = 'running') = (finished_at IS NULL)),
    CHECK (state <> 'succeeded' OR (size_bytes IS NOT NULL AND sha256 IS NOT NULL)),
    CHECK (state <> 'failed' OR reason IS NOT NULL),
    CHECK (verified_at IS NULL OR verify_error IS NULL)
);
-- An instance's backups and a user's, newest first.
CREATE INDEX backups_by_instance ON backups (instance_id, seq);
CREATE INDEX backups_by_owner ON backups (owner_id, seq);
-- Backups being written, for finding those whose operation ended without them.
CREATE INDEX backups_running ON backups (operation_id) WHERE state = 'running';

-- An instance's backup policy: when it is backed up, where to, and how long its backups are kept.
CREATE TABLE backup_policies (
    -- Not a foreign key: the policy outlives its instance, since its retention still decides
    -- when the instance's backups go; a deleted instance's policy is never due (see
    -- store/backups.rs).
    instance_id     TEXT PRIMARY KEY CHECK (length(instance_id) = 12),
    -- A 5-field cron line in UTC, as its owner wrote it (checked by model::Schedule).
    schedule        TEXT NOT NULL,
    -- A configured target's name; NULL: the configured default at each run, so a change of the
    -- default reaches every policy that did not choose.
    target          TEXT,
    -- Retention: the newest keep_last good backups are kept, and none older than keep_days
    -- (NULL: no such limit). The newest good backup is kept whatever they say.
    keep_last       INTEGER CHECK (keep_last BETWEEN 1 AND 1000),
    keep_days       INTEGER CHECK (keep_days BETWEEN 1 AND 3650),
    -- Whether each new backup is restored into a throwaway instance and checked.
    verify          INTEGER NOT NULL DEFAULT 0 CHECK (verify IN (0, 1)),
    -- When the schedule last ran, and when it is next due: the first time the schedule names after
    -- its last run (or after the policy was set). A run missed while no dbroker ran is due once,
    -- since a run moves next_due_at past now, not to the next slot missed. NULL: never again.
    last_run_at     TEXT,
    next_due_at     TEXT,
    -- Bumped by every write: a run is recorded only where the revision read is still the row's
    -- (compare-and-set), so two processes that both found it due never both run it.
    revision        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX backup_policies_due ON backup_policies (next_due_at);

-- Per-user backup quota overrides: how many backups a user may hold (running and succeeded), and
-- how many MiB their stored backups may take in all. NULL: the configuration's default
-- (`[quotas] backups`, `backup_mb`), as for the instance quotas of 0006.
ALTER TABLE users ADD COLUMN quota_backups INTEGER CHECK (quota_backups >= 0);
ALTER TABLE users ADD COLUMN quota_backup_mb INTEGER CHECK (quota_backup_mb >= 0);
