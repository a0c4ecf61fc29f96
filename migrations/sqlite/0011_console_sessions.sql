-- The web console's sign-ins (issue 15): a session per signed-in browser, in the store so that
-- every replica on it knows it and a restart keeps it. The cookie holds a random session id; the
-- store keeps only its SHA-256, so a copy of the store signs nobody in.
CREATE TABLE sessions (
    -- The SHA-256 of the cookie's session id, hex: how a request's session is found.
    id_hash       TEXT PRIMARY KEY CHECK (length(id_hash) = 64),
    -- Whose session: a request in it acts as this user, as their token would. `remove_user`
    -- deletes a user's sessions with them.
    user_id       INTEGER NOT NULL REFERENCES users (id),
    -- The session's CSRF token, put in every form and htmx request and compared on every POST:
    -- another site's form cannot know it. Not a credential on its own (it signs nobody in).
    csrf_token    TEXT NOT NULL CHECK (length(csrf_token) >= 32),
    signed_in_at  TEXT NOT NULL,
    -- Unix milliseconds, as lease expiries: a session past it is refused, and deleted by the next
    -- sign-in's sweep.
    expires_at    INTEGER NOT NULL
);
-- The sweep of expired sessions, and a user's sessions ended together (token rotated, removed).
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user_id ON sessions (user_id);
