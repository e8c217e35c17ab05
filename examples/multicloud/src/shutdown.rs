//! Waiting for the signal that stops the example programs.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

/// Installs handlers for SIGINT (Ctrl-C) and SIGTERM, and returns a future
/// that completes when either arrives. The handlers are in place on return,
/// so a signal sent before the first poll is not lost.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    let mut interrupt =
        signal(SignalKind::interrupt()).context("failed to install a SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("failed to install a SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
