//! Node attestation and agent SVID renewal. Join tokens are the only
//! attestation type so far. A token is consumed atomically, so it admits
//! exactly one agent, and logs name it only by its hash prefix.

use std::net::SocketAddr;

use tessera_proto::agent::{
    AttestAgentRequest, AttestAgentResponse, RenewAgentRequest, RenewAgentResponse,
};
use tessera_spiffe::SpiffeId;
use tessera_store::{AttestedAgent, StoreError};
use tonic::{Code, Status};
use tracing::Instrument;

use super::svid::{SignedSvid, sign_x509_svid};
use super::tls::PeerSvid;
use crate::ids;
use crate::state::{ServerState, SyncEvent, now_unix};
use crate::status::{rejected, store_status};

/// The join token attestation type.
const JOIN_TOKEN: &str = "join_token";
/// Attestation types the server accepts.
const SUPPORTED_TYPES: [&str; 1] = [JOIN_TOKEN];
/// Maximum join token length in bytes. Tokens the server makes have 64.
const MAX_JOIN_TOKEN_BYTES: usize = 256;
/// Hex characters of the token hash that logs show.
const LOGGED_HASH_CHARS: usize = 16;

pub(super) async fn attest_agent(
    state: &ServerState,
    remote_addr: Option<SocketAddr>,
    request: AttestAgentRequest,
) -> Result<AttestAgentResponse, Status> {
    let data = request
        .data
        .ok_or_else(|| rejected(Code::InvalidArgument, "attestation data is missing"))?;
    if data.r#type != JOIN_TOKEN {
        return Err(rejected(
            Code::InvalidArgument,
            format!(
                "unsupported attestation type {:?}: supported types are {}",
                data.r#type,
                SUPPORTED_TYPES.join(", ")
            ),
        ));
    }
    let token = join_token(&data.payload)?;
    let token_hash = ids::join_token_hash(token);
    let token_hash = &token_hash[..LOGGED_HASH_CHARS];
    let span = tracing::info_span!("attest", token_hash, remote_addr = ?remote_addr);
    attest_join_token(state, token, &request.public_key)
        .instrument(span)
        .await
}

async fn attest_join_token(
    state: &ServerState,
    token: &str,
    public_key: &[u8],
) -> Result<AttestAgentResponse, Status> {
    let agent_id = ids::join_token_agent_id(state.trust_domain(), token);
    reject_banned(state, &agent_id).await?;
    // Signing first checks the public key before the token is spent; the
    // certificate is dropped when the token turns out to be invalid.
    let svid = sign_x509_svid(
        state,
        &agent_id,
        public_key,
        &[],
        state.config.x509_svid_ttl,
    )?;
    consume_join_token(state, token).await?;

    let now = now_unix();
    let agent = AttestedAgent {
        spiffe_id: agent_id.clone(),
        attestation_type: JOIN_TOKEN.to_owned(),
        selectors: Vec::new(),
        x509_svid_serial: svid.facts.serial.clone(),
        x509_svid_expires_at: svid.facts.not_after_unix(),
        banned: false,
        created_at: now,
        last_seen_at: now,
    };
    state
        .store
        .upsert_agent(&agent)
        .await
        .map_err(|e| store_status("record the attested agent", e))?;
    state.notify(SyncEvent::AgentUpdated(agent_id.clone()));

    tracing::info!(agent_id = %agent_id, serial = %svid.facts.serial, "attested agent with a join token");
    Ok(AttestAgentResponse {
        svid: Some(svid.proto),
        bundle: Some(state.bundle.load().proto.clone()),
    })
}

fn join_token(payload: &[u8]) -> Result<&str, Status> {
    let invalid = |message: String| rejected(Code::InvalidArgument, message);
    if payload.is_empty() {
        return Err(invalid("join token is empty".to_owned()));
    }
    if payload.len() > MAX_JOIN_TOKEN_BYTES {
        return Err(invalid(format!(
            "join token has {} bytes, the maximum is {MAX_JOIN_TOKEN_BYTES}",
            payload.len()
        )));
    }
    std::str::from_utf8(payload).map_err(|_| invalid("join token is not UTF-8".to_owned()))
}

async fn reject_banned(state: &ServerState, agent_id: &SpiffeId) -> Result<(), Status> {
    match state.store.get_agent(agent_id).await {
        Ok(Some(agent)) if agent.banned => Err(rejected(
            Code::PermissionDenied,
            format!("agent {agent_id} is banned"),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(store_status("read the agent record", e)),
    }
}

async fn consume_join_token(state: &ServerState, token: &str) -> Result<(), Status> {
    match state.store.consume_join_token(token, now_unix()).await {
        Ok(()) => Ok(()),
        Err(StoreError::TokenNotFound) => {
            tracing::warn!("rejected attestation: join token not found or already used");
            Err(Status::permission_denied(
                "join token not found or already used",
            ))
        }
        Err(StoreError::TokenExpired { .. }) => {
            tracing::warn!("rejected attestation: join token expired");
            Err(Status::permission_denied("join token expired"))
        }
        Err(e) => Err(store_status("consume the join token", e)),
    }
}

pub(super) async fn renew_agent(
    state: &ServerState,
    peer: &PeerSvid,
    request: RenewAgentRequest,
) -> Result<RenewAgentResponse, Status> {
    let mut agent = super::authorize_agent(state, peer).await?;
    if agent.x509_svid_serial != peer.serial {
        return Err(rejected(
            Code::PermissionDenied,
            format!(
                "the presented SVID of agent {} (serial {}) is not its current SVID (serial {}); \
                 renew with the current SVID or attest again",
                agent.spiffe_id, peer.serial, agent.x509_svid_serial
            ),
        ));
    }

    let SignedSvid { proto, facts } = sign_x509_svid(
        state,
        &agent.spiffe_id,
        &request.public_key,
        &[],
        state.config.x509_svid_ttl,
    )?;
    // NOTE: only the newest serial is recorded. When this response is lost
    // on the way, the agent keeps an SVID whose serial no longer matches, so
    // it must attest again. Accepting the previous serial until the new one
    // is first used would need a second serial in the agent record.
    let old_serial = std::mem::replace(&mut agent.x509_svid_serial, facts.serial.clone());
    agent.x509_svid_expires_at = facts.not_after_unix();
    agent.last_seen_at = now_unix();
    state
        .store
        .upsert_agent(&agent)
        .await
        .map_err(|e| store_status("record the renewed agent SVID", e))?;

    tracing::info!(
        agent_id = %agent.spiffe_id,
        old_serial = %old_serial,
        serial = %facts.serial,
        expires_at = %humantime::format_rfc3339_seconds(facts.not_after),
        "renewed agent SVID"
    );
    Ok(RenewAgentResponse { svid: Some(proto) })
}
