-- What a user is besides a name and a token: a demo user or a real one, enabled or disabled.

-- A demo user (`--demo-users`), whose token is its name: a trial user, never a production one.
-- Marked so that start-up can tell the two apart: a demo user that `--demo-users` no longer names
-- is disabled, and a name in `--demo-users` that belongs to a real user is refused, never given
-- its name as a token. Users from before this column, whose token is their name, are found and
-- marked at start-up (a hash cannot be computed here).
ALTER TABLE users ADD COLUMN is_demo INTEGER NOT NULL DEFAULT 0 CHECK (is_demo IN (0, 1));
-- When the user was disabled (RFC 3339), NULL while enabled. A disabled user's token is refused
-- but kept, and so are their instances: a leaked token can be shut off without deleting anyone's
-- databases, and enabling the user gives the same token back.
ALTER TABLE users ADD COLUMN disabled_at TEXT;
