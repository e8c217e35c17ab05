//! JWT-SVID minting and validation against the CA's bundle.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use tessera_ca::{CaError, CertificateAuthority, KeyStorage};
use tessera_spiffe::id::SpiffeId;
use tessera_spiffe::jwt::validate_jwt_svid;
use tessera_spiffe::key::KeyAlgorithm;

use crate::common::{HOUR, config, memory_ca, start, workload_id};

fn audience() -> Vec<String> {
    vec!["spiffe://example.org/backend".to_string()]
}

#[test]
fn jwt_validates_for_every_algorithm() {
    for algorithm in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let ca = memory_ca(algorithm);
        let minted = ca
            .mint_jwt_svid(
                &workload_id(),
                &audience(),
                Duration::from_secs(300),
                start(),
            )
            .unwrap_or_else(|e| panic!("{algorithm}: not minted: {e}"));

        let verified =
            validate_jwt_svid(minted.token.as_str(), &audience()[0], &ca.bundle(), start())
                .unwrap_or_else(|e| panic!("{algorithm}: does not validate: {e}"));
        assert_eq!(verified.spiffe_id(), &workload_id(), "{algorithm}");
    }
}

#[test]
fn jwt_times_follow_ttl() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let minted = ca
        .mint_jwt_svid(
            &workload_id(),
            &audience(),
            Duration::from_secs(300),
            start(),
        )
        .expect("JWT is minted");
    assert_eq!(minted.issued_at, start());
    assert_eq!(minted.expires_at, start() + Duration::from_secs(300));
}

#[test]
fn jwt_expiry_clamped_to_key() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let minted = ca
        .mint_jwt_svid(&workload_id(), &audience(), 1000 * HOUR, start())
        .expect("JWT is minted");
    assert_eq!(minted.expires_at, ca.authorities()[0].not_after);
}

#[test]
fn jwt_carries_configured_issuer() {
    let mut config = config(KeyAlgorithm::EcP256);
    config.jwt_issuer = Some("https://oidc.example.org".to_string());
    let ca = CertificateAuthority::load_or_create(config, KeyStorage::Memory, start())
        .expect("CA is created");

    let minted = ca
        .mint_jwt_svid(
            &workload_id(),
            &audience(),
            Duration::from_secs(300),
            start(),
        )
        .expect("JWT is minted");
    let verified = validate_jwt_svid(minted.token.as_str(), &audience()[0], &ca.bundle(), start())
        .expect("JWT validates");
    let iss = verified.claims().get("iss").and_then(|v| v.as_str());
    assert_eq!(iss, Some("https://oidc.example.org"));
}

#[test]
fn jwt_without_issuer_has_no_iss_claim() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let minted = ca
        .mint_jwt_svid(
            &workload_id(),
            &audience(),
            Duration::from_secs(300),
            start(),
        )
        .expect("JWT is minted");
    let verified = validate_jwt_svid(minted.token.as_str(), &audience()[0], &ca.bundle(), start())
        .expect("JWT validates");
    assert!(verified.claims().get("iss").is_none());
}

#[test]
fn jwt_key_id_is_the_active_authority_kid() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let minted = ca
        .mint_jwt_svid(
            &workload_id(),
            &audience(),
            Duration::from_secs(300),
            start(),
        )
        .expect("JWT is minted");

    let header = minted
        .token
        .as_str()
        .split('.')
        .next()
        .expect("token has a header");
    let header = URL_SAFE_NO_PAD.decode(header).expect("header is base64url");
    let header: serde_json::Value = serde_json::from_slice(&header).expect("header is JSON");
    assert_eq!(header["kid"], ca.authorities()[0].jwt_key_id.as_str());
}

#[test]
fn jwt_minted_before_activation_validates_with_later_bundle() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let now = start() + 19 * HOUR;
    ca.rotate(start() + 12 * HOUR).expect("rotation succeeds");
    let minted = ca
        .mint_jwt_svid(&workload_id(), &audience(), Duration::from_secs(300), now)
        .expect("JWT is minted");

    ca.rotate(start() + 20 * HOUR).expect("rotation succeeds");
    let verified = validate_jwt_svid(minted.token.as_str(), &audience()[0], &ca.bundle(), now);
    assert!(verified.is_ok(), "{verified:?}");
}

#[test]
fn jwt_rejects_foreign_trust_domain() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let id = SpiffeId::parse("spiffe://other.org/workload").expect("valid SPIFFE ID");
    let result = ca.mint_jwt_svid(&id, &audience(), Duration::from_secs(300), start());
    assert!(
        matches!(result, Err(CaError::ForeignTrustDomain { .. })),
        "{result:?}"
    );
}

#[test]
fn jwt_rejects_empty_audience() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    for audience in [vec![], vec![String::new()]] {
        let result = ca.mint_jwt_svid(&workload_id(), &audience, Duration::from_secs(300), start());
        assert!(
            matches!(result, Err(CaError::InvalidAudience { .. })),
            "{audience:?}: {result:?}"
        );
        assert!(result.is_err_and(|e| e.is_invalid_request()));
    }
}

#[test]
fn minted_jwt_debug_hides_token() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let minted = ca
        .mint_jwt_svid(
            &workload_id(),
            &audience(),
            Duration::from_secs(300),
            start(),
        )
        .expect("JWT is minted");
    let debug = format!("{minted:?}");
    let signature = minted
        .token
        .as_str()
        .rsplit('.')
        .next()
        .expect("token has a signature");
    assert!(!debug.contains(signature), "{debug}");
}
