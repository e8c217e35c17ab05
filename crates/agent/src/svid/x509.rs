//! Workload X.509-SVIDs. For every cached entry the agent makes a key pair
//! and has the server sign the public key with `BatchNewX509Svid`, so the
//! private key never leaves the agent. Each SVID is signed again at half its
//! lifetime, or when the entry's SPIFFE ID, DNS names or TTL change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tessera_proto::agent::{BatchNewX509SvidRequest, NewX509SvidParams, NewX509SvidResult};
use tessera_registration::{EntryId, RegistrationEntry};
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{KeyAlgorithm, PrivateKey, SpiffeId, TrustBundle, X509Svid};
use tonic::Status;

use crate::cache::{Cache, CacheState, is_expired};
use crate::error::AgentError;
use crate::node::client_tls::ServerChannel;
use crate::retry::{Backoff, RetryPolicy, is_final};
use crate::svid::{certificate_validity, duration_until, renewal_time, system_time_to_unix};

/// Maximum number of entries in one `BatchNewX509Svid` request.
pub const MAX_BATCH_SIZE: usize = 500;

/// Shortest time between two signings of one entry's SVID, so an SVID
/// that arrives with almost no lifetime left (its CA about to expire) is
/// not re-signed in a loop. It is short because renewal is already
/// measured from arrival, and an SVID with a TTL of a few seconds must
/// still be renewed before it expires.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_millis(500);

/// Deadline of one `BatchNewX509Svid` call.
const SIGN_TIMEOUT: Duration = Duration::from_secs(30);

/// The entry fields an SVID was signed for; when they change, the SVID is
/// signed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidParams {
    /// The entry's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The entry's DNS names.
    pub dns_names: Vec<String>,
    /// The entry's X.509-SVID lifetime.
    pub ttl: Option<Duration>,
}

impl SvidParams {
    /// Returns the signing parameters of `entry`.
    pub fn of(entry: &RegistrationEntry) -> Self {
        Self {
            spiffe_id: entry.spiffe_id.clone(),
            dns_names: entry.dns_names.clone(),
            ttl: entry.x509_svid_ttl,
        }
    }

    /// Returns whether `entry` still has these parameters.
    pub fn matches(&self, entry: &RegistrationEntry) -> bool {
        self.spiffe_id == entry.spiffe_id
            && self.dns_names == entry.dns_names
            && self.ttl == entry.x509_svid_ttl
    }
}

/// An X.509-SVID signed for one entry, with its private key.
#[derive(Debug, Clone)]
pub struct WorkloadSvid {
    /// The certificate chain and private key.
    pub svid: X509Svid,
    /// The entry fields it was signed for.
    pub params: SvidParams,
    /// The leaf's notBefore.
    pub not_before: SystemTime,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
    /// When the SVID is signed again: at half its lifetime.
    pub renew_at: SystemTime,
}

/// Signs workload public keys: the server's `BatchNewX509Svid`, or a fake
/// in tests.
pub trait SvidSigner: Send + Sync + 'static {
    /// Sends one batch; results come back in request order.
    fn batch_new_x509_svid(
        &self,
        params: Vec<NewX509SvidParams>,
    ) -> BoxFuture<'_, Result<Vec<NewX509SvidResult>, Status>>;
}

impl SvidSigner for ServerChannel {
    fn batch_new_x509_svid(
        &self,
        params: Vec<NewX509SvidParams>,
    ) -> BoxFuture<'_, Result<Vec<NewX509SvidResult>, Status>> {
        Box::pin(async move {
            let mut request = tonic::Request::new(BatchNewX509SvidRequest { params });
            request.set_timeout(SIGN_TIMEOUT);
            match self.client().batch_new_x509_svid(request).await {
                Ok(response) => Ok(response.into_inner().results),
                Err(status) => {
                    self.fail_over(&status);
                    Err(status)
                }
            }
        })
    }
}

/// The entries whose SVIDs are due for signing, and when to look again.
#[derive(Debug, Default)]
pub struct SigningPlan {
    /// Entries without an SVID, with an SVID for changed fields, or with an
    /// SVID past its renewal time. Entries waiting out a backoff are left out.
    pub due: Vec<RegistrationEntry>,
    /// The earliest renewal time or backoff end among the other entries.
    pub wake_at: Option<SystemTime>,
}

/// Decides which entries need an SVID signed at `now`. `retry_at` maps an
/// entry whose signing failed to the time before which it is not tried again.
pub fn plan_signing(
    state: &CacheState,
    retry_at: &HashMap<EntryId, SystemTime>,
    now: SystemTime,
) -> SigningPlan {
    let now_unix = system_time_to_unix(now);
    let mut plan = SigningPlan::default();
    let mut wake = |time: SystemTime| {
        plan.wake_at = Some(plan.wake_at.map_or(time, |current| current.min(time)));
    };
    let mut due = Vec::new();

    for entry in state.entries().values() {
        if is_expired(entry, now_unix) {
            continue;
        }
        if let Some(svid) = state.svid(&entry.id)
            && svid.params.matches(entry)
            && now < svid.renew_at
        {
            wake(svid.renew_at);
            continue;
        }
        match retry_at.get(&entry.id) {
            Some(&time) if time > now => wake(time),
            _ => due.push(entry.clone()),
        }
    }
    plan.due = due;
    plan
}

/// The task that keeps an X.509-SVID signed for every cached entry.
pub struct X509SvidManager<S> {
    cache: Arc<Cache>,
    signer: Arc<S>,
    retry: RetryPolicy,
    failures: HashMap<EntryId, Failure>,
}

/// The backoff state of an entry whose signing failed.
struct Failure {
    backoff: Backoff,
    retry_at: SystemTime,
}

impl<S: SvidSigner> X509SvidManager<S> {
    /// Creates the manager; it starts working when [`run`](Self::run) is awaited.
    pub fn new(cache: Arc<Cache>, signer: Arc<S>, retry: RetryPolicy) -> Self {
        Self {
            cache,
            signer,
            retry,
            failures: HashMap::new(),
        }
    }

    /// Signs and renews SVIDs until the cache is dropped.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Server`] when the server rejects the agent
    /// itself (a final gRPC code for the whole batch), because no SVID can
    /// be signed after that.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let mut generation = self.cache.subscribe();
        loop {
            generation.borrow_and_update();
            let now = SystemTime::now();
            let plan = self.plan(now);

            if !plan.due.is_empty() {
                self.sign(plan.due, now).await?;
                continue;
            }

            let sleep = async {
                match plan.wake_at {
                    Some(time) => tokio::time::sleep(duration_until(time, SystemTime::now())).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = generation.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = sleep => {}
            }
        }
    }

    fn plan(&mut self, now: SystemTime) -> SigningPlan {
        let failures = &mut self.failures;
        self.cache.read(|state| {
            failures.retain(|id, _| state.entries().contains_key(id));
            let retry_at = failures
                .iter()
                .map(|(id, failure)| (id.clone(), failure.retry_at))
                .collect();
            plan_signing(state, &retry_at, now)
        })
    }

    /// Signs SVIDs for `due` in batches and stores them in the cache.
    async fn sign(
        &mut self,
        due: Vec<RegistrationEntry>,
        now: SystemTime,
    ) -> Result<(), AgentError> {
        let bundle = self.cache.read(|state| state.bundle().cloned());
        for batch in due.chunks(MAX_BATCH_SIZE) {
            let keys = batch
                .iter()
                .map(|_| PrivateKey::generate(KeyAlgorithm::EcP256))
                .collect::<Result<Vec<_>, _>>()?;
            let params = batch
                .iter()
                .zip(&keys)
                .map(|(entry, key)| NewX509SvidParams {
                    entry_id: entry.id.to_string(),
                    public_key: key.public_key_der(),
                })
                .collect();

            let results = match self.signer.batch_new_x509_svid(params).await {
                Ok(results) if results.len() == batch.len() => results,
                Ok(results) => {
                    let reason = format!("{} results for {} requests", results.len(), batch.len());
                    self.fail_batch(batch, &reason, now);
                    continue;
                }
                Err(status) if is_final(status.code()) => {
                    tracing::error!(code = ?status.code(), message = status.message(), "the server rejected the agent's SVID requests; no workload SVIDs can be signed");
                    return Err(AgentError::server("BatchNewX509Svid", &status));
                }
                Err(status) => {
                    let reason = format!("{:?}: {}", status.code(), status.message());
                    self.fail_batch(batch, &reason, now);
                    continue;
                }
            };

            let mut signed = Vec::with_capacity(batch.len());
            for ((entry, key), result) in batch.iter().zip(keys).zip(results) {
                match accept_result(entry, key, result, bundle.as_deref(), now) {
                    Ok(svid) => {
                        tracing::debug!(entry_id = %entry.id, spiffe_id = %entry.spiffe_id, expires_at = ?svid.not_after, "workload SVID signed");
                        self.failures.remove(&entry.id);
                        signed.push((entry.id.clone(), svid));
                    }
                    Err(reason) => self.fail_entry(entry, &reason, now),
                }
            }
            let stored = self.cache.store_svids(signed);
            tracing::info!(stored, requested = batch.len(), "workload SVIDs signed");
        }
        Ok(())
    }

    fn fail_batch(&mut self, batch: &[RegistrationEntry], reason: &str, now: SystemTime) {
        tracing::warn!(
            entries = batch.len(),
            reason,
            "signing workload SVIDs failed; retrying with backoff"
        );
        for entry in batch {
            self.record_failure(entry, now);
        }
    }

    fn fail_entry(&mut self, entry: &RegistrationEntry, reason: &str, now: SystemTime) {
        let failures = self.record_failure(entry, now);
        if failures == 1 {
            tracing::warn!(entry_id = %entry.id, spiffe_id = %entry.spiffe_id, reason, "signing a workload SVID failed; retrying with backoff");
        } else {
            tracing::debug!(entry_id = %entry.id, spiffe_id = %entry.spiffe_id, reason, failures, "signing a workload SVID failed again");
        }
    }

    /// Counts a failure for `entry`, sets when it is tried again and marks
    /// it failed in the cache. Returns the number of failures in a row.
    fn record_failure(&mut self, entry: &RegistrationEntry, now: SystemTime) -> u32 {
        self.cache.mark_signing_failed([entry.id.clone()]);
        let retry = self.retry;
        let failure = self
            .failures
            .entry(entry.id.clone())
            .or_insert_with(|| Failure {
                backoff: retry.backoff(),
                retry_at: now,
            });
        failure.retry_at = now + failure.backoff.next_delay();
        failure.backoff.failures()
    }
}

/// Checks one result of `BatchNewX509Svid` and pairs it with its key.
fn accept_result(
    entry: &RegistrationEntry,
    key: PrivateKey,
    result: NewX509SvidResult,
    bundle: Option<&TrustBundle>,
    now: SystemTime,
) -> Result<WorkloadSvid, String> {
    if let Some(status) = result.status.filter(|s| s.code != 0) {
        return Err(format!(
            "the server rejected the entry: {:?}: {}",
            tonic::Code::from(status.code),
            status.message
        ));
    }
    let svid = result.svid.ok_or("the result has no SVID")?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let svid = X509Svid::new(chain, key).map_err(|e| e.to_string())?;
    if svid.spiffe_id() != &entry.spiffe_id {
        return Err(format!(
            "the SVID is for {} but the entry is for {}",
            svid.spiffe_id(),
            entry.spiffe_id
        ));
    }
    if let Some(bundle) = bundle {
        validate_x509_svid(svid.cert_chain(), bundle, now).map_err(|e| e.to_string())?;
    }
    let (not_before, not_after) = certificate_validity(svid.leaf())?;
    // The CA backdates notBefore to absorb clock skew, so the lifetime is
    // measured from `now`, when the SVID is in hand, and an SVID is kept
    // at least MIN_RENEWAL_INTERVAL.
    let renew_at = renewal_time(not_before.max(now), not_after).max(now + MIN_RENEWAL_INTERVAL);
    Ok(WorkloadSvid {
        svid,
        params: SvidParams::of(entry),
        not_before,
        not_after,
        renew_at,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use tessera_proto::types;
    use tessera_spiffe::TrustDomain;

    use super::*;
    use crate::cache::EntryUpdate;
    use crate::testing::{self, TestCa};

    /// Signs with the test CA; rejects listed entries and records batch sizes.
    struct FakeSigner {
        ca: TestCa,
        cache: Arc<Cache>,
        batch_sizes: Mutex<Vec<usize>>,
        rejected: Mutex<HashSet<String>>,
        final_error: bool,
    }

    impl SvidSigner for FakeSigner {
        fn batch_new_x509_svid(
            &self,
            params: Vec<NewX509SvidParams>,
        ) -> BoxFuture<'_, Result<Vec<NewX509SvidResult>, Status>> {
            self.batch_sizes.lock().expect("lock").push(params.len());
            let result = if self.final_error {
                Err(Status::permission_denied("agent is banned"))
            } else {
                Ok(params.iter().map(|p| self.sign_one(p)).collect())
            };
            Box::pin(async move { result })
        }
    }

    impl FakeSigner {
        fn new(cache: Arc<Cache>) -> Self {
            Self {
                ca: TestCa::new(cache.trust_domain()),
                cache,
                batch_sizes: Mutex::new(Vec::new()),
                rejected: Mutex::new(HashSet::new()),
                final_error: false,
            }
        }

        fn sign_one(&self, params: &NewX509SvidParams) -> NewX509SvidResult {
            let entry = self.cache.read(|state| {
                state
                    .entries()
                    .values()
                    .find(|e| e.id.as_str() == params.entry_id)
                    .cloned()
            });
            let rejected = self
                .rejected
                .lock()
                .expect("lock")
                .contains(&params.entry_id);
            let Some(entry) = entry.filter(|_| !rejected) else {
                return NewX509SvidResult {
                    status: Some(types::Status {
                        code: tonic::Code::NotFound as i32,
                        message: "no such entry".into(),
                    }),
                    svid: None,
                };
            };
            let now = SystemTime::now();
            let chain = self.ca.sign_public_key(
                &entry.spiffe_id,
                &params.public_key,
                now - Duration::from_secs(1),
                now + Duration::from_secs(3600),
            );
            NewX509SvidResult {
                status: None,
                svid: Some(types::X509Svid {
                    spiffe_id: entry.spiffe_id.to_string(),
                    cert_chain: chain.iter().map(|c| c.to_vec()).collect(),
                    expires_at: 0,
                }),
            }
        }
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
        }
    }

    fn cache_with(entries: Vec<RegistrationEntry>) -> Arc<Cache> {
        let td = TrustDomain::new("example.org").expect("td");
        let cache = Arc::new(Cache::new(td, None));
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: entries,
            ..EntryUpdate::default()
        });
        cache
    }

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..400 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn due_paths(plan: &SigningPlan) -> Vec<String> {
        let mut paths: Vec<String> = plan
            .due
            .iter()
            .map(|e| e.spiffe_id.path().to_owned())
            .collect();
        paths.sort();
        paths
    }

    #[test]
    fn plan_signing_selects_due_entries() {
        let unsigned = testing::entry("/unsigned", &["unix:uid:1"]);
        let fresh = testing::entry("/fresh", &["unix:uid:2"]);
        let changed = testing::entry("/changed", &["unix:uid:3"]);
        let stale = testing::entry("/stale", &["unix:uid:4"]);
        let backing_off = testing::entry("/backing-off", &["unix:uid:5"]);
        let mut expired = testing::entry("/expired", &["unix:uid:6"]);
        expired.expires_at = Some(1);
        let cache = cache_with(vec![
            unsigned.clone(),
            fresh.clone(),
            changed.clone(),
            stale.clone(),
            backing_off.clone(),
            expired,
        ]);

        let ca = TestCa::new(cache.trust_domain());
        let fresh_svid = ca.workload_svid(&fresh);
        let fresh_renewal = fresh_svid.renew_at;
        let mut stale_svid = ca.workload_svid(&stale);
        stale_svid.renew_at = SystemTime::now() - Duration::from_secs(1);
        cache.store_svids(vec![
            (fresh.id.clone(), fresh_svid),
            (changed.id.clone(), ca.workload_svid(&changed)),
            (stale.id.clone(), stale_svid),
        ]);
        let mut renamed_dns = changed.clone();
        renamed_dns.dns_names = vec!["web.example.org".into()];
        cache.apply(EntryUpdate {
            revision: 2,
            upserted: vec![renamed_dns],
            ..EntryUpdate::default()
        });

        let now = SystemTime::now();
        let retry_until = now + Duration::from_secs(30);
        let retry_at = HashMap::from([(backing_off.id.clone(), retry_until)]);
        let plan = cache.read(|state| plan_signing(state, &retry_at, now));

        assert_eq!(due_paths(&plan), vec!["/changed", "/stale", "/unsigned"]);
        assert_eq!(plan.wake_at, Some(fresh_renewal.min(retry_until)));
    }

    #[test]
    fn svid_params_match_entry_fields() {
        let entry = testing::entry("/web", &["unix:uid:1"]);
        let params = SvidParams::of(&entry);
        assert!(params.matches(&entry));

        let mut ttl = entry.clone();
        ttl.x509_svid_ttl = Some(Duration::from_secs(60));
        assert!(!params.matches(&ttl));
        let mut dns = entry.clone();
        dns.dns_names = vec!["web.example.org".into()];
        assert!(!params.matches(&dns));
        let mut id = entry.clone();
        id.spiffe_id = testing::spiffe_id("/other");
        assert!(!params.matches(&id));
        let mut hint = entry;
        hint.hint = "internal".into();
        assert!(params.matches(&hint));
    }

    #[tokio::test]
    async fn manager_signs_in_batches() {
        let entries: Vec<_> = (0..1_001)
            .map(|i| testing::entry(&format!("/w{i}"), &["unix:uid:1"]))
            .collect();
        let cache = cache_with(entries);
        let signer = Arc::new(FakeSigner::new(cache.clone()));
        let manager = X509SvidManager::new(cache.clone(), signer.clone(), fast_retry());
        let task = tokio::spawn(manager.run());

        wait_for("every SVID", || {
            cache.read(|s| s.entries().keys().all(|id| s.svid(id).is_some()))
        })
        .await;
        task.abort();
        assert_eq!(*signer.batch_sizes.lock().expect("lock"), vec![500, 500, 1]);
    }

    #[tokio::test]
    async fn manager_resigns_changed_entry_and_retries_failures() {
        let web = testing::entry("/web", &["unix:uid:1"]);
        let db = testing::entry("/db", &["unix:uid:2"]);
        let cache = cache_with(vec![web.clone(), db.clone()]);
        let signer = Arc::new(FakeSigner::new(cache.clone()));
        signer
            .rejected
            .lock()
            .expect("lock")
            .insert(db.id.to_string());
        let manager = X509SvidManager::new(cache.clone(), signer.clone(), fast_retry());
        let task = tokio::spawn(manager.run());

        wait_for("the web SVID and the db failure", || {
            cache.read(|s| s.svid(&web.id).is_some() && s.signing_failed(&db.id))
        })
        .await;

        // The server accepts db again: the retry signs it.
        signer.rejected.lock().expect("lock").clear();
        wait_for("the db SVID", || cache.read(|s| s.svid(&db.id).is_some())).await;

        // New DNS names: the web SVID is signed again with them.
        let mut renamed = web.clone();
        renamed.dns_names = vec!["web.example.org".into()];
        cache.apply(EntryUpdate {
            revision: 2,
            upserted: vec![renamed],
            ..EntryUpdate::default()
        });
        wait_for("the re-signed web SVID", || {
            cache.read(|s| {
                s.svid(&web.id)
                    .is_some_and(|svid| svid.params.dns_names == ["web.example.org"])
            })
        })
        .await;
        task.abort();
    }

    #[tokio::test]
    async fn manager_stops_on_final_code() {
        let cache = cache_with(vec![testing::entry("/web", &["unix:uid:1"])]);
        let mut signer = FakeSigner::new(cache.clone());
        signer.final_error = true;
        let manager = X509SvidManager::new(cache, Arc::new(signer), fast_retry());

        let result = tokio::time::timeout(Duration::from_secs(5), manager.run())
            .await
            .expect("manager stops");
        assert!(
            matches!(
                result,
                Err(AgentError::Server {
                    code: tonic::Code::PermissionDenied,
                    ..
                })
            ),
            "{result:?}"
        );
    }
}
