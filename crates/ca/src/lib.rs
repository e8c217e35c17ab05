//! Tessera's certificate authority: key storage (a directory or memory), the
//! trust domain's self-signed X.509 CA, JWT signing keys, and their rotation.
//!
//! Each authority is an X.509 CA and a JWT key that share one lifetime. A new
//! authority is prepared and published in the bundle at half of the active
//! one's lifetime and activated at five sixths, so peers trust it before
//! they meet the first SVID it signed.

#![cfg_attr(test, allow(clippy::expect_used))]

mod authority;
mod ca;
mod config;
mod error;
mod jwt;
mod rotation;
pub mod schedule;
mod state;
mod storage;
mod times;
mod x509;

pub use ca::{AuthorityInfo, CertificateAuthority, Slot};
pub use config::{CaConfig, KeyStorage, MAX_CA_TTL, MIN_CA_TTL};
pub use error::CaError;
pub use jwt::MintedJwt;
pub use rotation::RotationEvent;
