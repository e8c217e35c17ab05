//! Verification of an mTLS peer as a SPIFFE workload. The peer's chain must
//! lead to an X.509 authority in the bundle of the trust domain named in its
//! own SPIFFE ID, so a federated peer is checked against its own trust
//! domain's bundle and never against the local one. The ID must then be the
//! expected one. Server names play no part, because an X.509-SVID names its
//! workload by the SPIFFE ID in its URI SAN.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe::{SpiffeId, X509BundleSet};
use webpki::KeyUsage;

/// Reason to reject a peer whose chain may be valid.
#[derive(Debug, thiserror::Error)]
pub enum PeerRejected {
    /// The leaf certificate has no single SPIFFE ID in its URI SAN.
    #[error("the peer's certificate is not an X.509-SVID: {0}")]
    NotAnSvid(String),
    /// The workload has no bundle for the peer's trust domain.
    #[error(
        "no bundle for the peer's trust domain {trust_domain}; the servers must federate \
         and this workload's entry must list it in federates_with"
    )]
    NoBundle {
        /// Trust domain of the peer's SPIFFE ID.
        trust_domain: String,
    },
    /// The chain is valid, but the peer is another workload.
    #[error("peer SPIFFE ID {presented} is not the expected {expected}")]
    UnexpectedId {
        /// SPIFFE ID in the peer's certificate.
        presented: String,
        /// SPIFFE ID this side accepts.
        expected: String,
    },
}

/// Verifies a TLS peer against the bundles of one Workload API snapshot and
/// accepts only the SPIFFE ID `expected`. Serves as the client's server
/// verifier and as the server's client verifier.
#[derive(Debug)]
pub struct SpiffePeerVerifier {
    expected: SpiffeId,
    bundles: Arc<X509BundleSet>,
    provider: Arc<CryptoProvider>,
}

impl SpiffePeerVerifier {
    /// Creates a verifier that trusts `bundles` and accepts `expected`.
    pub fn new(
        expected: SpiffeId,
        bundles: Arc<X509BundleSet>,
        provider: Arc<CryptoProvider>,
    ) -> SpiffePeerVerifier {
        SpiffePeerVerifier {
            expected,
            bundles,
            provider,
        }
    }

    /// Checks the peer's chain for `usage` (serverAuth or clientAuth), then
    /// its SPIFFE ID.
    fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<(), rustls::Error> {
        let presented = spiffe::cert::spiffe_id_from_der(end_entity)
            .map_err(|e| rejected(PeerRejected::NotAnSvid(e.to_string())))?;
        let trust_domain = presented.trust_domain();
        let bundle = self.bundles.get(trust_domain).ok_or_else(|| {
            rejected(PeerRejected::NoBundle {
                trust_domain: trust_domain.to_string(),
            })
        })?;

        let authorities: Vec<CertificateDer<'_>> = bundle
            .authorities()
            .iter()
            .map(|authority| CertificateDer::from(authority.as_bytes()))
            .collect();
        let anchors = authorities
            .iter()
            .map(webpki::anchor_from_trusted_cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(certificate_error)?;
        let leaf = webpki::EndEntityCert::try_from(end_entity).map_err(certificate_error)?;
        leaf.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(certificate_error)?;

        if presented != self.expected {
            return Err(rejected(PeerRejected::UnexpectedId {
                presented: presented.to_string(),
                expected: self.expected.to_string(),
            }));
        }
        Ok(())
    }
}

impl ServerCertVerifier for SpiffePeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_peer(end_entity, intermediates, now, KeyUsage::server_auth())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for SpiffePeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // An X.509-SVID client has one SVID to offer, so naming CAs helps
        // no one choose.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_peer(end_entity, intermediates, now, KeyUsage::client_auth())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn rejected(reason: PeerRejected) -> rustls::Error {
    rustls::Error::Other(OtherError(Arc::new(reason)))
}

/// Maps a chain validation error to the rustls error that selects the TLS
/// alert the peer receives.
fn certificate_error(error: webpki::Error) -> rustls::Error {
    let mapped = match error {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }
        }
        webpki::Error::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(mapped)
}
