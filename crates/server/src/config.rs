//! Server configuration in two stages: [`RawConfig`] is the TOML file as
//! written (every key optional, unknown keys rejected), and
//! [`ServerConfig::resolve`] checks it, fills in defaults and reports every
//! invalid key in one error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_spiffe::{KeyAlgorithm, TrustDomain};
use tessera_store::StoreOptions;

pub use crate::federation::config::{
    BundleEndpointConfig, EndpointProfile, FederationConfig, OidcConfig, RawBundleEndpointConfig,
    RawFederationConfig, RawOidcConfig, WebCertificatePaths,
};
use crate::federation::config::{resolve_federation, resolve_oidc};

pub use datastore::RawDatastoreConfig;
use datastore::resolve_datastore;
use keys::{
    check_svid_ttls, resolve_admin_socket, resolve_bind_address, resolve_data_dir,
    resolve_duration, resolve_jwt_issuer, resolve_key_storage, resolve_key_type, resolve_log_level,
    resolve_trust_domain,
};

/// Default address of the agent API.
pub const DEFAULT_BIND_ADDRESS: &str = "127.0.0.1:8081";
/// Default lifetime of a CA certificate.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default lifetime of an X.509-SVID.
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(60 * 60);
/// Default lifetime of a JWT-SVID.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(5 * 60);
/// Default lifetime of a join token.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

/// Error returned when the configuration cannot be read, parsed or resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("failed to read configuration file {path}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the
    /// wrong type.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// Path of the file, or `<string>` when parsed from a string.
        path: PathBuf,
        /// The TOML parser's message, with the line and column.
        message: String,
    },
    /// One or more keys have invalid values.
    #[error("invalid server configuration:{}", list_keys(.0))]
    Invalid(Vec<InvalidKey>),
}

/// One invalid key found by [`ServerConfig::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    /// Dotted key name, such as `ca.ttl`.
    pub key: String,
    /// The value as written, or `None` when a required key is missing.
    pub value: Option<String>,
    /// Description of the values the key accepts.
    pub expected: String,
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "`{}` = {value:?}: expected {}", self.key, self.expected),
            None => write!(f, "`{}` is missing: expected {}", self.key, self.expected),
        }
    }
}

fn list_keys(keys: &[InvalidKey]) -> String {
    keys.iter().map(|k| format!("\n  - {k}")).collect()
}

/// The configuration file as written. Every key is optional here, so that
/// the CLI can apply command-line flags on top before resolving.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Trust domain name, such as `example.org`. Required.
    pub trust_domain: Option<String>,
    /// Directory for the datastore, keys, admin socket and bundle. Required.
    pub data_dir: Option<PathBuf>,
    /// Address of the agent API (`IP:port`); port 0 picks a free port.
    pub bind_address: Option<String>,
    /// Path of the admin API Unix socket.
    pub admin_socket: Option<PathBuf>,
    /// Log level: trace, debug, info, warn or error.
    pub log_level: Option<String>,
    /// `iss` claim of JWT-SVIDs; no `iss` claim when unset.
    pub jwt_issuer: Option<String>,
    /// The `[ca]` table.
    #[serde(default)]
    pub ca: RawCaConfig,
    /// The `[svid]` table.
    #[serde(default)]
    pub svid: RawSvidConfig,
    /// The `[join_token]` table.
    #[serde(default)]
    pub join_token: RawJoinTokenConfig,
    /// The `[datastore]` table.
    #[serde(default)]
    pub datastore: RawDatastoreConfig,
    /// The `[federation]` table.
    #[serde(default)]
    pub federation: RawFederationConfig,
    /// The `[oidc]` table; no OIDC discovery endpoint when absent.
    pub oidc: Option<RawOidcConfig>,
}

/// The `[ca]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaConfig {
    /// Key algorithm: ec-p256, ec-p384, rsa-2048 or rsa-4096.
    pub key_type: Option<String>,
    /// Lifetime of each CA certificate, such as `24h`.
    pub ttl: Option<String>,
    /// Key storage of the CA: `disk` (under `<data_dir>/keys`) or `memory`.
    pub key_storage: Option<String>,
}

/// The `[svid]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSvidConfig {
    /// Default X.509-SVID lifetime, such as `1h`.
    pub x509_ttl: Option<String>,
    /// Default JWT-SVID lifetime, such as `5m`.
    pub jwt_ttl: Option<String>,
}

/// The `[join_token]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJoinTokenConfig {
    /// Default join token lifetime, such as `10m`.
    pub ttl: Option<String>,
}

impl RawConfig {
    /// Reads and parses a TOML configuration file.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Read`] when the file cannot be read and
    /// [`ConfigError::Parse`] when it is not valid TOML, has an unknown key or
    /// a value of the wrong type.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_toml(&text, path)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Parse`] as [`RawConfig::from_file`] does.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse_toml(text, Path::new("<string>"))
    }

    fn parse_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Storage of the CA's private keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStorageKind {
    /// PKCS#8 files under `<data_dir>/keys`, kept across restarts.
    Disk,
    /// In memory only: a restart makes a new CA.
    Memory,
}

/// The checked server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// Absolute data directory.
    pub data_dir: PathBuf,
    /// Agent API address. With port 0 the server picks a free port and
    /// writes the bound address to `<data_dir>/agent_api.addr`.
    pub bind_address: SocketAddr,
    /// Admin API socket path.
    pub admin_socket: PathBuf,
    /// Log level name, one of trace, debug, info, warn, error. The server
    /// does not install a subscriber; the binary does.
    pub log_level: String,
    /// `iss` claim of JWT-SVIDs.
    pub jwt_issuer: Option<String>,
    /// CA key algorithm.
    pub ca_key_type: KeyAlgorithm,
    /// Lifetime of each CA certificate.
    pub ca_ttl: Duration,
    /// Storage of the CA's private keys.
    pub ca_key_storage: KeyStorageKind,
    /// Default X.509-SVID lifetime.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
    /// Default join token lifetime.
    pub join_token_ttl: Duration,
    /// Datastore URL, pool and TLS settings. The URL may contain a
    /// password, so `Debug` and the logs show it masked.
    pub datastore: StoreOptions,
    /// Bundle endpoint and federation settings.
    pub federation: FederationConfig,
    /// OIDC discovery endpoint, if any.
    pub oidc: Option<OidcConfig>,
}

impl ServerConfig {
    /// Checks `raw`, fills in defaults and returns the resolved settings.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Invalid`] listing every invalid or missing key.
    pub fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();

        let trust_domain = resolve_trust_domain(raw.trust_domain.as_deref(), &mut errors);
        let data_dir = resolve_data_dir(raw.data_dir.as_deref(), &mut errors);
        let bind_address = resolve_bind_address(raw.bind_address.as_deref(), &mut errors);
        let admin_socket = resolve_admin_socket(raw.admin_socket, data_dir.as_deref(), &mut errors);
        let log_level = resolve_log_level(raw.log_level.as_deref(), &mut errors);
        let federation = resolve_federation(raw.federation, &mut errors);
        let oidc = resolve_oidc(raw.oidc, &mut errors);
        let jwt_issuer = resolve_jwt_issuer(raw.jwt_issuer, &mut errors)
            .or_else(|| oidc.as_ref().map(|oidc| oidc.issuer.clone()));
        let ca_key_type = resolve_key_type(raw.ca.key_type.as_deref(), &mut errors);
        let ca_key_storage = resolve_key_storage(raw.ca.key_storage.as_deref(), &mut errors);

        let ca_ttl = resolve_duration("ca.ttl", raw.ca.ttl.as_deref(), DEFAULT_CA_TTL, &mut errors);
        let x509_svid_ttl = resolve_duration(
            "svid.x509_ttl",
            raw.svid.x509_ttl.as_deref(),
            DEFAULT_X509_SVID_TTL,
            &mut errors,
        );
        let jwt_svid_ttl = resolve_duration(
            "svid.jwt_ttl",
            raw.svid.jwt_ttl.as_deref(),
            DEFAULT_JWT_SVID_TTL,
            &mut errors,
        );
        let join_token_ttl = resolve_duration(
            "join_token.ttl",
            raw.join_token.ttl.as_deref(),
            DEFAULT_JOIN_TOKEN_TTL,
            &mut errors,
        );
        if let (Some(ca), Some(x509), Some(jwt)) = (ca_ttl, x509_svid_ttl, jwt_svid_ttl) {
            check_svid_ttls(&raw.svid, ca, x509, jwt, &mut errors);
        }

        let datastore = resolve_datastore(raw.datastore, data_dir.as_deref(), &mut errors);

        match (
            trust_domain,
            data_dir,
            bind_address,
            admin_socket,
            log_level,
            ca_key_type,
            ca_key_storage,
            ca_ttl,
            x509_svid_ttl,
            jwt_svid_ttl,
            join_token_ttl,
            datastore,
        ) {
            (
                Some(trust_domain),
                Some(data_dir),
                Some(bind_address),
                Some(admin_socket),
                Some(log_level),
                Some(ca_key_type),
                Some(ca_key_storage),
                Some(ca_ttl),
                Some(x509_svid_ttl),
                Some(jwt_svid_ttl),
                Some(join_token_ttl),
                Some(datastore),
            ) if errors.is_empty() => Ok(Self {
                trust_domain,
                data_dir,
                bind_address,
                admin_socket,
                log_level,
                jwt_issuer,
                ca_key_type,
                ca_ttl,
                ca_key_storage,
                x509_svid_ttl,
                jwt_svid_ttl,
                join_token_ttl,
                datastore,
                federation,
                oidc,
            }),
            _ => Err(ConfigError::Invalid(errors)),
        }
    }
}

mod datastore;
mod keys;
#[cfg(test)]
mod tests;
