//! The Tessera server daemon: the trust domain's CA, the registration
//! store, the admin API on a Unix socket and the agent API over mTLS.

// Tests may unwrap: a panic there is a test failure with its location. The
// non-test build of the crate is still checked without this.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;

pub use config::{ConfigError, RawConfig, ServerConfig};
