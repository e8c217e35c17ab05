//! SPIFFE primitives for Tessera: SPIFFE IDs, private keys, X.509-SVIDs,
//! JWT-SVIDs and trust bundles. The crate does no I/O, so every check takes
//! the current time as an argument.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bundle;
pub mod id;
pub mod jwt;
pub mod key;
pub mod x509;

mod cert;
mod pem_encode;
mod spki;
#[cfg(test)]
mod test_support;

pub use bundle::{BundleError, BundleSource, JwtAuthority, TrustBundle};
pub use id::{IdError, SpiffeId, TrustDomain};
pub use jwt::{JwsAlgorithm, JwtSvidClaims, JwtSvidError, JwtToken, VerifiedJwtSvid};
pub use key::{KeyAlgorithm, KeyError, PrivateKey};
pub use x509::{VerifiedX509Svid, X509Svid, X509SvidError};

pub use rcgen;
pub use rustls_pki_types;
