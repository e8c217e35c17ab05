//! Shared parts of the long-running commands (`server run`, `agent run`,
//! `dev`): the log subscriber and the SIGINT and SIGTERM handlers.

use std::io::IsTerminal as _;

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Installs the `tracing` subscriber that writes to standard error.
///
/// The filter is the first that is set of: the `--log-level` flag, the
/// RUST_LOG environment variable, then `config_level` from the
/// configuration file (which defaults to `info`).
pub fn init_logging(flag: Option<&str>, config_level: &str) -> Result<()> {
    let filter = match (flag, std::env::var("RUST_LOG")) {
        (Some(level), _) => {
            EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?
        }
        (None, Ok(directives)) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("invalid RUST_LOG {directives:?}"))?,
        _ => EnvFilter::try_new(config_level)
            .with_context(|| format!("invalid log_level {config_level:?}"))?,
    };
    // Colours only on a terminal: `tessera dev` sends the output to a file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|err| anyhow::anyhow!("failed to install the log subscriber: {err}"))
}

/// Handlers for SIGINT and SIGTERM. Creating them replaces the default
/// action (exit at once), so create them before starting anything that
/// must be stopped in order.
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers.
    pub fn install() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Waits for the first signal and logs it; a daemon's `shutdown` future.
    pub async fn wait_then_log(mut self) {
        let name = self.recv().await;
        tracing::info!(signal = name, "shutting down");
    }
}
