//! Helpers shared by the CA tests.

use std::time::{Duration, SystemTime};

use tessera_ca::{CaConfig, CertificateAuthority, KeyStorage};
use tessera_spiffe::id::{SpiffeId, TrustDomain};
use tessera_spiffe::key::{KeyAlgorithm, PrivateKey};

pub const HOUR: Duration = Duration::from_secs(3600);

/// Returns a fixed start time (2027-01-15), so tests do not depend on the clock.
pub fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn trust_domain() -> TrustDomain {
    TrustDomain::new("example.org").expect("valid trust domain")
}

pub fn workload_id() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/workload").expect("valid SPIFFE ID")
}

pub fn config(algorithm: KeyAlgorithm) -> CaConfig {
    CaConfig {
        trust_domain: trust_domain(),
        key_algorithm: algorithm,
        ca_ttl: 24 * HOUR,
        jwt_issuer: None,
    }
}

pub fn memory_ca(algorithm: KeyAlgorithm) -> CertificateAuthority {
    CertificateAuthority::load_or_create(config(algorithm), KeyStorage::Memory, start())
        .expect("memory CA is created")
}

/// Returns the DER SubjectPublicKeyInfo of a new key.
pub fn public_key(algorithm: KeyAlgorithm) -> Vec<u8> {
    PrivateKey::generate(algorithm)
        .expect("key generation succeeds")
        .public_key_der()
}
