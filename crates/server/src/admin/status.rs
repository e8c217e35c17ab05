//! Read-only status RPCs of the admin API: the trust bundle and the health
//! report.

use std::time::SystemTime;

use tessera_ca::Slot;
use tessera_proto::admin::HealthResponse;
use tessera_proto::types;

use crate::state::ServerState;

/// Health status when every check passed.
const SERVING: &str = "serving";
/// Health status when a check failed.
const NOT_SERVING: &str = "not_serving";

pub(super) fn get_bundle(state: &ServerState) -> types::Bundle {
    state.bundle.load().proto.clone()
}

/// Pings the datastore and reports the active CA's expiry. The ping waits
/// up to `datastore.acquire_timeout` for a connection.
pub(super) async fn health(state: &ServerState) -> HealthResponse {
    let mut checks = Vec::new();
    let mut healthy = true;

    match state.store.ping().await {
        Ok(()) => checks.push("datastore: ok".to_owned()),
        Err(e) => {
            healthy = false;
            let error = crate::error_chain(&e);
            tracing::warn!(%error, "health check: datastore ping failed");
            checks.push(format!("datastore: failed: {error}"));
        }
    }

    let now = SystemTime::now();
    let active = state
        .ca
        .authorities()
        .into_iter()
        .find(|a| a.slot == Slot::Active);
    match active {
        Some(authority) if authority.not_after > now => {
            let expires = humantime::format_rfc3339_seconds(authority.not_after);
            checks.push(format!(
                "ca: ok, active authority {} expires at {expires}",
                authority.id
            ));
        }
        Some(authority) => {
            healthy = false;
            let expired = humantime::format_rfc3339_seconds(authority.not_after);
            checks.push(format!(
                "ca: failed: active authority {} expired at {expired}",
                authority.id
            ));
        }
        None => {
            healthy = false;
            checks.push("ca: failed: no active authority".to_owned());
        }
    }

    HealthResponse {
        status: if healthy { SERVING } else { NOT_SERVING }.to_owned(),
        trust_domain: state.trust_domain().name().to_owned(),
        checks,
    }
}
