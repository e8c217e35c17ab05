//! The workload's view of the SPIFFE Workload API: an `X509Source` that
//! watches the agent for new SVIDs and bundles, and the snapshot of both
//! that each connection takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spiffe::{TrustDomain, X509BundleSet, X509Source, X509Svid};

/// How often `wait_for_bundle` checks the source.
const BUNDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// An X.509-SVID with the bundles that arrived in the same Workload API
/// response.
pub struct Snapshot {
    /// The workload's default X.509-SVID.
    pub svid: Arc<X509Svid>,
    /// The bundles of the workload's own and federated trust domains.
    pub bundles: Arc<X509BundleSet>,
}

impl Snapshot {
    /// Returns how many X.509 authorities the bundle of `trust_domain`
    /// contains, 0 when the workload has no bundle for it.
    pub fn authority_count(&self, trust_domain: &TrustDomain) -> usize {
        self.bundles
            .get(trust_domain)
            .map_or(0, |bundle| bundle.authorities().len())
    }
}

/// A connection to the Workload API that stays open and follows rotations.
pub struct Workload {
    source: X509Source,
}

impl Workload {
    /// Connects to the Workload API at `endpoint` (such as
    /// `unix:///run/agent/api.sock`) and waits up to `timeout` for the first
    /// X.509-SVID.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Workload> {
        let source = X509Source::builder()
            .endpoint(endpoint)
            .initial_sync_timeout(timeout)
            .build()
            .await
            .with_context(|| {
                format!(
                    "failed to get an X.509-SVID from the Workload API at {endpoint}; \
                     check that the agent runs and that an entry matches this process"
                )
            })?;
        Ok(Workload { source })
    }

    /// Reads the current SVID and bundles. Each call returns the latest
    /// update the agent sent, so a connection that calls it picks up SVID
    /// renewals and CA rotations.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let state = self.source.state();
        let svid = state
            .svid()
            .context("the Workload API withdrew this workload's X.509-SVID")?;
        let bundles = Arc::clone(state.context()?.bundle_set());
        Ok(Snapshot { svid, bundles })
    }

    /// Waits up to `timeout` until the workload has a bundle for
    /// `trust_domain`, and returns the snapshot that has it.
    pub async fn wait_for_bundle(
        &self,
        trust_domain: &TrustDomain,
        timeout: Duration,
    ) -> Result<Snapshot> {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot()?;
            if snapshot.authority_count(trust_domain) > 0 {
                return Ok(snapshot);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no bundle for trust domain {trust_domain} after {timeout:?}; check that \
                     the servers federate and that this workload's entry has \
                     federates_with {trust_domain}"
                );
            }
            tokio::time::sleep(BUNDLE_POLL_INTERVAL).await;
        }
    }

    /// Closes the Workload API stream.
    pub async fn shutdown(self) {
        self.source.shutdown().await;
    }
}
