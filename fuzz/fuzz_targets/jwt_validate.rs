//! Fuzzes JWT-SVID validation against a fixed bundle that contains one EC
//! P-256 key and one RSA key. The target fails when validation panics or
//! accepts a token without the expected audience or already expired.

#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tessera_spiffe::jwt::validate_jwt_svid;
use tessera_spiffe::{JwtAuthority, KeyAlgorithm, PrivateKey, TrustBundle, TrustDomain};

const AUDIENCE: &str = "spiffe://example.org/db";

static BUNDLE: LazyLock<TrustBundle> = LazyLock::new(|| {
    let td = TrustDomain::new("example.org").expect("valid trust domain");
    let mut bundle = TrustBundle::new(td);
    for (key_id, alg) in [("ec", KeyAlgorithm::EcP256), ("rsa", KeyAlgorithm::Rsa2048)] {
        let key = PrivateKey::generate(alg).expect("key generation");
        bundle
            .add_jwt_authority(JwtAuthority {
                key_id: key_id.to_owned(),
                public_key: key.public_key_der(),
                expires_at: None,
            })
            .expect("valid key");
    }
    bundle
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(verified) = validate_jwt_svid(token, AUDIENCE, &*BUNDLE, now) {
        assert!(verified.audience().iter().any(|a| a == AUDIENCE));
        assert!(verified.expires_at() > now);
    }
});
