//! The `scale` mode: many entries spread over many simulated agents that
//! hold SyncEntries streams open. Reports what the first syncs carried,
//! the server's CPU time and memory while the streams stay open, and the
//! time the server takes to restart and serve a full sync again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::admin::{entry, unmatched_selector};
use super::agent_api::{ServerTarget, SimulatedAgent, read_snapshot};
use super::cluster::{Cluster, TargetArgs};
use super::{cpu_seconds, fleet, procfs};

/// Options of the `scale` mode.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Registration entries, spread evenly over the simulated agents.
    #[arg(long, default_value_t = 10_000)]
    pub entries: usize,

    /// Simulated agents, each holding a SyncEntries stream open.
    #[arg(long, default_value_t = 5_000)]
    pub agents: usize,

    /// How long the server's CPU time is measured with every stream open.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub measure: Duration,

    /// Skip stopping and restarting the server.
    #[arg(long)]
    pub no_restart: bool,
}

/// Runs the mode against a started cluster.
pub async fn run(args: &ScaleArgs, cluster: &mut Cluster) -> Result<Value> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let mut admin = cluster.admin().await?;
    let tokens = fleet::join_tokens(&mut admin, args.agents).await?;

    let created = create_entries(cluster, &tokens, args.entries).await?;
    let bundle_pem = std::fs::read_to_string(&cluster.bundle_path)?;
    let target = ServerTarget::new(cluster.server_address, &cluster.trust_domain, &bundle_pem)?;
    let mut agents = fleet::attest(&target, &tokens).await?;

    // The first agent is kept out of the holders to sync again after the
    // restart.
    let mut probe = agents.remove(0);
    let probe_started = Instant::now();
    let probe_snapshot = read_snapshot(&mut probe.sync_entries().await?).await?;
    let probe_sync = probe_started.elapsed();

    let holders = fleet::hold_sync_streams(agents, args.target.start_timeout).await?;
    let received = holders.snapshot_entries() + probe_snapshot.entries;
    eprintln!(
        "{} agents synced {received} entries in {:.2} s",
        args.agents,
        holders.all_synced_after.as_secs_f64()
    );
    if received != args.entries {
        bail!(
            "the agents' snapshots held {received} entries, {} were created",
            args.entries
        );
    }
    let snapshots = holders
        .snapshots
        .iter()
        .chain(std::iter::once(&probe_snapshot));
    let max_entries = snapshots.clone().map(|s| s.entries).max().unwrap_or(0);
    let max_messages = snapshots.clone().map(|s| s.messages).max().unwrap_or(0);
    let largest_message = snapshots
        .map(|s| s.largest_message_bytes)
        .max()
        .unwrap_or(0);

    eprintln!(
        "measuring the server for {:?} with {} streams open",
        args.measure,
        holders.open_streams() + 1
    );
    let idle = measure_idle(cluster, args.measure).await?;
    let open_at_end = holders.open_streams();
    let all_synced = holders.all_synced_after;
    holders.close().await;

    let restart = if args.no_restart || !cluster.owns_server() {
        Value::Null
    } else {
        measure_restart(cluster, &mut probe).await?
    };

    Ok(json!({
        "mode": "scale",
        "entries": args.entries,
        "agents": args.agents,
        "create_entries_per_second": created,
        "sync": {
            "all_agents_synced_s": all_synced.as_secs_f64(),
            "entries_received": received,
            "max_entries_one_agent": max_entries,
            "max_messages_one_agent": max_messages,
            "largest_message_bytes": largest_message,
            "one_agent_sync_ms": probe_sync.as_secs_f64() * 1e3,
        },
        "open": {
            "seconds": args.measure.as_secs_f64(),
            "streams_open_at_end": open_at_end + 1,
            "server_cpu_seconds_per_minute": idle.cpu_seconds_per_minute,
            "server_rss_mib": idle.rss_mib,
            "server_peak_rss_mib": idle.peak_rss_mib,
        },
        "restart": restart,
    }))
}

/// Restarts the server twice: once to time start-up and the first full
/// sync of `probe`, then with SQL statement logging to count the
/// statements of start-up and of that sync.
async fn measure_restart(cluster: &mut Cluster, probe: &mut SimulatedAgent) -> Result<Value> {
    let to_healthy = cluster.restart_server(false).await?;
    let started = Instant::now();
    let snapshot = read_snapshot(&mut probe.sync_entries().await?).await?;
    let to_sync = started.elapsed();
    eprintln!(
        "restarted: healthy after {} ms, first sync of {} entries {} ms later",
        to_healthy.as_millis(),
        snapshot.entries,
        to_sync.as_millis()
    );

    let before_start = cluster.server_log_len()?;
    cluster.restart_server(true).await?;
    let before_sync = cluster.server_log_len()?;
    read_snapshot(&mut probe.sync_entries().await?).await?;
    let start_statements = cluster.statements_logged_since(before_start)?
        - cluster.statements_logged_since(before_sync)?;
    let sync_statements = cluster.statements_logged_since(before_sync)?;
    eprintln!(
        "SQL statements: {start_statements} at start-up, {sync_statements} in one agent sync"
    );

    Ok(json!({
        "to_healthy_ms": to_healthy.as_secs_f64() * 1e3,
        "healthy_to_first_sync_ms": to_sync.as_secs_f64() * 1e3,
        "to_first_sync_ms": (to_healthy + to_sync).as_secs_f64() * 1e3,
        "first_sync_entries": snapshot.entries,
        "sql_statements_at_start": start_statements,
        "sql_statements_per_agent_sync": sync_statements,
    }))
}

/// Creates `count` entries, entry `i` under agent `i % agents`, and
/// returns the creation rate in entries per second.
async fn create_entries(
    cluster: &Cluster,
    tokens: &[tessera_proto::admin::JoinToken],
    count: usize,
) -> Result<f64> {
    let mut admin = cluster.admin().await?;
    let base = cluster.trust_domain.id_string();
    let started = Instant::now();
    let mut next = 0usize;
    while next < count {
        let end = (next + 10_000).min(count);
        let entries = (next..end)
            .map(|i| {
                let parent = &tokens[i % tokens.len()].agent_id;
                entry(
                    &format!("{base}/bench/scale/{i}"),
                    parent,
                    &[unmatched_selector(i)],
                )
            })
            .collect();
        admin.create_entries(entries).await?;
        next = end;
        if next.is_multiple_of(100_000) || next == count {
            eprintln!("created {next} of {count} entries");
        }
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

struct Idle {
    cpu_seconds_per_minute: Option<f64>,
    rss_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
}

async fn measure_idle(cluster: &Cluster, length: Duration) -> Result<Idle> {
    let pid = cluster.server_pid();
    let before = cpu_seconds(pid);
    let started = Instant::now();
    tokio::time::sleep(length).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu_seconds(pid);
    let memory = match pid {
        Some(pid) => Some(procfs::memory(pid).context("reading the server's memory")?),
        None => None,
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Idle {
        cpu_seconds_per_minute: after.zip(before).map(|(a, b)| (a - b) * 60.0 / elapsed),
        rss_mib: memory.map(|m| mib(m.rss_kib)),
        peak_rss_mib: memory.map(|m| mib(m.peak_rss_kib)),
    })
}
