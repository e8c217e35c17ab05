-- Schema version 2: federation relationships with other trust domains.
-- The column comments are in sqlite/0002_federation_relationships.sql.
CREATE TABLE federation_relationships (
    trust_domain TEXT PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile TEXT NOT NULL,
    endpoint_spiffe_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
