//! Agent configuration in two stages: [`RawConfig`] is the TOML file as
//! written (every key optional, public for command-line overrides), and
//! [`AgentConfig::resolve`] checks it into settings, reporting every
//! invalid key at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_spiffe::TrustDomain;
use zeroize::Zeroizing;

use crate::retry::RetryPolicy;

/// Default address of the server's agent API.
pub const DEFAULT_SERVER_ADDRESS: &str = "127.0.0.1:8081";

/// Default time a Workload API caller waits for SVIDs that the agent has
/// not received from the server yet.
pub const DEFAULT_SVID_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Error returned when the configuration cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("failed to read agent configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid agent configuration {path}: {message}")]
    Parse {
        /// The file, or `<string>` for text parsed directly.
        path: PathBuf,
        /// The TOML parser's message, which names the key and line.
        message: String,
    },
    /// One or more keys have invalid values; every one is listed.
    #[error("invalid agent configuration:{}", format_problems(.0))]
    Invalid(Vec<InvalidKey>),
}

/// One invalid configuration key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    /// The key, such as `trust_domain` or `retry.max_backoff`.
    pub key: &'static str,
    /// The problem and how to fix it.
    pub message: String,
}

fn format_problems(problems: &[InvalidKey]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  {}: {}", p.key, p.message))
        .collect()
}

/// The agent's TOML configuration as written, before any check.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Trust domain name, such as `example.org`.
    pub trust_domain: Option<String>,
    /// Address of the server's agent API, `host:port`. Shorthand for a
    /// `server_addresses` list of one; setting both is an error.
    pub server_address: Option<String>,
    /// Addresses of several servers of the trust domain that share one
    /// database. The agent uses the first that accepts a connection.
    pub server_addresses: Option<Vec<String>>,
    /// Directory for the agent SVID, its key and the trust bundle.
    pub data_dir: Option<PathBuf>,
    /// Path of the Workload API socket.
    pub socket_path: Option<PathBuf>,
    /// Join token for the first node attestation.
    pub join_token: Option<String>,
    /// PEM file with the server's CA certificates, for the first attestation.
    pub trust_bundle_path: Option<PathBuf>,
    /// Trust any server certificate on the first attestation.
    pub insecure_bootstrap: Option<bool>,
    /// Log level: `trace`, `debug`, `info`, `warn` or `error`.
    pub log_level: Option<String>,
    /// The `[workload]` table.
    #[serde(default)]
    pub workload: RawWorkloadConfig,
    /// The `[retry]` table.
    #[serde(default)]
    pub retry: RawRetryConfig,
}

/// The `[workload]` table: Workload API settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkloadConfig {
    /// How long a caller waits for SVIDs not yet signed, such as `"10s"`.
    pub svid_wait_timeout: Option<String>,
}

/// The `[retry]` table: backoff for calls to the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryConfig {
    /// Delay before the first retry, such as `"500ms"`.
    pub initial_backoff: Option<String>,
    /// Ceiling on the delay between retries, such as `"30s"`.
    pub max_backoff: Option<String>,
}

impl fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConfig")
            .field("trust_domain", &self.trust_domain)
            .field("server_address", &self.server_address)
            .field("server_addresses", &self.server_addresses)
            .field("data_dir", &self.data_dir)
            .field("socket_path", &self.socket_path)
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field("trust_bundle_path", &self.trust_bundle_path)
            .field("insecure_bootstrap", &self.insecure_bootstrap)
            .field("log_level", &self.log_level)
            .field("workload", &self.workload)
            .field("retry", &self.retry)
            .finish()
    }
}

impl RawConfig {
    /// Reads and parses a TOML configuration file.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Parse`] for invalid TOML, unknown keys or
    /// values of the wrong type.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<string>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// A join token, a single-use secret. `Debug` does not print it, and the
/// memory is zeroized on drop.
#[derive(Clone)]
pub struct JoinToken(Zeroizing<String>);

impl JoinToken {
    /// Returns the token text, for the attestation request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// A `host:port` address of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP address, without brackets for IPv6.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddress {
    /// Parses `host:port`, with IPv6 hosts in brackets (`[::1]:8081`).
    ///
    /// # Errors
    ///
    /// Returns a message saying what is missing or invalid.
    pub fn parse(s: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid address {s:?}: expected host:port, such as 127.0.0.1:8081");
        let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.strip_suffix(']').ok_or_else(invalid)?,
            None if host.contains(':') => return Err(invalid()),
            None => host,
        };
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if host.is_empty() || port == 0 {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Checked agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The trust domain the agent and its workloads belong to.
    pub trust_domain: TrustDomain,
    /// The agent API addresses of the trust domain's servers, in the order
    /// the agent tries them; never empty.
    pub server_addresses: Vec<ServerAddress>,
    /// Directory for the agent SVID, its key and the trust bundle.
    pub data_dir: PathBuf,
    /// Path of the Workload API socket; its directory is made mode 0755.
    pub socket_path: PathBuf,
    /// Join token; needed only when no valid agent SVID is stored.
    pub join_token: Option<JoinToken>,
    /// PEM bundle that the server's certificate must chain to on the first
    /// attestation.
    pub trust_bundle_path: Option<PathBuf>,
    /// Whether the first attestation trusts any server certificate.
    pub insecure_bootstrap: bool,
    /// Log level for the binary's subscriber.
    pub log_level: tracing::Level,
    /// How long a Workload API caller waits for SVIDs not yet signed.
    pub svid_wait_timeout: Duration,
    /// Backoff for calls to the server.
    pub retry: RetryPolicy,
}

impl AgentConfig {
    /// Checks `raw` and fills in defaults.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Invalid`] listing every invalid or missing key.
    pub fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut report = |key: &'static str, message: String| {
            problems.push(InvalidKey { key, message });
        };

        let trust_domain = match raw.trust_domain.as_deref() {
            None => {
                report(
                    "trust_domain",
                    "missing; set it to the trust domain name, such as example.org".into(),
                );
                None
            }
            Some(name) => TrustDomain::new(name)
                .map_err(|e| report("trust_domain", e.to_string()))
                .ok(),
        };

        let server_addresses = resolve_server_addresses(&raw, &mut report);

        let data_dir = raw.data_dir.clone().filter(|d| !d.as_os_str().is_empty());
        if data_dir.is_none() {
            report("data_dir", "missing; set it to a directory the agent may write, such as /var/lib/tessera/agent".into());
        }
        let socket_path = raw.socket_path.clone().or_else(|| {
            data_dir
                .as_ref()
                .map(|dir| dir.join("public").join("api.sock"))
        });

        let join_token = match raw.join_token.as_deref() {
            Some("") => {
                report(
                    "join_token",
                    "empty; remove the key or set it to a token from `tessera token generate`"
                        .into(),
                );
                None
            }
            Some(token) => Some(JoinToken(Zeroizing::new(token.to_owned()))),
            None => None,
        };

        let insecure_bootstrap = raw.insecure_bootstrap.unwrap_or(false);
        if insecure_bootstrap && raw.trust_bundle_path.is_some() {
            report(
                "insecure_bootstrap",
                "true while trust_bundle_path is set; remove one of the two".into(),
            );
        }

        let log_level = parse_log_level(raw.log_level.as_deref().unwrap_or("info"))
            .map_err(|message| report("log_level", message))
            .ok();

        let svid_wait_timeout = parse_duration_key(
            raw.workload.svid_wait_timeout.as_deref(),
            DEFAULT_SVID_WAIT_TIMEOUT,
        )
        .map_err(|message| report("workload.svid_wait_timeout", message))
        .ok();

        let default_retry = RetryPolicy::default();
        let initial_backoff = parse_duration_key(
            raw.retry.initial_backoff.as_deref(),
            default_retry.initial_delay,
        )
        .map_err(|message| report("retry.initial_backoff", message))
        .ok();
        let max_backoff =
            parse_duration_key(raw.retry.max_backoff.as_deref(), default_retry.max_delay)
                .map_err(|message| report("retry.max_backoff", message))
                .ok();
        if let (Some(initial), Some(max)) = (initial_backoff, max_backoff)
            && initial > max
        {
            report(
                "retry.max_backoff",
                format!(
                    "{} is less than retry.initial_backoff {}; raise it",
                    humantime::format_duration(max),
                    humantime::format_duration(initial)
                ),
            );
        }

        match (
            trust_domain,
            server_addresses,
            data_dir,
            socket_path,
            log_level,
            svid_wait_timeout,
            initial_backoff,
            max_backoff,
        ) {
            (
                Some(trust_domain),
                Some(server_addresses),
                Some(data_dir),
                Some(socket_path),
                Some(log_level),
                Some(svid_wait_timeout),
                Some(initial_delay),
                Some(max_delay),
            ) if problems.is_empty() => Ok(Self {
                trust_domain,
                server_addresses,
                data_dir,
                socket_path,
                join_token,
                trust_bundle_path: raw.trust_bundle_path,
                insecure_bootstrap,
                log_level,
                svid_wait_timeout,
                retry: RetryPolicy {
                    initial_delay,
                    max_delay,
                },
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

fn parse_log_level(level: &str) -> Result<tracing::Level, String> {
    level.parse().map_err(|_| {
        format!("invalid log level {level:?}: expected trace, debug, info, warn or error")
    })
}

fn parse_duration_key(value: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    let duration = humantime::parse_duration(value)
        .map_err(|e| format!("invalid duration {value:?} ({e}): expected a value such as \"500ms\", \"30s\" or \"5m\""))?;
    if duration.is_zero() {
        return Err(format!(
            "duration {value:?} is zero; set a positive duration"
        ));
    }
    Ok(duration)
}

/// Resolves `server_addresses`, or `server_address` as a list of one, or
/// the default address when neither is set.
fn resolve_server_addresses(
    raw: &RawConfig,
    report: &mut impl FnMut(&'static str, String),
) -> Option<Vec<ServerAddress>> {
    match (&raw.server_address, &raw.server_addresses) {
        (Some(_), Some(_)) => {
            report(
                "server_addresses",
                "set together with server_address; keep only one of the two".into(),
            );
            None
        }
        (None, Some(list)) if list.is_empty() => {
            report(
                "server_addresses",
                "empty; list at least one host:port, such as [\"127.0.0.1:8081\"]".into(),
            );
            None
        }
        (None, Some(list)) => {
            let parsed: Result<Vec<_>, _> = list.iter().map(|a| ServerAddress::parse(a)).collect();
            parsed
                .map_err(|message| report("server_addresses", message))
                .ok()
        }
        (single, None) => {
            let address = single.as_deref().unwrap_or(DEFAULT_SERVER_ADDRESS);
            ServerAddress::parse(address)
                .map(|address| vec![address])
                .map_err(|message| report("server_address", message))
                .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> RawConfig {
        RawConfig {
            trust_domain: Some("example.org".into()),
            data_dir: Some(PathBuf::from("/var/lib/tessera/agent")),
            ..RawConfig::default()
        }
    }

    fn invalid_keys(raw: RawConfig) -> Vec<&'static str> {
        match AgentConfig::resolve(raw) {
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.key).collect(),
            other => panic!("expected invalid keys, got {other:?}"),
        }
    }

    #[test]
    fn example_file_parses_and_resolves() {
        let raw = RawConfig::from_toml(include_str!("../agent.example.toml")).expect("parse");
        let config = AgentConfig::resolve(raw).expect("resolve");
        assert_eq!(config.trust_domain.name(), "example.org");
        assert_eq!(config.server_addresses[0].to_string(), "127.0.0.1:8081");
        assert!(config.join_token.is_some());
    }

    #[test]
    fn resolve_fills_defaults() {
        let config = AgentConfig::resolve(minimal()).expect("resolve");
        assert_eq!(
            config.server_addresses[0].to_string(),
            DEFAULT_SERVER_ADDRESS
        );
        assert_eq!(
            config.socket_path,
            PathBuf::from("/var/lib/tessera/agent/public/api.sock")
        );
        assert_eq!(config.log_level, tracing::Level::INFO);
        assert_eq!(config.svid_wait_timeout, DEFAULT_SVID_WAIT_TIMEOUT);
        assert_eq!(config.retry, RetryPolicy::default());
        assert!(!config.insecure_bootstrap);
        assert!(config.join_token.is_none());
    }

    #[test]
    fn resolve_server_addresses_list() {
        let raw = RawConfig {
            server_addresses: Some(vec!["127.0.0.1:8081".into(), "[::1]:8082".into()]),
            ..minimal()
        };
        let config = AgentConfig::resolve(raw).expect("resolve");
        let addresses: Vec<String> = config
            .server_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addresses, ["127.0.0.1:8081", "[::1]:8082"]);
    }

    #[test]
    fn resolve_server_addresses_invalid_cases() {
        let cases = [
            (Some("127.0.0.1:8081"), Some(vec!["127.0.0.1:8082"])),
            (None, Some(vec![])),
            (None, Some(vec!["127.0.0.1:8081", "no-port"])),
        ];
        for (single, list) in cases {
            let raw = RawConfig {
                server_address: single.map(str::to_owned),
                server_addresses: list
                    .clone()
                    .map(|list| list.into_iter().map(str::to_owned).collect()),
                ..minimal()
            };
            assert_eq!(
                invalid_keys(raw),
                ["server_addresses"],
                "server_address {single:?}, server_addresses {list:?}"
            );
        }
    }

    #[test]
    fn resolve_reports_every_invalid_key() {
        let raw = RawConfig {
            trust_domain: None,
            data_dir: None,
            server_address: Some("no-port".into()),
            log_level: Some("loud".into()),
            join_token: Some(String::new()),
            workload: RawWorkloadConfig {
                svid_wait_timeout: Some("soon".into()),
            },
            retry: RawRetryConfig {
                initial_backoff: Some("0s".into()),
                max_backoff: Some("1x".into()),
            },
            ..RawConfig::default()
        };
        assert_eq!(
            invalid_keys(raw),
            vec![
                "trust_domain",
                "server_address",
                "data_dir",
                "join_token",
                "log_level",
                "workload.svid_wait_timeout",
                "retry.initial_backoff",
                "retry.max_backoff",
            ]
        );
    }

    #[test]
    fn resolve_rejects_bundle_with_insecure_bootstrap() {
        let raw = RawConfig {
            trust_bundle_path: Some(PathBuf::from("/etc/tessera/bundle.pem")),
            insecure_bootstrap: Some(true),
            ..minimal()
        };
        assert_eq!(invalid_keys(raw), vec!["insecure_bootstrap"]);
    }

    #[test]
    fn resolve_rejects_backoff_ceiling_below_initial() {
        let raw = RawConfig {
            retry: RawRetryConfig {
                initial_backoff: Some("10s".into()),
                max_backoff: Some("1s".into()),
            },
            ..minimal()
        };
        assert_eq!(invalid_keys(raw), vec!["retry.max_backoff"]);
    }

    #[test]
    fn parse_rejects_unknown_keys() {
        let cases = [
            "trust_domian = \"example.org\"",
            "[workload]\nsvid_wait = \"1s\"",
            "[retry]\nmax = \"1s\"",
        ];
        for text in cases {
            let result = RawConfig::from_toml(text);
            assert!(matches!(result, Err(ConfigError::Parse { .. })), "{text}");
        }
    }

    #[test]
    fn server_address_parse_table() {
        let cases = [
            ("127.0.0.1:8081", Some(("127.0.0.1", 8081))),
            ("[::1]:9000", Some(("::1", 9000))),
            ("server.example.org:443", Some(("server.example.org", 443))),
            ("::1:9000", None),
            ("[::1:9000", None),
            ("host", None),
            (":8081", None),
            ("host:0", None),
            ("host:65536", None),
            ("host:port", None),
        ];
        for (input, expected) in cases {
            let parsed = ServerAddress::parse(input).ok();
            let parsed = parsed.as_ref().map(|a| (a.host.as_str(), a.port));
            assert_eq!(parsed, expected, "{input}");
        }
    }

    #[test]
    fn server_address_display_brackets_ipv6() {
        let address = ServerAddress::parse("[::1]:8081").expect("parse");
        assert_eq!(address.to_string(), "[::1]:8081");
    }

    #[test]
    fn debug_redacts_join_token() {
        let raw = RawConfig {
            join_token: Some("secret-token-value".into()),
            ..minimal()
        };
        assert!(!format!("{raw:?}").contains("secret-token-value"));

        let config = AgentConfig::resolve(raw).expect("resolve");
        assert!(!format!("{config:?}").contains("secret-token-value"));
        assert_eq!(
            config.join_token.as_ref().map(JoinToken::expose),
            Some("secret-token-value")
        );
    }
}
