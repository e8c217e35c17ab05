//! Shared pieces of Tessera's benchmarks and load generator: the bare
//! baselines (ECDSA P-256 signing, a tonic call over a Unix socket) that
//! every Tessera figure is compared with, and latency statistics.

#![cfg_attr(test, allow(clippy::expect_used))]

pub mod baseline;
pub mod echo;
pub mod stats;
pub mod uds;
