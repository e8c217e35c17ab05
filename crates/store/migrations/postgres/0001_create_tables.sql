-- Schema version 1 of the Tessera registration store, PostgreSQL dialect.
-- The column comments are in sqlite/0001_create_tables.sql. Flags are
-- SMALLINT 0/1 instead of BOOLEAN because the store reads every backend
-- through sqlx's Any driver, which has no portable boolean.

CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    selectors TEXT NOT NULL,
    identity_hash TEXT NOT NULL,
    x509_svid_ttl BIGINT,
    jwt_svid_ttl BIGINT,
    federates_with TEXT NOT NULL,
    dns_names TEXT NOT NULL,
    hint TEXT NOT NULL,
    admin SMALLINT NOT NULL CHECK (admin IN (0, 1)),
    downstream SMALLINT NOT NULL CHECK (downstream IN (0, 1)),
    expires_at BIGINT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE UNIQUE INDEX entries_identity_hash ON entries (identity_hash);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);

CREATE TABLE attested_agents (
    spiffe_id TEXT PRIMARY KEY,
    attestation_type TEXT NOT NULL,
    selectors TEXT NOT NULL,
    x509_svid_serial TEXT NOT NULL,
    x509_svid_expires_at BIGINT NOT NULL,
    banned SMALLINT NOT NULL CHECK (banned IN (0, 1)),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain TEXT PRIMARY KEY,
    bundle BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE changes (
    revision BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE store_state (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);

INSERT INTO store_state (id, pruned_through) VALUES (1, 0);
