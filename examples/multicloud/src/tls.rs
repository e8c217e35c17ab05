//! rustls configurations built from one Workload API snapshot: the
//! workload presents its X.509-SVID and verifies the peer with
//! [`SpiffePeerVerifier`]. Both sides speak TLS 1.3 only.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{SpiffeId, X509Svid};

use crate::verify::SpiffePeerVerifier;
use crate::workload::Snapshot;

/// Builds a server configuration that presents the snapshot's SVID and
/// requires a client certificate from `client_id`.
pub fn server_config(snapshot: &Snapshot, client_id: &SpiffeId) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = SpiffePeerVerifier::new(
        client_id.clone(),
        Arc::clone(&snapshot.bundles),
        Arc::clone(&provider),
    );
    let (chain, key) = certified_key(&snapshot.svid);
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("the crypto provider does not support TLS 1.3")?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .context("rustls rejected the X.509-SVID or its private key")?;
    Ok(Arc::new(config))
}

/// Builds a client configuration that presents the snapshot's SVID and
/// accepts only a server that is `server_id`.
pub fn client_config(snapshot: &Snapshot, server_id: &SpiffeId) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = SpiffePeerVerifier::new(
        server_id.clone(),
        Arc::clone(&snapshot.bundles),
        Arc::clone(&provider),
    );
    let (chain, key) = certified_key(&snapshot.svid);
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("the crypto provider does not support TLS 1.3")?
        .dangerous()
        // The custom verifier replaces Web PKI server name checks with
        // SPIFFE authentication; it still checks the chain and signatures.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .context("rustls rejected the X.509-SVID or its private key")?;
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Copies the SVID's chain and PKCS#8 key into the types rustls takes.
fn certified_key(svid: &X509Svid) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = svid
        .cert_chain()
        .iter()
        .map(|cert| CertificateDer::from(cert.as_bytes().to_vec()))
        .collect();
    let key = PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec());
    (chain, PrivateKeyDer::Pkcs8(key))
}
