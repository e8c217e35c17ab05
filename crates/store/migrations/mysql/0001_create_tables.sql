-- Schema version 1 of the Tessera registration store, MySQL and MariaDB
-- dialect. The column comments are in sqlite/0001_create_tables.sql.
--
-- Identifiers use binary collations because SPIFFE IDs, selectors and
-- hashes compare byte for byte, while MySQL's default collations ignore
-- case. SPIFFE IDs and trust domain names contain only ASCII characters,
-- so their columns are ASCII, which keeps a 2048-byte ID under InnoDB's
-- 3072-byte index key limit. Flags are SMALLINT 0/1 because sqlx's Any
-- driver does not read TINYINT.

CREATE TABLE entries (
    id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    parent_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    selectors LONGTEXT NOT NULL,
    identity_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    x509_svid_ttl BIGINT,
    jwt_svid_ttl BIGINT,
    federates_with LONGTEXT NOT NULL,
    dns_names LONGTEXT NOT NULL,
    hint TEXT NOT NULL,
    admin SMALLINT NOT NULL CHECK (admin IN (0, 1)),
    downstream SMALLINT NOT NULL CHECK (downstream IN (0, 1)),
    expires_at BIGINT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE INDEX entries_identity_hash (identity_hash),
    INDEX entries_parent_id (parent_id),
    INDEX entries_spiffe_id (spiffe_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE attested_agents (
    spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    attestation_type VARCHAR(255) NOT NULL,
    selectors LONGTEXT NOT NULL,
    x509_svid_serial VARCHAR(255) NOT NULL,
    x509_svid_expires_at BIGINT NOT NULL,
    banned SMALLINT NOT NULL CHECK (banned IN (0, 1)),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE join_tokens (
    token_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    INDEX join_tokens_expires_at (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE bundles (
    trust_domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    bundle LONGBLOB NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE changes (
    revision BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    object_id VARCHAR(2048) NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE store_state (
    id SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO store_state (id, pruned_through) VALUES (1, 0);
