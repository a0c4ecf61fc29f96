-- Users and their database instances.

-- A user of the API. Only a hash of the token is kept: a copy of the database reveals no token.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL CONSTRAINT users_name_unique UNIQUE,
    -- SHA-256 of the bearer token, hex; UNIQUE also indexes it for the lookup on every request.
    token_hash  TEXT NOT NULL CONSTRAINT users_token_hash_unique UNIQUE,
    is_admin    INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at  TEXT NOT NULL
);

-- One database instance. The row is written before its container is created, so no container
-- exists that the store does not know of.
CREATE TABLE instances (
    -- 12 lowercase hex characters; also names the container and volume.
    id            TEXT PRIMARY KEY CHECK (length(id) = 12),
    -- NULL for a member of the warm pool: started ahead of demand, owned by nobody, invisible to
    -- users, until a create claims it.
    owner_id      INTEGER REFERENCES users (id),
    name          TEXT NOT NULL,
    engine        TEXT NOT NULL CHECK (engine IN ('mysql', 'redis', 'postgres')),
    -- The engine version asked for (a name from the catalogue, "8.0"), and the image actually
    -- used, so a later change of the catalogue does not rewrite history.
    version       TEXT NOT NULL,
    image         TEXT NOT NULL,
    -- provisioning: being created; running: ready; stopped: by its owner; exited: its server
    -- died on its own (see exit_code, oom_killed); failed: a create rolled back after a crash
    -- (see status_reason); deleting: a delete is under way.
    status        TEXT NOT NULL
                  CHECK (status IN ('provisioning', 'running', 'stopped', 'exited', 'failed', 'deleting')),
    status_reason TEXT,
    exit_code     INTEGER,
    oom_killed    INTEGER NOT NULL DEFAULT 0 CHECK (oom_killed IN (0, 1)),
    -- The dbroker process whose create is in flight. It holds a lock file of that name while it
    -- lives, so after a crash another process can tell the create will never finish.
    claimed_by    TEXT,
    memory_mb     INTEGER NOT NULL CHECK (memory_mb > 0),
    charset       TEXT,
    collation     TEXT,
    -- PostgreSQL's database, created at the first start.
    database      TEXT,

    -- The host port is the lease: UNIQUE means no port is ever handed to two instances, even by
    -- several dbroker processes on one data directory. Deleting the row frees the port; a failed
    -- instance keeps its record but no port (NULLs do not collide).
    port          INTEGER CONSTRAINT instances_port_unique UNIQUE
                  CHECK (port BETWEEN 1 AND 65535),
    username      TEXT,
    -- AES-256-GCM: a 12-byte nonce, then the ciphertext. Never the plain password.
    password_enc  BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    -- Names are per user: two users may both have an instance called "shop".
    CONSTRAINT instances_owner_name_unique UNIQUE (owner_id, name)
);

-- Listing a user's instances, optionally of one engine.
CREATE INDEX instances_owner_engine ON instances (owner_id, engine, created_at);
