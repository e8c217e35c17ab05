//! The server SVID, `spiffe://<td>/tessera/server`, that the agent API
//! presents in TLS. It is signed by the server's own CA, re-signed at half
//! its lifetime and after each CA activation, and swapped in without
//! restarting the listener.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tessera_spiffe::{KeyAlgorithm, PrivateKey};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::ServerError;
use crate::state::ServerState;

/// Wait before retrying a failed renewal.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The server SVID and key, served to every TLS handshake.
pub(crate) struct ServerIdentity {
    current: ArcSwap<CertifiedKey>,
    renew_at: Mutex<SystemTime>,
    changed: Notify,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("renew_at", &self.renew_at())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Signs the first server SVID.
    pub fn issue(state: &ServerState, now: SystemTime) -> Result<Self, ServerError> {
        let (key, renew_at) = sign(state, now)?;
        Ok(Self {
            current: ArcSwap::from_pointee(key),
            renew_at: Mutex::new(renew_at),
            changed: Notify::new(),
        })
    }

    /// Signs a new server SVID and serves it to later handshakes.
    pub fn renew(&self, state: &ServerState, now: SystemTime) -> Result<(), ServerError> {
        let (key, renew_at) = sign(state, now)?;
        self.current.store(Arc::new(key));
        self.set_renew_at(renew_at);
        tracing::info!(
            spiffe_id = %state.server_id,
            renew_at = %humantime::format_rfc3339_seconds(renew_at),
            "renewed server SVID"
        );
        Ok(())
    }

    /// Returns the time of the next scheduled renewal.
    pub fn renew_at(&self) -> SystemTime {
        *self.renew_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_renew_at(&self, at: SystemTime) {
        *self.renew_at.lock().unwrap_or_else(PoisonError::into_inner) = at;
        self.changed.notify_one();
    }
}

impl ResolvesServerCert for ServerIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Makes a key, has the CA sign the server SVID for it, and returns the
/// certified key with the time at half of the SVID's lifetime.
fn sign(state: &ServerState, now: SystemTime) -> Result<(CertifiedKey, SystemTime), ServerError> {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256)
        .map_err(|e| ServerError::ServerSvid(e.to_string()))?;
    let chain = state
        .ca
        .sign_x509_svid(
            &state.server_id,
            &key.public_key_der(),
            &[],
            state.config.x509_svid_ttl,
            now,
        )
        .map_err(|e| ServerError::ServerSvid(crate::error_chain(&e)))?;
    let leaf = chain
        .first()
        .ok_or_else(|| ServerError::ServerSvid("the CA returned an empty chain".to_owned()))?;
    let facts =
        super::LeafFacts::parse(leaf).map_err(|e| ServerError::ServerSvid(e.to_string()))?;

    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der()));
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| ServerError::ServerSvid(format!("failed to load the server SVID key: {e}")))?;

    let half_life = facts.not_after.duration_since(now).unwrap_or_default() / 2;
    Ok((CertifiedKey::new(chain, signing_key), now + half_life))
}

/// Renews the server SVID at half its lifetime until shutdown. The rotation
/// task renews it too after a CA activation, which moves the next time.
pub(crate) async fn run_renewal(
    state: Arc<ServerState>,
    identity: Arc<ServerIdentity>,
) -> Result<(), ServerError> {
    let span = tracing::info_span!("server_svid", spiffe_id = %state.server_id);
    async move {
        let stopped = state.stopped();
        tokio::pin!(stopped);
        loop {
            let wait = identity
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                () = &mut stopped => return Ok(()),
                () = identity.changed.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = identity.renew(&state, SystemTime::now()) {
                tracing::error!(error = %e, retry_in = ?RETRY_AFTER, "failed to renew the server SVID");
                identity.set_renew_at(SystemTime::now() + RETRY_AFTER);
            }
        }
    }
    .instrument(span)
    .await
}
