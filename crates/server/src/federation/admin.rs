//! Admin API handlers of federation: relationship create, update, delete,
//! list, show and refresh, and storing a foreign bundle by hand.

use std::sync::Arc;
use std::time::SystemTime;

use tessera_proto::admin::{
    CreateFederationRequest, FederationRelationship, FederationStatus, SetFederatedBundleRequest,
    UpdateFederationRequest,
};
use tessera_proto::types;
use tessera_spiffe::{TrustBundle, TrustDomain};
use tonic::{Code, Status};

use super::refresh::store_bundle;
use super::{PeerProfile, PeerStatus, Relationship, parse_bundle_file};
use crate::bundle::{bundle_to_proto, unix_seconds};
use crate::state::ServerState;
use crate::status::{rejected, store_status};

fn parse_trust_domain(name: &str) -> Result<TrustDomain, Status> {
    if name.is_empty() {
        return Err(rejected(Code::InvalidArgument, "trust_domain is required"));
    }
    TrustDomain::new(name).map_err(|e| {
        rejected(
            Code::InvalidArgument,
            format!("invalid trust domain {name:?}: {e}"),
        )
    })
}

fn foreign_trust_domain(state: &ServerState, name: &str) -> Result<TrustDomain, Status> {
    let td = parse_trust_domain(name)?;
    if &td == state.trust_domain() {
        return Err(rejected(
            Code::InvalidArgument,
            format!("{td} is this server's own trust domain; name a foreign trust domain"),
        ));
    }
    Ok(td)
}

fn relationship_from_request(
    state: &ServerState,
    request: Option<FederationRelationship>,
) -> Result<Relationship, Status> {
    let request =
        request.ok_or_else(|| rejected(Code::InvalidArgument, "relationship is required"))?;
    let td = foreign_trust_domain(state, &request.trust_domain)?;
    let profile = if request.profile.is_empty() {
        "https_spiffe"
    } else {
        request.profile.as_str()
    };
    Relationship::from_parts(
        td,
        &request.bundle_endpoint_url,
        profile,
        &request.endpoint_spiffe_id,
    )
    .map_err(|e| rejected(Code::InvalidArgument, e))
}

fn parse_bootstrap(td: &TrustDomain, bytes: &[u8]) -> Result<Option<TrustBundle>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    parse_bundle_file(td, bytes)
        .map(Some)
        .map_err(|e| rejected(Code::InvalidArgument, format!("trust_bundle of {td}: {e}")))
}

/// Creates a relationship and starts its refresh task.
pub(crate) async fn create(
    state: &Arc<ServerState>,
    request: CreateFederationRequest,
) -> Result<FederationRelationship, Status> {
    let relationship = relationship_from_request(state, request.relationship)?;
    let td = relationship.trust_domain.clone();
    let bootstrap = parse_bootstrap(&td, &request.trust_bundle)?;
    let _guard = state.write_lock.lock().await;
    let existing = state
        .store
        .get_federation(&td)
        .await
        .map_err(|e| store_status("read the federation relationship", e))?;
    if existing.is_some() {
        return Err(rejected(
            Code::AlreadyExists,
            format!("a federation relationship with {td} exists; use `tessera federation update`"),
        ));
    }
    save(state, relationship, bootstrap).await?;
    Ok(describe(state, &td))
}

/// Replaces a relationship and restarts its refresh task.
pub(crate) async fn update(
    state: &Arc<ServerState>,
    request: UpdateFederationRequest,
) -> Result<FederationRelationship, Status> {
    let relationship = relationship_from_request(state, request.relationship)?;
    let td = relationship.trust_domain.clone();
    let bootstrap = parse_bootstrap(&td, &request.trust_bundle)?;
    let _guard = state.write_lock.lock().await;
    let existing = state
        .store
        .get_federation(&td)
        .await
        .map_err(|e| store_status("read the federation relationship", e))?;
    if existing.is_none() {
        return Err(not_found(&td));
    }
    save(state, relationship, bootstrap).await?;
    Ok(describe(state, &td))
}

async fn save(
    state: &Arc<ServerState>,
    relationship: Relationship,
    bootstrap: Option<TrustBundle>,
) -> Result<(), Status> {
    let td = relationship.trust_domain.clone();
    if let Some(bundle) = bootstrap {
        let _serialized = state.federation.lock_fetches(&td).await;
        store_bundle(state, bundle)
            .await
            .map_err(|e| rejected(Code::Internal, e))?;
    }
    state
        .store
        .put_federation(&relationship.to_record())
        .await
        .map_err(|e| store_status("store the federation relationship", e))?;
    tracing::info!(trust_domain = %td, url = %relationship.url, "stored federation relationship");
    state.federation.upsert(state, relationship);
    Ok(())
}

fn not_found(td: &TrustDomain) -> Status {
    rejected(
        Code::NotFound,
        format!("no federation relationship with {td}; list them with `tessera federation list`"),
    )
}

/// Deletes a relationship and its bundle; agents drop the bundle.
pub(crate) async fn delete(state: &Arc<ServerState>, name: &str) -> Result<(), Status> {
    let td = foreign_trust_domain(state, name)?;
    let _guard = state.write_lock.lock().await;
    let deleted = state
        .store
        .delete_federation(&td)
        .await
        .map_err(|e| store_status("delete the federation relationship", e))?;
    if !deleted {
        return Err(not_found(&td));
    }
    state.federation.remove(&td);

    let _serialized = state.federation.lock_fetches(&td).await;
    match state.store.delete_bundle(&td).await {
        Ok(revision) => state.advance_revision(revision),
        Err(tessera_store::StoreError::NotFound { .. }) => {}
        Err(e) => return Err(store_status("delete the federated bundle", e)),
    }
    state.federation.set_bundle(state, &td, None);
    tracing::info!(trust_domain = %td, "deleted federation relationship");
    Ok(())
}

/// Returns one relationship.
pub(crate) fn get(state: &ServerState, name: &str) -> Result<FederationRelationship, Status> {
    let td = parse_trust_domain(name)?;
    if state.federation.peer(&td).is_none() {
        return Err(not_found(&td));
    }
    Ok(describe(state, &td))
}

/// Returns every relationship.
pub(crate) fn list(state: &ServerState) -> Vec<FederationRelationship> {
    state
        .federation
        .peers()
        .into_iter()
        .map(|(relationship, status)| to_proto(state, &relationship, &status))
        .collect()
}

/// Fetches the peer's bundle now. The outcome is in the returned status;
/// a failed fetch is not an RPC error.
pub(crate) async fn refresh(
    state: &Arc<ServerState>,
    name: &str,
) -> Result<FederationRelationship, Status> {
    let td = parse_trust_domain(name)?;
    // The refresh task fetches, logs and schedules the next fetch; the
    // outcome reaches the caller through the status in the response.
    if !state.federation.refresh_now(&td).await {
        return Err(not_found(&td));
    }
    Ok(describe(state, &td))
}

/// Stores the bundle of a foreign trust domain.
pub(crate) async fn set_bundle(
    state: &Arc<ServerState>,
    request: SetFederatedBundleRequest,
) -> Result<types::Bundle, Status> {
    let td = foreign_trust_domain(state, &request.trust_domain)?;
    let bundle = parse_bootstrap(&td, &request.bundle)?
        .ok_or_else(|| rejected(Code::InvalidArgument, "bundle is required"))?;
    let proto = bundle_to_proto(&bundle);

    // A bundle without a relationship could be neither listed nor deleted,
    // and the write lock keeps a concurrent delete from leaving one behind.
    let _guard = state.write_lock.lock().await;
    if state.federation.peer(&td).is_none() {
        return Err(rejected(
            Code::FailedPrecondition,
            format!(
                "no federation relationship with {td}; create one with `tessera federation \
                 create --trust-domain {td} --trust-bundle FILE`, which stores the bundle too"
            ),
        ));
    }
    let _serialized = state.federation.lock_fetches(&td).await;
    store_bundle(state, bundle)
        .await
        .map_err(|e| rejected(Code::Internal, e))?;
    Ok(proto)
}

fn describe(state: &ServerState, td: &TrustDomain) -> FederationRelationship {
    match state.federation.peer(td) {
        Some((relationship, status)) => to_proto(state, &relationship, &status),
        None => FederationRelationship {
            trust_domain: td.to_string(),
            ..FederationRelationship::default()
        },
    }
}

fn to_proto(
    state: &ServerState,
    relationship: &Relationship,
    status: &PeerStatus,
) -> FederationRelationship {
    let td = &relationship.trust_domain;
    let bundle = state.federation.bundle(td);
    let (profile, endpoint_id) = match &relationship.profile {
        PeerProfile::HttpsSpiffe { endpoint_id } => ("https_spiffe", endpoint_id.to_string()),
        PeerProfile::HttpsWeb => ("https_web", String::new()),
    };
    let seconds = |at: Option<SystemTime>| at.map_or(0, unix_seconds);
    FederationRelationship {
        trust_domain: td.to_string(),
        bundle_endpoint_url: relationship.url.to_string(),
        profile: profile.to_owned(),
        endpoint_spiffe_id: endpoint_id,
        status: Some(FederationStatus {
            last_success_at: seconds(status.last_success_at),
            last_error: status.last_error.clone().unwrap_or_default(),
            last_error_at: seconds(status.last_error_at),
            sequence_number: bundle
                .as_ref()
                .and_then(|b| b.sequence_number())
                .unwrap_or(0),
            next_refresh_at: seconds(status.next_refresh_at),
        }),
        bundle: bundle.map(|b| bundle_to_proto(&b)),
    }
}
