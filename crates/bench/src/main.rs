//! `tessera-bench`: the load generator. Each mode starts a Tessera server
//! (and agent) from the `tessera` binary in a temporary directory, or
//! attaches to running ones, and drives them over their real protocols.
//! It prints progress to stderr and ends with one JSON object of figures
//! as the last line of stdout.

#![cfg_attr(test, allow(clippy::expect_used))]

mod loadgen;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use loadgen::agent_memory::AgentMemoryArgs;
use loadgen::cluster::{Cluster, TargetArgs};
use loadgen::issue::IssueArgs;
use loadgen::propagate::PropagateArgs;
use loadgen::scale::ScaleArgs;
use loadgen::statement_rate::StatementRateArgs;
use loadgen::workload::WorkloadArgs;
use serde_json::Value;

/// Load generator for Tessera: drives a real server and agent and reports
/// figures beside the machine's raw limits.
#[derive(Debug, Parser)]
#[command(name = "tessera-bench", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// X.509-SVID signing through BatchNewX509Svid by simulated agents.
    Issue(IssueArgs),
    /// Delay from creating an entry to its SVID on watching workloads.
    Propagate(PropagateArgs),
    /// Workload API calls per second and latency against a bare gRPC call.
    Workload(WorkloadArgs),
    /// Server CPU, memory and restart time with many entries and agents.
    Scale(ScaleArgs),
    /// Agent memory with many workload entries and open watch streams.
    AgentMemory(AgentMemoryArgs),
    /// SQL statements per minute of a server on PostgreSQL, with no agent
    /// and with N idle agents connected.
    StatementRate(StatementRateArgs),
    /// Print the results of `cargo bench -p tessera-bench` as a Markdown
    /// table, with each hot path's ratio to its raw limit.
    CriterionTable {
        /// Criterion's output directory.
        #[arg(long, value_name = "DIR", default_value = "target/criterion")]
        dir: PathBuf,
    },
    /// Serve the bare echo baseline on a Unix socket until killed.
    #[command(hide = true)]
    ServeEcho {
        /// Socket to listen on.
        #[arg(long)]
        socket: PathBuf,
    },
}

impl Mode {
    fn target(&self) -> Option<&TargetArgs> {
        match self {
            Self::Issue(args) => Some(&args.target),
            Self::Propagate(args) => Some(&args.target),
            Self::Workload(args) => Some(&args.target),
            Self::Scale(args) => Some(&args.target),
            Self::AgentMemory(args) => Some(&args.target),
            Self::StatementRate(_) | Self::CriterionTable { .. } | Self::ServeEcho { .. } => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the tokio runtime failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.mode)) {
        Ok(Some(figures)) => {
            println!("{figures}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> Result<Option<Value>> {
    match &mode {
        Mode::ServeEcho { socket } => {
            serve_echo(socket).await?;
            return Ok(None);
        }
        Mode::CriterionTable { dir } => {
            report::print_table(dir)?;
            return Ok(None);
        }
        // It starts its server itself, on a database that it creates first.
        Mode::StatementRate(args) => return loadgen::statement_rate::run(args).await.map(Some),
        _ => {}
    }
    let Some(target) = mode.target() else {
        return Ok(None);
    };
    let mut cluster = Cluster::start(target).await?;
    let result = match &mode {
        Mode::Issue(args) => loadgen::issue::run(args, &mut cluster).await,
        Mode::Propagate(args) => loadgen::propagate::run(args, &mut cluster).await,
        Mode::Workload(args) => loadgen::workload::run(args, &mut cluster).await,
        Mode::Scale(args) => loadgen::scale::run(args, &mut cluster).await,
        Mode::AgentMemory(args) => loadgen::agent_memory::run(args, &mut cluster).await,
        Mode::StatementRate(_) | Mode::CriterionTable { .. } | Mode::ServeEcho { .. } => {
            Ok(Value::Null)
        }
    };
    cluster.stop(result.is_err()).await?;
    result.map(Some)
}

/// Serves the echo baseline until the process is killed.
async fn serve_echo(socket: &std::path::Path) -> Result<()> {
    let _server = tessera_bench::echo::RunningEcho::start(socket)?;
    std::future::pending::<()>().await;
    Ok(())
}
