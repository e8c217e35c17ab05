//! Join token and agent RPCs of the admin API. Tokens are random, stored
//! only as hashes, and never logged; evicting or banning an agent also ends
//! its open sync stream.

use std::time::Duration;

use tessera_proto::admin::{CreateJoinTokenRequest, JoinToken};
use tessera_proto::types;
use tessera_registration::{EntryId, RegistrationEntry, Selector};
use tessera_spiffe::SpiffeId;
use tessera_store::AttestedAgent;
use tonic::{Code, Status};

use crate::ids;
use crate::state::{ServerState, SyncEvent, now_unix};
use crate::status::{rejected, store_status};

/// Number of random bytes in a join token (64 hex characters).
const JOIN_TOKEN_BYTES: usize = 32;
/// Maximum join token lifetime a request may set.
const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Selector type of the alias entry made for a join token's agent.
const ALIAS_SELECTOR_TYPE: &str = "spiffe_id";

pub(super) async fn create_join_token(
    state: &ServerState,
    request: &CreateJoinTokenRequest,
) -> Result<JoinToken, Status> {
    let ttl = join_token_ttl(state, request.ttl)?;
    let token = hex::encode(rand::random::<[u8; JOIN_TOKEN_BYTES]>());
    let agent_id = ids::join_token_agent_id(state.trust_domain(), &token);
    let expires_at = now_unix().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));

    let alias = match request.agent_alias.as_str() {
        "" => None,
        alias => Some(alias_entry(state, alias, &agent_id)?),
    };

    let _write = state.write_lock.lock().await;
    // The alias goes first: a token the caller never sees is worse than an
    // alias entry that is removed again when storing the token fails.
    if let Some(alias) = &alias {
        create_alias(state, alias).await?;
    }
    if let Err(e) = state.store.create_join_token(&token, expires_at).await {
        if let Some(alias) = &alias {
            remove_alias(state, &alias.id).await;
        }
        return Err(store_status("store the join token", e));
    }

    let hash = ids::join_token_hash(&token);
    tracing::info!(
        token_hash = &hash[..16],
        agent_id = %agent_id,
        expires_at,
        "created join token"
    );
    Ok(JoinToken {
        token,
        expires_at,
        agent_id: agent_id.to_string(),
    })
}

fn join_token_ttl(state: &ServerState, requested: i32) -> Result<Duration, Status> {
    match u64::try_from(requested) {
        Ok(0) => Ok(state.config.join_token_ttl),
        Ok(secs) if Duration::from_secs(secs) <= MAX_JOIN_TOKEN_TTL => {
            Ok(Duration::from_secs(secs))
        }
        _ => Err(rejected(
            Code::InvalidArgument,
            format!(
                "invalid ttl {requested}: expected 0 (server default) or 1 to {} seconds",
                MAX_JOIN_TOKEN_TTL.as_secs()
            ),
        )),
    }
}

/// Builds the alias entry for a join token: it names `alias` as a SPIFFE ID
/// under the token's agent, so entries whose parent is `alias` reach that
/// agent through nesting. Its selector matches no workload.
fn alias_entry(
    state: &ServerState,
    alias: &str,
    agent_id: &SpiffeId,
) -> Result<RegistrationEntry, Status> {
    let invalid = |message: String| rejected(Code::InvalidArgument, message);
    let alias_id = SpiffeId::parse(alias)
        .map_err(|e| invalid(format!("invalid agent_alias {alias:?}: {e}")))?;
    let td = state.trust_domain();
    if alias_id.trust_domain() != td {
        return Err(invalid(format!(
            "agent_alias {alias_id} is not in the server's trust domain {td}"
        )));
    }
    if ids::is_reserved(&alias_id) {
        return Err(invalid(format!(
            "agent_alias {alias_id} is reserved for the server and its agents: \
             choose a path outside {}",
            ids::RESERVED_PATH
        )));
    }
    let selector = Selector::new(ALIAS_SELECTOR_TYPE, agent_id.as_str())
        .map_err(|e| Status::internal(format!("failed to build the alias selector: {e}")))?;

    Ok(RegistrationEntry {
        id: EntryId::generate(),
        spiffe_id: alias_id,
        parent_id: agent_id.clone(),
        selectors: vec![selector],
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: Vec::new(),
        dns_names: Vec::new(),
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
        revision: 0,
        created_at: now_unix(),
    })
}

async fn create_alias(state: &ServerState, alias: &RegistrationEntry) -> Result<(), Status> {
    let (stored, revision) = state
        .store
        .create_entry(alias)
        .await
        .map_err(|e| store_status("create the agent alias entry", e))?;
    tracing::info!(
        entry_id = %stored.id,
        spiffe_id = %stored.spiffe_id,
        parent_id = %stored.parent_id,
        "created agent alias entry"
    );
    state.advance_revision(revision);
    state.cache_mut().upsert(stored, revision);
    state.notify(SyncEvent::EntriesChanged);
    Ok(())
}

async fn remove_alias(state: &ServerState, id: &EntryId) {
    match state.store.delete_entry(id).await {
        Ok((_, revision)) => {
            state.advance_revision(revision);
            state.cache_mut().remove(id, revision);
            state.notify(SyncEvent::EntriesChanged);
        }
        Err(e) => tracing::error!(
            entry_id = %id,
            error = %crate::error_chain(&e),
            "failed to remove the alias entry of a join token that was not stored"
        ),
    }
}

pub(super) async fn list_agents(state: &ServerState) -> Result<Vec<types::Agent>, Status> {
    let agents = state
        .store
        .list_agents()
        .await
        .map_err(|e| store_status("list agents", e))?;
    Ok(agents.iter().map(agent_to_proto).collect())
}

pub(super) async fn get_agent(state: &ServerState, id: &str) -> Result<types::Agent, Status> {
    let id = parse_agent_id(state, id)?;
    match state.store.get_agent(&id).await {
        Ok(Some(agent)) => Ok(agent_to_proto(&agent)),
        Ok(None) => Err(rejected(Code::NotFound, format!("agent {id} not found"))),
        Err(e) => Err(store_status("read the agent", e)),
    }
}

pub(super) async fn evict_agent(state: &ServerState, id: &str) -> Result<(), Status> {
    let id = parse_agent_id(state, id)?;
    state
        .store
        .delete_agent(&id)
        .await
        .map_err(|e| store_status("delete the agent", e))?;

    tracing::info!(agent_id = %id, "evicted agent");
    state.notify(SyncEvent::AgentRevoked {
        agent_id: id,
        reason: "evicted",
    });
    Ok(())
}

pub(super) async fn ban_agent(state: &ServerState, id: &str) -> Result<(), Status> {
    let id = parse_agent_id(state, id)?;
    state
        .store
        .set_agent_banned(&id, true)
        .await
        .map_err(|e| store_status("ban the agent", e))?;

    tracing::info!(agent_id = %id, "banned agent");
    state.notify(SyncEvent::AgentRevoked {
        agent_id: id,
        reason: "banned",
    });
    Ok(())
}

fn parse_agent_id(state: &ServerState, id: &str) -> Result<SpiffeId, Status> {
    let invalid = |message: String| rejected(Code::InvalidArgument, message);
    let parsed =
        SpiffeId::parse(id).map_err(|e| invalid(format!("invalid spiffe_id {id:?}: {e}")))?;
    if !ids::is_agent_id(state.trust_domain(), &parsed) {
        return Err(invalid(format!(
            "spiffe_id {parsed} is not an agent ID: expected spiffe://{}/tessera/agent/...",
            state.trust_domain()
        )));
    }
    Ok(parsed)
}

/// Converts an agent record to its protobuf message.
pub(crate) fn agent_to_proto(agent: &AttestedAgent) -> types::Agent {
    types::Agent {
        spiffe_id: agent.spiffe_id.to_string(),
        attestation_type: agent.attestation_type.clone(),
        x509_svid_serial: agent.x509_svid_serial.clone(),
        x509_svid_expires_at: agent.x509_svid_expires_at,
        selectors: agent.selectors.iter().map(types::Selector::from).collect(),
        banned: agent.banned,
        created_at: agent.created_at,
        last_seen_at: agent.last_seen_at,
    }
}
