//! Fuzzes SPIFFE ID parsing. Whatever parses must print back unchanged,
//! because the parser never normalizes, and rebuild from its parts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = SpiffeId::parse(input) else {
        return;
    };
    assert_eq!(id.as_str(), input);

    let td =
        TrustDomain::new(id.trust_domain().name()).expect("a parsed ID has a valid trust domain");
    let rebuilt = SpiffeId::from_path(&td, id.path()).expect("a parsed ID has a valid path");
    assert_eq!(rebuilt, id);
});
