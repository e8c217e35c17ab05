//! The server and agent child processes of `tessera dev`: starting them
//! with their output in a log file, waiting for them to become ready, and
//! stopping them with SIGTERM.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rustix::process::{Pid, Signal, kill_process};
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::time::Instant;

use super::layout::log_tail;
use crate::client::admin::AdminClient;
use crate::commands::daemon::ShutdownSignals;
use crate::output::format_unix_time;

/// Time a child has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Environment variable from which `tessera agent run` reads a join token.
pub const JOIN_TOKEN_ENV: &str = "TESSERA_JOIN_TOKEN";

/// Lines of a child's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// The outcome of waiting for a child to become ready.
pub enum Wait<T> {
    /// The child is ready.
    Ready(T),
    /// SIGINT or SIGTERM arrived first.
    Interrupted,
}

/// A running `tessera server run` or `tessera agent run`.
pub struct Child {
    /// `server` or `agent`, also the subcommand.
    name: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `<executable> <name> run --config <config>` with standard
    /// output and standard error appended to `log`, and `env` added to its
    /// environment.
    pub fn spawn(
        name: &'static str,
        executable: &Path,
        config: &Path,
        log: &Path,
        env: Option<(&str, &str)>,
    ) -> Result<Self> {
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .with_context(|| format!("failed to open the log file {}", log.display()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            });
        std::io::Write::write_all(
            &mut log_file,
            format!(
                "--- tessera dev started the {name} at {} ---\n",
                format_unix_time(now)
            )
            .as_bytes(),
        )
        .with_context(|| format!("failed to write the log file {}", log.display()))?;
        let stderr = log_file
            .try_clone()
            .context("failed to duplicate the log file handle")?;

        let mut command = Command::new(executable);
        command
            .args([name, "run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(stderr))
            // Its own process group keeps a terminal's Ctrl-C away from the
            // child, so that `tessera dev` stops the agent before the server.
            .process_group(0)
            // A safety net for early returns: the child is killed if this
            // handle is dropped before `stop` ran.
            .kill_on_drop(true);
        // Only the token this run generated may reach the agent, not one
        // left in the user's environment.
        command.env_remove(JOIN_TOKEN_ENV);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        // NOTE: if `tessera dev` itself is killed with SIGKILL, the children
        // keep running, because they are in their own process group.
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {} {name} run", executable.display()))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// Waits until the admin API at `socket` reports `serving`.
    pub async fn wait_for_admin_api(
        &mut self,
        socket: &Path,
        timeout: Duration,
        signals: &mut ShutdownSignals,
    ) -> Result<Wait<AdminClient>> {
        let deadline = Instant::now() + timeout;
        let mut last_error = anyhow!("the admin socket {} did not appear", socket.display());
        loop {
            self.check_running()?;
            match Self::admin_health(socket).await {
                Ok(client) => return Ok(Wait::Ready(client)),
                Err(err) => last_error = err,
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "did not become ready within {} ({last_error:#})",
                    humantime::format_duration(timeout)
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = signals.recv() => return Ok(Wait::Interrupted),
            }
        }
    }

    async fn admin_health(socket: &Path) -> Result<AdminClient> {
        let mut client = AdminClient::connect(socket).await?;
        let health = client.health().await?;
        if health.status != "serving" {
            anyhow::bail!(
                "the server reports {:?}: {}",
                health.status,
                health.checks.join(", ")
            );
        }
        Ok(client)
    }

    /// Waits until the Unix socket at `socket` accepts connections, while
    /// checking that this child and `other` keep running.
    pub async fn wait_for_socket(
        &mut self,
        socket: &Path,
        timeout: Duration,
        signals: &mut ShutdownSignals,
        other: &mut Child,
    ) -> Result<Wait<()>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            other.check_running()?;
            // A socket file left by an earlier run refuses connections, so a
            // successful connection proves the agent is listening.
            if UnixStream::connect(socket).await.is_ok() {
                return Ok(Wait::Ready(()));
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "did not open {} within {}",
                    socket.display(),
                    humantime::format_duration(timeout)
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = signals.recv() => return Ok(Wait::Interrupted),
            }
        }
    }

    /// Waits for the child to exit and returns the error that reports it.
    pub async fn exited(&mut self) -> anyhow::Error {
        let status = self.child.wait().await;
        self.exit_error(status)
    }

    /// Fails when the child has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exit_error(Ok(status))),
            Err(err) => Err(self.exit_error(Err(err))),
        }
    }

    fn exit_error(&self, status: std::io::Result<ExitStatus>) -> anyhow::Error {
        match status {
            Ok(status) => self.failure(&format!("exited unexpectedly ({status})")),
            Err(err) => self.failure(&format!("could not be waited for ({err})")),
        }
    }

    /// Builds an error about this child that ends with its log tail.
    fn failure(&self, problem: &str) -> anyhow::Error {
        anyhow!(
            "the {} {problem}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, LOG_TAIL_LINES)
        )
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the child to exit,
    /// then kills it.
    pub async fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        if let Some(pid) = pid
            && let Err(err) = kill_process(pid, Signal::TERM)
        {
            eprintln!(
                "Failed to send SIGTERM to the {} (pid {pid:?}): {err}",
                self.name
            );
        }

        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => eprintln!("The {} stopped", self.name),
            Ok(Ok(status)) => eprintln!("The {} stopped ({status})", self.name),
            Ok(Err(err)) => eprintln!("Failed to wait for the {}: {err}", self.name),
            Err(_) => {
                eprintln!(
                    "The {} did not stop within {}; killing it",
                    self.name,
                    humantime::format_duration(STOP_TIMEOUT)
                );
                if let Err(err) = self.child.kill().await {
                    eprintln!("Failed to kill the {}: {err}", self.name);
                }
            }
        }
    }
}
