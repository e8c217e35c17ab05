//! `tessera agent list|show|evict|ban`: attested agents through the
//! server's admin API.

use anyhow::Result;
use serde::Serialize;
use tessera_proto::types::Agent;

use crate::cli::{AdminArgs, AgentIdArgs};
use crate::client::admin::AdminClient;
use crate::commands::entry::selector_text;
use crate::output::{self, Fields, OutputFormat, format_unix_time};
use crate::parse;

/// Prints every attested agent.
pub async fn list(args: AdminArgs, format: OutputFormat) -> Result<()> {
    let mut client = AdminClient::connect(&args.admin_socket).await?;
    let agents = client.list_agents().await?;
    match format {
        OutputFormat::Json => output::print_json(&AgentsView {
            agents: agents.iter().map(AgentView::from).collect(),
        }),
        OutputFormat::Text => {
            let mut text = match agents.len() {
                1 => "Found 1 agent\n".to_owned(),
                count => format!("Found {count} agents\n"),
            };
            for agent in &agents {
                text.push('\n');
                text.push_str(&agent_text(agent));
            }
            output::print_text(&text)
        }
    }
}

/// Prints one agent.
pub async fn show(args: AgentIdArgs, format: OutputFormat) -> Result<()> {
    let id = parse::spiffe_id("agent ID", &args.spiffe_id)?;
    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    let agent = client.get_agent(id.as_str()).await?;
    match format {
        OutputFormat::Json => output::print_json(&AgentView::from(&agent)),
        OutputFormat::Text => output::print_text(&agent_text(&agent)),
    }
}

/// Deletes an agent's record so that it must attest again.
pub async fn evict(args: AgentIdArgs, format: OutputFormat) -> Result<()> {
    let id = parse::spiffe_id("agent ID", &args.spiffe_id)?;
    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    client.evict_agent(id.as_str()).await?;
    print_done("evicted", id.as_str(), format)
}

/// Bans an agent.
pub async fn ban(args: AgentIdArgs, format: OutputFormat) -> Result<()> {
    let id = parse::spiffe_id("agent ID", &args.spiffe_id)?;
    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    client.ban_agent(id.as_str()).await?;
    print_done("banned", id.as_str(), format)
}

fn print_done(action: &'static str, spiffe_id: &str, format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Json => output::print_json(&ActionView { action, spiffe_id }),
        OutputFormat::Text => output::print_text(&format!("Agent {spiffe_id} {action}\n")),
    }
}

fn agent_text(agent: &Agent) -> String {
    Fields::new()
        .row("Agent ID", &agent.spiffe_id)
        .row("Attestation type", &agent.attestation_type)
        .row("SVID serial", &agent.x509_svid_serial)
        .row(
            "SVID expires at",
            format_unix_time(agent.x509_svid_expires_at),
        )
        .rows("Selector", agent.selectors.iter().map(selector_text))
        .row("Banned", agent.banned)
        .row("Created at", format_unix_time(agent.created_at))
        .row("Last seen at", format_unix_time(agent.last_seen_at))
        .render()
}

#[derive(Serialize)]
struct AgentsView {
    agents: Vec<AgentView>,
}

#[derive(Serialize)]
struct AgentView {
    spiffe_id: String,
    attestation_type: String,
    x509_svid_serial: String,
    /// Unix seconds.
    x509_svid_expires_at: i64,
    selectors: Vec<String>,
    banned: bool,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds.
    last_seen_at: i64,
}

impl From<&Agent> for AgentView {
    fn from(agent: &Agent) -> Self {
        Self {
            spiffe_id: agent.spiffe_id.clone(),
            attestation_type: agent.attestation_type.clone(),
            x509_svid_serial: agent.x509_svid_serial.clone(),
            x509_svid_expires_at: agent.x509_svid_expires_at,
            selectors: agent.selectors.iter().map(selector_text).collect(),
            banned: agent.banned,
            created_at: agent.created_at,
            last_seen_at: agent.last_seen_at,
        }
    }
}

#[derive(Serialize)]
struct ActionView<'a> {
    action: &'static str,
    spiffe_id: &'a str,
}
