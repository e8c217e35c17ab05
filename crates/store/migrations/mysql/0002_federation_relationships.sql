-- Schema version 2: federation relationships with other trust domains.
-- The column comments are in sqlite/0002_federation_relationships.sql.
-- Trust domain names contain only ASCII characters and compare byte for
-- byte, as in 0001_create_tables.sql.
CREATE TABLE federation_relationships (
    trust_domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile VARCHAR(32) NOT NULL,
    endpoint_spiffe_id VARCHAR(2048) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
