-- Schema version 1 of the Tessera registration store, SQLite dialect.
-- postgres/0001 and mysql/0001 create the same tables and columns; a
-- change to one dialect goes into the same version of the others.

-- Registration entries. selectors, federates_with and dns_names contain
-- JSON arrays of strings. identity_hash is the lowercase hex SHA-256 of the
-- JSON array [spiffe_id, parent_id, [sorted selectors]], so the unique
-- index rejects a second entry with the same SPIFFE ID, parent ID and
-- selector set, even from another server sharing the database.
CREATE TABLE entries (
    id TEXT PRIMARY KEY NOT NULL,
    spiffe_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    selectors TEXT NOT NULL,
    identity_hash TEXT NOT NULL,
    x509_svid_ttl INTEGER,          -- seconds; NULL means the server default
    jwt_svid_ttl INTEGER,           -- seconds; NULL means the server default
    federates_with TEXT NOT NULL,
    dns_names TEXT NOT NULL,
    hint TEXT NOT NULL,
    admin INTEGER NOT NULL CHECK (admin IN (0, 1)),
    downstream INTEGER NOT NULL CHECK (downstream IN (0, 1)),
    expires_at INTEGER,             -- Unix seconds
    revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL     -- Unix seconds
) STRICT;

CREATE UNIQUE INDEX entries_identity_hash ON entries (identity_hash);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);

-- Agents that passed node attestation. selectors contains a JSON array of
-- strings.
CREATE TABLE attested_agents (
    spiffe_id TEXT PRIMARY KEY NOT NULL,
    attestation_type TEXT NOT NULL,
    selectors TEXT NOT NULL,
    x509_svid_serial TEXT NOT NULL,
    x509_svid_expires_at INTEGER NOT NULL,
    banned INTEGER NOT NULL CHECK (banned IN (0, 1)),
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) STRICT;

-- Join tokens, keyed by the lowercase hex SHA-256 of the token. The token
-- itself is never stored.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

-- Trust bundles in the SPIFFE bundle format (a JWK Set), by trust domain
-- name.
CREATE TABLE bundles (
    trust_domain TEXT PRIMARY KEY NOT NULL,
    bundle BLOB NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The change feed: one row per write to entries, bundles or agents, added
-- in the same transaction as the write. AUTOINCREMENT keeps revisions
-- from being reused after the newest rows are deleted.
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- One row of store-wide state. pruned_through is the highest revision
-- that prune_changes deleted, so a reader behind it learns it missed
-- changes. On PostgreSQL and MySQL every write transaction also locks this
-- row first, which serializes writers.
CREATE TABLE store_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
) STRICT;

INSERT INTO store_state (id, pruned_through) VALUES (1, 0);
