-- The superuser password of each data-directory template this store has used, keyed by the
-- template image's id and encrypted like an instance's. The template keeps it in its own password
-- file (see provision::templates), which is read once per store: a restart does not look into the
-- image again.
CREATE TABLE template_passwords (
    image_id TEXT PRIMARY KEY NOT NULL,
    password_enc BLOB NOT NULL
) WITHOUT ROWID;
