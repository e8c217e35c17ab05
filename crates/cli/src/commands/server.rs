//! `tessera server run`: the server daemon, configured from a TOML file and
//! flags, until SIGINT or SIGTERM.

use anyhow::{Context, Result};
use tessera_server::config::{RawConfig, ServerConfig};

use crate::cli::{ServerCommand, ServerRunArgs};
use crate::commands::daemon::{ShutdownSignals, init_logging};

/// Runs one `tessera server` subcommand.
pub async fn run(command: ServerCommand) -> Result<()> {
    match command {
        ServerCommand::Run(args) => run_server(args).await,
    }
}

async fn run_server(args: ServerRunArgs) -> Result<()> {
    let signals = ShutdownSignals::install()?;
    let config = resolve_config(&args)?;
    init_logging(args.log_level.as_deref(), &config.log_level)?;

    tessera_server::run(config, signals.wait_then_log())
        .await
        .context("the server stopped with an error")
}

/// Reads the configuration file, if any, applies the flags and resolves it.
fn resolve_config(args: &ServerRunArgs) -> Result<ServerConfig> {
    let mut raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    apply_flags(&mut raw, args);

    let resolved = ServerConfig::resolve(raw);
    if args.config.is_none() {
        return resolved.context(
            "no --config file given, so the flags must set every required key \
             (--trust-domain and --data-dir)",
        );
    }
    Ok(resolved?)
}

fn apply_flags(raw: &mut RawConfig, args: &ServerRunArgs) {
    override_with(&mut raw.trust_domain, &args.trust_domain);
    override_with(&mut raw.data_dir, &args.data_dir);
    override_with(&mut raw.bind_address, &args.bind_address);
    override_with(&mut raw.admin_socket, &args.admin_socket);
    override_with(&mut raw.log_level, &args.log_level);
}

/// Replaces a configuration key with a flag's value when the flag is given.
pub fn override_with<T: Clone>(key: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        key.clone_from(flag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args() -> ServerRunArgs {
        ServerRunArgs {
            config: None,
            trust_domain: None,
            data_dir: None,
            bind_address: None,
            admin_socket: None,
            log_level: None,
        }
    }

    #[test]
    fn flags_override_file_keys() {
        let mut raw = RawConfig::from_toml_str(
            "trust_domain = \"file.org\"\ndata_dir = \"/file\"\nlog_level = \"warn\"\n",
        )
        .expect("valid TOML");
        let flags = ServerRunArgs {
            trust_domain: Some("flag.org".to_owned()),
            log_level: Some("debug".to_owned()),
            ..args()
        };
        apply_flags(&mut raw, &flags);
        assert_eq!(raw.trust_domain.as_deref(), Some("flag.org"));
        assert_eq!(raw.data_dir.as_deref(), Some(Path::new("/file")));
        assert_eq!(raw.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn flags_alone_resolve_without_file() {
        let flags = ServerRunArgs {
            trust_domain: Some("example.org".to_owned()),
            data_dir: Some("/var/lib/tessera-test".into()),
            ..args()
        };
        let config = resolve_config(&flags).expect("flags give every required key");
        assert_eq!(config.trust_domain.name(), "example.org");
        assert_eq!(
            config.admin_socket,
            Path::new("/var/lib/tessera-test/admin.sock")
        );
    }

    #[test]
    fn missing_keys_without_file_mention_flags() {
        let err = resolve_config(&args()).expect_err("trust domain is missing");
        let message = format!("{err:#}");
        assert!(message.contains("--trust-domain"), "{message}");
        assert!(message.contains("trust_domain"), "{message}");
    }
}
