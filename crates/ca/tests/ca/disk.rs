//! The disk key manager: persistence across restarts, file modes, atomic
//! layout and clear errors for damaged key directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tessera_ca::{CaError, CertificateAuthority, KeyStorage, Slot};
use tessera_spiffe::id::TrustDomain;
use tessera_spiffe::key::KeyAlgorithm;
use tessera_spiffe::x509::validate_x509_svid;

use crate::common::{HOUR, config, public_key, start, workload_id};

fn open(dir: &Path, now: SystemTime) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::load_or_create(
        config(KeyAlgorithm::EcP256),
        KeyStorage::Disk(dir.to_path_buf()),
        now,
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("key directory lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        .map(|n| dir.join(n))
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn restart_keeps_ca_and_jwt_kids() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = open(dir.path(), start()).expect("CA is created");
    first
        .rotate(start() + 12 * HOUR)
        .expect("rotation succeeds");
    first
        .rotate(start() + 20 * HOUR)
        .expect("rotation succeeds");
    let before = first.authorities();
    let bundle_before = first.bundle();
    drop(first);

    let second = open(dir.path(), start() + 21 * HOUR).expect("CA is loaded");
    assert_eq!(second.authorities(), before);
    assert_eq!(
        second.bundle().x509_authorities(),
        bundle_before.x509_authorities()
    );
    let kids = |b: &tessera_spiffe::bundle::TrustBundle| -> Vec<String> {
        b.jwt_authorities()
            .iter()
            .map(|a| a.key_id.clone())
            .collect()
    };
    assert_eq!(kids(&second.bundle()), kids(&bundle_before));
    assert_eq!(
        second.bundle().sequence_number(),
        bundle_before.sequence_number()
    );
}

#[test]
fn restart_keeps_prepared_slot() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = open(dir.path(), start()).expect("CA is created");
    first
        .rotate(start() + 12 * HOUR)
        .expect("rotation succeeds");
    let before = first.authorities();
    drop(first);

    let second = open(dir.path(), start() + 13 * HOUR).expect("CA is loaded");
    assert_eq!(second.authorities(), before);
    assert_eq!(second.authorities()[1].slot, Slot::Prepared);
}

#[test]
fn restarted_ca_signs_svids_the_old_bundle_trusts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = open(dir.path(), start()).expect("CA is created").bundle();

    let now = start() + HOUR;
    let ca = open(dir.path(), now).expect("CA is loaded");
    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::EcP256),
            &[],
            HOUR,
            now,
        )
        .expect("SVID is signed");
    let verified = validate_x509_svid(&chain, &bundle, now);
    assert!(verified.is_ok(), "{verified:?}");
}

#[test]
fn restart_after_downtime_replaces_expired_ca() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first_id = open(dir.path(), start())
        .expect("CA is created")
        .authorities()[0]
        .id
        .clone();

    let ca = open(dir.path(), start() + 48 * HOUR).expect("CA is loaded");
    let authorities = ca.authorities();
    assert_eq!(authorities.len(), 1);
    assert_ne!(authorities[0].id, first_id);
    assert!(
        !files(dir.path()).iter().any(|n| n.starts_with(&first_id)),
        "{:?}",
        files(dir.path())
    );
}

#[test]
fn key_files_are_private() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = open(dir.path(), start()).expect("CA is created");
    ca.rotate(start() + 12 * HOUR).expect("rotation succeeds");

    let keys = files_ending(dir.path(), ".key.pem");
    assert_eq!(
        keys.len(),
        4,
        "CA and JWT keys of two authorities: {:?}",
        files(dir.path())
    );
    for key in keys {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }
    for public in files_ending(dir.path(), ".cert.pem") {
        assert_eq!(mode(&public), 0o644, "{}", public.display());
    }
}

#[test]
fn new_key_directory_is_private() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let dir = parent.path().join("keys");
    open(&dir, start()).expect("CA is created");
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn directory_layout_has_no_leftovers() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = open(dir.path(), start()).expect("CA is created");
    let id = ca.authorities()[0].id.clone();

    let expected = [
        format!("{id}.ca.cert.pem"),
        format!("{id}.ca.key.pem"),
        format!("{id}.jwt.key.pem"),
        format!("{id}.jwt.pub.pem"),
        "state.json".to_string(),
    ];
    assert_eq!(files(dir.path()), expected);
}

#[test]
fn retired_keys_removed_and_pruned_files_removed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = open(dir.path(), start()).expect("CA is created");
    let first = ca.authorities()[0].id.clone();
    ca.rotate(start() + 12 * HOUR).expect("rotation succeeds");
    ca.rotate(start() + 20 * HOUR).expect("rotation succeeds");

    let names = files(dir.path());
    assert!(!names.contains(&format!("{first}.ca.key.pem")), "{names:?}");
    assert!(
        !names.contains(&format!("{first}.jwt.key.pem")),
        "{names:?}"
    );
    assert!(names.contains(&format!("{first}.ca.cert.pem")), "{names:?}");
    assert!(names.contains(&format!("{first}.jwt.pub.pem")), "{names:?}");

    ca.rotate(start() + 24 * HOUR).expect("rotation succeeds");
    let names = files(dir.path());
    assert!(!names.iter().any(|n| n.starts_with(&first)), "{names:?}");
}

#[test]
fn leftover_temporary_files_removed_on_load() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(open(dir.path(), start()).expect("CA is created"));
    let leftover = dir.path().join(".state.json.0123456789ab.tmp");
    fs::write(&leftover, b"partial").expect("write leftover");

    open(dir.path(), start()).expect("CA is loaded");
    assert!(!leftover.exists());
}

#[test]
fn unrelated_files_are_kept() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let notes = dir.path().join("README");
    fs::write(&notes, b"operator notes").expect("write notes");
    open(dir.path(), start()).expect("CA is created");
    assert!(notes.exists());
}

#[test]
fn corrupt_state_file_names_path_and_fix() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(open(dir.path(), start()).expect("CA is created"));
    let state = dir.path().join("state.json");
    fs::write(&state, b"{ not json").expect("corrupt state");

    let err = open(dir.path(), start()).expect_err("corrupt state is rejected");
    assert!(
        matches!(err, CaError::CorruptFile { ref path, .. } if path == &state),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&state.display().to_string()), "{message}");
    assert!(message.contains("delete the key directory"), "{message}");
}

#[test]
fn missing_key_file_names_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let id = open(dir.path(), start())
        .expect("CA is created")
        .authorities()[0]
        .id
        .clone();
    let key = dir.path().join(format!("{id}.ca.key.pem"));
    fs::remove_file(&key).expect("remove key");

    let err = open(dir.path(), start()).expect_err("missing key is rejected");
    assert!(
        matches!(err, CaError::MissingFile { ref path, .. } if path == &key),
        "{err:?}"
    );
    assert!(err.to_string().contains(&key.display().to_string()));
}

#[test]
fn corrupt_key_file_names_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let id = open(dir.path(), start())
        .expect("CA is created")
        .authorities()[0]
        .id
        .clone();
    let key = dir.path().join(format!("{id}.jwt.key.pem"));
    fs::write(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("corrupt key");

    let err = open(dir.path(), start()).expect_err("corrupt key is rejected");
    assert!(
        matches!(err, CaError::CorruptFile { ref path, .. } if path == &key),
        "{err:?}"
    );
}

#[test]
fn mismatched_ca_key_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = open(dir.path(), start()).expect("CA is created");
    ca.rotate(start() + 12 * HOUR).expect("rotation succeeds");
    let ids: Vec<String> = ca.authorities().into_iter().map(|a| a.id).collect();
    drop(ca);

    let first = dir.path().join(format!("{}.ca.key.pem", ids[0]));
    let second = dir.path().join(format!("{}.ca.key.pem", ids[1]));
    fs::copy(&second, &first).expect("swap key");

    let err = open(dir.path(), start()).expect_err("mismatched key is rejected");
    assert!(
        matches!(err, CaError::CorruptFile { ref path, .. } if path == &first),
        "{err:?}"
    );
}

#[test]
fn missing_state_with_key_files_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(open(dir.path(), start()).expect("CA is created"));
    let state = dir.path().join("state.json");
    fs::remove_file(&state).expect("remove state");

    let err = open(dir.path(), start()).expect_err("lost state is rejected");
    assert!(
        matches!(err, CaError::MissingFile { ref path, .. } if path == &state),
        "{err:?}"
    );
}

#[test]
fn other_trust_domain_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(open(dir.path(), start()).expect("CA is created"));

    let mut other = config(KeyAlgorithm::EcP256);
    other.trust_domain = TrustDomain::new("other.org").expect("valid trust domain");
    let err = CertificateAuthority::load_or_create(
        other,
        KeyStorage::Disk(dir.path().to_path_buf()),
        start(),
    )
    .expect_err("other trust domain is rejected");
    assert!(
        matches!(err, CaError::TrustDomainMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn debug_output_has_no_key_material() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = open(dir.path(), start()).expect("CA is created");
    ca.rotate(start() + 12 * HOUR).expect("rotation succeeds");
    let debug = format!("{ca:?} {:?}", ca.authorities());

    let keys = files_ending(dir.path(), ".key.pem");
    assert!(!keys.is_empty());
    for key in keys {
        let pem = fs::read_to_string(&key).expect("key reads");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !debug.contains(line),
                "Debug output contains a line of {}",
                key.display()
            );
        }
    }
    assert!(debug.contains("CertificateAuthority"), "{debug}");
}

#[test]
fn invalid_config_is_rejected_before_touching_disk() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let dir = parent.path().join("keys");
    let mut config = config(KeyAlgorithm::EcP256);
    config.ca_ttl = std::time::Duration::from_secs(10);

    let err = CertificateAuthority::load_or_create(config, KeyStorage::Disk(dir.clone()), start())
        .expect_err("short CA TTL is rejected");
    assert!(matches!(err, CaError::InvalidCaTtl { .. }), "{err:?}");
    assert!(!dir.exists());
}
