//! Test support: a throwaway CA that signs X.509-SVIDs and JWT-SVIDs, and
//! builders for registration entries.

use std::time::{Duration, SystemTime};

use tessera_registration::{EntryId, RegistrationEntry, Selector};
use tessera_spiffe::rcgen::{CertificateParams, Issuer, KeyPair, SubjectPublicKeyInfo};
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::x509::{ca_params, svid_params};
use tessera_spiffe::{
    JwtAuthority, JwtSvidClaims, KeyAlgorithm, PrivateKey, SpiffeId, TrustBundle, TrustDomain,
    X509Svid,
};

use crate::svid::x509::{SvidParams, WorkloadSvid};

/// Key ID of the test CA's JWT signing key.
pub const JWT_KEY_ID: &str = "test-jwt-key";

/// Returns `spiffe://example.org<path>`.
pub fn spiffe_id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org{path}")).expect("valid test SPIFFE ID")
}

/// Builds an entry for `spiffe://example.org<path>` with `selectors`.
pub fn entry(path: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::generate(),
        spiffe_id: spiffe_id(path),
        parent_id: spiffe_id("/tessera/agent/join_token/0123456789abcdef"),
        selectors: selectors
            .iter()
            .map(|s| Selector::parse(s).expect("valid test selector"))
            .collect(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: Vec::new(),
        dns_names: Vec::new(),
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
        revision: 0,
        created_at: 1_700_000_000,
    }
}

/// A self-signed CA of one trust domain, with a JWT signing key.
pub struct TestCa {
    trust_domain: TrustDomain,
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    jwt_key: PrivateKey,
}

impl TestCa {
    /// Creates a CA valid from an hour ago for a day.
    pub fn new(trust_domain: &TrustDomain) -> Self {
        let now = SystemTime::now();
        let params = ca_params(
            trust_domain,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(86_400),
        );
        let key = PrivateKey::generate(KeyAlgorithm::EcP256)
            .and_then(|k| k.to_rcgen())
            .expect("CA key");
        let der = params
            .self_signed(&key)
            .expect("self-signed CA")
            .der()
            .clone();
        Self {
            trust_domain: trust_domain.clone(),
            params,
            key,
            der,
            jwt_key: PrivateKey::generate(KeyAlgorithm::EcP256).expect("JWT key"),
        }
    }

    /// Returns the CA certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Returns a bundle with the CA certificate and the JWT key.
    pub fn bundle(&self) -> TrustBundle {
        let mut bundle = TrustBundle::new(self.trust_domain.clone());
        bundle
            .add_x509_authority(self.der.clone())
            .expect("CA certificate accepted");
        bundle
            .add_jwt_authority(JwtAuthority {
                key_id: JWT_KEY_ID.into(),
                public_key: self.jwt_key.public_key_der(),
                expires_at: None,
            })
            .expect("JWT key accepted");
        bundle
    }

    /// Signs a leaf for `id` and `key`, valid from `not_before` to `not_after`.
    pub fn sign_leaf(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        key: &PrivateKey,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Vec<CertificateDer<'static>> {
        let params = svid_params(id, dns_names, not_before, not_after).expect("leaf params");
        let leaf_key = key.to_rcgen().expect("leaf key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params.signed_by(&leaf_key, &issuer).expect("signed leaf");
        vec![leaf.der().clone()]
    }

    /// Signs a leaf for `id` over a DER SubjectPublicKeyInfo, as the server
    /// signs a key whose private half stays on the agent.
    pub fn sign_public_key(
        &self,
        id: &SpiffeId,
        public_key_der: &[u8],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Vec<CertificateDer<'static>> {
        let params = svid_params(id, &[], not_before, not_after).expect("leaf params");
        let public_key =
            SubjectPublicKeyInfo::from_der(public_key_der).expect("SubjectPublicKeyInfo");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params.signed_by(&public_key, &issuer).expect("signed leaf");
        vec![leaf.der().clone()]
    }

    /// Signs an X.509-SVID for `id` with a new key, valid for an hour.
    pub fn x509_svid(&self, id: &SpiffeId) -> X509Svid {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("leaf key");
        let now = SystemTime::now();
        let chain = self.sign_leaf(
            id,
            &[],
            &key,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        );
        X509Svid::new(chain, key).expect("valid test SVID")
    }

    /// Signs a workload SVID for `entry`, as the SVID manager stores it.
    pub fn workload_svid(&self, entry: &RegistrationEntry) -> WorkloadSvid {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("leaf key");
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(60);
        let not_after = now + Duration::from_secs(3600);
        let chain = self.sign_leaf(
            &entry.spiffe_id,
            &entry.dns_names,
            &key,
            not_before,
            not_after,
        );
        WorkloadSvid {
            svid: X509Svid::new(chain, key).expect("valid test SVID"),
            params: SvidParams::of(entry),
            not_before,
            not_after,
            renew_at: crate::svid::renewal_time(not_before, not_after),
        }
    }

    /// Mints a JWT-SVID for `id` and `audience`, valid for five minutes.
    pub fn jwt_svid(&self, id: &SpiffeId, audience: &[String]) -> String {
        self.jwt_svid_with_key_id(id, audience, JWT_KEY_ID)
    }

    /// Mints a JWT-SVID like [`TestCa::jwt_svid`] with `key_id` in the
    /// header in place of the key ID of [`TestCa::bundle`].
    pub fn jwt_svid_with_key_id(&self, id: &SpiffeId, audience: &[String], key_id: &str) -> String {
        let now = SystemTime::now();
        let claims = JwtSvidClaims {
            subject: id.clone(),
            audience: audience.to_vec(),
            issued_at: now,
            expires_at: now + Duration::from_secs(300),
            issuer: None,
        };
        tessera_spiffe::jwt::mint_jwt_svid(&self.jwt_key, key_id, &claims)
            .expect("minted JWT-SVID")
            .into_string()
    }
}
