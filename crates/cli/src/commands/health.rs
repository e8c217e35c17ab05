//! `tessera healthcheck`: calls the server's health RPC and exits 0 only
//! when it is serving, for scripts and container health checks.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cli::AdminArgs;
use crate::client::admin::AdminClient;
use crate::output::{self, Fields, OutputFormat};

/// The status the server reports when every check passed.
const SERVING: &str = "serving";

#[derive(Serialize)]
struct HealthView<'a> {
    status: &'a str,
    trust_domain: &'a str,
    checks: &'a [String],
}

/// Prints the server's health; fails when it is not serving.
pub async fn run(args: AdminArgs, format: OutputFormat) -> Result<()> {
    let mut client = AdminClient::connect(&args.admin_socket).await?;
    let health = client.health().await?;

    match format {
        OutputFormat::Json => output::print_json(&HealthView {
            status: &health.status,
            trust_domain: &health.trust_domain,
            checks: &health.checks,
        })?,
        OutputFormat::Text => output::print_text(
            &Fields::new()
                .row("Status", &health.status)
                .row("Trust domain", &health.trust_domain)
                .rows("Check", &health.checks)
                .render(),
        )?,
    }

    if health.status != SERVING {
        let checks = if health.checks.is_empty() {
            "no checks reported".to_owned()
        } else {
            health.checks.join(", ")
        };
        bail!(
            "the server is not serving (status {:?}): {checks}",
            health.status
        );
    }
    Ok(())
}
