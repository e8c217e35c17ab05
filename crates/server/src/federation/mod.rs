//! SPIFFE federation: relationships with foreign trust domains, a refresh
//! task per relationship that fetches the peer's bundle from its bundle
//! endpoint, and the set of federated bundles that sync streams push to
//! agents. Relationships and the last good bundle of each peer are in the
//! datastore, so a restarted server serves them before it reaches a peer.

pub(crate) mod admin;
pub(crate) mod check;
pub(crate) mod client;
pub mod config;
pub(crate) mod follow;
pub(crate) mod refresh;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tessera_proto::types;
use tessera_spiffe::{SpiffeId, TrustBundle, TrustDomain};
use tessera_store::FederationRecord;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::bundle::bundle_to_proto;
use crate::state::{ServerState, SyncEvent};
use refresh::FetchRequest;

/// Minimum interval between two early refreshes of one peer that agents
/// request. Workloads that present made-up key IDs thus add at most one
/// fetch per interval to the peer's schedule.
pub(crate) const EARLY_REFRESH_INTERVAL: Duration = refresh::MIN_REFRESH;

/// Error of the federation parts that stop the server: the bundle
/// endpoint and OIDC listeners and their certificates.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A certificate or key file of an HTTPS listener is unusable.
    #[error("invalid HTTPS certificate or key file {path}: {reason}")]
    WebCertificate {
        /// The file.
        path: PathBuf,
        /// The problem found.
        reason: String,
    },
    /// Binding a listener failed.
    #[error("failed to bind the {endpoint} address {address}; is another process using it?")]
    Bind {
        /// `bundle endpoint` or `OIDC discovery`.
        endpoint: &'static str,
        /// The configured address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The authentication profile of a peer's bundle endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerProfile {
    /// The endpoint presents an X509-SVID with this SPIFFE ID, checked
    /// against the stored bundle of the peer's trust domain.
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint must present.
        endpoint_id: SpiffeId,
    },
    /// The endpoint presents a certificate from the configured CA file.
    HttpsWeb,
}

/// A checked federation relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relationship {
    /// The peer's trust domain.
    pub trust_domain: TrustDomain,
    /// The peer's bundle endpoint URL, `https://host[:port]/path`.
    pub url: http::Uri,
    /// The endpoint's authentication profile.
    pub profile: PeerProfile,
}

impl Relationship {
    /// Checks a stored or requested relationship.
    pub fn from_parts(
        trust_domain: TrustDomain,
        url: &str,
        profile: &str,
        endpoint_id: &str,
    ) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid bundle endpoint URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(format!(
                "invalid bundle endpoint URL {url:?}: expected https://host[:port]/path"
            ));
        }
        check_url_authority(url, &uri)?;
        let profile = match profile {
            "https_spiffe" => {
                let endpoint_id = if endpoint_id.is_empty() {
                    // SPIFFE servers conventionally serve the bundle
                    // endpoint with the server's own SVID.
                    crate::ids::server_id(&trust_domain)
                } else {
                    SpiffeId::parse(endpoint_id)
                        .map_err(|e| format!("invalid endpoint SPIFFE ID {endpoint_id:?}: {e}"))?
                };
                PeerProfile::HttpsSpiffe { endpoint_id }
            }
            "https_web" if endpoint_id.is_empty() => PeerProfile::HttpsWeb,
            "https_web" => {
                return Err(
                    "an endpoint SPIFFE ID applies only to the https_spiffe profile".into(),
                );
            }
            other => {
                return Err(format!(
                    "invalid profile {other:?}: expected \"https_spiffe\" or \"https_web\""
                ));
            }
        };
        Ok(Self {
            trust_domain,
            url: uri,
            profile,
        })
    }

    /// Checks a stored relationship.
    pub fn from_record(record: &FederationRecord) -> Result<Self, String> {
        Self::from_parts(
            record.trust_domain.clone(),
            &record.bundle_endpoint_url,
            &record.profile,
            &record.endpoint_spiffe_id,
        )
    }

    /// Returns the stored form.
    pub fn to_record(&self) -> FederationRecord {
        let (profile, endpoint_id) = match &self.profile {
            PeerProfile::HttpsSpiffe { endpoint_id } => ("https_spiffe", endpoint_id.to_string()),
            PeerProfile::HttpsWeb => ("https_web", String::new()),
        };
        FederationRecord {
            trust_domain: self.trust_domain.clone(),
            bundle_endpoint_url: self.url.to_string(),
            profile: profile.to_owned(),
            endpoint_spiffe_id: endpoint_id,
            created_at: 0,
            updated_at: 0,
        }
    }
}

/// Rejects user information and ports outside 1-65535 in a bundle
/// endpoint URL. `http::Uri` accepts both, and a fetch would then send
/// the credentials in the Host header or connect to port 443 instead.
fn check_url_authority(url: &str, uri: &http::Uri) -> Result<(), String> {
    let authority = uri
        .authority()
        .map(http::uri::Authority::as_str)
        .unwrap_or("");
    if authority.contains('@') {
        return Err(format!(
            "invalid bundle endpoint URL {url:?}: user information before `@` is not \
             supported; remove it, bundle endpoints take no credentials"
        ));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, after)| !after.contains(']'));
    if has_port && uri.port_u16().is_none_or(|port| port == 0) {
        return Err(format!(
            "invalid bundle endpoint URL {url:?}: the port must be between 1 and 65535"
        ));
    }
    Ok(())
}

/// Refresh state of one peer, shown by `tessera federation show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerStatus {
    /// Time of the last fetch whose bundle was accepted.
    pub last_success_at: Option<SystemTime>,
    /// The error of the last fetch, cleared by a success.
    pub last_error: Option<String>,
    /// Time of the last failed fetch.
    pub last_error_at: Option<SystemTime>,
    /// Time of the next scheduled fetch.
    pub next_refresh_at: Option<SystemTime>,
}

/// The outcome of a request for an early refresh of a peer's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EarlyRefresh {
    /// The refresh task was asked to fetch now.
    Started,
    /// An early refresh started less than [`EARLY_REFRESH_INTERVAL`] ago;
    /// the next one is accepted after `retry_after`.
    Skipped {
        /// Time until the next early refresh is accepted.
        retry_after: Duration,
    },
    /// The trust domain is not a peer.
    NotPeer,
}

struct Peer {
    relationship: Relationship,
    status: PeerStatus,
    requests: mpsc::Sender<FetchRequest>,
    /// Start of the last early refresh that an agent requested.
    last_early_refresh: Option<Instant>,
    task: Option<AbortHandle>,
}

/// The federation relationships and federated bundles of a running server.
#[derive(Default)]
pub(crate) struct Federation {
    peers: Mutex<BTreeMap<TrustDomain, Peer>>,
    bundles: ArcSwap<BTreeMap<TrustDomain, Arc<TrustBundle>>>,
    /// One lock per foreign trust domain that serializes its fetches and
    /// bundle writes, so a forced refresh and the scheduled one cannot
    /// store bundles out of order. Peers do not wait for each other, so
    /// one slow endpoint delays only its own relationship. The map keeps
    /// an entry for every trust domain ever locked, a few bytes each.
    fetch_locks: Mutex<BTreeMap<TrustDomain, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("peers", &self.lock_peers().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Federation {
    fn lock_peers(&self) -> MutexGuard<'_, BTreeMap<TrustDomain, Peer>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for and takes the fetch lock of `td`.
    pub async fn lock_fetches(&self, td: &TrustDomain) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .fetch_locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(td.clone()).or_default())
        };
        lock.lock_owned().await
    }

    /// Returns the current federated bundles.
    pub fn bundles(&self) -> Arc<BTreeMap<TrustDomain, Arc<TrustBundle>>> {
        self.bundles.load_full()
    }

    /// Returns the federated bundle of `td`.
    pub fn bundle(&self, td: &TrustDomain) -> Option<Arc<TrustBundle>> {
        self.bundles.load().get(td).cloned()
    }

    /// Returns the relationship with `td` and its status.
    pub fn peer(&self, td: &TrustDomain) -> Option<(Relationship, PeerStatus)> {
        self.lock_peers()
            .get(td)
            .map(|p| (p.relationship.clone(), p.status.clone()))
    }

    /// Returns every relationship with its status.
    pub fn peers(&self) -> Vec<(Relationship, PeerStatus)> {
        self.lock_peers()
            .values()
            .map(|p| (p.relationship.clone(), p.status.clone()))
            .collect()
    }

    /// Updates the status of `td`, if it is still a peer.
    pub fn update_status(&self, td: &TrustDomain, update: impl FnOnce(&mut PeerStatus)) {
        if let Some(peer) = self.lock_peers().get_mut(td) {
            update(&mut peer.status);
        }
    }

    /// Replaces the in-memory bundle of `td`, or removes it with `None`,
    /// and notifies every sync stream.
    pub fn set_bundle(&self, state: &ServerState, td: &TrustDomain, bundle: Option<TrustBundle>) {
        // The change feed and the refresh tasks both call this, so the
        // map is replaced with a compare-and-swap loop that loses no write.
        let bundle = bundle.map(Arc::new);
        self.bundles.rcu(|current| {
            let mut bundles = BTreeMap::clone(current);
            match &bundle {
                Some(bundle) => bundles.insert(td.clone(), Arc::clone(bundle)),
                None => bundles.remove(td),
            };
            bundles
        });
        state.notify(SyncEvent::FederatedBundlesChanged);
    }

    /// Adds or replaces the relationship and (re)starts its refresh task.
    pub fn upsert(&self, state: &Arc<ServerState>, relationship: Relationship) {
        let td = relationship.trust_domain.clone();
        let (requests, received) = mpsc::channel(refresh::REQUEST_QUEUE);
        let mut peers = self.lock_peers();
        let (status, last_early_refresh) = match peers.remove(&td) {
            Some(old) => {
                if let Some(task) = old.task {
                    task.abort();
                }
                (old.status, old.last_early_refresh)
            }
            None => (PeerStatus::default(), None),
        };
        let task = tokio::spawn(refresh::run(Arc::clone(state), td.clone(), received));
        peers.insert(
            td,
            Peer {
                relationship,
                status,
                requests,
                last_early_refresh,
                task: Some(task.abort_handle()),
            },
        );
    }

    /// Removes the relationship with `td` and stops its refresh task.
    /// Returns whether there was one.
    pub fn remove(&self, td: &TrustDomain) -> bool {
        let Some(peer) = self.lock_peers().remove(td) else {
            return false;
        };
        if let Some(task) = peer.task {
            task.abort();
        }
        true
    }

    /// Makes the refresh task of `td` fetch now and waits until the fetch
    /// has finished. Returns false when `td` is not a peer.
    pub async fn refresh_now(&self, td: &TrustDomain) -> bool {
        let Some(requests) = self.lock_peers().get(td).map(|p| p.requests.clone()) else {
            return false;
        };
        let (done, finished) = oneshot::channel();
        let request = FetchRequest { done: Some(done) };
        // Both fail only when the task stopped because the relationship was
        // removed meanwhile; the caller then reads the removal.
        if requests.send(request).await.is_ok() {
            let _ = finished.await;
        }
        true
    }

    /// Makes the refresh task of `td` fetch now, unless an early refresh
    /// of `td` started less than [`EARLY_REFRESH_INTERVAL`] before `now`.
    /// Does not wait for the fetch.
    pub fn request_early_refresh(&self, td: &TrustDomain, now: Instant) -> EarlyRefresh {
        let mut peers = self.lock_peers();
        let Some(peer) = peers.get_mut(td) else {
            return EarlyRefresh::NotPeer;
        };
        if let Some(last) = peer.last_early_refresh {
            let elapsed = now.saturating_duration_since(last);
            if elapsed < EARLY_REFRESH_INTERVAL {
                return EarlyRefresh::Skipped {
                    retry_after: EARLY_REFRESH_INTERVAL - elapsed,
                };
            }
        }
        peer.last_early_refresh = Some(now);
        // A full queue already makes the task fetch once more.
        let _ = peer.requests.try_send(FetchRequest::default());
        EarlyRefresh::Started
    }

    /// Stops every refresh task.
    pub fn stop_all(&self) {
        for peer in self.lock_peers().values_mut() {
            if let Some(task) = peer.task.take() {
                task.abort();
            }
        }
    }
}

/// Loads the stored relationships and foreign bundles and starts a refresh
/// task per relationship.
pub(crate) async fn start(state: &Arc<ServerState>) -> Result<(), crate::ServerError> {
    let own = state.trust_domain().clone();
    let stored = state
        .store
        .list_bundles()
        .await
        .map_err(crate::ServerError::Store)?;
    let mut bundles = BTreeMap::new();
    for (td, jwks) in stored {
        if td == own {
            continue;
        }
        match TrustBundle::from_jwks(&td, &jwks) {
            Ok(bundle) => {
                bundles.insert(td, Arc::new(bundle));
            }
            Err(e) => {
                tracing::warn!(trust_domain = %td, error = %e, "ignoring an invalid stored federated bundle");
            }
        }
    }
    state.federation.bundles.store(Arc::new(bundles));

    let records = state
        .store
        .list_federations()
        .await
        .map_err(crate::ServerError::Store)?;
    for record in records {
        match Relationship::from_record(&record) {
            Ok(relationship) => state.federation.upsert(state, relationship),
            Err(e) => {
                tracing::warn!(trust_domain = %record.trust_domain, error = %e, "ignoring an invalid stored federation relationship");
            }
        }
    }
    Ok(())
}

/// Runs until shutdown, then stops the refresh tasks.
pub(crate) async fn run(state: Arc<ServerState>) -> Result<(), crate::ServerError> {
    start(&state).await?;
    state.stopped().await;
    state.federation.stop_all();
    Ok(())
}

/// Returns the protobuf form of every federated bundle.
pub(crate) fn bundles_to_proto(
    bundles: &BTreeMap<TrustDomain, Arc<TrustBundle>>,
) -> Vec<types::Bundle> {
    bundles.values().map(|b| bundle_to_proto(b)).collect()
}

/// Parses a bundle file for `td`: the SPIFFE bundle format (JSON) or PEM
/// certificates.
pub(crate) fn parse_bundle_file(td: &TrustDomain, bytes: &[u8]) -> Result<TrustBundle, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the bundle is not UTF-8 text".to_owned())?;
    let bundle = if text.trim_start().starts_with('{') {
        TrustBundle::from_jwks(td, bytes).map_err(|e| format!("invalid SPIFFE bundle: {e}"))?
    } else {
        TrustBundle::from_pem(td, text).map_err(|e| format!("invalid PEM bundle: {e}"))?
    };
    if bundle.x509_authorities().is_empty() && bundle.jwt_authorities().is_empty() {
        return Err(
            "the bundle contains no authorities; give the peer's current bundle, such as the \
             output of `tessera bundle show --format spiffe` on its server"
                .to_owned(),
        );
    }
    check::check_authorities_trust_domain(&bundle)?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).unwrap()
    }

    #[test]
    fn relationship_from_parts_cases() {
        let cases = [
            ("https://127.0.0.1:8443/", "https_spiffe", "", true),
            (
                "https://127.0.0.1:8443/",
                "https_spiffe",
                "spiffe://b.org/x",
                true,
            ),
            ("https://127.0.0.1:8443/", "https_web", "", true),
            (
                "https://127.0.0.1:8443/",
                "https_web",
                "spiffe://b.org/x",
                false,
            ),
            ("http://127.0.0.1:8443/", "https_spiffe", "", false),
            ("not a url", "https_spiffe", "", false),
            (
                "https://127.0.0.1:8443/",
                "https_spiffe",
                "not-an-id",
                false,
            ),
            ("https://127.0.0.1:8443/", "ftp", "", false),
            ("https://127.0.0.1:99999/", "https_spiffe", "", false),
            ("https://127.0.0.1:0/", "https_spiffe", "", false),
            (
                "https://user:secret@127.0.0.1:8443/",
                "https_spiffe",
                "",
                false,
            ),
            ("https://[::1]:8443/", "https_spiffe", "", true),
            ("https://[::1]/", "https_spiffe", "", true),
            ("https://example.org/", "https_spiffe", "", true),
        ];
        for (url, profile, id, valid) in cases {
            let result = Relationship::from_parts(td("b.org"), url, profile, id);
            assert_eq!(result.is_ok(), valid, "{url} {profile} {id}: {result:?}");
        }
    }

    #[test]
    fn relationship_default_endpoint_id_is_server() {
        let relationship =
            Relationship::from_parts(td("b.org"), "https://h:1/", "https_spiffe", "").unwrap();
        let expected = SpiffeId::parse("spiffe://b.org/tessera/server").unwrap();
        assert_eq!(
            relationship.profile,
            PeerProfile::HttpsSpiffe {
                endpoint_id: expected
            }
        );
    }

    /// Adds a peer without a refresh task and returns the receiver of its
    /// fetch requests.
    fn add_peer(federation: &Federation, name: &str) -> mpsc::Receiver<FetchRequest> {
        let (requests, received) = mpsc::channel(refresh::REQUEST_QUEUE);
        let relationship =
            Relationship::from_parts(td(name), "https://h:1/", "https_web", "").unwrap();
        let peer = Peer {
            relationship,
            status: PeerStatus::default(),
            requests,
            last_early_refresh: None,
            task: None,
        };
        federation.lock_peers().insert(td(name), peer);
        received
    }

    #[test]
    fn early_refresh_limited_per_peer() {
        let federation = Federation::default();
        let mut b_requests = add_peer(&federation, "b.org");
        let mut c_requests = add_peer(&federation, "c.org");
        let start = Instant::now();

        let first = federation.request_early_refresh(&td("b.org"), start);
        let again = federation.request_early_refresh(&td("b.org"), start + Duration::from_secs(10));
        let other_peer = federation.request_early_refresh(&td("c.org"), start);
        let after_limit =
            federation.request_early_refresh(&td("b.org"), start + EARLY_REFRESH_INTERVAL);

        assert_eq!(first, EarlyRefresh::Started);
        assert_eq!(
            again,
            EarlyRefresh::Skipped {
                retry_after: EARLY_REFRESH_INTERVAL - Duration::from_secs(10)
            }
        );
        assert_eq!(other_peer, EarlyRefresh::Started);
        assert_eq!(after_limit, EarlyRefresh::Started);
        let queued = std::iter::from_fn(|| b_requests.try_recv().ok()).count();
        assert_eq!(
            queued, 2,
            "fetch requests sent to the refresh task of b.org"
        );
        assert!(c_requests.try_recv().is_ok());
    }

    #[test]
    fn early_refresh_of_non_peer() {
        let federation = Federation::default();
        let _requests = add_peer(&federation, "b.org");

        let outcome = federation.request_early_refresh(&td("x.org"), Instant::now());

        assert_eq!(outcome, EarlyRefresh::NotPeer);
    }

    #[test]
    fn relationship_record_round_trip() {
        let relationship =
            Relationship::from_parts(td("b.org"), "https://h:1/b", "https_web", "").unwrap();
        let back = Relationship::from_record(&relationship.to_record()).unwrap();
        assert_eq!(back, relationship);
    }
}

/// The federated bundles one sync stream has sent, to compute what to send
/// next.
#[derive(Debug, Default)]
pub(crate) struct SentBundles(BTreeMap<TrustDomain, Arc<TrustBundle>>);

impl SentBundles {
    /// Returns every current bundle for a snapshot and remembers them.
    pub fn snapshot(&mut self, federation: &Federation) -> Vec<types::Bundle> {
        let current = federation.bundles();
        self.0 = BTreeMap::clone(&current);
        bundles_to_proto(&current)
    }

    /// Returns the bundles added or changed and the trust domains removed
    /// since the last call, and remembers the current set.
    pub fn changes(&mut self, federation: &Federation) -> (Vec<types::Bundle>, Vec<String>) {
        let current = federation.bundles();
        let changed = current
            .iter()
            .filter(|(td, bundle)| {
                !self
                    .0
                    .get(*td)
                    .is_some_and(|sent| Arc::ptr_eq(sent, bundle))
            })
            .map(|(_, bundle)| bundle_to_proto(bundle))
            .collect();
        let removed = self
            .0
            .keys()
            .filter(|td| !current.contains_key(*td))
            .map(ToString::to_string)
            .collect();
        self.0 = BTreeMap::clone(&current);
        (changed, removed)
    }
}
