//! Tests of the Workload API served on a temporary Unix socket, with an
//! in-memory cache filled by the test instead of a server.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tessera_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitBundlesRequest, WitsvidRequest,
    X509BundlesRequest, X509svidRequest, X509svidResponse,
};
use tessera_registration::{EntryId, RegistrationEntry, Selector, SelectorSet};
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{PrivateKey, SpiffeId, TrustDomain};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use super::attestor::WorkloadAttestor;
use super::attestor::unix::UnixAttestor;
use super::peer::PeerCredentials;
use super::service::{SECURITY_HEADER, WorkloadApi};
use super::{bind_socket, serve};
use crate::bundle_refresh::{BundleRefreshClient, BundleRefresher, RefreshOutcome};
use crate::cache::{Cache, EntryUpdate};
use crate::error::AgentError;
use crate::svid::jwt::{JwtSvid, JwtSvidCache, JwtSvidMinter};
use crate::testing::{self, TestCa};

/// Gives every caller the same selectors.
struct FixedAttestor(SelectorSet);

impl WorkloadAttestor for FixedAttestor {
    fn attest(&self, _peer: &PeerCredentials) -> Result<SelectorSet, AgentError> {
        Ok(self.0.clone())
    }
}

/// Mints JWT-SVIDs with the test CA for the entry's SPIFFE ID in the cache.
struct CaMinter {
    ca: Arc<TestCa>,
    cache: Arc<Cache>,
}

impl JwtSvidMinter for CaMinter {
    fn new_jwt_svid<'a>(
        &'a self,
        entry_id: &'a EntryId,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<JwtSvid, Status>> {
        let id = self
            .cache
            .read(|state| state.entries().get(entry_id).map(|e| e.spiffe_id.clone()));
        Box::pin(async move {
            let id = id.ok_or_else(|| Status::permission_denied("unknown entry"))?;
            let now = SystemTime::now();
            let token = self.ca.jwt_svid(&id, audience);
            Ok(JwtSvid::new(token, now, now + Duration::from_secs(300)))
        })
    }
}

/// Sends each trust domain whose bundle refresh is requested to a channel.
struct RecordingRefreshClient(mpsc::UnboundedSender<TrustDomain>);

impl BundleRefreshClient for RecordingRefreshClient {
    fn request_bundle_refresh<'a>(
        &'a self,
        trust_domain: &'a TrustDomain,
    ) -> BoxFuture<'a, Result<RefreshOutcome, Status>> {
        let _ = self.0.send(trust_domain.clone());
        Box::pin(async { Ok(RefreshOutcome::Started) })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    cache: Arc<Cache>,
    ca: Arc<TestCa>,
    client: SpiffeWorkloadApiClient<Channel>,
    /// Trust domains whose bundle refresh the Workload API requested.
    refresh_requests: mpsc::UnboundedReceiver<TrustDomain>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), AgentError>>,
}

impl Harness {
    /// Serves the Workload API with `attestor` and a cache holding `entries`
    /// with signed SVIDs.
    async fn start(attestor: Arc<dyn WorkloadAttestor>, entries: Vec<RegistrationEntry>) -> Self {
        let td = TrustDomain::new("example.org").expect("td");
        let ca = Arc::new(TestCa::new(&td));
        let cache = Arc::new(Cache::new(td, None));
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: entries.clone(),
            bundle: Some(ca.bundle()),
            ..EntryUpdate::default()
        });
        cache.store_svids(
            entries
                .iter()
                .map(|e| (e.id.clone(), ca.workload_svid(e)))
                .collect(),
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("public").join("api.sock");
        let listener = bind_socket(&socket).expect("bind");
        let minter = Arc::new(CaMinter {
            ca: ca.clone(),
            cache: cache.clone(),
        });
        let (refresh_sender, refresh_requests) = mpsc::unbounded_channel();
        let refresher = BundleRefresher::new(Arc::new(RecordingRefreshClient(refresh_sender)));
        let api = WorkloadApi::new(
            cache.clone(),
            attestor,
            Arc::new(JwtSvidCache::new(minter)),
            Arc::new(refresher),
            Duration::from_millis(500),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, api, async {
            let _ = stopped.await;
        }));

        let channel =
            Endpoint::from_static("http://workload-api")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }))
                .await
                .expect("connect");
        Self {
            _dir: dir,
            cache,
            ca,
            client: SpiffeWorkloadApiClient::new(channel),
            refresh_requests,
            stop: Some(stop),
            server,
        }
    }

    async fn with_selectors(selectors: &[&str], entries: Vec<RegistrationEntry>) -> Self {
        Self::start(Arc::new(FixedAttestor(selector_set(selectors))), entries).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.client);
        let stopped = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        assert!(stopped.is_ok(), "server did not stop");
    }
}

fn selector_set(values: &[&str]) -> SelectorSet {
    values
        .iter()
        .map(|s| Selector::parse(s).expect("selector"))
        .collect()
}

fn with_header<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().expect("ASCII metadata"));
    request
}

async fn first_x509(
    client: &mut SpiffeWorkloadApiClient<Channel>,
) -> Result<X509svidResponse, Status> {
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("stream ended without a message"))
}

#[tokio::test]
async fn missing_header_is_invalid_argument() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], vec![entry]).await;

    let x509 = harness
        .client
        .fetch_x509svid(Request::new(X509svidRequest {}))
        .await;
    assert_eq!(x509.err().map(|s| s.code()), Some(Code::InvalidArgument));

    let mut wrong = Request::new(X509BundlesRequest {});
    wrong
        .metadata_mut()
        .insert(SECURITY_HEADER, "True".parse().expect("ASCII metadata"));
    let bundles = harness.client.fetch_x509_bundles(wrong).await;
    assert_eq!(bundles.err().map(|s| s.code()), Some(Code::InvalidArgument));

    let jwt = harness
        .client
        .fetch_jwtsvid(Request::new(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await;
    let status = jwt.expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains(SECURITY_HEADER),
        "{}",
        status.message()
    );

    let validate = harness
        .client
        .validate_jwtsvid(Request::new(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x.y.z".into(),
        }))
        .await;
    assert_eq!(
        validate.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );

    let wit = harness
        .client
        .fetch_witsvid(Request::new(WitsvidRequest::default()))
        .await;
    assert_eq!(wit.err().map(|s| s.code()), Some(Code::InvalidArgument));
    harness.stop().await;
}

#[tokio::test]
async fn unmatched_caller_is_permission_denied() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:2"], vec![entry]).await;

    let x509 = first_x509(&mut harness.client).await;
    let status = x509.expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("no identity issued"),
        "{}",
        status.message()
    );

    let jwt = harness
        .client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await;
    assert_eq!(jwt.err().map(|s| s.code()), Some(Code::PermissionDenied));
    harness.stop().await;
}

#[tokio::test]
async fn matching_caller_receives_svid() {
    let mut entry = testing::entry("/web", &["unix:uid:1"]);
    entry.hint = "internal".into();
    let mut harness = Harness::with_selectors(&["unix:uid:1", "unix:gid:1"], vec![entry]).await;

    let response = first_x509(&mut harness.client).await.expect("SVID");
    assert_eq!(response.svids.len(), 1);
    let svid = &response.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://example.org/web");
    assert_eq!(svid.hint, "internal");
    assert_eq!(svid.bundle, harness.ca.certificate().to_vec());

    let key = PrivateKey::from_pkcs8_der(&svid.x509_svid_key).expect("PKCS#8 key");
    let leaf = CertificateDer::from(svid.x509_svid.clone());
    let verified = validate_x509_svid(
        std::slice::from_ref(&leaf),
        &harness.ca.bundle(),
        SystemTime::now(),
    )
    .expect("chain validates");
    assert_eq!(verified.spiffe_id().to_string(), "spiffe://example.org/web");
    assert!(tessera_spiffe::X509Svid::new(vec![leaf], key).is_ok());
    harness.stop().await;
}

#[tokio::test]
async fn stream_follows_cache_changes() {
    let first = testing::entry("/first", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], vec![first.clone()]).await;
    let mut stream = harness
        .client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("stream")
        .into_inner();
    let message = stream.message().await.expect("message").expect("first");
    assert_eq!(message.svids.len(), 1);

    // A second matching entry: a new message with both SVIDs, once signed.
    let mut second = testing::entry("/second", &["unix:uid:1"]);
    second.created_at = first.created_at + 1;
    harness.cache.apply(EntryUpdate {
        revision: 2,
        upserted: vec![second.clone()],
        ..EntryUpdate::default()
    });
    harness
        .cache
        .store_svids(vec![(second.id.clone(), harness.ca.workload_svid(&second))]);
    let message = stream.message().await.expect("message").expect("update");
    let ids: Vec<&str> = message.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["spiffe://example.org/first", "spiffe://example.org/second"]
    );

    // A rotated SVID: a new message with the new certificate.
    let rotated = harness.ca.workload_svid(&first);
    let rotated_leaf = rotated.svid.leaf().to_vec();
    harness.cache.store_svids(vec![(first.id.clone(), rotated)]);
    let message = stream.message().await.expect("message").expect("rotation");
    assert_eq!(message.svids[0].x509_svid, rotated_leaf);

    // Every entry removed: the stream ends with PermissionDenied.
    harness.cache.apply(EntryUpdate {
        revision: 3,
        removed: vec![first.id.clone(), second.id.clone()],
        ..EntryUpdate::default()
    });
    let ended = stream.message().await;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::PermissionDenied));
    harness.stop().await;
}

#[tokio::test]
async fn first_response_waits_for_signing() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], Vec::new()).await;
    harness.cache.apply(EntryUpdate {
        revision: 2,
        upserted: vec![entry.clone()],
        ..EntryUpdate::default()
    });

    let cache = harness.cache.clone();
    let svid = harness.ca.workload_svid(&entry);
    let signer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.store_svids(vec![(entry.id.clone(), svid)]);
    });
    let response = first_x509(&mut harness.client)
        .await
        .expect("SVID after signing");
    assert_eq!(response.svids.len(), 1);
    signer.await.expect("signer task");
    harness.stop().await;
}

#[tokio::test]
async fn unsigned_svids_time_out_unavailable() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], Vec::new()).await;
    harness.cache.apply(EntryUpdate {
        revision: 2,
        upserted: vec![entry],
        ..EntryUpdate::default()
    });
    let result = first_x509(&mut harness.client).await;
    assert_eq!(result.err().map(|s| s.code()), Some(Code::Unavailable));
    harness.stop().await;
}

#[tokio::test]
async fn bundles_are_streamed() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], vec![entry]).await;

    let mut x509 = harness
        .client
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .expect("stream")
        .into_inner();
    let message = x509.message().await.expect("message").expect("first");
    assert_eq!(
        message.bundles.get("spiffe://example.org"),
        Some(&harness.ca.certificate().to_vec())
    );

    let mut jwt = harness
        .client
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .expect("stream")
        .into_inner();
    let message = jwt.message().await.expect("message").expect("first");
    let jwks = message
        .bundles
        .get("spiffe://example.org")
        .expect("own JWKS");
    let parsed: serde_json::Value = serde_json::from_slice(jwks).expect("JSON");
    assert_eq!(parsed["keys"].as_array().map(Vec::len), Some(1));

    // A new CA in the bundle reaches the open stream.
    let td = TrustDomain::new("example.org").expect("td");
    let mut bundle = harness.ca.bundle();
    bundle
        .add_x509_authority(TestCa::new(&td).certificate().clone())
        .expect("second CA");
    harness.cache.apply(EntryUpdate {
        revision: 2,
        bundle: Some(bundle.clone()),
        ..EntryUpdate::default()
    });
    let message = x509.message().await.expect("message").expect("update");
    assert_eq!(
        message.bundles.get("spiffe://example.org"),
        Some(&bundle.x509_authorities_der())
    );
    drop(x509);
    drop(jwt);
    harness.stop().await;
}

#[tokio::test]
async fn jwt_svid_fetch_and_validate() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], vec![entry]).await;

    let empty = harness
        .client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: Vec::new(),
            spiffe_id: String::new(),
        }))
        .await;
    assert_eq!(empty.err().map(|s| s.code()), Some(Code::InvalidArgument));

    let other_id = harness
        .client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: "spiffe://example.org/not-mine".into(),
        }))
        .await;
    assert_eq!(
        other_id.err().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );

    let response = harness
        .client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: "spiffe://example.org/web".into(),
        }))
        .await
        .expect("JWT-SVID")
        .into_inner();
    assert_eq!(response.svids.len(), 1);
    let token = response.svids[0].svid.clone();

    let validated = harness
        .client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: token.clone(),
        }))
        .await
        .expect("valid")
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://example.org/web");
    let claims = validated.claims.expect("claims");
    assert!(claims.fields.contains_key("sub"));
    assert!(claims.fields.contains_key("aud"));
    assert!(claims.fields.contains_key("exp"));

    let wrong_audience = harness
        .client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "other".into(),
            svid: token,
        }))
        .await;
    assert_eq!(
        wrong_audience.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );

    let missing_svid = harness
        .client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: String::new(),
        }))
        .await;
    assert_eq!(
        missing_svid.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );
    harness.stop().await;
}

/// Mints a JWT-SVID for `id` with a new key under a key ID that no bundle
/// in these tests contains.
fn jwt_svid_with_new_key(id: &str) -> String {
    let id = SpiffeId::parse(id).expect("SPIFFE ID");
    TestCa::new(id.trust_domain()).jwt_svid_with_key_id(&id, &["db".to_owned()], "rotated-key")
}

async fn validate(harness: &mut Harness, token: &str) -> Result<String, Status> {
    let response = harness
        .client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: token.to_owned(),
        }))
        .await?;
    Ok(response.into_inner().spiffe_id)
}

#[tokio::test]
async fn unknown_federated_key_id_requests_refresh() {
    let mut entry = testing::entry("/web", &["unix:uid:1"]);
    let peer = TrustDomain::new("peer.org").expect("td");
    entry.federates_with = vec![peer.clone()];
    let mut harness = Harness::with_selectors(&["unix:uid:1"], vec![entry]).await;
    harness.cache.apply(EntryUpdate {
        revision: 2,
        federated_upserted: vec![TestCa::new(&peer).bundle()],
        ..EntryUpdate::default()
    });
    let token = jwt_svid_with_new_key("spiffe://peer.org/api");

    let first = validate(&mut harness, &token)
        .await
        .expect_err("unknown key");
    let second = validate(&mut harness, &token)
        .await
        .expect_err("unknown key");

    assert_eq!(first.code(), Code::InvalidArgument);
    for message in [first.message(), second.message()] {
        assert!(
            message.contains("unknown key ID \"rotated-key\""),
            "{message}"
        );
        assert!(message.contains("the bundle of peer.org"), "{message}");
        assert!(message.contains("requested a refresh"), "{message}");
    }
    let requested = tokio::time::timeout(Duration::from_secs(5), harness.refresh_requests.recv())
        .await
        .expect("a refresh request in time");
    assert_eq!(requested, Some(peer));
    assert!(
        harness.refresh_requests.try_recv().is_err(),
        "the second call within 30 s sent another request"
    );
    harness.stop().await;
}

#[tokio::test]
async fn unknown_own_key_id_requests_no_refresh() {
    let entry = testing::entry("/web", &["unix:uid:1"]);
    let mut harness = Harness::with_selectors(&["unix:uid:1"], vec![entry]).await;
    let token = jwt_svid_with_new_key("spiffe://example.org/api");

    let status = validate(&mut harness, &token)
        .await
        .expect_err("unknown key");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        !status.message().contains("refresh"),
        "{}",
        status.message()
    );
    assert!(harness.refresh_requests.try_recv().is_err());
    harness.stop().await;
}

#[tokio::test]
async fn wit_profile_is_unimplemented() {
    let mut harness = Harness::with_selectors(&["unix:uid:1"], Vec::new()).await;
    let svid = harness
        .client
        .fetch_witsvid(with_header(WitsvidRequest::default()))
        .await;
    assert_eq!(svid.err().map(|s| s.code()), Some(Code::Unimplemented));
    let bundles = harness
        .client
        .fetch_wit_bundles(with_header(WitBundlesRequest {}))
        .await;
    assert_eq!(bundles.err().map(|s| s.code()), Some(Code::Unimplemented));
    harness.stop().await;
}

#[tokio::test]
async fn unix_attestor_identifies_test_process() {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("effective UID")
        .to_owned();
    let uid_selector = format!("unix:uid:{uid}");
    let exe = std::env::current_exe().expect("current_exe");
    let path_selector = format!("unix:path:{}", exe.display());
    let mine = testing::entry("/test-process", &[&uid_selector, &path_selector]);
    let not_mine = testing::entry("/other-binary", &[&uid_selector, "unix:path:/nonexistent"]);

    let mut harness = Harness::start(Arc::new(UnixAttestor::new()), vec![mine, not_mine]).await;
    let response = first_x509(&mut harness.client).await.expect("SVID");
    let ids: Vec<&str> = response
        .svids
        .iter()
        .map(|s| s.spiffe_id.as_str())
        .collect();
    assert_eq!(ids, vec!["spiffe://example.org/test-process"]);
    harness.stop().await;
}

#[test]
fn bind_socket_sets_modes() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("public").join("api.sock");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();

    let listener = bind_socket(&socket).expect("bind");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&socket), 0o666);
    assert_eq!(mode(&dir.path().join("public")), 0o755);

    // A live socket is not replaced; a stale one is.
    assert!(bind_socket(&socket).is_err());
    drop(listener);
    assert!(bind_socket(&socket).is_ok());

    let file = dir.path().join("regular-file");
    std::fs::write(&file, b"keep").expect("write");
    assert!(bind_socket(&file).is_err());
    assert_eq!(std::fs::read(&file).expect("read"), b"keep");
}
