//! The SPIFFE Workload API service: request checks, caller attestation and
//! the streams that send a new complete message whenever what the caller
//! is entitled to changes.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use tessera_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use tessera_registration::SelectorSet;
use tessera_spiffe::SpiffeId;
use tessera_spiffe::jwt::{JwtSvidError, validate_jwt_svid};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::bundle_refresh::BundleRefresher;
use crate::cache::{Cache, CacheState};
use crate::error::AgentError;
use crate::svid::duration_until;
use crate::svid::jwt::JwtSvidCache;
use crate::workload::attestor::WorkloadAttestor;
use crate::workload::peer::PeerInfo;
use crate::workload::response::{
    NO_IDENTITY, X509View, caller_bundle_source, caller_entries, jwt_bundles_response,
    x509_bundles_response, x509_svid_view,
};
use crate::workload::struct_value::json_object_to_struct;

/// The security header every Workload API request must carry, with the
/// value `true`, against server-side request forgery.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API handlers.
#[derive(Clone)]
pub struct WorkloadApi {
    cache: Arc<Cache>,
    attestor: Arc<dyn WorkloadAttestor>,
    jwt_svids: Arc<JwtSvidCache>,
    bundle_refresher: Arc<BundleRefresher>,
    svid_wait_timeout: Duration,
}

impl WorkloadApi {
    /// Creates the handlers. `bundle_refresher` requests a refresh of a
    /// federated bundle from the server when ValidateJWTSVID meets a key ID
    /// missing from it. `svid_wait_timeout` bounds how long a first
    /// response waits for the first sync and for SVIDs being signed.
    pub fn new(
        cache: Arc<Cache>,
        attestor: Arc<dyn WorkloadAttestor>,
        jwt_svids: Arc<JwtSvidCache>,
        bundle_refresher: Arc<BundleRefresher>,
        svid_wait_timeout: Duration,
    ) -> Self {
        Self {
            cache,
            attestor,
            jwt_svids,
            bundle_refresher,
            svid_wait_timeout,
        }
    }

    /// Attests the process behind the request's connection.
    async fn attest<T>(&self, request: &Request<T>) -> Result<SelectorSet, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::internal("the connection has no peer credentials"))?;
        let credentials = peer
            .credentials()
            .map_err(|e| {
                Status::permission_denied(format!("cannot identify the calling process: {e}"))
            })?
            .clone();

        let pid = credentials.pid();
        let attestor = self.attestor.clone();
        let result = tokio::task::spawn_blocking(move || attestor.attest(&credentials))
            .await
            .map_err(|_| Status::internal("workload attestation stopped unexpectedly"))?;
        match result {
            Ok(selectors) => {
                tracing::debug!(pid, selectors = selectors.len(), "workload attested");
                Ok(selectors)
            }
            Err(AgentError::WorkloadExited { pid }) => Err(Status::permission_denied(format!(
                "the calling process {pid} has exited"
            ))),
            Err(error) => {
                let message = crate::sync::error_chain(&error);
                tracing::warn!(pid, error = %message, "workload attestation failed");
                Err(Status::internal(format!(
                    "workload attestation failed: {message}"
                )))
            }
        }
    }

    /// Waits, at most the configured timeout, until `ready` holds for the
    /// cache. Returns whether it does.
    async fn wait_until(&self, ready: impl Fn(&CacheState) -> bool) -> bool {
        let deadline = Instant::now() + self.svid_wait_timeout;
        let mut generation = self.cache.subscribe();
        loop {
            generation.borrow_and_update();
            if self.cache.read(&ready) {
                return true;
            }
            match tokio::time::timeout_at(deadline, generation.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// Waits until the cache is synced and every entry matching the caller
    /// has a usable SVID or failed to get one.
    async fn wait_for_svids(&self, selectors: &SelectorSet) {
        self.wait_until(|state| {
            let now = SystemTime::now();
            state.is_synced()
                && state.matching_entries(selectors, now).iter().all(|entry| {
                    let usable = state.svid(&entry.id).is_some_and(|svid| {
                        svid.not_after > now && svid.params.spiffe_id == entry.spiffe_id
                    });
                    usable || state.signing_failed(&entry.id)
                })
        })
        .await;
    }

    /// Waits until the cache is synced.
    async fn wait_for_sync(&self) {
        self.wait_until(CacheState::is_synced).await;
    }

    /// Returns the status of a failed JWT-SVID validation. A key ID that
    /// the bundle of a federated trust domain lacks may belong to a key
    /// the peer added after the server's last fetch, so a refresh of that
    /// bundle is requested. The call fails all the same.
    fn validation_status(&self, error: &JwtSvidError) -> Status {
        if let JwtSvidError::UnknownKeyId {
            key_id,
            trust_domain,
        } = error
            && trust_domain != self.cache.trust_domain()
        {
            self.bundle_refresher.request(trust_domain, Instant::now());
            return Status::invalid_argument(format!(
                "invalid JWT-SVID: unknown key ID {key_id:?}, which the bundle of {trust_domain} \
                 does not contain. The agent requested a refresh of that bundle from the server, \
                 so retry in a few seconds if the key is new."
            ));
        }
        Status::invalid_argument(format!("invalid JWT-SVID: {error}"))
    }
}

fn check_security_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(value) if value.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "missing security header: the request must carry gRPC metadata \
             `workload.spiffe.io: true`, which the SPIFFE Workload API requires",
        )),
    }
}

/// Streams complete responses built by `build` from the cache: each time
/// the cache changes, a message is sent if it differs from the last one.
/// `build` returns `Ok(None)` to skip a state (nothing to send yet), and an
/// error to end the stream with that status.
fn watch_stream<T, F>(
    cache: Arc<Cache>,
    mut generation: watch::Receiver<u64>,
    first: T,
    first_expiry: Option<SystemTime>,
    build: F,
) -> ResponseStream<T>
where
    T: Clone + PartialEq + Send + Sync + 'static,
    F: Fn(&CacheState, SystemTime) -> Result<(Option<T>, Option<SystemTime>), Status>
        + Send
        + Sync
        + 'static,
{
    Box::pin(async_stream::try_stream! {
        yield first.clone();
        let mut last = first;
        let mut expiry = first_expiry;
        loop {
            // Wake on every cache change, and when something in the last
            // message expires, because that changes the response too.
            let expired = async {
                match expiry {
                    Some(time) => tokio::time::sleep(duration_until(time, SystemTime::now())).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = generation.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                () = expired => {}
            }

            let (next, next_expiry) = cache.read(|state| build(state, SystemTime::now()))?;
            expiry = next_expiry;
            if let Some(next) = next
                && next != last
            {
                yield next.clone();
                last = next;
            }
        }
    })
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;
    type FetchWITSVIDStream = ResponseStream<WitsvidResponse>;
    type FetchWITBundlesStream = ResponseStream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_security_header(&request)?;
        let selectors = self.attest(&request).await?;
        self.wait_for_svids(&selectors).await;

        let generation = self.cache.subscribe();
        let X509View {
            response,
            next_expiry,
        } = self
            .cache
            .read(|state| x509_svid_view(state, &selectors, SystemTime::now()))?;
        let first = response.ok_or_else(|| {
            Status::unavailable("the caller's SVIDs have not been signed yet; retry")
        })?;

        let stream = watch_stream(
            self.cache.clone(),
            generation,
            first,
            next_expiry,
            move |state, now| {
                let view = x509_svid_view(state, &selectors, now)?;
                Ok((view.response, view.next_expiry))
            },
        );
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_security_header(&request)?;
        let selectors = self.attest(&request).await?;
        self.wait_for_sync().await;

        let generation = self.cache.subscribe();
        let first = self
            .cache
            .read(|state| x509_bundles_response(state, &selectors, SystemTime::now()))?;
        let stream = watch_stream(
            self.cache.clone(),
            generation,
            first,
            None,
            move |state, now| Ok((Some(x509_bundles_response(state, &selectors, now)?), None)),
        );
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_security_header(&request)?;
        if request.get_ref().audience.is_empty()
            || request.get_ref().audience.iter().any(String::is_empty)
        {
            return Err(Status::invalid_argument(
                "audience is required: set at least one non-empty audience",
            ));
        }
        let requested_id =
            match request.get_ref().spiffe_id.as_str() {
                "" => None,
                id => Some(SpiffeId::parse(id).map_err(|e| {
                    Status::invalid_argument(format!("invalid spiffe_id {id:?}: {e}"))
                })?),
            };
        let selectors = self.attest(&request).await?;
        self.wait_for_sync().await;

        let now = SystemTime::now();
        let identities = self.cache.read(|state| {
            let entries = caller_entries(state, &selectors, now)?;
            let mut seen_ids = HashSet::new();
            let mut seen_hints = HashSet::new();
            let identities: Vec<_> = entries
                .into_iter()
                .filter(|e| requested_id.as_ref().is_none_or(|id| *id == e.spiffe_id))
                .filter(|e| seen_ids.insert(e.spiffe_id.clone()))
                .filter(|e| e.hint.is_empty() || seen_hints.insert(e.hint.clone()))
                .map(|e| (e.id.clone(), e.spiffe_id.clone(), e.hint.clone()))
                .collect();
            Ok::<_, Status>(identities)
        })?;
        if identities.is_empty() {
            let message = match requested_id {
                Some(id) => format!("{NO_IDENTITY} for {id}"),
                None => NO_IDENTITY.to_owned(),
            };
            return Err(Status::permission_denied(message));
        }

        let audience = &request.get_ref().audience;
        let mut svids = Vec::with_capacity(identities.len());
        for (entry_id, spiffe_id, hint) in identities {
            let svid = self
                .jwt_svids
                .fetch(&entry_id, &spiffe_id, audience, now)
                .await
                .map_err(|status| {
                    tracing::warn!(%entry_id, %spiffe_id, code = ?status.code(), message = status.message(), "minting a JWT-SVID failed");
                    Status::unavailable(format!(
                        "the server could not mint a JWT-SVID for {spiffe_id}: {}",
                        status.message()
                    ))
                })?;
            svids.push(Jwtsvid {
                spiffe_id: spiffe_id.to_string(),
                svid: svid.token().to_owned(),
                hint,
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_security_header(&request)?;
        let selectors = self.attest(&request).await?;
        self.wait_for_sync().await;

        let generation = self.cache.subscribe();
        let first = self
            .cache
            .read(|state| jwt_bundles_response(state, &selectors, SystemTime::now()))?;
        let stream = watch_stream(
            self.cache.clone(),
            generation,
            first,
            None,
            move |state, now| Ok((Some(jwt_bundles_response(state, &selectors, now)?), None)),
        );
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_security_header(&request)?;
        let selectors = self.attest(&request).await?;
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience is required"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid is required"));
        }
        if !self.cache.read(|state| state.bundle().is_some()) {
            self.wait_for_sync().await;
        }

        // The bundle source is the agent's own trust domain and the trust
        // domains that the caller's entries federate with.
        let now = SystemTime::now();
        let bundles = self
            .cache
            .read(|state| caller_bundle_source(state, &selectors, now))?;
        let verified = validate_jwt_svid(&request.svid, &request.audience, &bundles, now)
            .map_err(|e| self.validation_status(&e))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id().to_string(),
            claims: Some(json_object_to_struct(verified.claims())),
        }))
    }

    async fn fetch_witsvid(
        &self,
        request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        check_security_header(&request)?;
        Err(Status::unimplemented(
            "the WIT-SVID profile is not supported",
        ))
    }

    async fn fetch_wit_bundles(
        &self,
        request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        check_security_header(&request)?;
        Err(Status::unimplemented(
            "the WIT-SVID profile is not supported",
        ))
    }
}
