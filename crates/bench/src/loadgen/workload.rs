//! The `workload` mode: concurrent Workload API clients against a real
//! agent (FetchX509SVID first message, FetchJWTSVID for a cached audience,
//! ValidateJWTSVID). Each operation is followed by the bare tonic baseline
//! with the same response size and the same number of clients. A separate
//! process serves the baseline over a Unix socket, as the agent does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use prost::Message;
use serde_json::{Value, json};
use tessera_bench::echo::{self, proto::echo_client::EchoClient};
use tessera_bench::stats::{Latencies, Summary};
use tessera_bench::uds;
use tessera_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use super::admin::{entry, own_uid_selector};
use super::cluster::{Cluster, TargetArgs};
use super::workload_api::{self, WorkloadClient};
use super::{ratio, watch};

/// Maximum time of one call; a call that takes longer fails the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Audience of the JWT-SVIDs that the mode requests.
const AUDIENCE: &str = "tessera-bench";

/// A Workload API operation that the mode measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Operation {
    /// FetchX509SVID, first message, then the stream is dropped.
    X509,
    /// FetchJWTSVID for an audience the agent has cached.
    Jwt,
    /// ValidateJWTSVID of a token from the agent.
    Validate,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::X509 => "fetch_x509_svid",
            Self::Jwt => "fetch_jwt_svid",
            Self::Validate => "validate_jwt_svid",
        }
    }
}

/// Options of the `workload` mode.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Numbers of concurrent clients to measure, each client on its own
    /// connection.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    pub clients: Vec<usize>,

    /// Operations to measure.
    #[arg(long, value_delimiter = ',', default_value = "x509,jwt,validate")]
    pub ops: Vec<Operation>,

    /// Calls each client makes per operation, at most.
    #[arg(long, default_value_t = 2000)]
    pub calls: u64,

    /// Time limit of one measurement (one operation at one client count,
    /// or its baseline).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// Runs the mode against a started cluster.
pub async fn run(args: &WorkloadArgs, cluster: &mut Cluster) -> Result<Value> {
    if args.clients.contains(&0) {
        bail!("--clients values must be at least 1");
    }
    let agent = cluster.start_agent().await?;
    let agent_id = agent.id.clone();
    let socket = agent.workload_socket.clone();
    let id = format!("{}/bench/workload", cluster.trust_domain.id_string());
    cluster
        .admin()
        .await?
        .create_entries(vec![entry(&id, &agent_id, &[own_uid_selector()?])])
        .await?;
    let watchers = watch::open(&socket, 1, args.target.start_timeout).await?;
    watchers.close().await;

    let mut client = workload_api::connect(&socket).await?;
    let token = fetch_jwt(&mut client).await?.0;
    let echo_dir = tempfile::Builder::new()
        .prefix("tessera-bench-echo-")
        .tempdir()?;
    let echo_server = EchoProcess::start(&echo_dir.path().join("echo.sock")).await?;

    let mut results = Vec::new();
    for &clients in &args.clients {
        for &op in &args.ops {
            let response_bytes = call(&mut client, op, &token).await?;
            eprintln!(
                "{}: {clients} clients, {response_bytes}-byte responses",
                op.name()
            );
            let ours = run_operation(&socket, op, &token, clients, args).await?;
            let bare = run_echo(&echo_server.socket, response_bytes, clients, args).await?;
            results.push(report(op, clients, response_bytes, &ours, &bare)?);
        }
    }
    echo_server.stop().await;
    Ok(json!({ "mode": "workload", "results": results }))
}

/// Calls per second and latencies of one measurement.
struct Measured {
    calls_per_second: f64,
    latencies: Latencies,
}

fn report(
    op: Operation,
    clients: usize,
    bytes: usize,
    ours: &Measured,
    bare: &Measured,
) -> Result<Value> {
    let our_summary: Summary = ours.latencies.summary().context("no call completed")?;
    let bare_summary: Summary = bare
        .latencies
        .summary()
        .context("no baseline call completed")?;
    Ok(json!({
        "op": op.name(),
        "clients": clients,
        "response_bytes": bytes,
        "calls_per_second": ours.calls_per_second,
        "latency": our_summary.to_json_micros(),
        "bare": {
            "calls_per_second": bare.calls_per_second,
            "latency": bare_summary.to_json_micros(),
        },
        "throughput_ratio": ratio(ours.calls_per_second, bare.calls_per_second),
        "p50_ratio": ratio(our_summary.p50.as_secs_f64(), bare_summary.p50.as_secs_f64()),
        "p99_ratio": ratio(our_summary.p99.as_secs_f64(), bare_summary.p99.as_secs_f64()),
    }))
}

async fn run_operation(
    socket: &Path,
    op: Operation,
    token: &str,
    clients: usize,
    args: &WorkloadArgs,
) -> Result<Measured> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(workload_api::connect(socket).await?);
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = JoinSet::new();
    for mut client in connections {
        let token = token.to_owned();
        let calls = args.calls;
        tasks.spawn(async move {
            let mut latencies = Latencies::with_capacity(calls as usize);
            for _ in 0..calls {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                tokio::time::timeout(CALL_TIMEOUT, call(&mut client, op, &token))
                    .await
                    .with_context(|| format!("{} timed out after {CALL_TIMEOUT:?}", op.name()))??;
                latencies.record(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    collect(tasks, started).await
}

async fn run_echo(
    socket: &Path,
    bytes: usize,
    clients: usize,
    args: &WorkloadArgs,
) -> Result<Measured> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(EchoClient::new(uds::connect(socket).await?));
    }
    let size = u32::try_from(bytes).context("response larger than 4 GiB")?;
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = JoinSet::new();
    for mut client in connections {
        let calls = args.calls;
        tasks.spawn(async move {
            let mut latencies = Latencies::with_capacity(calls as usize);
            for _ in 0..calls {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let reply = tokio::time::timeout(
                    CALL_TIMEOUT,
                    client.reply(echo::proto::ReplyRequest { size }),
                )
                .await
                .with_context(|| format!("echo call timed out after {CALL_TIMEOUT:?}"))??;
                std::hint::black_box(reply);
                latencies.record(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    collect(tasks, started).await
}

async fn collect(mut tasks: JoinSet<Result<Latencies>>, started: Instant) -> Result<Measured> {
    let mut latencies = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        latencies.merge(joined.context("a client task failed")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Measured {
        calls_per_second: latencies.len() as f64 / elapsed,
        latencies,
    })
}

/// Makes one call of `op` and returns the encoded size of its response.
async fn call(client: &mut WorkloadClient, op: Operation, token: &str) -> Result<usize> {
    match op {
        Operation::X509 => {
            let mut stream = client
                .fetch_x509svid(workload_api::request(X509svidRequest {}))
                .await
                .context("FetchX509SVID failed")?
                .into_inner();
            let first = stream
                .message()
                .await
                .context("FetchX509SVID stream failed")?
                .context("FetchX509SVID stream ended with no message")?;
            if first.svids.is_empty() {
                bail!("FetchX509SVID returned no SVID");
            }
            Ok(first.encoded_len())
        }
        Operation::Jwt => Ok(fetch_jwt(client).await?.1),
        Operation::Validate => {
            let request = ValidateJwtsvidRequest {
                audience: AUDIENCE.to_owned(),
                svid: token.to_owned(),
            };
            let response = client
                .validate_jwtsvid(workload_api::request(request))
                .await
                .context("ValidateJWTSVID failed")?
                .into_inner();
            Ok(response.encoded_len())
        }
    }
}

/// Fetches a JWT-SVID for [`AUDIENCE`]; returns the token and the encoded
/// response size.
async fn fetch_jwt(client: &mut WorkloadClient) -> Result<(String, usize)> {
    let request = JwtsvidRequest {
        audience: vec![AUDIENCE.to_owned()],
        spiffe_id: String::new(),
    };
    let response = client
        .fetch_jwtsvid(workload_api::request(request))
        .await
        .context("FetchJWTSVID failed")?
        .into_inner();
    let size = response.encoded_len();
    let svid = response
        .svids
        .into_iter()
        .next()
        .context("FetchJWTSVID returned no SVID")?;
    Ok((svid.svid, size))
}

/// The echo server in a child process: `tessera-bench serve-echo`.
struct EchoProcess {
    socket: PathBuf,
    child: Child,
}

impl EchoProcess {
    async fn start(socket: &Path) -> Result<Self> {
        let program = std::env::current_exe().context("finding the tessera-bench binary")?;
        let child = Command::new(program)
            .arg("serve-echo")
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the echo server process")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while uds::connect(socket).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the echo server did not listen on {} within 10 s",
                    socket.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            socket: socket.to_owned(),
            child,
        })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
