//! One module per subcommand. Each exposes an async `run` that prints its
//! result and returns an error for `main` to report.

pub mod agent;
pub mod agents;
pub mod authority;
pub mod bundle;
pub mod daemon;
pub mod dev;
pub mod entry;
pub mod federation;
pub mod health;
pub mod jwt;
pub mod server;
pub mod svid;
pub mod token;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::cli::WorkloadArgs;
use crate::client::unix::parse_socket_address;
use crate::parse;

/// A command line that parsed but is incomplete, such as `entry create`
/// without `--spiffe-id`. `main` exits with status 2 for it, as clap does
/// for its own usage errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Resolves the Workload API socket path and retry timeout of a workload
/// command.
pub fn workload_target(args: &WorkloadArgs) -> Result<(PathBuf, Duration)> {
    let address = args.socket.as_deref().ok_or_else(|| {
        anyhow!(
            "no Workload API socket given: pass --socket unix:///path/to/socket or set \
             SPIFFE_ENDPOINT_SOCKET (tessera dev prints the line to set it)"
        )
    })?;
    let socket = parse_socket_address(address)?;
    let timeout = parse::duration("--timeout", &args.timeout)?;
    Ok((socket, timeout))
}
