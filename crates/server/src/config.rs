//! Server configuration in two stages: [`RawConfig`] is the TOML file as
//! written (every key optional, unknown keys rejected), and
//! [`ServerConfig::resolve`] checks it, fills in defaults and reports every
//! invalid key in one error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_ca::{MAX_CA_TTL, MIN_CA_TTL};
use tessera_spiffe::{KeyAlgorithm, TrustDomain};

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

/// Longest SVID or join token lifetime: TTLs travel as 32-bit seconds in
/// the APIs.
const MAX_SVID_TTL: Duration = Duration::from_secs(i32::MAX as u64);

/// Longest path the kernel accepts for a Unix socket (`sun_path` is 108
/// bytes on Linux, including the terminating NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

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

/// The `[datastore]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatastoreConfig {
    /// Datastore URL, such as `sqlite:///var/lib/tessera/datastore.sqlite3`.
    pub url: Option<String>,
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
    /// Datastore URL. It may contain a password, so it is never logged.
    pub datastore_url: String,
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
        let jwt_issuer = resolve_jwt_issuer(raw.jwt_issuer, &mut errors);
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

        let datastore_url =
            resolve_datastore_url(raw.datastore.url, data_dir.as_deref(), &mut errors);

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
            datastore_url,
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
                Some(datastore_url),
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
                datastore_url,
            }),
            _ => Err(ConfigError::Invalid(errors)),
        }
    }
}

fn invalid(errors: &mut Vec<InvalidKey>, key: &str, value: Option<&str>, expected: &str) {
    errors.push(InvalidKey {
        key: key.to_owned(),
        value: value.map(str::to_owned),
        expected: expected.to_owned(),
    });
}

fn resolve_trust_domain(value: Option<&str>, errors: &mut Vec<InvalidKey>) -> Option<TrustDomain> {
    const EXPECTED: &str = "a trust domain name such as \"example.org\"";
    let Some(value) = value else {
        invalid(errors, "trust_domain", None, EXPECTED);
        return None;
    };
    match TrustDomain::new(value) {
        Ok(td) => Some(td),
        Err(e) => {
            invalid(
                errors,
                "trust_domain",
                Some(value),
                &format!("{EXPECTED} ({e})"),
            );
            None
        }
    }
}

fn resolve_data_dir(value: Option<&Path>, errors: &mut Vec<InvalidKey>) -> Option<PathBuf> {
    let Some(value) = value else {
        invalid(errors, "data_dir", None, "a directory path");
        return None;
    };
    if value.as_os_str().is_empty() {
        invalid(errors, "data_dir", Some(""), "a directory path");
        return None;
    }
    if value.to_str().is_none() {
        let shown = value.to_string_lossy();
        invalid(errors, "data_dir", Some(&shown), "a UTF-8 path");
        return None;
    }
    match std::path::absolute(value) {
        Ok(path) => Some(path),
        Err(e) => {
            let shown = value.display().to_string();
            invalid(
                errors,
                "data_dir",
                Some(&shown),
                &format!("a path that can be made absolute ({e})"),
            );
            None
        }
    }
}

fn resolve_bind_address(value: Option<&str>, errors: &mut Vec<InvalidKey>) -> Option<SocketAddr> {
    let value = value.unwrap_or(DEFAULT_BIND_ADDRESS);
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            invalid(
                errors,
                "bind_address",
                Some(value),
                "an IP address and port such as \"127.0.0.1:8081\" or \"[::1]:8081\"",
            );
            None
        }
    }
}

fn resolve_admin_socket(
    value: Option<PathBuf>,
    data_dir: Option<&Path>,
    errors: &mut Vec<InvalidKey>,
) -> Option<PathBuf> {
    let path = match value {
        Some(path) if path.as_os_str().is_empty() => {
            invalid(errors, "admin_socket", Some(""), "a socket file path");
            return None;
        }
        Some(path) => match std::path::absolute(&path) {
            Ok(path) => path,
            Err(e) => {
                let shown = path.display().to_string();
                invalid(
                    errors,
                    "admin_socket",
                    Some(&shown),
                    &format!("an absolute path ({e})"),
                );
                return None;
            }
        },
        None => data_dir?.join("admin.sock"),
    };
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        let shown = path.display().to_string();
        let expected = format!(
            "a socket path of at most {MAX_SOCKET_PATH_BYTES} bytes (this one has {len}); \
             set admin_socket or use a shorter data_dir"
        );
        invalid(errors, "admin_socket", Some(&shown), &expected);
        return None;
    }
    Some(path)
}

fn resolve_log_level(value: Option<&str>, errors: &mut Vec<InvalidKey>) -> Option<String> {
    let value = value.unwrap_or("info");
    let lower = value.to_ascii_lowercase();
    if LOG_LEVELS.contains(&lower.as_str()) {
        return Some(lower);
    }
    invalid(
        errors,
        "log_level",
        Some(value),
        "one of trace, debug, info, warn, error",
    );
    None
}

fn resolve_jwt_issuer(value: Option<String>, errors: &mut Vec<InvalidKey>) -> Option<String> {
    let value = value?;
    if value.trim().is_empty() {
        invalid(
            errors,
            "jwt_issuer",
            Some(&value),
            "a non-empty issuer such as \"https://oidc.example.org\"",
        );
        return None;
    }
    Some(value)
}

fn resolve_key_type(value: Option<&str>, errors: &mut Vec<InvalidKey>) -> Option<KeyAlgorithm> {
    let Some(value) = value else {
        return Some(KeyAlgorithm::default());
    };
    match value.parse() {
        Ok(alg) => Some(alg),
        Err(_) => {
            invalid(
                errors,
                "ca.key_type",
                Some(value),
                "one of ec-p256, ec-p384, rsa-2048, rsa-4096",
            );
            None
        }
    }
}

fn resolve_key_storage(
    value: Option<&str>,
    errors: &mut Vec<InvalidKey>,
) -> Option<KeyStorageKind> {
    match value {
        None | Some("disk") => Some(KeyStorageKind::Disk),
        Some("memory") => Some(KeyStorageKind::Memory),
        Some(other) => {
            invalid(
                errors,
                "ca.key_storage",
                Some(other),
                "\"disk\" or \"memory\"",
            );
            None
        }
    }
}

fn resolve_duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    errors: &mut Vec<InvalidKey>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(default);
    };
    let (min, max) = if key == "ca.ttl" {
        (MIN_CA_TTL, MAX_CA_TTL)
    } else {
        (Duration::from_secs(1), MAX_SVID_TTL)
    };
    match humantime::parse_duration(value) {
        Ok(d) if d.subsec_nanos() != 0 => {
            invalid(
                errors,
                key,
                Some(value),
                "a whole number of seconds, such as \"90s\"",
            );
            None
        }
        Ok(d) if d < min || d > max => {
            let expected = format!(
                "a duration from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            );
            invalid(errors, key, Some(value), &expected);
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            let expected = format!("a duration such as \"90s\", \"5m\", \"1h\" or \"24h\" ({e})");
            invalid(errors, key, Some(value), &expected);
            None
        }
    }
}

fn check_svid_ttls(
    raw: &RawSvidConfig,
    ca_ttl: Duration,
    x509_ttl: Duration,
    jwt_ttl: Duration,
    errors: &mut Vec<InvalidKey>,
) {
    let ca_shown = humantime::format_duration(ca_ttl).to_string();
    if x509_ttl >= ca_ttl {
        let shown = raw
            .x509_ttl
            .clone()
            .unwrap_or_else(|| humantime::format_duration(x509_ttl).to_string());
        let expected = format!("a duration shorter than ca.ttl ({ca_shown})");
        invalid(errors, "svid.x509_ttl", Some(&shown), &expected);
    }
    if jwt_ttl >= ca_ttl {
        let shown = raw
            .jwt_ttl
            .clone()
            .unwrap_or_else(|| humantime::format_duration(jwt_ttl).to_string());
        let expected = format!("a duration shorter than ca.ttl ({ca_shown})");
        invalid(errors, "svid.jwt_ttl", Some(&shown), &expected);
    }
}

fn resolve_datastore_url(
    value: Option<String>,
    data_dir: Option<&Path>,
    errors: &mut Vec<InvalidKey>,
) -> Option<String> {
    const SCHEMES: [&str; 4] = ["sqlite:", "postgres://", "postgresql://", "mysql://"];
    let Some(url) = value else {
        let path = data_dir?.join("datastore.sqlite3");
        return Some(format!("sqlite://{}", path.display()));
    };
    if SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        return Some(url);
    }
    // The URL may contain a password, so only its scheme is shown.
    let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
    invalid(
        errors,
        "datastore.url",
        Some(&format!("<URL with scheme {scheme}>")),
        "a URL starting with sqlite:, postgres://, postgresql:// or mysql://",
    );
    None
}

#[cfg(test)]
mod tests;
