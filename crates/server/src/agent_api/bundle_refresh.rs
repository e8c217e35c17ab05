//! RequestBundleRefresh: an attested agent requests a fetch of the bundle
//! of a federated trust domain before its schedule, because a workload
//! presented a JWT-SVID whose key ID the agent's copy lacks. The
//! federation module limits such refreshes per trust domain, so workloads
//! sending made-up key IDs cannot make the server flood the peer.

use std::time::{Duration, Instant};

use tessera_proto::agent::{RequestBundleRefreshRequest, RequestBundleRefreshResponse};
use tessera_spiffe::TrustDomain;
use tessera_store::AttestedAgent;
use tonic::{Code, Status};

use crate::federation::EarlyRefresh;
use crate::state::ServerState;
use crate::status::rejected;

/// Maximum length in bytes of a trust domain name echoed in an error
/// message, the maximum length of a DNS name.
const MAX_ECHOED_NAME_BYTES: usize = 255;

pub(super) fn request_bundle_refresh(
    state: &ServerState,
    agent: &AttestedAgent,
    request: RequestBundleRefreshRequest,
) -> Result<RequestBundleRefreshResponse, Status> {
    let td = parse_trust_domain(&request.trust_domain)?;
    if &td == state.trust_domain() {
        return Err(rejected(
            Code::InvalidArgument,
            format!("{td} is this server's own trust domain; name a federated trust domain"),
        ));
    }

    match state.federation.request_early_refresh(&td, Instant::now()) {
        EarlyRefresh::Started => {
            tracing::info!(agent_id = %agent.spiffe_id, trust_domain = %td, "an agent requested an early refresh of a federated bundle; fetching now");
            Ok(RequestBundleRefreshResponse {
                started: true,
                retry_after_seconds: 0,
            })
        }
        EarlyRefresh::Skipped { retry_after } => {
            tracing::debug!(agent_id = %agent.spiffe_id, trust_domain = %td, ?retry_after, "skipped an early refresh of a federated bundle: one started recently");
            Ok(RequestBundleRefreshResponse {
                started: false,
                retry_after_seconds: whole_seconds_up(retry_after),
            })
        }
        EarlyRefresh::NotPeer => Err(rejected(
            Code::NotFound,
            format!(
                "the server has no federation relationship with {td}, so it cannot refresh \
                 its bundle; create one with `tessera federation create`"
            ),
        )),
    }
}

/// Returns `duration` in seconds, rounded up so that a caller that waits
/// that long is not skipped again.
fn whole_seconds_up(duration: Duration) -> u32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

fn parse_trust_domain(name: &str) -> Result<TrustDomain, Status> {
    if name.is_empty() {
        return Err(rejected(Code::InvalidArgument, "trust_domain is required"));
    }
    TrustDomain::new(name).map_err(|e| {
        let shown = if name.len() <= MAX_ECHOED_NAME_BYTES {
            format!("{name:?}")
        } else {
            format!("of {} bytes", name.len())
        };
        rejected(
            Code::InvalidArgument,
            format!("invalid trust domain {shown}: {e}"),
        )
    })
}
