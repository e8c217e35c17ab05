//! Test PKI built with rcgen: root and intermediate CAs that issue leaves
//! through the crate's own certificate profiles, at a fixed test time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, Issuer, KeyPair};
use rustls_pki_types::CertificateDer;

use crate::bundle::TrustBundle;
use crate::id::{SpiffeId, TrustDomain};
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::x509::{ca_params, svid_params};

/// Returns the fixed validation time of the tests, 2027-01-15T08:00:00Z.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

pub(crate) fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("valid test trust domain")
}

pub(crate) fn id(uri: &str) -> SpiffeId {
    SpiffeId::parse(uri).expect("valid test SPIFFE ID")
}

/// A CA with its key and parameters, able to sign further certificates.
pub(crate) struct TestCa {
    pub(crate) cert: CertificateDer<'static>,
    params: CertificateParams,
    key: KeyPair,
}

impl TestCa {
    /// Creates a self-signed root CA for `name`, valid from one hour before
    /// the test time to one day after.
    pub(crate) fn root(name: &str, alg: KeyAlgorithm) -> Self {
        let key = PrivateKey::generate(alg)
            .expect("generate")
            .to_rcgen()
            .expect("rcgen key");
        let params = ca_params(&td(name), now() - HOUR, now() + 24 * HOUR);
        let cert = params.self_signed(&key).expect("self-sign").der().clone();
        Self { cert, params, key }
    }

    /// Creates an intermediate CA signed by this CA.
    pub(crate) fn intermediate(&self, name: &str) -> Self {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256)
            .expect("generate")
            .to_rcgen()
            .expect("rcgen key");
        let params = ca_params(&td(name), now() - HOUR, now() + 12 * HOUR);
        let cert = self.sign(&params, &key);
        Self { cert, params, key }
    }

    /// Signs `params` for the public key of `subject_key`.
    pub(crate) fn sign(
        &self,
        params: &CertificateParams,
        subject_key: &KeyPair,
    ) -> CertificateDer<'static> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(subject_key, &issuer)
            .expect("sign")
            .der()
            .clone()
    }

    /// Issues a standard leaf SVID for `uri` and returns it with its key.
    pub(crate) fn leaf(&self, uri: &str) -> (CertificateDer<'static>, PrivateKey) {
        self.leaf_with(uri, |_| {})
    }

    /// Issues a leaf SVID for `uri` after `edit` changes its parameters.
    pub(crate) fn leaf_with(
        &self,
        uri: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (CertificateDer<'static>, PrivateKey) {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
        let mut params =
            svid_params(&id(uri), &[], now() - HOUR, now() + HOUR).expect("leaf params");
        edit(&mut params);
        let cert = self.sign(&params, &key.to_rcgen().expect("rcgen key"));
        (cert, key)
    }

    /// Returns a bundle for `name` that contains this CA.
    pub(crate) fn bundle(&self, name: &str) -> TrustBundle {
        let mut bundle = TrustBundle::new(td(name));
        bundle
            .add_x509_authority(self.cert.clone())
            .expect("CA certificate");
        bundle
    }
}
