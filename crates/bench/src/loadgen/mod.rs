//! The load generator: each mode drives a real Tessera server and agent
//! over their real protocols and returns its figures as one JSON object.

pub mod admin;
pub mod agent_api;
pub mod agent_memory;
pub mod cluster;
pub mod fleet;
pub mod issue;
pub mod postgres;
pub mod procfs;
pub mod propagate;
pub mod scale;
pub mod statement_rate;
pub mod watch;
pub mod workload;
pub mod workload_api;

/// CPU seconds that process `pid` has used, when it is known and readable.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|pid| procfs::cpu_time(pid).ok())
        .map(|time| time.as_secs_f64())
}

/// `ours / bare`, or `None` when the bare figure is zero.
pub fn ratio(ours: f64, bare: f64) -> Option<f64> {
    (bare > 0.0).then(|| ours / bare)
}
