//! The agent's data directory: the agent SVID with its private key, and the
//! trust bundle, so that a restarted agent resumes without a join token.
//! Every file is replaced atomically (temporary file, fsync, rename).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{PrivateKey, TrustBundle, TrustDomain, X509Svid};
use zeroize::Zeroizing;

use crate::error::AgentError;

/// File with the agent SVID's private key and certificate chain, in PEM.
/// Key and chain share one file so that a crash can never leave a key
/// next to a certificate for another key.
const AGENT_SVID_FILE: &str = "agent_svid.pem";

/// File with the trust bundle in the SPIFFE bundle format (a JWK Set).
const BUNDLE_FILE: &str = "bundle.json";

/// Mode of files holding a private key.
const SECRET_FILE_MODE: u32 = 0o600;

/// Mode of files holding public data.
const PUBLIC_FILE_MODE: u32 = 0o644;

/// Mode of the data directory. Other users may pass through it to reach the
/// default Workload API socket in `public/`, but may not list it, and the key
/// file itself is 0600.
const DATA_DIR_MODE: u32 = 0o711;

/// The agent's data directory.
#[derive(Debug, Clone)]
pub struct Storage {
    data_dir: PathBuf,
}

impl Storage {
    /// Opens `data_dir`, creating it with mode 0711 when it is missing.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Io`] when the directory cannot be created.
    pub fn open(data_dir: &Path) -> Result<Self, AgentError> {
        let io_error = |source| AgentError::Io {
            action: "create data directory",
            path: data_dir.to_path_buf(),
            source,
        };
        if !data_dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(DATA_DIR_MODE)
                .create(data_dir)
                .map_err(io_error)?;
            // The umask may have narrowed the mode; set it exactly.
            fs::set_permissions(data_dir, fs::Permissions::from_mode(DATA_DIR_MODE))
                .map_err(io_error)?;
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Loads the stored agent SVID, or `None` when none is stored.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::InvalidStoredFile`] when the file is not a
    /// PKCS#8 key followed by a certificate chain for that key.
    pub fn load_agent_svid(&self) -> Result<Option<X509Svid>, AgentError> {
        let path = self.data_dir.join(AGENT_SVID_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        let invalid = |reason: String| AgentError::InvalidStoredFile {
            path: path.clone(),
            reason,
        };

        let blocks = pem::parse_many(text.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut key = None;
        let mut chain = Vec::new();
        for block in blocks {
            match block.tag() {
                "PRIVATE KEY" => {
                    let der = Zeroizing::new(block.into_contents());
                    key =
                        Some(PrivateKey::from_pkcs8_der(&der).map_err(|e| invalid(e.to_string()))?);
                }
                "CERTIFICATE" => chain.push(CertificateDer::from(block.into_contents())),
                other => return Err(invalid(format!("unexpected PEM block {other:?}"))),
            }
        }
        let key = key.ok_or_else(|| invalid("no PRIVATE KEY block".into()))?;
        let svid = X509Svid::new(chain, key).map_err(|e| invalid(e.to_string()))?;
        Ok(Some(svid))
    }

    /// Stores the agent SVID and its key, mode 0600.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Io`] when the file cannot be written.
    pub fn save_agent_svid(&self, svid: &X509Svid) -> Result<(), AgentError> {
        let mut text = Zeroizing::new(String::new());
        text.push_str(&svid.private_key().to_pkcs8_pem());
        for cert in svid.cert_chain() {
            text.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
        }
        let path = self.data_dir.join(AGENT_SVID_FILE);
        write_atomic(&path, text.as_bytes(), SECRET_FILE_MODE).map_err(|source| AgentError::Io {
            action: "write",
            path,
            source,
        })
    }

    /// Loads the stored bundle of `trust_domain`, or `None` when none is stored.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::InvalidStoredFile`] when the file is not a
    /// SPIFFE bundle.
    pub fn load_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<TrustBundle>, AgentError> {
        let path = self.data_dir.join(BUNDLE_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        TrustBundle::from_jwks(trust_domain, text.as_bytes())
            .map(Some)
            .map_err(|e| AgentError::InvalidStoredFile {
                path,
                reason: e.to_string(),
            })
    }

    /// Stores the trust bundle, mode 0644.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Io`] when the file cannot be written.
    pub fn save_bundle(&self, bundle: &TrustBundle) -> Result<(), AgentError> {
        let path = self.data_dir.join(BUNDLE_FILE);
        write_atomic(&path, &bundle.to_jwks(), PUBLIC_FILE_MODE).map_err(|source| AgentError::Io {
            action: "write",
            path,
            source,
        })
    }
}

fn read_optional(path: &Path) -> Result<Option<Zeroizing<String>>, AgentError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(Zeroizing::new(text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path` with `contents` so that readers see the old file or the
/// new one, never a mix, even after a crash. The data goes to a temporary
/// file created with `mode` in the same directory, which is flushed to disk
/// and renamed over `path`. Then the directory entry is flushed.
///
/// # Errors
///
/// Returns the I/O error of the first step that failed; the temporary file
/// is removed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));

    let result = write_then_rename(&temp, path, contents, mode);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    fs::File::open(dir)?.sync_all()
}

fn write_then_rename(temp: &Path, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)?;
    // The umask may have narrowed the mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.pem");

        write_atomic(&path, b"first", 0o600).expect("write");
        write_atomic(&path, b"second", 0o600).expect("replace");

        assert_eq!(fs::read(&path).expect("read"), b"second");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "secret.pem")
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn open_creates_directory_with_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("agent").join("data");
        let storage = Storage::open(&data_dir).expect("open");
        let mode = fs::metadata(storage.data_dir())
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o711);
    }

    #[test]
    fn missing_files_load_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open");
        let td = TrustDomain::new("example.org").expect("trust domain");
        assert!(storage.load_agent_svid().expect("load svid").is_none());
        assert!(storage.load_bundle(&td).expect("load bundle").is_none());
    }

    #[test]
    fn garbage_svid_file_is_invalid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open");
        fs::write(
            dir.path().join(AGENT_SVID_FILE),
            "-----BEGIN NOTHING-----\n",
        )
        .expect("write");
        let result = storage.load_agent_svid();
        assert!(
            matches!(result, Err(AgentError::InvalidStoredFile { .. })),
            "{result:?}"
        );
    }
}
