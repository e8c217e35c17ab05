//! Fuzzes reading the SPIFFE ID from a DER certificate.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_spiffe::SpiffeId;
use tessera_spiffe::x509::spiffe_id_from_certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = spiffe_id_from_certificate(data) {
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
    }
});
