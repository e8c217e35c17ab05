//! `tessera token generate`: a single-use join token for a new agent.

use anyhow::Result;
use serde::Serialize;

use crate::cli::{TokenCommand, TokenGenerateArgs};
use crate::client::admin::AdminClient;
use crate::output::{self, Fields, OutputFormat, format_unix_time};
use crate::parse;

/// Runs one `tessera token` subcommand.
pub async fn run(command: TokenCommand, format: OutputFormat) -> Result<()> {
    match command {
        TokenCommand::Generate(args) => generate(args, format).await,
    }
}

#[derive(Serialize)]
struct TokenView<'a> {
    token: &'a str,
    agent_id: &'a str,
    /// Unix seconds.
    expires_at: i64,
}

async fn generate(args: TokenGenerateArgs, format: OutputFormat) -> Result<()> {
    let ttl = match args.ttl.as_deref() {
        Some(value) => parse::ttl_seconds("--ttl", value)?,
        None => 0,
    };

    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    let token = client.create_join_token(ttl).await?;

    // The token is the output the user asked for, so it goes to standard
    // output; it is never logged.
    match format {
        OutputFormat::Json => output::print_json(&TokenView {
            token: &token.token,
            agent_id: &token.agent_id,
            expires_at: token.expires_at,
        }),
        OutputFormat::Text => output::print_text(
            &Fields::new()
                .row("Token", &token.token)
                .row("Agent ID", &token.agent_id)
                .row("Expires at", format_unix_time(token.expires_at))
                .render(),
        ),
    }
}
