//! X.509-SVID validation: the leaf profile checks of the X.509-SVID
//! specification, then RFC 5280 path validation (rustls-webpki) to the
//! bundle of the leaf's trust domain.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::bundle::{BundleSource, TrustBundle};
use crate::cert::CertInfo;
use crate::id::SpiffeId;

use super::X509SvidError;

/// An X.509-SVID whose chain was validated. Only [`validate_x509_svid`]
/// makes one.
#[derive(Debug, Clone)]
pub struct VerifiedX509Svid {
    spiffe_id: SpiffeId,
    not_after: SystemTime,
    chain: Vec<CertificateDer<'static>>,
}

impl VerifiedX509Svid {
    /// Returns the SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Returns the leaf's notAfter time.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Returns the presented chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// Returns the SPIFFE ID in the single URI SAN of a DER certificate. This
/// reads the certificate only; it checks neither signature nor profile.
///
/// # Errors
///
/// Returns [`X509SvidError`] when the certificate cannot be parsed or does
/// not have exactly one URI SAN holding a valid SPIFFE ID.
pub fn spiffe_id_from_certificate(der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    let info =
        CertInfo::parse(der).map_err(|reason| X509SvidError::Certificate { index: 0, reason })?;
    single_spiffe_id(&info)
}

/// Validates an X.509-SVID chain (leaf first, then any intermediates) at
/// `now` against the bundle of the leaf's trust domain.
///
/// The leaf must have exactly one URI SAN with a SPIFFE ID that has a path,
/// basic constraints cA false or absent, key usage digitalSignature without
/// keyCertSign or cRLSign, and, when extended key usage is present, both
/// serverAuth and clientAuth. Every later certificate must be a CA.
///
/// # Errors
///
/// Returns [`X509SvidError`] naming the first failed check.
pub fn validate_x509_svid(
    chain: &[CertificateDer<'_>],
    bundles: &impl BundleSource,
    now: SystemTime,
) -> Result<VerifiedX509Svid, X509SvidError> {
    let (leaf_der, intermediates) = chain.split_first().ok_or(X509SvidError::EmptyChain)?;
    let leaf = CertInfo::parse(leaf_der)
        .map_err(|reason| X509SvidError::Certificate { index: 0, reason })?;
    let spiffe_id = check_leaf(&leaf)?;
    check_intermediates(intermediates)?;

    let td = spiffe_id.trust_domain();
    let bundle = bundles
        .bundle_for(td)
        .ok_or_else(|| X509SvidError::NoBundle(td.clone()))?;
    verify_path(leaf_der, intermediates, bundle, now)?;

    Ok(VerifiedX509Svid {
        spiffe_id,
        not_after: leaf.not_after,
        chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
    })
}

/// Checks the X.509-SVID leaf profile and returns the leaf's SPIFFE ID.
pub(super) fn check_leaf(leaf: &CertInfo) -> Result<SpiffeId, X509SvidError> {
    let id = single_spiffe_id(leaf)?;
    if id.path().is_empty() {
        return Err(X509SvidError::LeafIdWithoutPath(id));
    }
    if leaf.is_ca {
        return Err(X509SvidError::LeafIsCa(id));
    }

    let Some(usage) = leaf.key_usage else {
        return Err(X509SvidError::MissingKeyUsage(id));
    };
    if !usage.digital_signature {
        return Err(X509SvidError::MissingDigitalSignature(id));
    }
    if usage.key_cert_sign {
        return Err(X509SvidError::LeafCanSign {
            id,
            usage: "keyCertSign",
        });
    }
    if usage.crl_sign {
        return Err(X509SvidError::LeafCanSign {
            id,
            usage: "cRLSign",
        });
    }

    if let Some(extended) = leaf.extended_key_usage
        && !(extended.server_auth && extended.client_auth)
    {
        return Err(X509SvidError::ExtendedKeyUsage(id));
    }
    Ok(id)
}

fn single_spiffe_id(info: &CertInfo) -> Result<SpiffeId, X509SvidError> {
    match info.uri_sans.as_slice() {
        [] => Err(X509SvidError::NoUriSan),
        [uri] => Ok(SpiffeId::parse(uri)?),
        more => Err(X509SvidError::MultipleUriSans { count: more.len() }),
    }
}

fn check_intermediates(intermediates: &[CertificateDer<'_>]) -> Result<(), X509SvidError> {
    for (offset, der) in intermediates.iter().enumerate() {
        let index = offset + 1;
        let info =
            CertInfo::parse(der).map_err(|reason| X509SvidError::Certificate { index, reason })?;
        let can_sign = info.key_usage.is_none_or(|usage| usage.key_cert_sign);
        if !info.is_ca || !can_sign {
            return Err(X509SvidError::IntermediateNotCa {
                index,
                subject: info.subject,
            });
        }
    }
    Ok(())
}

/// Runs RFC 5280 path validation from the leaf to the bundle's X.509
/// authorities. The leaf's extended key usage, when present, must allow
/// clientAuth; `check_leaf` has already required serverAuth too.
fn verify_path(
    leaf_der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<(), X509SvidError> {
    let td = bundle.trust_domain();
    if bundle.x509_authorities().is_empty() {
        return Err(X509SvidError::NoX509Authorities(td.clone()));
    }
    let untrusted = |e: webpki::Error| X509SvidError::Untrusted {
        trust_domain: td.clone(),
        reason: e.to_string(),
    };
    let anchors = bundle
        .x509_authorities()
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(untrusted)?;
    let leaf = EndEntityCert::try_from(leaf_der).map_err(|e| X509SvidError::Certificate {
        index: 0,
        reason: e.to_string(),
    })?;

    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let result = leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        UnixTime::since_unix_epoch(since_epoch),
        KeyUsage::client_auth(),
        None,
        None,
    );
    match result {
        Ok(_) => Ok(()),
        Err(webpki::Error::CertExpired { time, not_after }) => Err(X509SvidError::Expired {
            not_after: not_after.as_secs(),
            now: time.as_secs(),
        }),
        Err(webpki::Error::CertNotValidYet { time, not_before }) => {
            Err(X509SvidError::NotYetValid {
                not_before: not_before.as_secs(),
                now: time.as_secs(),
            })
        }
        Err(e) => Err(untrusted(e)),
    }
}
