//! Rotation over simulated time: preparation, activation, pruning, and
//! trust in SVIDs across a rotation.

use std::time::SystemTime;

use tessera_ca::{AuthorityInfo, CaError, CertificateAuthority, Slot};
use tessera_spiffe::key::KeyAlgorithm;
use tessera_spiffe::x509::validate_x509_svid;

use crate::common::{HOUR, memory_ca, public_key, start, workload_id};

fn in_slot(ca: &CertificateAuthority, slot: Slot) -> Vec<AuthorityInfo> {
    ca.authorities()
        .into_iter()
        .filter(|a| a.slot == slot)
        .collect()
}

fn active_id(ca: &CertificateAuthority) -> String {
    let active = in_slot(ca, Slot::Active);
    assert_eq!(active.len(), 1, "exactly one active authority");
    active[0].id.clone()
}

fn at(hours: u32) -> SystemTime {
    start() + HOUR * hours
}

#[test]
fn new_ca_has_one_active_authority() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let authorities = ca.authorities();
    assert_eq!(authorities.len(), 1);
    assert_eq!(authorities[0].slot, Slot::Active);
    assert_eq!(ca.bundle().x509_authorities().len(), 1);
    assert_eq!(ca.bundle().jwt_authorities().len(), 1);
}

#[test]
fn rotate_before_half_does_nothing() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let event = ca.rotate(at(11)).expect("rotation succeeds");
    assert!(event.is_empty(), "{event:?}");
    assert!(!event.bundle_changed());
}

#[test]
fn next_rotation_at_is_half_of_lifetime() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let active = &in_slot(&ca, Slot::Active)[0];
    let half = active.not_before
        + (active
            .not_after
            .duration_since(active.not_before)
            .expect("ordered")
            / 2);
    assert_eq!(ca.next_rotation_at(), half);
}

#[test]
fn rotation_sequence_over_a_day_and_a_half() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let first = active_id(&ca);
    let first_sequence = ca
        .bundle()
        .sequence_number()
        .expect("bundle has a sequence number");

    // At 1/2 of the lifetime, a prepared authority appears in the bundle.
    let event = ca.rotate(at(12)).expect("rotation succeeds");
    assert_eq!(event.created.len(), 1, "{event:?}");
    assert_eq!(event.activated, None);
    assert!(event.bundle_changed());
    let prepared = in_slot(&ca, Slot::Prepared);
    assert_eq!(prepared.len(), 1);
    assert_eq!(prepared[0].id, event.created[0]);
    assert_eq!(active_id(&ca), first, "the active authority is unchanged");
    assert_eq!(ca.bundle().x509_authorities().len(), 2);
    assert_eq!(ca.bundle().jwt_authorities().len(), 2);
    assert!(ca.bundle().sequence_number() > Some(first_sequence));

    // Before 5/6 nothing changes.
    assert!(ca.rotate(at(19)).expect("rotation succeeds").is_empty());

    // At 5/6 the prepared authority becomes active; the bundle keeps both.
    let event = ca.rotate(at(20)).expect("rotation succeeds");
    assert_eq!(event.activated.as_deref(), Some(prepared[0].id.as_str()));
    assert!(event.created.is_empty(), "{event:?}");
    assert!(!event.bundle_changed(), "activation publishes nothing new");
    assert_eq!(active_id(&ca), prepared[0].id);
    let retired = in_slot(&ca, Slot::Retired);
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].id, first);

    // The first authority leaves the bundle when it expires, which is also half
    // of the second one's lifetime, so its successor is prepared.
    let event = ca.rotate(at(24)).expect("rotation succeeds");
    assert_eq!(event.pruned, vec![first.clone()]);
    assert_eq!(event.created.len(), 1, "{event:?}");
    assert!(event.bundle_changed());
    assert!(in_slot(&ca, Slot::Retired).is_empty());
    assert_eq!(in_slot(&ca, Slot::Prepared)[0].id, event.created[0]);
    assert_eq!(ca.bundle().x509_authorities().len(), 2);
    assert_eq!(ca.bundle().jwt_authorities().len(), 2);

    // A repeated call at the same time has nothing to do.
    let event = ca.rotate(at(24)).expect("rotation succeeds");
    assert!(event.is_empty(), "{event:?}");
}

#[test]
fn bundle_before_activation_validates_svid_after_it() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    ca.rotate(at(12)).expect("rotation succeeds");
    let bundle_before_activation = ca.bundle();

    ca.rotate(at(20)).expect("rotation succeeds");
    let now = at(21);
    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::EcP256),
            &[],
            HOUR,
            now,
        )
        .expect("SVID is signed");

    let verified = validate_x509_svid(&chain, &bundle_before_activation, now);
    assert!(verified.is_ok(), "{verified:?}");
}

#[test]
fn svid_signed_after_activation_uses_new_ca() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let old_bundle = ca.bundle();
    ca.rotate(at(12)).expect("rotation succeeds");
    ca.rotate(at(20)).expect("rotation succeeds");

    let now = at(21);
    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::EcP256),
            &[],
            HOUR,
            now,
        )
        .expect("SVID is signed");
    let verified = validate_x509_svid(&chain, &old_bundle, now);
    assert!(
        verified.is_err(),
        "a bundle from before the preparation lacks the new CA"
    );
}

#[test]
fn svid_signed_before_activation_validates_until_expiry() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    ca.rotate(at(12)).expect("rotation succeeds");
    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::EcP256),
            &[],
            2 * HOUR,
            at(19),
        )
        .expect("SVID is signed");

    ca.rotate(at(20)).expect("rotation succeeds");
    let verified = validate_x509_svid(&chain, &ca.bundle(), at(20));
    assert!(verified.is_ok(), "{verified:?}");
}

#[test]
fn rotate_after_downtime_activates_at_once() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let first = active_id(&ca);

    let event = ca.rotate(at(30)).expect("rotation succeeds");
    assert_eq!(event.created.len(), 1, "{event:?}");
    assert_eq!(event.activated.as_ref(), Some(&event.created[0]));
    assert_eq!(event.pruned, vec![first]);
    assert_eq!(ca.authorities().len(), 1);

    let chain = ca.sign_x509_svid(
        &workload_id(),
        &public_key(KeyAlgorithm::EcP256),
        &[],
        HOUR,
        at(30),
    );
    assert!(chain.is_ok(), "{chain:?}");
}

#[test]
fn rotate_after_downtime_activates_prepared_then_prepares() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    ca.rotate(at(12)).expect("rotation succeeds");
    let prepared = in_slot(&ca, Slot::Prepared)[0].id.clone();

    // At hour 25 the first authority has expired and the prepared one is past
    // half of its own lifetime, so it is activated and a successor prepared.
    let event = ca.rotate(at(25)).expect("rotation succeeds");
    assert_eq!(event.activated, Some(prepared.clone()));
    assert_eq!(event.created.len(), 1, "{event:?}");
    assert_eq!(event.pruned.len(), 1, "{event:?}");
    assert_eq!(active_id(&ca), prepared);
    assert_eq!(in_slot(&ca, Slot::Prepared).len(), 1);
}

#[test]
fn manual_prepare_then_activate() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let first = active_id(&ca);

    let event = ca.prepare(at(1)).expect("prepare succeeds");
    assert_eq!(event.created.len(), 1);
    let again = ca.prepare(at(1));
    assert!(
        matches!(again, Err(CaError::AlreadyPrepared { .. })),
        "{again:?}"
    );

    let event = ca.activate(at(2)).expect("activate succeeds");
    assert_eq!(
        event.activated.as_ref(),
        Some(&in_slot(&ca, Slot::Active)[0].id)
    );
    assert_ne!(active_id(&ca), first);
    assert_eq!(in_slot(&ca, Slot::Retired)[0].id, first);
}

#[test]
fn manual_activate_without_prepared_fails() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let result = ca.activate(at(1));
    assert!(
        matches!(result, Err(CaError::NothingPrepared)),
        "{result:?}"
    );
}

#[test]
fn bundle_sequence_grows_only_when_bundle_changes() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let sequence = |ca: &CertificateAuthority| ca.bundle().sequence_number().expect("set");

    let s0 = sequence(&ca);
    ca.rotate(at(12)).expect("rotation succeeds");
    let s1 = sequence(&ca);
    ca.rotate(at(20)).expect("rotation succeeds");
    let s2 = sequence(&ca);
    ca.rotate(at(24)).expect("rotation succeeds");
    let s3 = sequence(&ca);

    assert_eq!(s1, s0 + 1, "prepare");
    assert_eq!(s2, s1, "activation");
    assert_eq!(s3, s2 + 1, "pruning");
}

#[test]
fn rotation_uses_configured_algorithm_for_new_authorities() {
    let ca = memory_ca(KeyAlgorithm::EcP384);
    ca.rotate(at(12)).expect("rotation succeeds");
    ca.rotate(at(20)).expect("rotation succeeds");

    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::Rsa2048),
            &[],
            HOUR,
            at(21),
        )
        .expect("SVID is signed");
    let verified = validate_x509_svid(&chain, &ca.bundle(), at(21));
    assert!(verified.is_ok(), "{verified:?}");
}
