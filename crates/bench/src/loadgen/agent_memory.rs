//! The `agent-memory` mode: the agent's resident memory with W workloads'
//! entries and S open FetchX509SVID streams. One entry matches the load
//! generator's own user; the others name users that do not exist, so the
//! agent stores them but each stream carries one SVID.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::admin::{entry, own_uid_selector, unmatched_selector};
use super::cluster::{Cluster, TargetArgs};
use super::{procfs, watch};

/// Options of the `agent-memory` mode.
#[derive(Debug, Clone, Args)]
pub struct AgentMemoryArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Workload entries parented to the agent.
    #[arg(long, default_value_t = 1000)]
    pub workloads: usize,

    /// FetchX509SVID streams held open, each on its own connection.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,

    /// Wait after the streams are open, before memory is read, so the
    /// agent can finish signing and caching.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

/// Runs the mode against a started cluster.
pub async fn run(args: &AgentMemoryArgs, cluster: &mut Cluster) -> Result<Value> {
    if args.workloads == 0 || args.streams == 0 {
        bail!("--workloads and --streams must be at least 1");
    }
    let agent = cluster.start_agent().await?;
    let agent_id = agent.id.clone();
    let socket = agent.workload_socket.clone();
    let Some(pid) = agent.pid() else {
        bail!("the agent's PID is unknown: pass --agent-pid when attaching");
    };
    let idle = procfs::memory(pid).context("reading the agent's memory")?;

    let base = format!("{}/bench/agent-memory", cluster.trust_domain.id_string());
    let mut entries: Vec<_> = (1..args.workloads)
        .map(|i| entry(&format!("{base}/{i}"), &agent_id, &[unmatched_selector(i)]))
        .collect();
    // The agent applies changes in order, so once this last entry's SVID
    // reaches a stream the agent has every entry.
    entries.push(entry(
        &format!("{base}/0"),
        &agent_id,
        &[own_uid_selector()?],
    ));
    cluster.admin().await?.create_entries(entries).await?;
    eprintln!(
        "created {} entries; opening {} streams",
        args.workloads, args.streams
    );

    let watchers = watch::open(&socket, args.streams, args.target.start_timeout).await?;
    tokio::time::sleep(args.settle).await;
    let loaded = procfs::memory(pid).context("reading the agent's memory")?;
    watchers.close().await;

    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(json!({
        "mode": "agent-memory",
        "workloads": args.workloads,
        "streams": args.streams,
        "agent_rss_mib_idle": mib(idle.rss_kib),
        "agent_rss_mib": mib(loaded.rss_kib),
        "agent_peak_rss_mib": mib(loaded.peak_rss_kib),
    }))
}
