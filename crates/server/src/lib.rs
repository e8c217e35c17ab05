//! The Tessera server daemon: the trust domain's CA, the registration
//! store, the admin API on a Unix socket and the agent API over mTLS.
//! `tessera server run` resolves a [`ServerConfig`] and calls [`run`].

// Tests may unwrap: a panic there is a test failure with its location. The
// non-test build of the crate is still checked without this.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod admin;
mod agent_api;
mod authorized;
mod bundle;
mod bundle_endpoint;
mod cache;
pub mod config;
mod daemon;
mod error;
mod federation;
mod feed;
mod ids;
mod oidc;
mod rotation;
mod shared_bundle;
mod state;
mod status;

pub use config::{ConfigError, RawConfig, ServerConfig};
pub use daemon::run;
pub use error::ServerError;

pub(crate) use error::error_chain;

/// File in the data directory that contains the bound agent API address, such
/// as `127.0.0.1:8081`, while the server runs. It is written after both
/// APIs are listening, so its presence means the server is ready. With
/// `bind_address` port 0 it is how tools find the port that was picked.
pub const AGENT_API_ADDR_FILE: &str = "agent_api.addr";

/// Directory under the data directory for CA keys with `key_storage = "disk"`.
pub const KEYS_DIR: &str = "keys";

/// File in the data directory that contains the trust bundle's X.509
/// authorities as PEM, rewritten atomically after each change. Agents
/// bootstrap from it.
pub const BUNDLE_FILE: &str = bundle::BUNDLE_FILE;

pub use bundle_endpoint::BUNDLE_ENDPOINT_ADDR_FILE;
pub use federation::FederationError;
pub use oidc::OIDC_ADDR_FILE;
