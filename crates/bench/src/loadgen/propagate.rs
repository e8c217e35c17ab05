//! The `propagate` mode: the delay from an admin CreateEntries call
//! returning to the new SVID arriving on the FetchX509SVID streams of the
//! workloads it names, through a real agent. Optionally many simulated
//! agents hold SyncEntries streams open on the server meanwhile.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tessera_bench::stats::Latencies;

use super::admin::{entry, own_uid_selector};
use super::agent_api::ServerTarget;
use super::cluster::{Cluster, TargetArgs};
use super::{fleet, watch};

/// Options of the `propagate` mode.
#[derive(Debug, Clone, Args)]
pub struct PropagateArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Workloads watching FetchX509SVID, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub watchers: usize,

    /// Entries created, one after another; each is deleted again once
    /// every watcher has its SVID.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,

    /// Simulated agents holding SyncEntries streams open on the server
    /// during the run.
    #[arg(long, default_value_t = 0)]
    pub simulated_agents: usize,

    /// Maximum wait for one change to reach every watcher.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Time limit of the measuring phase.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// Runs the mode against a started cluster.
pub async fn run(args: &PropagateArgs, cluster: &mut Cluster) -> Result<Value> {
    if args.watchers == 0 {
        bail!("--watchers must be at least 1");
    }
    let agent = cluster.start_agent().await?;
    let agent_id = agent.id.clone();
    let socket = agent.workload_socket.clone();
    let mut admin = cluster.admin().await?;
    let selectors = vec![own_uid_selector()?];
    let base_id = cluster.trust_domain.id_string();

    let holders = if args.simulated_agents > 0 {
        let tokens = fleet::join_tokens(&mut admin, args.simulated_agents).await?;
        let bundle_pem = std::fs::read_to_string(&cluster.bundle_path)?;
        let target = ServerTarget::new(cluster.server_address, &cluster.trust_domain, &bundle_pem)?;
        let agents = fleet::attest(&target, &tokens).await?;
        let holders = fleet::hold_sync_streams(agents, args.target.start_timeout).await?;
        eprintln!(
            "{} simulated agents synced in {:.2} s",
            holders.open_streams(),
            holders.all_synced_after.as_secs_f64()
        );
        Some(holders)
    } else {
        None
    };

    // The watchers need an SVID before the first measured change, because
    // the agent rejects a watch from a workload with no entry.
    let steady = entry(
        &format!("{base_id}/bench/propagate/steady"),
        &agent_id,
        &selectors,
    );
    admin.create_entries(vec![steady]).await?;
    let mut watchers = watch::open(&socket, args.watchers, args.target.start_timeout).await?;
    eprintln!("{} watchers have their first SVID", watchers.len());

    let updates_before = holders.as_ref().map(|h| h.updates.load(Ordering::Relaxed));
    let mut added = Latencies::with_capacity(args.iterations * args.watchers);
    let mut removed = Latencies::with_capacity(args.iterations * args.watchers);
    let started = Instant::now();
    for iteration in 0..args.iterations {
        if started.elapsed() >= args.duration {
            eprintln!("stopping after {iteration} iterations: --duration reached");
            break;
        }
        let id = format!("{base_id}/bench/propagate/{iteration}");
        let created = admin
            .create_entries(vec![entry(&id, &agent_id, &selectors)])
            .await?
            .remove(0);
        let returned_at = Instant::now();
        let reached = watchers
            .wait_for(args.timeout, |ids| ids.contains(&id))
            .await
            .with_context(|| format!("waiting for {id} to arrive"))?;
        record_delays(&mut added, returned_at, &reached);

        admin.delete_entries(vec![created.id]).await?;
        let returned_at = Instant::now();
        let reached = watchers
            .wait_for(args.timeout, |ids| !ids.contains(&id))
            .await
            .with_context(|| format!("waiting for {id} to be removed"))?;
        record_delays(&mut removed, returned_at, &reached);

        if (iteration + 1).is_multiple_of(25) {
            eprintln!(
                "{} of {} entries propagated",
                iteration + 1,
                args.iterations
            );
        }
    }

    let added_summary = added.summary().context("no entry propagated")?;
    let removed_summary = removed.summary().context("no deletion propagated")?;
    let simulated_agent_messages = holders
        .as_ref()
        .zip(updates_before)
        .map(|(h, before)| h.updates.load(Ordering::Relaxed) - before);
    let simulated_streams_open = holders.as_ref().map_or(0, |h| h.open_streams());
    watchers.close().await;
    if let Some(holders) = holders {
        holders.close().await;
    }

    Ok(json!({
        "mode": "propagate",
        "watchers": args.watchers,
        "simulated_agents": args.simulated_agents,
        "simulated_streams_open_at_end": simulated_streams_open,
        "simulated_agent_messages_during_run": simulated_agent_messages,
        "iterations": added_summary.count / args.watchers,
        "create_to_svid_ms": millis_summary(&added_summary),
        "delete_to_removal_ms": millis_summary(&removed_summary),
    }))
}

/// Records, for each watcher, the time from `returned_at` to its receipt;
/// a watcher that already had the change counts as zero.
fn record_delays(into: &mut Latencies, returned_at: Instant, reached: &[Option<Instant>]) {
    for at in reached {
        let delay = at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(returned_at)
        });
        into.record(delay);
    }
}

fn millis_summary(summary: &tessera_bench::stats::Summary) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "count": summary.count,
        "p50": ms(summary.p50),
        "p99": ms(summary.p99),
        "max": ms(summary.max),
        "mean": ms(summary.mean),
    })
}
