//! The error type of the CA crate.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use humantime::format_duration;
use tessera_spiffe::bundle::BundleError;
use tessera_spiffe::id::{SpiffeId, TrustDomain};
use tessera_spiffe::jwt::JwtSvidError;
use tessera_spiffe::key::{KeyAlgorithm, KeyError};
use tessera_spiffe::x509::X509SvidError;

/// Errors of the certificate authority, its key storage and its rotation.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The configured CA lifetime is outside the accepted range.
    #[error(
        "invalid CA TTL {}: it must be between 1m and 100years; set [ca] ttl",
        format_duration(*ttl)
    )]
    InvalidCaTtl {
        /// The configured lifetime.
        ttl: Duration,
    },

    /// The configured JWT issuer is empty or contains whitespace.
    #[error("invalid JWT issuer {issuer:?}: it must be a non-empty URL without whitespace")]
    InvalidJwtIssuer {
        /// The configured issuer.
        issuer: String,
    },

    /// Reading, writing or removing a file of the key directory failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// The failed operation, such as "read" or "create".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A file that the state file names is missing from the key directory.
    #[error(
        "{} is missing; restore it from a backup, or delete the key directory {} \
         to start a new CA (peers then need the new bundle)",
        path.display(),
        dir.display()
    )]
    MissingFile {
        /// The missing file.
        path: PathBuf,
        /// The key directory.
        dir: PathBuf,
    },

    /// A file of the key directory cannot be parsed or contradicts the others.
    #[error(
        "{} is invalid: {reason}; restore it from a backup, or delete the key directory {} \
         to start a new CA (peers then need the new bundle)",
        path.display(),
        dir.display()
    )]
    CorruptFile {
        /// The invalid file.
        path: PathBuf,
        /// The key directory.
        dir: PathBuf,
        /// The defect found in it.
        reason: String,
    },

    /// The key directory belongs to a CA of another trust domain.
    #[error(
        "the key directory {} holds the CA of trust domain {stored:?}, not {configured:?}; \
         configure another key directory or the trust domain {stored:?}",
        dir.display()
    )]
    TrustDomainMismatch {
        /// The key directory.
        dir: PathBuf,
        /// The trust domain named in the state file.
        stored: String,
        /// The configured trust domain.
        configured: TrustDomain,
    },

    /// Generating a private key failed.
    #[error("failed to generate a {algorithm} key")]
    KeyGeneration {
        /// The requested algorithm.
        algorithm: KeyAlgorithm,
        /// The cause.
        #[source]
        source: KeyError,
    },

    /// Loading a private key into the signer failed.
    #[error("failed to load the {algorithm} CA key for signing")]
    SigningKey {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// The cause.
        #[source]
        source: KeyError,
    },

    /// Building or signing a certificate failed.
    #[error("failed to sign the certificate for {subject}")]
    Certificate {
        /// The SPIFFE ID of the certificate's subject.
        subject: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },

    /// The public key of an SVID request is not a DER SubjectPublicKeyInfo.
    #[error("invalid public key: {reason}; send a DER SubjectPublicKeyInfo")]
    InvalidPublicKey {
        /// The defect found in it.
        reason: String,
    },

    /// The public key of an SVID request has an algorithm the CA does not sign.
    #[error(
        "unsupported public key {algorithm}; use EC P-256, EC P-384 or RSA of 2048 bits or more"
    )]
    UnsupportedPublicKey {
        /// The key's algorithm or curve, as found in the request.
        algorithm: String,
    },

    /// The RSA public key of an SVID request has a modulus length the CA does not sign.
    #[error("unsupported RSA public key of {bits} bits; use 2048 to 8192 bits")]
    UnsupportedRsaKeySize {
        /// The modulus length.
        bits: usize,
    },

    /// An SVID was requested for a SPIFFE ID of another trust domain.
    #[error("cannot sign an SVID for {spiffe_id}: the CA serves trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The requested SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },

    /// An SVID was requested for the trust domain's own ID, which has no path.
    #[error("cannot sign an SVID for {spiffe_id}: a workload SPIFFE ID needs a path")]
    RootSpiffeId {
        /// The requested SPIFFE ID.
        spiffe_id: SpiffeId,
    },

    /// A JWT-SVID was requested without an audience, or with an empty one.
    #[error(
        "invalid audience {audience:?} for the JWT-SVID of {spiffe_id}; \
         request at least one non-empty audience"
    )]
    InvalidAudience {
        /// The requested SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The requested audience.
        audience: Vec<String>,
    },

    /// An SVID was requested with a lifetime shorter than one second, the
    /// precision of certificate and token times.
    #[error("invalid SVID TTL {} for {spiffe_id}; request at least 1s", format_duration(*ttl))]
    SvidTtlTooShort {
        /// The requested SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The requested lifetime.
        ttl: Duration,
    },

    /// The active authority has expired because rotation has not run.
    #[error(
        "the active CA expired at {}; run rotation before signing",
        crate::times::rfc3339(*not_after)
    )]
    ActiveExpired {
        /// End of the active authority's validity.
        not_after: SystemTime,
    },

    /// The active authority is not valid yet at the given time.
    #[error(
        "the active CA is valid only from {}; check the system clock",
        crate::times::rfc3339(*not_before)
    )]
    ActiveNotYetValid {
        /// Start of the active authority's validity.
        not_before: SystemTime,
    },

    /// The leaf profile of an X.509-SVID could not be built.
    #[error("failed to build the X.509-SVID for {spiffe_id}")]
    SvidProfile {
        /// The requested SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The cause.
        #[source]
        source: X509SvidError,
    },

    /// Minting a JWT-SVID failed.
    #[error("failed to mint the JWT-SVID for {spiffe_id}")]
    Jwt {
        /// The requested SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The cause.
        #[source]
        source: JwtSvidError,
    },

    /// Adding an authority to the trust bundle failed.
    #[error("failed to add authority {authority_id} to the trust bundle")]
    Bundle {
        /// The authority's identifier.
        authority_id: String,
        /// The cause.
        #[source]
        source: BundleError,
    },

    /// Manual activation was requested but no authority is prepared.
    #[error("no prepared CA to activate; prepare one first")]
    NothingPrepared,

    /// Manual preparation was requested while an authority is already prepared.
    #[error("CA {authority_id} is already prepared; activate it before preparing another")]
    AlreadyPrepared {
        /// The prepared authority's identifier.
        authority_id: String,
    },

    /// A time computed from the given time and a lifetime cannot be represented.
    #[error("time out of range: {} plus {}", crate::times::rfc3339(*time), format_duration(*ttl))]
    TimeOutOfRange {
        /// The start time.
        time: SystemTime,
        /// The lifetime added to it.
        ttl: Duration,
    },
}

impl CaError {
    /// Reports whether the error comes from the request (its SPIFFE ID, public
    /// key, DNS names, audience or TTL) rather than from the CA, so a server
    /// can answer it as an invalid argument.
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            Self::InvalidPublicKey { .. }
                | Self::UnsupportedPublicKey { .. }
                | Self::UnsupportedRsaKeySize { .. }
                | Self::ForeignTrustDomain { .. }
                | Self::RootSpiffeId { .. }
                | Self::InvalidAudience { .. }
                | Self::SvidTtlTooShort { .. }
                | Self::SvidProfile { .. }
        )
    }
}
