//! Federation writes made through another server of the same trust domain
//! on one database. The change feed names the trust domain of a changed
//! relationship or foreign bundle, and these functions bring this server's
//! relationships, refresh tasks and federated bundles in line with the
//! store. This server's own writes come back through the feed too, and
//! change nothing because memory already matches the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use tessera_spiffe::{TrustBundle, TrustDomain};
use tessera_store::StoreError;

use super::Relationship;
use crate::state::ServerState;

/// Applies the stored relationship with `td`: starts or restarts its
/// refresh task when it is new or differs, stops it when it was deleted.
pub(crate) async fn apply_relationship(
    state: &Arc<ServerState>,
    td: &TrustDomain,
) -> Result<(), StoreError> {
    // The admin write lock keeps a local create, update or delete from
    // landing between the read below and the restart of the refresh task.
    let _write = state.write_lock.lock().await;
    let stored = state.store.get_federation(td).await?;
    let current = state
        .federation
        .peer(td)
        .map(|(relationship, _)| relationship);

    let Some(record) = stored else {
        if state.federation.remove(td) {
            tracing::info!(trust_domain = %td, "federation relationship deleted in the datastore");
        }
        return Ok(());
    };
    match Relationship::from_record(&record) {
        Ok(relationship) if current.as_ref() != Some(&relationship) => {
            tracing::info!(trust_domain = %td, url = %relationship.url, "federation relationship changed in the datastore");
            state.federation.upsert(state, relationship);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "ignoring an invalid federation relationship found in the datastore");
        }
    }
    Ok(())
}

/// Applies the stored bundle of the foreign trust domain `td` to the
/// federated bundles that sync streams send.
///
/// A stored bundle with a lower `spiffe_sequence` than the one in memory
/// is not applied. That happens when two servers refresh from the same
/// peer at once and the slower one stores an older bundle. The refresh
/// task then stores the newer bundle again at its next fetch.
pub(crate) async fn apply_bundle(state: &ServerState, td: &TrustDomain) -> Result<(), StoreError> {
    // The fetch lock of `td` is not taken: a refresh holds it for a whole fetch,
    // which would stall the change feed. A local write that lands between
    // the read and the update below comes back through the feed at the
    // next poll and is applied then.
    let stored = state.store.get_bundle(td).await?;
    let current = state.federation.bundle(td);

    let Some(jwks) = stored else {
        if current.is_some() {
            tracing::info!(trust_domain = %td, "federated bundle deleted in the datastore");
            state.federation.set_bundle(state, td, None);
        }
        return Ok(());
    };
    let bundle = match TrustBundle::from_jwks(td, &jwks) {
        Ok(bundle) => bundle,
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "ignoring an invalid federated bundle found in the datastore");
            return Ok(());
        }
    };
    let up_to_date = current
        .as_deref()
        .is_some_and(|current| *current == bundle || is_older(&bundle, current));
    if up_to_date {
        return Ok(());
    }
    tracing::info!(
        trust_domain = %td,
        sequence = ?bundle.sequence_number(),
        "federated bundle changed in the datastore"
    );
    state.federation.set_bundle(state, td, Some(bundle));
    Ok(())
}

/// Applies every stored relationship and foreign bundle, and drops the
/// ones no longer stored. Used after the change feed was pruned past this
/// server's position, when single changes can no longer be read.
pub(crate) async fn apply_all(state: &Arc<ServerState>) -> Result<(), StoreError> {
    let mut domains = BTreeSet::new();
    let relationships = state.store.list_federations().await?;
    domains.extend(relationships.into_iter().map(|record| record.trust_domain));
    let stored_bundles = state.store.list_bundles().await?;
    domains.extend(stored_bundles.into_iter().map(|(td, _)| td));
    domains.extend(state.federation.bundles().keys().cloned());
    let peers = state.federation.peers();
    domains.extend(
        peers
            .into_iter()
            .map(|(relationship, _)| relationship.trust_domain),
    );
    domains.remove(state.trust_domain());

    for td in &domains {
        apply_relationship(state, td).await?;
        apply_bundle(state, td).await?;
    }
    Ok(())
}

fn is_older(candidate: &TrustBundle, current: &TrustBundle) -> bool {
    match (candidate.sequence_number(), current.sequence_number()) {
        (Some(candidate), Some(current)) => candidate < current,
        _ => false,
    }
}
