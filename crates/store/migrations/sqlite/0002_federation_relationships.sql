-- Schema version 2: federation relationships with other trust domains.
-- The federated bundles themselves are rows of the bundles table.
--
-- profile is https_spiffe or https_web. endpoint_spiffe_id is the SPIFFE
-- ID the bundle endpoint must present under https_spiffe, and empty
-- under https_web.
CREATE TABLE federation_relationships (
    trust_domain TEXT PRIMARY KEY NOT NULL,
    bundle_endpoint_url TEXT NOT NULL,
    profile TEXT NOT NULL,
    endpoint_spiffe_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,    -- Unix seconds
    updated_at INTEGER NOT NULL     -- Unix seconds
) STRICT;
