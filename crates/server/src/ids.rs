//! The SPIFFE IDs the server reserves for itself and its agents:
//! `spiffe://<td>/tessera/server` and `spiffe://<td>/tessera/agent/...`.

use sha2::{Digest, Sha256};
use tessera_spiffe::{SpiffeId, TrustDomain};

/// Path prefix of every ID the server reserves; entries may not use it.
pub(crate) const RESERVED_PATH: &str = "/tessera";
/// Path prefix of agent IDs.
const AGENT_PATH: &str = "/tessera/agent/";
/// Number of hex characters of the token hash in a join token agent ID.
const AGENT_ID_HASH_CHARS: usize = 16;

/// Returns the server's own ID, `spiffe://<td>/tessera/server`.
#[expect(
    clippy::expect_used,
    reason = "the path is a constant valid SPIFFE ID path"
)]
pub(crate) fn server_id(td: &TrustDomain) -> SpiffeId {
    SpiffeId::from_path(td, "/tessera/server")
        .expect("the server ID path is a valid SPIFFE ID path")
}

/// Returns the lowercase hex SHA-256 of a join token. Logs and agent IDs
/// name a token by a prefix of this, never by the token itself.
pub(crate) fn join_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Returns the agent ID that the agent attesting with `token` receives:
/// `spiffe://<td>/tessera/agent/join_token/<first 16 hex of sha256(token)>`.
#[expect(
    clippy::expect_used,
    reason = "a constant prefix and hex digits form a valid path"
)]
pub(crate) fn join_token_agent_id(td: &TrustDomain, token: &str) -> SpiffeId {
    let hash = join_token_hash(token);
    let path = format!("{AGENT_PATH}join_token/{}", &hash[..AGENT_ID_HASH_CHARS]);
    SpiffeId::from_path(td, &path).expect("a hex path segment is a valid SPIFFE ID path")
}

/// Returns whether `id` is an agent ID of trust domain `td`.
pub(crate) fn is_agent_id(td: &TrustDomain, id: &SpiffeId) -> bool {
    id.trust_domain() == td && id.path().starts_with(AGENT_PATH)
}

/// Returns whether `id` is the reserved path itself or lies under it.
pub(crate) fn is_reserved(id: &SpiffeId) -> bool {
    let path = id.path();
    path == RESERVED_PATH || path.starts_with(&format!("{RESERVED_PATH}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    #[test]
    fn server_id_path() {
        assert_eq!(
            server_id(&td()).as_str(),
            "spiffe://example.org/tessera/server"
        );
    }

    #[test]
    fn join_token_agent_id_uses_hash_prefix() {
        let token = "0123456789abcdef";
        let hash = join_token_hash(token);
        let id = join_token_agent_id(&td(), token);

        assert_eq!(hash.len(), 64);
        assert_eq!(
            id.as_str(),
            format!(
                "spiffe://example.org/tessera/agent/join_token/{}",
                &hash[..16]
            )
        );
        assert!(!id.as_str().contains(token));
    }

    #[test]
    fn is_agent_id_table() {
        let other = TrustDomain::new("other.org").unwrap();
        let cases = [
            (
                "spiffe://example.org/tessera/agent/join_token/ab",
                &td(),
                true,
            ),
            ("spiffe://example.org/tessera/agent/x", &td(), true),
            ("spiffe://example.org/tessera/server", &td(), false),
            ("spiffe://example.org/tessera/agentx/a", &td(), false),
            ("spiffe://example.org/workload", &td(), false),
            ("spiffe://example.org/tessera/agent/x", &other, false),
        ];
        for (id, domain, expected) in cases {
            let id = SpiffeId::parse(id).unwrap();
            assert_eq!(is_agent_id(domain, &id), expected, "{id}");
        }
    }

    #[test]
    fn is_reserved_table() {
        let cases = [
            ("spiffe://example.org/tessera", true),
            ("spiffe://example.org/tessera/server", true),
            ("spiffe://example.org/tessera/agent/x", true),
            ("spiffe://example.org/tesserae", false),
            ("spiffe://example.org/web", false),
            ("spiffe://example.org", false),
        ];
        for (id, expected) in cases {
            let id = SpiffeId::parse(id).unwrap();
            assert_eq!(is_reserved(&id), expected, "{id}");
        }
    }
}
