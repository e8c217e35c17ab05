//! The `issue` mode: simulated agents sign X.509-SVIDs through
//! BatchNewX509Svid as fast as the server allows. The rate is compared with
//! bare two-thread ECDSA P-256 signing measured in the same run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tessera_bench::baseline;
use tessera_bench::stats::Latencies;
use tessera_proto::agent::NewX509SvidParams;
use tessera_spiffe::{KeyAlgorithm, PrivateKey};
use tokio::task::JoinSet;

use super::admin::{entry, unmatched_selector};
use super::agent_api::ServerTarget;
use super::cluster::{Cluster, TargetArgs};
use super::{cpu_seconds, fleet, ratio};

/// Maximum time of one BatchNewX509Svid call; a longer one fails the run.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of the `issue` mode.
#[derive(Debug, Clone, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Simulated agents, each on its own mTLS connection.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,

    /// Public keys per BatchNewX509Svid request; each agent gets this many
    /// entries.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,

    /// Requests each agent sends at most.
    #[arg(long, default_value_t = 500)]
    pub batches: usize,

    /// Time limit of the signing phase.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Length of the bare signing baseline.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub baseline_time: Duration,
}

/// Runs the mode against a started cluster.
pub async fn run(args: &IssueArgs, cluster: &mut Cluster) -> Result<Value> {
    if args.agents == 0 || args.batch == 0 {
        bail!("--agents and --batch must be at least 1");
    }
    let mut admin = cluster.admin().await?;
    let tokens = fleet::join_tokens(&mut admin, args.agents).await?;

    let mut entries = Vec::with_capacity(args.agents * args.batch);
    for (agent, token) in tokens.iter().enumerate() {
        for workload in 0..args.batch {
            let id = format!(
                "{}/bench/issue/a{agent}/w{workload}",
                cluster.trust_domain.id_string()
            );
            entries.push(entry(&id, &token.agent_id, &[unmatched_selector(workload)]));
        }
    }
    let entries = admin.create_entries(entries).await?;
    eprintln!("created {} entries", entries.len());

    let bundle_pem = std::fs::read_to_string(&cluster.bundle_path)?;
    let target = ServerTarget::new(cluster.server_address, &cluster.trust_domain, &bundle_pem)?;
    let agents = fleet::attest(&target, &tokens).await?;

    // Keys are made by agents, so the simulated agents reuse one set.
    let mut public_keys = Vec::with_capacity(args.batch);
    for _ in 0..args.batch {
        public_keys.push(PrivateKey::generate(KeyAlgorithm::EcP256)?.public_key_der());
    }

    let mut tasks = JoinSet::new();
    let server_cpu_before = cpu_seconds(cluster.server_pid());
    let own_cpu_before = cpu_seconds(Some(std::process::id()));
    let started = Instant::now();
    let deadline = started + args.duration;
    for (index, mut agent) in agents.into_iter().enumerate() {
        let params: Vec<NewX509SvidParams> = entries[index * args.batch..(index + 1) * args.batch]
            .iter()
            .zip(&public_keys)
            .map(|(entry, key)| NewX509SvidParams {
                entry_id: entry.id.clone(),
                public_key: key.clone(),
            })
            .collect();
        let batches = args.batches;
        tasks.spawn(async move {
            let mut latencies = Latencies::with_capacity(batches);
            let mut signed = 0usize;
            for _ in 0..batches {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let batch = agent.batch_new_x509_svid(params.clone());
                signed += tokio::time::timeout(BATCH_TIMEOUT, batch)
                    .await
                    .with_context(|| {
                        format!("BatchNewX509Svid timed out after {BATCH_TIMEOUT:?}")
                    })??;
                latencies.record(sent.elapsed());
            }
            Ok::<_, anyhow::Error>((signed, latencies))
        });
    }

    let mut latencies = Latencies::default();
    let mut signed = 0usize;
    while let Some(joined) = tasks.join_next().await {
        let (agent_signed, agent_latencies) = joined.context("an issuing task failed")??;
        signed += agent_signed;
        latencies.merge(agent_latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(cluster.server_pid())
        .zip(server_cpu_before)
        .map(|(a, b)| a - b);
    let own_cpu = cpu_seconds(Some(std::process::id()))
        .zip(own_cpu_before)
        .map(|(a, b)| a - b);
    let svids_per_second = signed as f64 / elapsed;
    eprintln!("signed {signed} SVIDs in {elapsed:.2} s ({svids_per_second:.0}/s)");

    eprintln!(
        "measuring bare 2-thread ECDSA P-256 signing for {:?}",
        args.baseline_time
    );
    let baseline_time = args.baseline_time;
    let bare =
        tokio::task::spawn_blocking(move || baseline::ecdsa_p256_sign_rate(2, baseline_time))
            .await?;
    let summary = latencies.summary().context("no batch completed")?;

    Ok(json!({
        "mode": "issue",
        "agents": args.agents,
        "keys_per_batch": args.batch,
        "batches": summary.count,
        "svids_signed": signed,
        "elapsed_s": elapsed,
        "svids_per_second": svids_per_second,
        "batch_latency": summary.to_json_micros(),
        "bare_sign_2_threads_per_second": bare,
        "ratio_to_bare_sign_2_threads": ratio(svids_per_second, bare),
        "server_cpu_seconds": server_cpu,
        "svids_per_server_cpu_second": server_cpu.map(|cpu| signed as f64 / cpu),
        "load_generator_cpu_seconds": own_cpu,
    }))
}
