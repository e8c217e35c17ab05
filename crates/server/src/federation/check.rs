//! Acceptance rules for a bundle fetched from a peer: it must parse as a
//! SPIFFE bundle, contain at least one authority, belong to the peer's
//! trust domain and not roll back the sequence number already stored.
//! A rejected bundle leaves the last good one in place.

use tessera_spiffe::{SpiffeId, TrustBundle, TrustDomain};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The result of checking a fetched bundle.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The bundle is new: store and publish it.
    Accept(TrustBundle),
    /// The bundle equals the stored one; nothing changes.
    Unchanged(TrustBundle),
}

/// Checks `body`, fetched from the endpoint of `td`, against the stored
/// bundle of `td`.
pub(crate) fn check_fetched_bundle(
    td: &TrustDomain,
    body: &[u8],
    stored: Option<&TrustBundle>,
) -> Result<Verdict, String> {
    let bundle =
        TrustBundle::from_jwks(td, body).map_err(|e| format!("invalid SPIFFE bundle: {e}"))?;
    if bundle.x509_authorities().is_empty() && bundle.jwt_authorities().is_empty() {
        return Err("the bundle contains no authorities".to_owned());
    }
    check_authorities_trust_domain(&bundle)?;

    let Some(stored) = stored else {
        return Ok(Verdict::Accept(bundle));
    };
    if let (Some(new), Some(old)) = (bundle.sequence_number(), stored.sequence_number())
        && new < old
    {
        return Err(format!(
            "the bundle's spiffe_sequence {new} is lower than the stored {old}; \
             keeping the stored bundle"
        ));
    }
    if same_authorities(&bundle, stored) && bundle.sequence_number() == stored.sequence_number() {
        return Ok(Verdict::Unchanged(bundle));
    }
    Ok(Verdict::Accept(bundle))
}

fn same_authorities(a: &TrustBundle, b: &TrustBundle) -> bool {
    a.x509_authorities() == b.x509_authorities() && a.jwt_authorities() == b.jwt_authorities()
}

/// Rejects a bundle with an X.509 authority whose SPIFFE ID URI SAN names
/// another trust domain. Authorities without a SPIFFE URI SAN pass, because
/// the SPIFFE CA profile does not require one.
pub(crate) fn check_authorities_trust_domain(bundle: &TrustBundle) -> Result<(), String> {
    let td = bundle.trust_domain();
    for der in bundle.x509_authorities() {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("invalid X.509 authority: {e}"))?;
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            continue;
        };
        for name in &san.value.general_names {
            let GeneralName::URI(uri) = name else {
                continue;
            };
            let Ok(id) = SpiffeId::parse(uri) else {
                continue;
            };
            if id.trust_domain() != td {
                return Err(format!(
                    "the bundle is for trust domain {}, not {td}: an X.509 authority has the \
                     URI SAN {uri}",
                    id.trust_domain()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tessera_spiffe::rustls_pki_types::CertificateDer;
    use tessera_spiffe::{KeyAlgorithm, PrivateKey};

    use super::*;

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).unwrap()
    }

    fn bundle_of(ca_domain: &str, bundle_domain: &str, sequence: Option<u64>) -> TrustBundle {
        let now = SystemTime::now();
        let params =
            tessera_spiffe::x509::ca_params(&td(ca_domain), now, now + Duration::from_secs(3600));
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
        let cert = params.self_signed(&key.to_rcgen().unwrap()).unwrap();
        let mut bundle = TrustBundle::new(td(bundle_domain));
        bundle
            .add_x509_authority(CertificateDer::from(cert.der().to_vec()))
            .unwrap();
        bundle.set_sequence_number(sequence);
        bundle
    }

    #[test]
    fn check_accepts_first_bundle() {
        let fetched = bundle_of("b.org", "b.org", Some(1));
        let verdict = check_fetched_bundle(&td("b.org"), &fetched.to_jwks(), None).unwrap();
        assert!(matches!(verdict, Verdict::Accept(_)));
    }

    #[test]
    fn check_rejects_garbage() {
        let err = check_fetched_bundle(&td("b.org"), b"<html>", None).unwrap_err();
        assert!(err.contains("invalid SPIFFE bundle"), "{err}");
    }

    #[test]
    fn check_rejects_wrong_trust_domain() {
        let fetched = bundle_of("c.org", "b.org", Some(1));
        let err = check_fetched_bundle(&td("b.org"), &fetched.to_jwks(), None).unwrap_err();
        assert!(err.contains("trust domain c.org"), "{err}");
    }

    #[test]
    fn check_rejects_lower_sequence() {
        let stored = bundle_of("b.org", "b.org", Some(5));
        let fetched = bundle_of("b.org", "b.org", Some(4));
        let err =
            check_fetched_bundle(&td("b.org"), &fetched.to_jwks(), Some(&stored)).unwrap_err();
        assert!(err.contains("lower than the stored 5"), "{err}");
    }

    #[test]
    fn check_same_bundle_is_unchanged() {
        let stored = bundle_of("b.org", "b.org", Some(5));
        let verdict = check_fetched_bundle(&td("b.org"), &stored.to_jwks(), Some(&stored)).unwrap();
        assert!(matches!(verdict, Verdict::Unchanged(_)));
    }

    #[test]
    fn check_rejects_empty_bundle() {
        let empty = TrustBundle::new(td("b.org"));
        let err = check_fetched_bundle(&td("b.org"), &empty.to_jwks(), None).unwrap_err();
        assert!(err.contains("no authorities"), "{err}");
    }
}
