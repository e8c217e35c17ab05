//! Workload JWT-SVIDs: minted by the server with `NewJwtSvid` on a
//! workload's request, and cached per entry and audience set until half of
//! their lifetime has passed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tessera_proto::agent::{NewJwtSvidRequest, NewJwtSvidResponse};
use tessera_registration::EntryId;
use tessera_spiffe::SpiffeId;
use tonic::Status;
use zeroize::Zeroizing;

use crate::node::client_tls::ServerChannel;
use crate::svid::{renewal_time, unix_to_system_time};

/// Most cached JWT-SVIDs; audiences come from callers, so the cache is
/// bounded. Stale tokens are pruned first, then the cache is emptied.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Deadline of one `NewJwtSvid` call; a workload waits for it.
const MINT_TIMEOUT: Duration = Duration::from_secs(10);

/// A JWT-SVID from the server. `Debug` does not print the token.
#[derive(Clone)]
pub struct JwtSvid {
    token: Arc<Zeroizing<String>>,
    /// The `iat` claim.
    pub issued_at: SystemTime,
    /// The `exp` claim.
    pub expires_at: SystemTime,
}

impl JwtSvid {
    /// Wraps a token with its issue and expiry times.
    pub fn new(token: String, issued_at: SystemTime, expires_at: SystemTime) -> Self {
        Self {
            token: Arc::new(Zeroizing::new(token)),
            issued_at,
            expires_at,
        }
    }

    /// Returns the token in JWS compact serialization.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn is_fresh(&self, now: SystemTime) -> bool {
        now < renewal_time(self.issued_at, self.expires_at)
    }
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Mints JWT-SVIDs: the server's `NewJwtSvid`, or a fake in tests.
pub trait JwtSvidMinter: Send + Sync + 'static {
    /// Mints a JWT-SVID for the entry's SPIFFE ID and `audience`.
    fn new_jwt_svid<'a>(
        &'a self,
        entry_id: &'a EntryId,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<JwtSvid, Status>>;
}

async fn mint_once(
    server: &ServerChannel,
    request: NewJwtSvidRequest,
) -> Result<NewJwtSvidResponse, Status> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(MINT_TIMEOUT);
    Ok(server.client().new_jwt_svid(request).await?.into_inner())
}

impl JwtSvidMinter for ServerChannel {
    fn new_jwt_svid<'a>(
        &'a self,
        entry_id: &'a EntryId,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<JwtSvid, Status>> {
        Box::pin(async move {
            let request = NewJwtSvidRequest {
                entry_id: entry_id.to_string(),
                audience: audience.to_vec(),
            };
            // A workload waits for this call, so a failure is tried once
            // more at once on the next server instead of with backoff.
            let response = match mint_once(self, request.clone()).await {
                Ok(response) => response,
                Err(status) if crate::retry::is_final(status.code()) => return Err(status),
                Err(status) => {
                    self.fail_over(&status);
                    mint_once(self, request).await?
                }
            };
            if response.token.is_empty() || response.expires_at <= response.issued_at {
                return Err(Status::internal(
                    "the server returned a JWT-SVID without a token or with exp not after iat",
                ));
            }
            Ok(JwtSvid::new(
                response.token,
                unix_to_system_time(response.issued_at),
                unix_to_system_time(response.expires_at),
            ))
        })
    }
}

/// Cache key: the entry, the SPIFFE ID it had (a renamed entry needs new
/// tokens) and the sorted, deduplicated audience.
type CacheKey = (EntryId, SpiffeId, Vec<String>);

/// JWT-SVIDs cached per entry and audience set.
pub struct JwtSvidCache {
    minter: Arc<dyn JwtSvidMinter>,
    tokens: Mutex<HashMap<CacheKey, JwtSvid>>,
}

impl JwtSvidCache {
    /// Creates an empty cache that mints through `minter`.
    pub fn new(minter: Arc<dyn JwtSvidMinter>) -> Self {
        Self {
            minter,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Returns a JWT-SVID for the entry and audience: a cached one before
    /// half of its lifetime, else a new one from the minter.
    ///
    /// # Errors
    ///
    /// Returns the minter's status when a new token cannot be minted.
    pub async fn fetch(
        &self,
        entry_id: &EntryId,
        spiffe_id: &SpiffeId,
        audience: &[String],
        now: SystemTime,
    ) -> Result<JwtSvid, Status> {
        let audience: Vec<String> = audience
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let key = (entry_id.clone(), spiffe_id.clone(), audience);
        if let Some(svid) = self.lock().get(&key).filter(|svid| svid.is_fresh(now)) {
            return Ok(svid.clone());
        }

        let svid = self.minter.new_jwt_svid(entry_id, &key.2).await?;
        let mut tokens = self.lock();
        if tokens.len() >= MAX_CACHED_TOKENS {
            tokens.retain(|_, svid| svid.is_fresh(now));
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(key, svid.clone());
        Ok(svid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, JwtSvid>> {
        // Entries are whole tokens, so a poisoned lock holds no partial state.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::testing;

    /// Mints fake tokens valid for 100 seconds and counts the calls.
    struct CountingMinter {
        calls: AtomicU32,
        issued_at: SystemTime,
    }

    impl JwtSvidMinter for CountingMinter {
        fn new_jwt_svid<'a>(
            &'a self,
            entry_id: &'a EntryId,
            audience: &'a [String],
        ) -> BoxFuture<'a, Result<JwtSvid, Status>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let token = format!("token-{n}-{entry_id}-{}", audience.join(","));
            let svid = JwtSvid::new(
                token,
                self.issued_at,
                self.issued_at + Duration::from_secs(100),
            );
            Box::pin(async move { Ok(svid) })
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn cache() -> (JwtSvidCache, Arc<CountingMinter>) {
        let minter = Arc::new(CountingMinter {
            calls: AtomicU32::new(0),
            issued_at: at(1_000),
        });
        (JwtSvidCache::new(minter.clone()), minter)
    }

    fn audience(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn reuses_token_before_half_life() {
        let (cache, minter) = cache();
        let entry = testing::entry("/a", &["unix:uid:1"]);

        let first = cache
            .fetch(
                &entry.id,
                &entry.spiffe_id,
                &audience(&["b", "a"]),
                at(1_010),
            )
            .await
            .expect("mint");
        let second = cache
            .fetch(
                &entry.id,
                &entry.spiffe_id,
                &audience(&["a", "b", "a"]),
                at(1_049),
            )
            .await
            .expect("cached");

        assert_eq!(first.token(), second.token());
        assert_eq!(minter.calls.load(Ordering::SeqCst), 1);
        assert!(
            first.token().ends_with("-a,b"),
            "audience sent sorted: {}",
            first.token()
        );
    }

    #[tokio::test]
    async fn mints_again_after_half_life() {
        let (cache, minter) = cache();
        let entry = testing::entry("/a", &["unix:uid:1"]);
        let aud = audience(&["a"]);

        cache
            .fetch(&entry.id, &entry.spiffe_id, &aud, at(1_010))
            .await
            .expect("mint");
        cache
            .fetch(&entry.id, &entry.spiffe_id, &aud, at(1_050))
            .await
            .expect("mint again");

        assert_eq!(minter.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn separates_audiences_and_ids() {
        let (cache, minter) = cache();
        let entry = testing::entry("/a", &["unix:uid:1"]);
        let renamed = testing::spiffe_id("/renamed");

        cache
            .fetch(&entry.id, &entry.spiffe_id, &audience(&["a"]), at(1_010))
            .await
            .expect("mint");
        cache
            .fetch(&entry.id, &entry.spiffe_id, &audience(&["b"]), at(1_010))
            .await
            .expect("mint");
        cache
            .fetch(&entry.id, &renamed, &audience(&["a"]), at(1_010))
            .await
            .expect("mint");

        assert_eq!(minter.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn debug_redacts_token() {
        let svid = JwtSvid::new("secret.jwt.value".into(), at(0), at(10));
        assert!(!format!("{svid:?}").contains("secret.jwt.value"));
    }
}
