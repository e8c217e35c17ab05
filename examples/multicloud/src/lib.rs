//! Shared parts of the multicloud example's mTLS client and server. Both
//! read their X.509-SVID and trust bundles from the SPIFFE Workload API
//! with the `spiffe` crate and build a fresh rustls configuration for every
//! connection. They accept a peer only when its chain leads to the bundle
//! of its own trust domain and its SPIFFE ID is the one expected.

pub mod certificate;
pub mod report;
pub mod shutdown;
pub mod tls;
pub mod verify;
pub mod workload;

use std::time::Duration;

/// How long a program waits at start for its SVID and the peer's bundle.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Limit on one connection: TCP connect, handshake and the reply.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
