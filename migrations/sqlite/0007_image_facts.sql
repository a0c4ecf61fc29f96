-- What dbroker has read from a MySQL image itself rather than from its configuration, keyed by
-- the image's id: a changed image has another id, so it is read again. Learnt once per image id
-- (a file looked up, a server started once) and kept, so a restart does not read it again.
CREATE TABLE image_facts (
    image_id TEXT PRIMARY KEY NOT NULL,
    -- Which server the image runs: decides whether its instances are copies of a template, and
    -- whether its server can be asked for its collations ('unrecognised': neither server found).
    flavor TEXT NOT NULL CHECK (flavor IN ('mysql', 'mariadb', 'unrecognised')),
    -- When its server's collations were read into image_collations (RFC 3339); NULL until then,
    -- since reading them takes a start of the server, which only a create with a character set
    -- of its own, or a template's build, pays for.
    collations_read_at TEXT
);

-- The collations the image's server has, each with its character set, as the server lists them
-- (information_schema): what a create's character set and collation are checked against. Its
-- character sets are those its collations name.
CREATE TABLE image_collations (
    image_id TEXT NOT NULL REFERENCES image_facts (image_id) ON DELETE CASCADE,
    collation TEXT NOT NULL,
    charset TEXT NOT NULL,
    PRIMARY KEY (image_id, collation)
) WITHOUT ROWID;
