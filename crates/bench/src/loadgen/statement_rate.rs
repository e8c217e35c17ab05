//! The `statement-rate` mode: the SQL statements that a server on
//! PostgreSQL runs per minute with no agent, then with N idle agents
//! connected. The agents are `tessera agent run` processes with one entry
//! each, and nothing changes while they run, so the difference divided by
//! N is the cost of one connected agent. Statements are counted twice: by
//! the server, which logs each one (sqlx's `sqlx::query` target at debug
//! level), and by PostgreSQL, whose `pg_stat_database` counts the
//! transactions in the run's own database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::admin::{entry, own_uid_selector};
use super::cluster::{Cluster, STATEMENT_LOG_TARGET, TargetArgs};
use super::postgres::BenchDatabase;

/// Statements listed per window, most frequent first.
const TOP_STATEMENTS: usize = 8;

/// Options of the `statement-rate` mode.
#[derive(Debug, Clone, Args)]
pub struct StatementRateArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Agents connected during the second window.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,

    /// Length of each measured window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub measure: Duration,

    /// Wait before each window, so that start-up work ends and
    /// PostgreSQL's statistics, which backends report a few seconds late,
    /// catch up.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub settle: Duration,

    /// URL of an existing database on the PostgreSQL server. The run
    /// connects to it to create a database of its own, and drops that one
    /// at the end.
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
}

/// Creates the database, runs both windows against a server on it, and
/// drops the database whether or not the run succeeded.
pub async fn run(args: &StatementRateArgs) -> Result<Value> {
    if args.target.admin_socket.is_some() || args.target.datastore_url.is_some() {
        bail!(
            "statement-rate starts its own server on a database of its own; \
             leave out --admin-socket and --datastore-url"
        );
    }
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }

    let database = BenchDatabase::create(&args.postgres_url).await?;
    let measured = run_on(args, &database).await;
    let dropped = database.drop().await;
    let figures = measured?;
    dropped?;
    Ok(figures)
}

async fn run_on(args: &StatementRateArgs, database: &BenchDatabase) -> Result<Value> {
    let mut target = args.target.clone();
    target.datastore_url = Some(database.url()?);
    target.log_level = format!("{},{STATEMENT_LOG_TARGET}=debug", target.log_level);
    let mut cluster = Cluster::start(&target).await?;
    let measured = measure_windows(args, database, &mut cluster).await;
    cluster.stop(measured.is_err()).await?;
    measured
}

async fn measure_windows(
    args: &StatementRateArgs,
    database: &BenchDatabase,
    cluster: &mut Cluster,
) -> Result<Value> {
    eprintln!("settling for {:?} with no agent", args.settle);
    tokio::time::sleep(args.settle).await;
    let idle = Window::measure(cluster, database, args.measure).await?;
    eprintln!(
        "no agent: {:.1} statements and {:.1} transactions per minute",
        idle.statements_per_minute(),
        idle.transactions_per_minute()
    );

    let agent_ids: Vec<String> = cluster
        .start_agents(args.agents)
        .await?
        .iter()
        .map(|agent| agent.id.clone())
        .collect();
    create_one_entry_each(cluster, &agent_ids).await?;
    eprintln!("settling for {:?} with {} agents", args.settle, args.agents);
    tokio::time::sleep(args.settle).await;
    let connected = Window::measure(cluster, database, args.measure).await?;

    let agents = args.agents as f64;
    let per_agent = |idle: f64, connected: f64| (connected - idle) / agents;
    Ok(json!({
        "mode": "statement-rate",
        "agents": args.agents,
        "measure_s": args.measure.as_secs_f64(),
        "postgres_version": database.server_version().await?,
        "x509_svid_ttl": args.target.x509_svid_ttl.as_deref().unwrap_or("server default"),
        "no_agent": idle.to_json(),
        "with_agents": connected.to_json(),
        "per_agent_per_minute": {
            "statements": per_agent(idle.statements_per_minute(), connected.statements_per_minute()),
            "transactions": per_agent(idle.transactions_per_minute(), connected.transactions_per_minute()),
        },
    }))
}

/// Gives each agent one entry that the load generator's user matches, so
/// that every agent keeps one workload SVID, as a node with one workload
/// does.
async fn create_one_entry_each(cluster: &Cluster, agent_ids: &[String]) -> Result<()> {
    let base = format!("{}/bench/statement-rate", cluster.trust_domain.id_string());
    let selector = own_uid_selector()?;
    let entries = agent_ids
        .iter()
        .enumerate()
        .map(|(i, id)| entry(&format!("{base}/{i}"), id, std::slice::from_ref(&selector)))
        .collect();
    cluster.admin().await?.create_entries(entries).await?;
    Ok(())
}

/// Statements and transactions counted over one window.
struct Window {
    seconds: f64,
    statements: usize,
    transactions: i64,
    /// Statement counts by text, most frequent first.
    top: Vec<(String, usize)>,
}

impl Window {
    async fn measure(
        cluster: &Cluster,
        database: &BenchDatabase,
        length: Duration,
    ) -> Result<Window> {
        let log_mark = cluster.server_log_len()?;
        let transactions_before = database.transactions().await?;
        let started = Instant::now();
        tokio::time::sleep(length).await;
        let seconds = started.elapsed().as_secs_f64();
        let transactions_after = database.transactions().await?;
        let logged = cluster.statements_logged_since(log_mark)?;
        let texts = cluster.statement_texts_since(log_mark)?;

        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for text in texts {
            *counts.entry(text).or_default() += 1;
        }
        let mut top: Vec<(String, usize)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP_STATEMENTS);
        Ok(Window {
            seconds,
            statements: logged,
            transactions: transactions_after - transactions_before,
            top,
        })
    }

    fn statements_per_minute(&self) -> f64 {
        self.statements as f64 * 60.0 / self.seconds
    }

    fn transactions_per_minute(&self) -> f64 {
        self.transactions as f64 * 60.0 / self.seconds
    }

    fn to_json(&self) -> Value {
        let top: Vec<Value> = self
            .top
            .iter()
            .map(|(text, count)| {
                json!({
                    "statement": text,
                    "per_minute": *count as f64 * 60.0 / self.seconds,
                })
            })
            .collect();
        json!({
            "seconds": self.seconds,
            "statements": self.statements,
            "statements_per_minute": self.statements_per_minute(),
            "transactions": self.transactions,
            "transactions_per_minute": self.transactions_per_minute(),
            "top_statements": top,
        })
    }
}
