//! `tessera agent run`: the agent daemon, configured from a TOML file and
//! flags, until SIGINT or SIGTERM.

use anyhow::{Context, Result};
use tessera_agent::config::{AgentConfig, RawConfig};

use crate::cli::{AgentCommand, AgentRunArgs};
use crate::commands::agents;
use crate::commands::daemon::{ShutdownSignals, init_logging};
use crate::commands::server::override_with;
use crate::output::OutputFormat;

/// Runs one `tessera agent` subcommand.
pub async fn run(command: AgentCommand, format: OutputFormat) -> Result<()> {
    match command {
        AgentCommand::Run(args) => run_agent(args).await,
        AgentCommand::List(args) => agents::list(args, format).await,
        AgentCommand::Show(args) => agents::show(args, format).await,
        AgentCommand::Evict(args) => agents::evict(args, format).await,
        AgentCommand::Ban(args) => agents::ban(args, format).await,
    }
}

async fn run_agent(args: AgentRunArgs) -> Result<()> {
    let signals = ShutdownSignals::install()?;
    let config = resolve_config(&args)?;
    let level = config.log_level.to_string().to_lowercase();
    init_logging(args.log_level.as_deref(), &level)?;

    tessera_agent::run(config, signals.wait_then_log())
        .await
        .context("the agent stopped with an error")
}

/// Reads the configuration file, if any, applies the flags and resolves it.
fn resolve_config(args: &AgentRunArgs) -> Result<AgentConfig> {
    let mut raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    apply_flags(&mut raw, args);

    let resolved = AgentConfig::resolve(raw);
    if args.config.is_none() {
        return resolved.context(
            "no --config file given, so the flags must set every required key \
             (--trust-domain, --data-dir and --trust-bundle)",
        );
    }
    Ok(resolved?)
}

fn apply_flags(raw: &mut RawConfig, args: &AgentRunArgs) {
    override_with(&mut raw.join_token, &args.join_token);
    override_with(&mut raw.trust_domain, &args.trust_domain);
    if !args.server_addresses.is_empty() {
        raw.server_address = None;
        raw.server_addresses = Some(args.server_addresses.clone());
    }
    override_with(&mut raw.data_dir, &args.data_dir);
    override_with(&mut raw.socket_path, &args.socket_path);
    override_with(&mut raw.trust_bundle_path, &args.trust_bundle);
    override_with(&mut raw.log_level, &args.log_level);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args() -> AgentRunArgs {
        AgentRunArgs {
            config: None,
            join_token: None,
            trust_domain: None,
            server_addresses: Vec::new(),
            data_dir: None,
            socket_path: None,
            trust_bundle: None,
            log_level: None,
        }
    }

    #[test]
    fn flags_override_file_keys() {
        let mut raw = RawConfig::from_toml(
            "trust_domain = \"file.org\"\ndata_dir = \"/file\"\nserver_address = \"127.0.0.1:1\"\n",
        )
        .expect("valid TOML");
        let flags = AgentRunArgs {
            server_addresses: vec!["127.0.0.1:2".to_owned()],
            trust_bundle: Some("/flag/bundle.pem".into()),
            ..args()
        };
        apply_flags(&mut raw, &flags);
        assert_eq!(raw.trust_domain.as_deref(), Some("file.org"));
        assert_eq!(raw.server_address, None);
        assert_eq!(raw.server_addresses, Some(vec!["127.0.0.1:2".to_owned()]));
        assert_eq!(
            raw.trust_bundle_path.as_deref(),
            Some(Path::new("/flag/bundle.pem"))
        );
    }

    #[test]
    fn server_address_flags_replace_file_list() {
        let mut raw =
            RawConfig::from_toml("server_addresses = [\"10.0.0.1:8081\", \"10.0.0.2:8081\"]\n")
                .expect("valid TOML");
        let flags = AgentRunArgs {
            trust_domain: Some("example.org".to_owned()),
            data_dir: Some("/var/lib/tessera/agent".into()),
            server_addresses: vec!["10.0.0.3:8081".to_owned(), "10.0.0.4:8081".to_owned()],
            ..args()
        };
        apply_flags(&mut raw, &flags);

        let config = AgentConfig::resolve(raw).expect("resolve");
        let addresses: Vec<String> = config
            .server_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addresses, ["10.0.0.3:8081", "10.0.0.4:8081"]);
    }

    #[test]
    fn file_list_kept_without_flags() {
        let mut raw =
            RawConfig::from_toml("server_addresses = [\"10.0.0.1:8081\", \"10.0.0.2:8081\"]\n")
                .expect("valid TOML");
        apply_flags(&mut raw, &args());
        assert_eq!(
            raw.server_addresses,
            Some(vec!["10.0.0.1:8081".to_owned(), "10.0.0.2:8081".to_owned()])
        );
    }

    #[test]
    fn missing_keys_without_file_mention_flags() {
        let err = resolve_config(&args()).expect_err("trust domain is missing");
        let message = format!("{err:#}");
        assert!(message.contains("--trust-domain"), "{message}");
    }
}
