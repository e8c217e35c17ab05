//! The server's own trust bundle as the APIs and agents see it: the protobuf
//! form, and `<data_dir>/bundle.pem`, rewritten atomically after each change
//! so that agents can bootstrap from it.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tessera_proto::types;
use tessera_spiffe::TrustBundle;

/// File name of the bundle PEM inside the data directory.
pub(crate) const BUNDLE_FILE: &str = "bundle.pem";

/// The bundle currently published, with its protobuf form ready to send.
#[derive(Debug)]
pub(crate) struct PublishedBundle {
    /// The bundle.
    pub bundle: TrustBundle,
    /// The same bundle as a protobuf message.
    pub proto: types::Bundle,
}

impl PublishedBundle {
    /// Wraps `bundle` with its protobuf form.
    pub fn new(bundle: TrustBundle) -> Self {
        let proto = bundle_to_proto(&bundle);
        Self { bundle, proto }
    }
}

/// Converts a bundle to its protobuf message.
pub(crate) fn bundle_to_proto(bundle: &TrustBundle) -> types::Bundle {
    types::Bundle {
        trust_domain: bundle.trust_domain().name().to_owned(),
        x509_authorities: bundle
            .x509_authorities()
            .iter()
            .map(|c| c.to_vec())
            .collect(),
        jwt_authorities: bundle
            .jwt_authorities()
            .iter()
            .map(|a| types::JwtKey {
                key_id: a.key_id.clone(),
                public_key: a.public_key.clone(),
                expires_at: a.expires_at.map_or(0, unix_seconds),
            })
            .collect(),
        refresh_hint: bundle
            .refresh_hint()
            .map_or(0, |hint| i64::try_from(hint.as_secs()).unwrap_or(i64::MAX)),
        sequence_number: bundle.sequence_number().unwrap_or(0),
    }
}

/// Returns `time` as Unix seconds, 0 for times before 1970.
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory is written, synced and renamed over `path`, so readers see
/// either the old or the new file, never a partial one.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map_or_else(|| "file".into(), |name| name.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{file_name}.tmp"));

    let mut file = std::fs::File::create(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);

    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the bundle's X.509 authorities as PEM to `<data_dir>/bundle.pem`.
pub(crate) fn write_bundle_pem(data_dir: &Path, bundle: &TrustBundle) -> std::io::Result<()> {
    write_atomically(&data_dir.join(BUNDLE_FILE), bundle.to_pem().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomically_replaces_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();

        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!dir.path().join(".bundle.pem.tmp").exists());
    }

    #[test]
    fn unix_seconds_before_epoch_is_zero() {
        let before = UNIX_EPOCH - std::time::Duration::from_secs(5);

        assert_eq!(unix_seconds(before), 0);
        assert_eq!(
            unix_seconds(UNIX_EPOCH + std::time::Duration::from_secs(42)),
            42
        );
    }
}
