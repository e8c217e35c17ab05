//! Storage in a key directory: private keys as PKCS#8 PEM files created with
//! mode 0600, certificates and JWT public keys as PEM, and `state.json`
//! naming the authority of each slot. Every file is replaced atomically
//! (temporary file, fsync, rename, fsync of the directory). Files named like
//! authority files that the state does not name are removed.
//!
//! NOTE: nothing locks the directory, so two servers configured with the same
//! key directory would overwrite each other's state.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use tessera_spiffe::id::TrustDomain;
use tessera_spiffe::key::PrivateKey;
use zeroize::Zeroizing;

use super::Loaded;
use crate::authority::{PublishedAuthority, SigningAuthority};
use crate::error::CaError;
use crate::state::{AuthorityRecord, StateFile, is_authority_id};

const STATE_FILE: &str = "state.json";

/// Mode of private key files: readable by the owner only.
const KEY_MODE: u32 = 0o600;

/// Mode of certificates, public keys and the state file.
const PUBLIC_MODE: u32 = 0o644;

/// Mode of the key directory, created if missing.
const DIR_MODE: u32 = 0o700;

/// The files of one authority, named `<authority id>.<suffix>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthorityFile {
    CaKey,
    CaCertificate,
    JwtKey,
    JwtPublicKey,
}

impl AuthorityFile {
    const ALL: [Self; 4] = [
        Self::CaKey,
        Self::CaCertificate,
        Self::JwtKey,
        Self::JwtPublicKey,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Self::CaKey => "ca.key.pem",
            Self::CaCertificate => "ca.cert.pem",
            Self::JwtKey => "jwt.key.pem",
            Self::JwtPublicKey => "jwt.pub.pem",
        }
    }

    fn is_private(self) -> bool {
        matches!(self, Self::CaKey | Self::JwtKey)
    }

    fn name(self, id: &str) -> String {
        format!("{id}.{}", self.suffix())
    }

    /// Splits a file name into the authority id and the file kind.
    fn parse(name: &str) -> Option<(&str, Self)> {
        let (id, suffix) = name.split_once('.')?;
        let kind = Self::ALL.into_iter().find(|k| k.suffix() == suffix)?;
        is_authority_id(id).then_some((id, kind))
    }
}

/// A key directory.
#[derive(Debug)]
pub(crate) struct DiskStorage {
    dir: PathBuf,
}

impl DiskStorage {
    /// Opens `dir`, creating it with mode 0700 if it does not exist.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_error("create the key directory", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Loads the stored authorities, or returns `None` for a directory without a CA.
    pub fn load(&self, trust_domain: &TrustDomain) -> Result<Option<Loaded>, CaError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.check_no_authority_files().map(|()| None);
            }
            Err(e) => return Err(io_error("read", &path)(e)),
        };

        let state: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(&path, e.to_string()))?;
        state
            .check()
            .map_err(|reason| self.corrupt(&path, reason))?;
        if state.trust_domain != trust_domain.name() {
            return Err(CaError::TrustDomainMismatch {
                dir: self.dir.clone(),
                stored: state.trust_domain,
                configured: trust_domain.clone(),
            });
        }

        let active = self.load_signing(trust_domain, &state.active)?;
        let prepared = match &state.prepared {
            Some(record) => Some(self.load_signing(trust_domain, record)?),
            None => None,
        };
        let retired = state
            .retired
            .iter()
            .map(|record| self.load_published(trust_domain, record))
            .collect::<Result<Vec<_>, _>>()?;

        self.remove_stale_files(&state);
        Ok(Some(Loaded {
            state,
            active,
            prepared,
            retired,
        }))
    }

    /// Writes the files of the `created` authorities, then `state`, then removes
    /// the files that `state` no longer needs.
    pub fn commit(&self, state: &StateFile, created: &[&SigningAuthority]) -> Result<(), CaError> {
        for authority in created {
            self.write_authority(authority)?;
        }
        if !created.is_empty() {
            self.sync_dir()?;
        }

        let json = encode_state(state);
        self.write_file(STATE_FILE, &json, PUBLIC_MODE)?;
        self.sync_dir()?;

        self.remove_stale_files(state);
        Ok(())
    }

    fn write_authority(&self, authority: &SigningAuthority) -> Result<(), CaError> {
        let published = authority.published();
        let id = &published.id;
        let certificate = pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            published.certificate.to_vec(),
        ));
        let jwt_public = pem::encode(&pem::Pem::new(
            "PUBLIC KEY",
            published.jwt_public_key.clone(),
        ));

        let ca_key = authority.ca_key().to_pkcs8_pem();
        let jwt_key = authority.jwt_key().to_pkcs8_pem();

        let files: [(AuthorityFile, &[u8]); 4] = [
            (AuthorityFile::CaKey, ca_key.as_bytes()),
            (AuthorityFile::CaCertificate, certificate.as_bytes()),
            (AuthorityFile::JwtKey, jwt_key.as_bytes()),
            (AuthorityFile::JwtPublicKey, jwt_public.as_bytes()),
        ];
        for (kind, contents) in files {
            let mode = if kind.is_private() {
                KEY_MODE
            } else {
                PUBLIC_MODE
            };
            self.write_file(&kind.name(id), contents, mode)?;
        }
        Ok(())
    }

    /// Replaces `name` with `contents`: a temporary file created with `mode`,
    /// fsynced, then renamed over the target. The caller fsyncs the directory.
    fn write_file(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), CaError> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(
            ".{name}.{}.tmp",
            hex::encode(rand::random::<[u8; 6]>())
        ));

        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&temporary)
                .map_err(io_error("create", &temporary))?;
            file.write_all(contents)
                .map_err(io_error("write", &temporary))?;
            file.sync_all().map_err(io_error("fsync", &temporary))?;
            fs::rename(&temporary, &path).map_err(io_error("replace", &path))
        })();

        if written.is_err() {
            // The temporary file is useless after a failure; a leftover one is
            // also removed on the next load.
            let _ = fs::remove_file(&temporary);
        }
        written
    }

    fn sync_dir(&self) -> Result<(), CaError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }

    fn load_published(
        &self,
        trust_domain: &TrustDomain,
        record: &AuthorityRecord,
    ) -> Result<PublishedAuthority, CaError> {
        let certificate_path = self.path(AuthorityFile::CaCertificate, &record.id);
        let certificate = self.read_pem(&certificate_path, "CERTIFICATE")?;
        let jwt_public_key = self.read_pem(
            &self.path(AuthorityFile::JwtPublicKey, &record.id),
            "PUBLIC KEY",
        )?;

        PublishedAuthority::from_parts(
            trust_domain,
            record,
            CertificateDer::from(certificate),
            jwt_public_key,
        )
        .map_err(|reason| self.corrupt(&certificate_path, reason))
    }

    fn load_signing(
        &self,
        trust_domain: &TrustDomain,
        record: &AuthorityRecord,
    ) -> Result<SigningAuthority, CaError> {
        let published = self.load_published(trust_domain, record)?;

        let jwt_key_path = self.path(AuthorityFile::JwtKey, &record.id);
        let jwt_key = self.read_private_key(&jwt_key_path)?;
        if jwt_key.public_key_der() != published.jwt_public_key {
            let reason = "the key does not match the JWT public key".to_string();
            return Err(self.corrupt(&jwt_key_path, reason));
        }

        let ca_key_path = self.path(AuthorityFile::CaKey, &record.id);
        let ca_key = self.read_private_key(&ca_key_path)?;
        SigningAuthority::from_parts(published, ca_key, jwt_key)
            .map_err(|reason| self.corrupt(&ca_key_path, reason))
    }

    fn read_pem(&self, path: &Path, tag: &str) -> Result<Vec<u8>, CaError> {
        let text = self.read_to_string(path)?;
        let block = pem::parse(text.as_bytes()).map_err(|e| self.corrupt(path, e.to_string()))?;
        if block.tag() != tag {
            let reason = format!("expected a PEM {tag} block, found {}", block.tag());
            return Err(self.corrupt(path, reason));
        }
        Ok(block.into_contents())
    }

    fn read_private_key(&self, path: &Path) -> Result<PrivateKey, CaError> {
        let text = Zeroizing::new(self.read_to_string(path)?);
        warn_if_readable_by_others(path);
        PrivateKey::from_pkcs8_pem(&text).map_err(|e| self.corrupt(path, e.to_string()))
    }

    fn read_to_string(&self, path: &Path) -> Result<String, CaError> {
        fs::read_to_string(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CaError::MissingFile {
                path: path.to_path_buf(),
                dir: self.dir.clone(),
            },
            _ => io_error("read", path)(e),
        })
    }

    /// Fails when the directory contains authority files but no state file.
    /// Creating a new CA there would silently replace one whose state file was lost.
    fn check_no_authority_files(&self) -> Result<(), CaError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            if AuthorityFile::parse(&entry.file_name().to_string_lossy()).is_some() {
                return Err(CaError::MissingFile {
                    path: self.dir.join(STATE_FILE),
                    dir: self.dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// Removes temporary files, files of authorities `state` does not name, and
    /// private keys of retired authorities. Failures are logged, not returned,
    /// because the state is already durable.
    fn remove_stale_files(&self, state: &StateFile) {
        let named: BTreeSet<&str> = state.all().map(|r| r.id.as_str()).collect();
        let signing: BTreeSet<&str> = state.signing().map(|r| r.id.as_str()).collect();

        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                let dir = self.dir.display();
                tracing::warn!(%dir, %error, "failed to list the key directory");
                return;
            }
        };

        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = match AuthorityFile::parse(&name) {
                Some((id, kind)) => {
                    !named.contains(id) || (kind.is_private() && !signing.contains(id))
                }
                None => name.starts_with('.') && name.ends_with(".tmp"),
            };
            if !stale {
                continue;
            }

            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed stale CA file"),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "failed to remove stale CA file")
                }
            }
        }
    }

    fn path(&self, kind: AuthorityFile, id: &str) -> PathBuf {
        self.dir.join(kind.name(id))
    }

    fn corrupt(&self, path: &Path, reason: String) -> CaError {
        CaError::CorruptFile {
            path: path.to_path_buf(),
            dir: self.dir.clone(),
            reason,
        }
    }
}

#[expect(
    clippy::expect_used,
    reason = "the state has only strings, integers and lists, which JSON always encodes"
)]
fn encode_state(state: &StateFile) -> Vec<u8> {
    serde_json::to_vec_pretty(state).expect("the state file encodes as JSON")
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "private key file is accessible to group or others; run chmod 600"
            );
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CaError + 'a {
    move |source| CaError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
