//! Node attestation: a restarted agent resumes with the agent SVID stored in
//! its data directory while that SVID is valid; otherwise it proves the
//! node's identity with a join token (`AttestAgent`) and stores the agent
//! SVID, its key and the trust bundle it receives.

use std::sync::Arc;
use std::time::SystemTime;

use tessera_proto::agent::{AttestAgentRequest, AttestationData};
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{KeyAlgorithm, PrivateKey, TrustBundle, X509Svid};

use crate::config::AgentConfig;
use crate::convert::bundle_from_proto;
use crate::error::AgentError;
use crate::node::accept_agent_svid;
use crate::node::client_tls::{ServerChannel, TlsIdentity};
use crate::retry::retry_with;
use crate::storage::Storage;
use crate::sync::error_chain;

/// Attestor name of join token attestation in `AttestationData.type`.
pub const JOIN_TOKEN_ATTESTOR: &str = "join_token";

/// The agent's identity after attestation, and its channel to the server.
#[derive(Debug)]
pub struct AttestedNode {
    /// The agent SVID.
    pub svid: X509Svid,
    /// The trust bundle of the agent's trust domain.
    pub bundle: TrustBundle,
    /// The TLS credentials, updated later by renewal and sync.
    pub identity: Arc<TlsIdentity>,
    /// The channel to the server, authenticated with the agent SVID.
    pub server: Arc<ServerChannel>,
}

/// Resumes with the stored agent SVID when it is still valid, or attests
/// the node with the configured join token.
///
/// # Errors
///
/// Returns [`AgentError::MissingJoinToken`] when attestation is needed
/// and no token is configured, [`AgentError::MissingBootstrapBundle`] when
/// nothing can authenticate the server, and [`AgentError::Server`] when the
/// server rejects the token.
pub async fn establish(
    config: &AgentConfig,
    storage: &Storage,
) -> Result<AttestedNode, AgentError> {
    let stored_bundle = storage.load_bundle(&config.trust_domain)?;
    if let Some(bundle) = &stored_bundle
        && let Some(svid) = load_valid_svid(storage, bundle)
    {
        tracing::info!(agent_id = %svid.spiffe_id(), "resuming with the stored agent SVID");
        let identity = TlsIdentity::new(&config.trust_domain, Some(bundle.clone()), false)?;
        identity.set_agent_svid(svid.clone())?;
        let server = Arc::new(ServerChannel::new(
            config.server_addresses.clone(),
            &identity,
        )?);
        return Ok(AttestedNode {
            svid,
            bundle: bundle.clone(),
            identity,
            server,
        });
    }

    attest(config, storage, stored_bundle).await
}

/// Returns the stored agent SVID if it chains to `bundle` now.
fn load_valid_svid(storage: &Storage, bundle: &TrustBundle) -> Option<X509Svid> {
    let svid = match storage.load_agent_svid() {
        Ok(Some(svid)) => svid,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "ignoring the stored agent SVID");
            return None;
        }
    };
    match validate_x509_svid(svid.cert_chain(), bundle, SystemTime::now()) {
        Ok(_) => Some(svid),
        Err(error) => {
            tracing::warn!(agent_id = %svid.spiffe_id(), %error, "the stored agent SVID is no longer valid; attesting again");
            None
        }
    }
}

/// Attests the node with the join token.
async fn attest(
    config: &AgentConfig,
    storage: &Storage,
    stored_bundle: Option<TrustBundle>,
) -> Result<AttestedNode, AgentError> {
    let token = config
        .join_token
        .as_ref()
        .ok_or_else(|| AgentError::MissingJoinToken {
            data_dir: storage.data_dir().to_path_buf(),
        })?;
    let bootstrap_bundle = match stored_bundle {
        Some(bundle) => Some(bundle),
        None => load_bootstrap_bundle(config)?,
    };
    let identity = TlsIdentity::new(
        &config.trust_domain,
        bootstrap_bundle,
        config.insecure_bootstrap,
    )?;
    let server = Arc::new(ServerChannel::new(
        config.server_addresses.clone(),
        &identity,
    )?);

    let key = PrivateKey::generate(KeyAlgorithm::EcP256)?;
    let request = AttestAgentRequest {
        data: Some(AttestationData {
            r#type: JOIN_TOKEN_ATTESTOR.into(),
            payload: token.expose().as_bytes().to_vec(),
        }),
        public_key: key.public_key_der(),
    };
    tracing::info!(servers = ?config.server_addresses, "attesting the node with a join token");
    let response = retry_with(
        &config.retry,
        "AttestAgent",
        || {
            let mut client = server.client();
            let request = request.clone();
            async move { client.attest_agent(request).await }
        },
        |status| server.fail_over(status),
    )
    .await
    .map_err(|status| AgentError::server("AttestAgent", &status))?
    .into_inner();

    let bundle = response
        .bundle
        .as_ref()
        .ok_or_else(|| AgentError::invalid_response("AttestAgent", "no bundle"))
        .and_then(|proto| {
            bundle_from_proto(proto)
                .map_err(|reason| AgentError::invalid_response("AttestAgent", reason))
        })?;
    if bundle.trust_domain() != &config.trust_domain {
        return Err(AgentError::invalid_response(
            "AttestAgent",
            format!(
                "bundle is for trust domain {} but the agent is configured for {}",
                bundle.trust_domain(),
                config.trust_domain
            ),
        ));
    }
    let svid = accept_agent_svid(
        "AttestAgent",
        response.svid,
        key,
        &bundle,
        SystemTime::now(),
    )?;

    storage.save_bundle(&bundle)?;
    storage.save_agent_svid(&svid)?;
    identity.set_bundle(bundle.clone());
    identity.set_agent_svid(svid.clone())?;
    // The attestation connection carried no client certificate; later
    // calls need a connection that presents the new agent SVID.
    server.reconnect();
    tracing::info!(agent_id = %svid.spiffe_id(), "node attested");

    Ok(AttestedNode {
        svid,
        bundle,
        identity,
        server,
    })
}

/// Reads the bootstrap bundle, or returns `None` under `insecure_bootstrap`.
fn load_bootstrap_bundle(config: &AgentConfig) -> Result<Option<TrustBundle>, AgentError> {
    let Some(path) = &config.trust_bundle_path else {
        if config.insecure_bootstrap {
            tracing::warn!(
                "insecure_bootstrap is set: the first attestation trusts any server; \
                 an attacker on the network path could issue this agent's identity"
            );
            return Ok(None);
        }
        return Err(AgentError::MissingBootstrapBundle);
    };
    let pem = std::fs::read_to_string(path).map_err(|source| AgentError::Io {
        action: "read trust bundle",
        path: path.clone(),
        source,
    })?;
    let bundle = TrustBundle::from_pem(&config.trust_domain, &pem).map_err(|source| {
        AgentError::InvalidBootstrapBundle {
            path: path.clone(),
            source,
        }
    })?;
    Ok(Some(bundle))
}
