//! Fuzzes SPIFFE bundle (JWK Set) parsing. A bundle that parses must
//! serialize to a document that parses back to the same bundle.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tessera_spiffe::{TrustBundle, TrustDomain};

static TRUST_DOMAIN: LazyLock<TrustDomain> =
    LazyLock::new(|| TrustDomain::new("example.org").expect("valid trust domain"));

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = TrustBundle::from_jwks(&TRUST_DOMAIN, data) else {
        return;
    };
    let json = bundle.to_jwks();
    let again = TrustBundle::from_jwks(&TRUST_DOMAIN, &json).expect("own output parses");
    assert_eq!(again, bundle);
});
