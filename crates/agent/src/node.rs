//! The agent's side of the agent API: the TLS client, node attestation and
//! agent SVID renewal.

pub mod attest;
pub mod client_tls;
pub mod renew;

use std::time::SystemTime;

use tessera_proto::types;
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{PrivateKey, TrustBundle, X509Svid};

use crate::error::AgentError;

/// Checks an agent SVID from the server: the chain must fit `key`, chain to
/// `bundle` at `now`, and name an ID in the bundle's trust domain.
///
/// # Errors
///
/// Returns [`AgentError::InvalidResponse`], [`AgentError::InvalidSvid`] or
/// [`AgentError::ForeignAgentId`].
pub(crate) fn accept_agent_svid(
    operation: &'static str,
    svid: Option<types::X509Svid>,
    key: PrivateKey,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<X509Svid, AgentError> {
    let svid = svid.ok_or_else(|| AgentError::invalid_response(operation, "no SVID"))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let invalid = |source| AgentError::InvalidSvid {
        spiffe_id: svid.spiffe_id.clone(),
        source,
    };

    let verified = validate_x509_svid(&chain, bundle, now).map_err(invalid)?;
    if verified.spiffe_id().trust_domain() != bundle.trust_domain() {
        return Err(AgentError::ForeignAgentId {
            spiffe_id: verified.spiffe_id().clone(),
            trust_domain: bundle.trust_domain().to_string(),
        });
    }
    X509Svid::new(chain, key).map_err(invalid)
}
