//! Generated gRPC code for the SPIFFE Workload API and Tessera's own agent
//! and admin APIs. The `.proto` sources are in `proto/`.

#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

/// The SPIFFE Workload API. It has no protobuf package, as in the
/// specification, so its gRPC path is `/SpiffeWorkloadAPI/...`.
pub mod workload {
    tonic::include_proto!("_");
}

/// Tessera's own APIs.
pub mod tessera {
    /// Messages shared by the agent API and the admin API.
    pub mod types {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("tessera.types.v1");
        }
    }
    /// The agent API (agent to server, mTLS).
    pub mod agent {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("tessera.agent.v1");
        }
    }
    /// The admin API (CLI to server, Unix socket).
    pub mod admin {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("tessera.admin.v1");
        }
    }
}

pub use tessera::{admin::v1 as admin, agent::v1 as agent, types::v1 as types};
