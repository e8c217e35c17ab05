//! `tessera`: the one binary of Tessera. It runs the server and the agent,
//! manages the server through its admin API, and fetches SVIDs and bundles
//! from the SPIFFE Workload API.
//!
//! Exit status: 0 on success, 1 on an error, 2 on a usage error.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod client;
mod commands;
mod output;
mod parse;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command};
use commands::UsageError;

fn main() -> ExitCode {
    let cli = Cli::parse();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    match cli.command {
        Command::Server(command) => commands::server::run(command).await,
        Command::Agent(command) => commands::agent::run(command, format).await,
        Command::Entry(command) => commands::entry::run(command, format).await,
        Command::Token(command) => commands::token::run(command, format).await,
        Command::Bundle(command) => commands::bundle::run(command, format).await,
        Command::Federation(command) => commands::federation::run(command, format).await,
        Command::Authority(command) => commands::authority::run(command, format).await,
        Command::Healthcheck(args) => commands::health::run(args, format).await,
        Command::Svid(command) => commands::svid::run(command, format).await,
        Command::Jwt(command) => commands::jwt::run(command, format).await,
        Command::Dev(args) => commands::dev::run(args, format).await,
    }
}

/// Prints `err` with its whole cause chain on one `error:` line and picks
/// the exit status.
fn report(err: &anyhow::Error) -> ExitCode {
    // A closed pipe (`tessera entry list | head`) is the reader's choice,
    // not a failure worth a message.
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }

    eprintln!("error: {err:#}");
    if err.downcast_ref::<UsageError>().is_some() {
        eprintln!("\nFor more information, try '--help'.");
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}
