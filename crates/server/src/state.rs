//! State shared by the admin API, the agent API and the rotation task: the
//! store, the CA, the entry cache, the published bundle and the broadcast
//! channel that pushes changes to open sync streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tessera_ca::CertificateAuthority;
use tessera_spiffe::{SpiffeId, TrustBundle, TrustDomain};
use tessera_store::{Revision, Store};
use tokio::sync::{Mutex, broadcast, watch};

use crate::ServerError;
use crate::bundle::{PublishedBundle, unix_seconds, write_bundle_pem};
use crate::cache::EntryCache;
use crate::config::ServerConfig;

/// Capacity of the change broadcast. A stream that falls further behind
/// gets a fresh snapshot instead of the missed changes.
const EVENT_CAPACITY: usize = 1024;

/// The bundle as published, swapped atomically on rotation. The agent API's
/// client certificate verifier reads it on every handshake.
pub(crate) type BundleHandle = Arc<ArcSwap<PublishedBundle>>;

/// A change that open sync streams react to.
#[derive(Debug, Clone)]
pub(crate) enum SyncEvent {
    /// Registration entries changed; each stream recomputes its set.
    EntriesChanged,
    /// The trust bundle changed.
    BundleChanged,
    /// A federated bundle was stored or removed.
    FederatedBundlesChanged,
    /// An agent's record changed, such as its node selectors.
    AgentUpdated(SpiffeId),
    /// This server has failed to read the datastore for a while, so it
    /// cannot learn of other servers' writes. Every stream ends with
    /// Unavailable, so that agents move to another server.
    DatastoreUnreachable,
    /// An agent was evicted or banned; its stream ends.
    AgentRevoked {
        /// The agent ID.
        agent_id: SpiffeId,
        /// Why, such as `evicted` or `banned`.
        reason: &'static str,
    },
}

/// Everything the request handlers and background tasks share.
pub(crate) struct ServerState {
    /// The resolved configuration.
    pub config: ServerConfig,
    /// The server's own ID, `spiffe://<td>/tessera/server`.
    pub server_id: SpiffeId,
    /// The datastore.
    pub store: Store,
    /// The certificate authority.
    pub ca: Arc<CertificateAuthority>,
    /// The published bundle.
    pub bundle: BundleHandle,
    /// Federation relationships and federated bundles.
    pub federation: crate::federation::Federation,
    cache: RwLock<EntryCache>,
    /// Serializes admin writes, so the cache applies them in store order.
    pub write_lock: Mutex<()>,
    /// This server's position in the change feed. The polling task and
    /// admin reads lock it to apply changes from the feed, never while
    /// holding `write_lock`, which applying a change takes.
    pub feed: Mutex<crate::feed::Tail>,
    events: broadcast::Sender<SyncEvent>,
    revision: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl ServerState {
    /// Bundles the parts of a running server.
    pub fn new(
        config: ServerConfig,
        store: Store,
        ca: Arc<CertificateAuthority>,
        cache: EntryCache,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let bundle = PublishedBundle::new(ca.bundle());
        let revision = cache.revision();
        Self {
            server_id: crate::ids::server_id(&config.trust_domain),
            config,
            store,
            ca,
            bundle: Arc::new(ArcSwap::from_pointee(bundle)),
            federation: crate::federation::Federation::default(),
            cache: RwLock::new(cache),
            write_lock: Mutex::new(()),
            feed: Mutex::new(crate::feed::Tail::new(revision)),
            events: broadcast::channel(EVENT_CAPACITY).0,
            revision: AtomicU64::new(revision),
            shutdown,
        }
    }

    /// Returns the server's trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// Locks the entry cache for reading.
    pub fn cache(&self) -> RwLockReadGuard<'_, EntryCache> {
        // A panic while holding the lock leaves the cache as consistent as
        // the last completed update, so a poisoned lock is still usable.
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the entry cache for writing. Callers hold `write_lock` and
    /// update the cache only after the store acknowledged the write.
    pub fn cache_mut(&self) -> RwLockWriteGuard<'_, EntryCache> {
        self.cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the latest change-feed revision the server applied.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// Records that the store reached `revision`.
    pub fn advance_revision(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// Subscribes to changes.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.events.subscribe()
    }

    /// Sends `event` to every open sync stream.
    pub fn notify(&self, event: SyncEvent) {
        // An error only means that no stream is open.
        let _ = self.events.send(event);
    }

    /// Completes when the server shuts down.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        wait_for_stop(self.shutdown.clone())
    }

    /// Stores `bundle` in the datastore, writes `bundle.pem`, swaps it in for
    /// the TLS verifier and pushes it to every sync stream.
    ///
    /// The stored bundle is the union of the authorities of every server
    /// that shares the database, so `bundle` is merged into it first and
    /// the union is what gets published.
    pub async fn publish_bundle(&self, bundle: TrustBundle) -> Result<(), ServerError> {
        let (bundle, revision) =
            crate::shared_bundle::merge_into_store(&self.store, &bundle, SystemTime::now())
                .await
                .map_err(ServerError::Store)?;
        if let Some(revision) = revision {
            self.advance_revision(revision);
        }
        self.install_bundle(bundle).await
    }

    /// Writes `bundle.pem`, swaps `bundle` in for the TLS verifier and
    /// pushes it to every sync stream, without storing it.
    pub async fn install_bundle(&self, bundle: TrustBundle) -> Result<(), ServerError> {
        let data_dir = self.config.data_dir.clone();
        let file_bundle = bundle.clone();
        tokio::task::spawn_blocking(move || write_bundle_pem(&data_dir, &file_bundle))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(|source| ServerError::WriteBundle {
                path: self.config.data_dir.join(crate::bundle::BUNDLE_FILE),
                source,
            })?;

        self.bundle.store(Arc::new(PublishedBundle::new(bundle)));
        self.notify(SyncEvent::BundleChanged);
        Ok(())
    }
}

/// Completes when `signal` turns `true` or its sender is gone.
pub(crate) async fn wait_for_stop(mut signal: watch::Receiver<bool>) {
    // An error means the sender is gone, which is also a stop.
    let _ = signal.wait_for(|stop| *stop).await;
}

/// Returns the current time as Unix seconds.
pub(crate) fn now_unix() -> i64 {
    unix_seconds(SystemTime::now())
}
