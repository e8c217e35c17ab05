//! Admin API handlers of the CA authorities: list them, and prepare or
//! activate one ahead of the schedule. The steps run in the rotation task,
//! which publishes them as it publishes scheduled steps.

use tessera_ca::{AuthorityInfo, CaError, Slot};
use tessera_proto::admin::{
    ActivateAuthorityResponse, Authority, AuthorityState, ListAuthoritiesResponse,
    PrepareAuthorityResponse,
};
use tonic::{Code, Status};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::ServerError;
use crate::bundle::unix_seconds;
use crate::rotation::{ManualStep, RETRY_AFTER, RotationHandle, StepError};
use crate::state::ServerState;
use crate::status::{internal, rejected};

/// Lists the server's authorities, retired first, then active, then prepared.
pub(super) fn list(state: &ServerState) -> ListAuthoritiesResponse {
    let authorities = state.ca.authorities().iter().map(authority_proto).collect();
    ListAuthoritiesResponse { authorities }
}

/// Prepares a new authority and returns it once the bundle with it is
/// published.
pub(super) async fn prepare(
    state: &ServerState,
    rotation: &RotationHandle,
) -> Result<PrepareAuthorityResponse, Status> {
    let event = rotation
        .request(ManualStep::Prepare)
        .await
        .map_err(|e| step_status(ManualStep::Prepare, e))?;

    let prepared = event
        .created
        .last()
        .and_then(|id| find(state, id))
        .ok_or_else(|| internal("prepare a CA authority", "the new authority is not listed"))?;
    Ok(PrepareAuthorityResponse {
        prepared: Some(prepared),
    })
}

/// Activates the prepared authority and returns it with the one it
/// replaced, once the server SVID is signed by the new one.
pub(super) async fn activate(
    state: &ServerState,
    rotation: &RotationHandle,
) -> Result<ActivateAuthorityResponse, Status> {
    let previous = state
        .ca
        .authorities()
        .into_iter()
        .find(|a| a.slot == Slot::Active);

    let event = rotation
        .request(ManualStep::Activate)
        .await
        .map_err(|e| step_status(ManualStep::Activate, e))?;

    let activated = event
        .activated
        .as_deref()
        .and_then(|id| find(state, id))
        .ok_or_else(|| {
            internal(
                "activate the prepared CA authority",
                "the activated authority is not listed",
            )
        })?;
    // The replaced authority is absent only when it had expired, and
    // expired authorities leave the bundle.
    let retired = previous.and_then(|p| find(state, &p.id));
    Ok(ActivateAuthorityResponse {
        activated: Some(activated),
        retired,
    })
}

fn find(state: &ServerState, id: &str) -> Option<Authority> {
    state
        .ca
        .authorities()
        .iter()
        .find(|a| a.id == id)
        .map(authority_proto)
}

/// Maps a failed manual step to a status. A step the CA state does not
/// allow is FailedPrecondition with advice; the CA is then unchanged.
fn step_status(step: ManualStep, error: StepError) -> Status {
    let action = match step {
        ManualStep::Prepare => "prepare a CA authority",
        ManualStep::Activate => "activate the prepared CA authority",
    };
    match error {
        StepError::Ca(ServerError::Ca(CaError::NothingPrepared)) => rejected(
            Code::FailedPrecondition,
            "no authority is prepared, so there is nothing to activate; run \
             `tessera authority prepare` first, and activate once peers have fetched \
             the bundle that contains the prepared authority",
        ),
        StepError::Ca(ServerError::Ca(CaError::AlreadyPrepared { authority_id })) => rejected(
            Code::FailedPrecondition,
            format!(
                "authority {authority_id} is already prepared; activate it with \
                 `tessera authority activate` before preparing another"
            ),
        ),
        StepError::Ca(e) => internal(action, crate::error_chain(&e)),
        // The rotation task has logged the publication error.
        StepError::Publish { event, .. } => Status::internal(format!(
            "the CA completed the step ({}), but publishing it failed; the server retries \
             in {}; see the server log",
            describe(&event),
            humantime::format_duration(RETRY_AFTER)
        )),
        StepError::Stopped => {
            Status::unavailable(format!("cannot {action}: the server is shutting down"))
        }
    }
}

/// Describes a rotation event for a message, such as `created 0123…`.
fn describe(event: &tessera_ca::RotationEvent) -> String {
    let mut parts = Vec::new();
    if !event.created.is_empty() {
        parts.push(format!("created {}", event.created.join(", ")));
    }
    if let Some(id) = &event.activated {
        parts.push(format!("activated {id}"));
    }
    if !event.pruned.is_empty() {
        parts.push(format!("removed expired {}", event.pruned.join(", ")));
    }
    parts.join("; ")
}

fn authority_proto(info: &AuthorityInfo) -> Authority {
    let state = match info.slot {
        Slot::Active => AuthorityState::Active,
        Slot::Prepared => AuthorityState::Prepared,
        Slot::Retired => AuthorityState::Retired,
    };
    Authority {
        id: info.id.clone(),
        state: state as i32,
        x509_subject_key_id: subject_key_id(&info.certificate).unwrap_or_default(),
        jwt_key_id: info.jwt_key_id.clone(),
        not_before: unix_seconds(info.not_before),
        not_after: unix_seconds(info.not_after),
        x509_certificate: info.certificate.to_vec(),
    }
}

/// Returns the subject key identifier of a DER certificate as lowercase
/// hex, or `None` when the certificate has none or does not parse.
fn subject_key_id(der: &[u8]) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    certificate
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(hex::encode(id.0)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tessera_ca::{CaConfig, CertificateAuthority, KeyStorage};
    use tessera_spiffe::{KeyAlgorithm, TrustDomain};

    use super::*;

    fn authority() -> AuthorityInfo {
        let config = CaConfig {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: Duration::from_secs(3600),
            jwt_issuer: None,
        };
        let ca =
            CertificateAuthority::load_or_create(config, KeyStorage::Memory, SystemTime::now())
                .unwrap();
        ca.authorities().remove(0)
    }

    #[test]
    fn authority_proto_copies_the_facts() {
        let info = authority();
        let proto = authority_proto(&info);

        assert_eq!(proto.id, info.id);
        assert_eq!(proto.state, AuthorityState::Active as i32);
        assert_eq!(proto.jwt_key_id, info.jwt_key_id);
        assert_eq!(proto.not_after, unix_seconds(info.not_after));
        assert_eq!(proto.x509_certificate, info.certificate.to_vec());
    }

    #[test]
    fn subject_key_id_of_a_ca_is_hex() {
        let id = subject_key_id(&authority().certificate).expect("the CA has a key identifier");
        assert!(!id.is_empty());
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn subject_key_id_of_garbage_is_none() {
        assert_eq!(subject_key_id(b"not a certificate"), None);
    }

    #[test]
    fn nothing_prepared_is_failed_precondition() {
        let error = StepError::Ca(ServerError::Ca(CaError::NothingPrepared));
        let status = step_status(ManualStep::Activate, error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("tessera authority prepare"));
    }

    #[test]
    fn already_prepared_names_the_authority() {
        let error = StepError::Ca(ServerError::Ca(CaError::AlreadyPrepared {
            authority_id: "00000000000000a1".to_owned(),
        }));
        let status = step_status(ManualStep::Prepare, error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("00000000000000a1"));
    }
}
