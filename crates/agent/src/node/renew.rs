//! Agent SVID renewal: at half of its lifetime the agent makes a new key and
//! requests the server's signature on it (`RenewAgent`), then stores the new SVID and
//! presents it on new connections.

use std::sync::Arc;
use std::time::SystemTime;

use tessera_proto::agent::RenewAgentRequest;
use tessera_spiffe::{KeyAlgorithm, PrivateKey, X509Svid};

use crate::error::AgentError;
use crate::node::accept_agent_svid;
use crate::node::client_tls::{ServerChannel, TlsIdentity};
use crate::retry::{RetryPolicy, retry_with};
use crate::storage::Storage;
use crate::svid::{certificate_validity, duration_until, renewal_time};
use crate::sync::error_chain;

/// The task that renews the agent SVID.
pub struct AgentSvidRenewal {
    identity: Arc<TlsIdentity>,
    server: Arc<ServerChannel>,
    storage: Storage,
    retry: RetryPolicy,
}

impl AgentSvidRenewal {
    /// Creates the task; it starts when [`run`](Self::run) is awaited.
    pub fn new(
        identity: Arc<TlsIdentity>,
        server: Arc<ServerChannel>,
        storage: Storage,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            identity,
            server,
            storage,
            retry,
        }
    }

    /// Renews the agent SVID at half of each SVID's lifetime, forever.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Server`] when the server rejects the agent (a
    /// final gRPC code, such as an evicted or banned agent), and
    /// [`AgentError::AgentSvidExpired`] when renewal kept failing until the
    /// SVID expired. The node must then be attested again.
    pub async fn run(self) -> Result<(), AgentError> {
        loop {
            let current = self
                .identity
                .agent_svid()
                .ok_or(AgentError::invalid_response(
                    "RenewAgent",
                    "no agent SVID to renew",
                ))?;
            let (not_before, not_after) = certificate_validity(current.leaf())
                .map_err(|reason| AgentError::invalid_response("RenewAgent", reason))?;
            // The CA backdates notBefore to absorb clock skew, so the
            // lifetime is measured from when the SVID is in hand: halfway
            // through what remains of it.
            let renew_at = renewal_time(not_before.max(SystemTime::now()), not_after);
            tracing::info!(agent_id = %current.spiffe_id(), renew_at = ?renew_at, "agent SVID renewal scheduled");
            tokio::time::sleep(duration_until(renew_at, SystemTime::now())).await;

            let expired = tokio::time::sleep(duration_until(not_after, SystemTime::now()));
            let renewed = tokio::select! {
                renewed = self.renew() => renewed?,
                () = expired => {
                    tracing::error!(agent_id = %current.spiffe_id(), "the agent SVID expired before it could be renewed; attest the node again with a new join token");
                    return Err(AgentError::AgentSvidExpired {
                        spiffe_id: current.spiffe_id().clone(),
                    });
                }
            };
            tracing::info!(agent_id = %renewed.spiffe_id(), "agent SVID renewed");
        }
    }

    /// Signs a new key with `RenewAgent`, then stores and installs the SVID.
    async fn renew(&self) -> Result<X509Svid, AgentError> {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256)?;
        let request = RenewAgentRequest {
            public_key: key.public_key_der(),
        };
        let response = retry_with(
            &self.retry,
            "RenewAgent",
            || {
                let mut client = self.server.client();
                let request = request.clone();
                async move { client.renew_agent(request).await }
            },
            |status| self.server.fail_over(status),
        )
        .await
        .map_err(|status| AgentError::server("RenewAgent", &status))?
        .into_inner();

        let bundle = self.identity.bundle().ok_or(AgentError::invalid_response(
            "RenewAgent",
            "no trust bundle to check the SVID",
        ))?;
        let svid = accept_agent_svid("RenewAgent", response.svid, key, &bundle, SystemTime::now())?;

        if let Err(error) = self.storage.save_agent_svid(&svid) {
            // The new SVID still works in memory; a restart falls back to
            // the previous one while it is valid.
            tracing::error!(error = %error_chain(&error), "failed to store the renewed agent SVID");
        }
        self.identity.set_agent_svid(svid.clone())?;
        self.server.reconnect();
        Ok(svid)
    }
}
