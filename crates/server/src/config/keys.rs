//! Checks of each configuration key for [`super::ServerConfig::resolve`]: every
//! function returns the resolved value, or records an [`super::InvalidKey`] and
//! returns `None`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_ca::{MAX_CA_TTL, MIN_CA_TTL};
use tessera_spiffe::{KeyAlgorithm, TrustDomain};

use super::{DEFAULT_BIND_ADDRESS, InvalidKey, KeyStorageKind, RawSvidConfig};

/// Maximum SVID or join token lifetime: TTLs travel as 32-bit seconds in
/// the APIs.
const MAX_SVID_TTL: Duration = Duration::from_secs(i32::MAX as u64);

/// Maximum path length the kernel accepts for a Unix socket (`sun_path` is 108
/// bytes on Linux, including the terminating NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

pub(super) fn invalid(
    errors: &mut Vec<InvalidKey>,
    key: &str,
    value: Option<&str>,
    expected: &str,
) {
    errors.push(InvalidKey {
        key: key.to_owned(),
        value: value.map(str::to_owned),
        expected: expected.to_owned(),
    });
}

pub(super) fn resolve_trust_domain(
    value: Option<&str>,
    errors: &mut Vec<InvalidKey>,
) -> Option<TrustDomain> {
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

pub(super) fn resolve_data_dir(
    value: Option<&Path>,
    errors: &mut Vec<InvalidKey>,
) -> Option<PathBuf> {
    let Some(value) = value else {
        invalid(errors, "data_dir", None, "a directory path");
        return None;
    };
    if value.as_os_str().is_empty() {
        invalid(errors, "data_dir", Some(""), "a directory path");
        return None;
    }
    if value.to_str().is_none() {
        let written = value.to_string_lossy();
        invalid(errors, "data_dir", Some(&written), "a UTF-8 path");
        return None;
    }
    match std::path::absolute(value) {
        Ok(path) => Some(path),
        Err(e) => {
            let written = value.display().to_string();
            invalid(
                errors,
                "data_dir",
                Some(&written),
                &format!("a path that can be made absolute ({e})"),
            );
            None
        }
    }
}

pub(super) fn resolve_bind_address(
    value: Option<&str>,
    errors: &mut Vec<InvalidKey>,
) -> Option<SocketAddr> {
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

pub(super) fn resolve_admin_socket(
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
                let written = path.display().to_string();
                invalid(
                    errors,
                    "admin_socket",
                    Some(&written),
                    &format!("an absolute path ({e})"),
                );
                return None;
            }
        },
        None => data_dir?.join("admin.sock"),
    };
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        let written = path.display().to_string();
        let expected = format!(
            "a socket path of at most {MAX_SOCKET_PATH_BYTES} bytes (this one has {len}); \
             set admin_socket or use a shorter data_dir"
        );
        invalid(errors, "admin_socket", Some(&written), &expected);
        return None;
    }
    Some(path)
}

pub(super) fn resolve_log_level(
    value: Option<&str>,
    errors: &mut Vec<InvalidKey>,
) -> Option<String> {
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

pub(super) fn resolve_jwt_issuer(
    value: Option<String>,
    errors: &mut Vec<InvalidKey>,
) -> Option<String> {
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

pub(super) fn resolve_key_type(
    value: Option<&str>,
    errors: &mut Vec<InvalidKey>,
) -> Option<KeyAlgorithm> {
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

pub(super) fn resolve_key_storage(
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

pub(super) fn resolve_duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    errors: &mut Vec<InvalidKey>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(default);
    };
    const YEAR_SECONDS: u64 = 365 * 24 * 60 * 60;
    let (min, max) = if key == "ca.ttl" {
        (MIN_CA_TTL, MAX_CA_TTL)
    } else {
        (Duration::from_secs(1), MAX_SVID_TTL)
    };
    let range = format!(
        "from {}s to {}s (about {} years)",
        min.as_secs(),
        max.as_secs(),
        max.as_secs() / YEAR_SECONDS
    );
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
            invalid(errors, key, Some(value), &format!("a duration {range}"));
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

pub(super) fn check_svid_ttls(
    raw: &RawSvidConfig,
    ca_ttl: Duration,
    x509_ttl: Duration,
    jwt_ttl: Duration,
    errors: &mut Vec<InvalidKey>,
) {
    let ca_shown = humantime::format_duration(ca_ttl).to_string();
    if x509_ttl >= ca_ttl {
        let written = raw
            .x509_ttl
            .clone()
            .unwrap_or_else(|| humantime::format_duration(x509_ttl).to_string());
        let expected = format!("a duration shorter than ca.ttl ({ca_shown})");
        invalid(errors, "svid.x509_ttl", Some(&written), &expected);
    }
    if jwt_ttl >= ca_ttl {
        let written = raw
            .jwt_ttl
            .clone()
            .unwrap_or_else(|| humantime::format_duration(jwt_ttl).to_string());
        let expected = format!("a duration shorter than ca.ttl ({ca_shown})");
        invalid(errors, "svid.jwt_ttl", Some(&written), &expected);
    }
}
