//! The files of a `tessera dev` data directory:
//!
//! ```text
//! <data_dir>/server.toml, agent.toml   written once, then left to the user
//! <data_dir>/server/                   server data: CA keys, datastore, admin.sock, bundle.pem
//! <data_dir>/agent/                    agent data: agent SVID, public/api.sock
//! <data_dir>/server.log, agent.log     output of the child processes
//! ```

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tessera_spiffe::TrustDomain;

use super::DEFAULT_TRUST_DOMAIN;
use crate::parse;

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with the
/// terminating NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Paths of the files in a development data directory.
#[derive(Debug, Clone)]
pub struct DevLayout {
    pub data_dir: PathBuf,
    pub server_config: PathBuf,
    pub agent_config: PathBuf,
    pub server_log: PathBuf,
    pub agent_log: PathBuf,
}

/// Settings read back from the two configuration files, which the user may
/// have edited.
#[derive(Debug, Clone)]
pub struct ResolvedConfigs {
    pub trust_domain: TrustDomain,
    pub admin_socket: PathBuf,
    pub workload_socket: PathBuf,
    pub agent_data_dir: PathBuf,
}

/// The server configuration that `tessera dev` writes.
#[derive(Debug, Serialize)]
struct ServerToml<'a> {
    trust_domain: &'a str,
    data_dir: &'a str,
    bind_address: &'a str,
    admin_socket: &'a str,
    log_level: &'a str,
}

/// The agent configuration that `tessera dev` writes. It has no join token:
/// `tessera dev` passes one in the environment when the agent needs it.
#[derive(Debug, Serialize)]
struct AgentToml<'a> {
    trust_domain: &'a str,
    server_address: &'a str,
    data_dir: &'a str,
    socket_path: &'a str,
    trust_bundle_path: &'a str,
    log_level: &'a str,
}

impl DevLayout {
    /// Picks the data directory (`data_dir`, or the default) and creates it
    /// with mode 0700.
    pub fn new(data_dir: Option<PathBuf>) -> Result<Self> {
        let data_dir = match data_dir {
            Some(dir) => dir,
            None => default_data_dir(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))?,
        };
        let data_dir = std::path::absolute(&data_dir)
            .with_context(|| format!("failed to make {} absolute", data_dir.display()))?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .with_context(|| {
                format!("failed to create the data directory {}", data_dir.display())
            })?;

        Ok(Self {
            server_config: data_dir.join("server.toml"),
            agent_config: data_dir.join("agent.toml"),
            server_log: data_dir.join("server.log"),
            agent_log: data_dir.join("agent.log"),
            data_dir,
        })
    }

    /// Writes `server.toml` and `agent.toml` when neither exists. When both
    /// exist they are kept, and `trust_domain`, if given, must match theirs.
    pub fn write_configs_if_absent(&self, trust_domain: Option<&str>) -> Result<()> {
        match (self.server_config.exists(), self.agent_config.exists()) {
            (true, true) => return self.check_trust_domain(trust_domain),
            (false, false) => {}
            (server_exists, _) => {
                let (present, missing) = if server_exists {
                    (&self.server_config, &self.agent_config)
                } else {
                    (&self.agent_config, &self.server_config)
                };
                bail!(
                    "{} exists but {} does not; restore it, or delete {} to start a new \
                     deployment",
                    present.display(),
                    missing.display(),
                    self.data_dir.display()
                );
            }
        }

        let trust_domain = parse::trust_domain(
            "--trust-domain",
            trust_domain.unwrap_or(DEFAULT_TRUST_DOMAIN),
        )?;
        let port = free_loopback_port()?;
        let (server_text, agent_text) = self.config_texts(&trust_domain, port)?;
        write_new_file(&self.server_config, &server_text)?;
        write_new_file(&self.agent_config, &agent_text)?;
        eprintln!(
            "Wrote {} and {} for trust domain {trust_domain}",
            self.server_config.display(),
            self.agent_config.display()
        );
        Ok(())
    }

    fn check_trust_domain(&self, requested: Option<&str>) -> Result<()> {
        let Some(requested) = requested else {
            return Ok(());
        };
        let requested = parse::trust_domain("--trust-domain", requested)?;
        let raw = tessera_server::config::RawConfig::from_file(&self.server_config)?;
        let configured = raw.trust_domain.unwrap_or_default();
        if configured != requested.name() {
            bail!(
                "{} is configured for trust domain {configured:?}, not {requested}; leave out \
                 --trust-domain, or pass another --data-dir",
                self.data_dir.display()
            );
        }
        Ok(())
    }

    /// Renders the two configuration files.
    fn config_texts(&self, trust_domain: &TrustDomain, port: u16) -> Result<(String, String)> {
        let server_dir = self.data_dir.join("server");
        let agent_dir = self.data_dir.join("agent");
        let admin_socket = server_dir.join("admin.sock");
        let workload_socket = agent_dir.join("public").join("api.sock");
        let bundle = server_dir.join("bundle.pem");
        let address = format!("127.0.0.1:{port}");

        let server = ServerToml {
            trust_domain: trust_domain.name(),
            data_dir: utf8(&server_dir)?,
            bind_address: &address,
            admin_socket: utf8(&admin_socket)?,
            log_level: "info",
        };
        let agent = AgentToml {
            trust_domain: trust_domain.name(),
            server_address: &address,
            data_dir: utf8(&agent_dir)?,
            socket_path: utf8(&workload_socket)?,
            trust_bundle_path: utf8(&bundle)?,
            log_level: "info",
        };

        let server_text = format!(
            "# Server configuration written by `tessera dev`. It is not overwritten, so\n\
             # edits are kept; delete the data directory to start over.\n{}",
            toml::to_string(&server).context("failed to encode server.toml")?
        );
        let agent_text = format!(
            "# Agent configuration written by `tessera dev`. It is not overwritten, so\n\
             # edits are kept. `tessera dev` passes a join token in the environment\n\
             # when the agent has no usable SVID in data_dir.\n{}",
            toml::to_string(&agent).context("failed to encode agent.toml")?
        );
        Ok((server_text, agent_text))
    }

    /// Reads both configuration files back through the daemons' own
    /// parsers, so that a user's edits are honoured and errors show early.
    pub fn resolve_configs(&self) -> Result<ResolvedConfigs> {
        let server_raw = tessera_server::config::RawConfig::from_file(&self.server_config)?;
        let server = tessera_server::config::ServerConfig::resolve(server_raw)?;
        let agent_raw = tessera_agent::config::RawConfig::from_file(&self.agent_config)?;
        let agent = tessera_agent::config::AgentConfig::resolve(agent_raw)?;

        check_socket_path(&server.admin_socket)?;
        check_socket_path(&agent.socket_path)?;
        if agent.trust_domain != server.trust_domain {
            bail!(
                "{} has trust domain {} but {} has {}; make them equal",
                self.agent_config.display(),
                agent.trust_domain,
                self.server_config.display(),
                server.trust_domain
            );
        }

        Ok(ResolvedConfigs {
            trust_domain: server.trust_domain,
            admin_socket: server.admin_socket,
            workload_socket: agent.socket_path,
            agent_data_dir: agent.data_dir,
        })
    }
}

/// Returns `$XDG_DATA_HOME/tessera/dev`, or `$HOME/.local/share/tessera/dev`
/// when XDG_DATA_HOME is unset or not absolute (as the XDG Base Directory
/// specification requires).
pub fn default_data_dir(
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let xdg = xdg_data_home
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    if let Some(dir) = xdg {
        return Ok(dir.join("tessera").join("dev"));
    }
    let home = home
        .map(PathBuf::from)
        .filter(|dir| !dir.as_os_str().is_empty());
    match home {
        Some(home) => Ok(home
            .join(".local")
            .join("share")
            .join("tessera")
            .join("dev")),
        None => bail!("neither XDG_DATA_HOME nor HOME is set; pass --data-dir"),
    }
}

/// Rejects a socket path the kernel cannot bind, before a child fails on it.
fn check_socket_path(path: &Path) -> Result<()> {
    let length = path.as_os_str().len();
    if length > MAX_SOCKET_PATH_BYTES {
        bail!(
            "the socket path {} is {length} bytes, longer than the {MAX_SOCKET_PATH_BYTES} \
             bytes a Unix socket path may have; pass a shorter --data-dir",
            path.display()
        );
    }
    Ok(())
}

/// Asks the kernel for a free TCP port on 127.0.0.1 for the agent API.
///
/// NOTE: the port is free when chosen but not reserved. If another program
/// takes it later, the server fails to bind and logs the error.
fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("failed to find a free port on 127.0.0.1 for the agent API")?;
    Ok(listener.local_addr()?.port())
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| {
        format!(
            "the path {} is not valid UTF-8; pass another --data-dir",
            path.display()
        )
    })
}

/// Writes a file that must not exist yet, with mode 0600.
fn write_new_file(path: &Path, text: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Reads the last `lines` lines of a log file, reading at most its last
/// 64 KiB.
pub fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};

    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = fs::File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(err) => format!("(failed to read {}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_data_dir_cases() {
        let cases: [(Option<&str>, Option<&str>, Option<&str>); 5] = [
            (Some("/xdg"), Some("/home/a"), Some("/xdg/tessera/dev")),
            (
                None,
                Some("/home/a"),
                Some("/home/a/.local/share/tessera/dev"),
            ),
            (
                Some("relative"),
                Some("/home/a"),
                Some("/home/a/.local/share/tessera/dev"),
            ),
            (
                Some(""),
                Some("/home/a"),
                Some("/home/a/.local/share/tessera/dev"),
            ),
            (None, None, None),
        ];
        for (xdg, home, expected) in cases {
            let dir = default_data_dir(xdg.map(OsString::from), home.map(OsString::from)).ok();
            assert_eq!(
                dir,
                expected.map(PathBuf::from),
                "XDG_DATA_HOME {xdg:?}, HOME {home:?}"
            );
        }
    }

    #[test]
    fn written_configs_resolve_with_daemon_parsers() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let layout = DevLayout::new(Some(dir.path().join("dev"))).expect("layout");
        layout
            .write_configs_if_absent(Some("dev.example"))
            .expect("configs written");

        let configs = layout.resolve_configs().expect("configs resolve");
        assert_eq!(configs.trust_domain.name(), "dev.example");
        assert_eq!(
            configs.admin_socket,
            layout.data_dir.join("server/admin.sock")
        );
        assert_eq!(
            configs.workload_socket,
            layout.data_dir.join("agent/public/api.sock")
        );
        assert_eq!(configs.agent_data_dir, layout.data_dir.join("agent"));
    }

    #[test]
    fn existing_configs_are_kept() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let layout = DevLayout::new(Some(dir.path().to_owned())).expect("layout");
        layout.write_configs_if_absent(None).expect("first write");
        let before = fs::read_to_string(&layout.server_config).expect("server.toml");

        layout
            .write_configs_if_absent(None)
            .expect("second run keeps files");
        let after = fs::read_to_string(&layout.server_config).expect("server.toml");
        assert_eq!(before, after);
    }

    #[test]
    fn other_trust_domain_for_existing_configs_is_rejected() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let layout = DevLayout::new(Some(dir.path().to_owned())).expect("layout");
        layout.write_configs_if_absent(None).expect("first write");

        let err = layout
            .write_configs_if_absent(Some("other.example"))
            .expect_err("trust domain differs");
        let message = format!("{err:#}");
        assert!(message.contains("\"tessera.local\""), "{message}");
        assert!(
            layout
                .write_configs_if_absent(Some(DEFAULT_TRUST_DOMAIN))
                .is_ok()
        );
    }

    #[test]
    fn one_missing_config_is_an_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let layout = DevLayout::new(Some(dir.path().to_owned())).expect("layout");
        layout.write_configs_if_absent(None).expect("first write");
        fs::remove_file(&layout.agent_config).expect("remove agent.toml");

        let err = layout
            .write_configs_if_absent(None)
            .expect_err("agent.toml is missing");
        assert!(err.to_string().contains("agent.toml"), "{err}");
    }

    #[test]
    fn long_socket_path_is_rejected() {
        let long = PathBuf::from(format!("/{}", "a".repeat(120)));
        assert!(check_socket_path(&long).is_err());
        assert!(check_socket_path(Path::new("/tmp/a.sock")).is_ok());
    }

    #[test]
    fn log_tail_returns_last_lines() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("x.log");
        fs::write(&path, "one\ntwo\nthree\n").expect("write log");
        assert_eq!(log_tail(&path, 2), "two\nthree");
        assert!(log_tail(&dir.path().join("missing.log"), 2).starts_with("(failed to read"));
    }
}
