-- The web console's sessions (issue 15): the schema of migrations/sqlite/0011, whose comments say
-- what each column means, in PostgreSQL's own types.
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY CHECK (length(id_hash) = 64),
    user_id       BIGINT NOT NULL REFERENCES users (id),
    csrf_token    TEXT NOT NULL CHECK (length(csrf_token) >= 32),
    signed_in_at  TIMESTAMPTZ NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id);
