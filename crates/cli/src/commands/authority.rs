//! `tessera authority list|prepare|activate`: the server's CA authorities
//! and their rotation on demand through the admin API. An authority is an
//! X.509 CA and a JWT signing key that rotate together.

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use tessera_proto::admin::{Authority, AuthorityState};

use crate::cli::AdminArgs;
use crate::client::admin::AdminClient;
use crate::output::{self, Fields, OutputFormat, format_unix_time, pem_block};

/// `tessera authority ...`
#[derive(Debug, Subcommand)]
pub enum AuthorityCommand {
    /// List the active, prepared and retired authorities, oldest first.
    List(AdminArgs),
    /// Create the next authority now and publish it in the trust bundle
    /// (bundle.pem, agents, the bundle endpoint). Fails when one is
    /// already prepared.
    Prepare(AdminArgs),
    /// Make the prepared authority sign from now on: new SVIDs, JWT-SVIDs
    /// and the server's own SVID. The replaced authority stays in the
    /// bundle until it expires. Run it only after federated peers have
    /// fetched the bundle with the prepared authority. Fails, changing
    /// nothing, when no authority is prepared.
    Activate(AdminArgs),
}

/// Runs one `tessera authority` subcommand.
pub async fn run(command: AuthorityCommand, format: OutputFormat) -> Result<()> {
    match command {
        AuthorityCommand::List(args) => list(args, format).await,
        AuthorityCommand::Prepare(args) => prepare(args, format).await,
        AuthorityCommand::Activate(args) => activate(args, format).await,
    }
}

async fn list(args: AdminArgs, format: OutputFormat) -> Result<()> {
    let mut client = AdminClient::connect(&args.admin_socket).await?;
    let authorities = client.list_authorities().await?;
    let views: Vec<AuthorityView> = authorities.iter().map(AuthorityView::from).collect();

    match format {
        OutputFormat::Json => output::print_json(&AuthoritiesView { authorities: views }),
        OutputFormat::Text => {
            let mut text = match views.len() {
                1 => "Found 1 authority\n".to_owned(),
                count => format!("Found {count} authorities\n"),
            };
            for view in &views {
                text.push('\n');
                text.push_str(&view.to_text());
            }
            output::print_text(&text)
        }
    }
}

async fn prepare(args: AdminArgs, format: OutputFormat) -> Result<()> {
    let mut client = AdminClient::connect(&args.admin_socket).await?;
    let prepared = client.prepare_authority().await?;
    let prepared = AuthorityView::from(&prepared);

    match format {
        OutputFormat::Json => output::print_json(&PreparedView { prepared }),
        OutputFormat::Text => output::print_text(&format!(
            "Prepared authority {}; it is in the trust bundle and signs after \
             `tessera authority activate`\n\n{}",
            prepared.id,
            prepared.to_text()
        )),
    }
}

async fn activate(args: AdminArgs, format: OutputFormat) -> Result<()> {
    let mut client = AdminClient::connect(&args.admin_socket).await?;
    let response = client.activate_authority().await?;
    let activated = response.activated.as_ref().map(AuthorityView::from);
    let retired = response.retired.as_ref().map(AuthorityView::from);

    match format {
        OutputFormat::Json => output::print_json(&ActivatedView { activated, retired }),
        OutputFormat::Text => {
            output::print_text(&activated_text(activated.as_ref(), retired.as_ref()))
        }
    }
}

fn activated_text(activated: Option<&AuthorityView>, retired: Option<&AuthorityView>) -> String {
    let mut text = String::new();
    if let Some(activated) = activated {
        text.push_str(&format!("Activated authority {}\n", activated.id));
    }
    if let Some(retired) = retired {
        text.push_str(&format!(
            "Authority {} is retired and stays in the trust bundle until {}\n",
            retired.id, retired.not_after
        ));
    }
    for view in [activated, retired].into_iter().flatten() {
        text.push('\n');
        text.push_str(&view.to_text());
    }
    text
}

fn state_name(state: i32) -> &'static str {
    match AuthorityState::try_from(state) {
        Ok(AuthorityState::Active) => "active",
        Ok(AuthorityState::Prepared) => "prepared",
        Ok(AuthorityState::Retired) => "retired",
        Ok(AuthorityState::Unspecified) | Err(_) => "unknown",
    }
}

/// One authority as printed.
#[derive(Debug, Serialize)]
struct AuthorityView {
    id: String,
    /// `active`, `prepared` or `retired`.
    state: &'static str,
    /// Lowercase hex.
    x509_subject_key_id: String,
    jwt_key_id: String,
    /// RFC 3339.
    not_before: String,
    /// RFC 3339.
    not_after: String,
    /// The CA certificate as PEM; JSON output only.
    x509_certificate: String,
}

impl From<&Authority> for AuthorityView {
    fn from(authority: &Authority) -> Self {
        Self {
            id: authority.id.clone(),
            state: state_name(authority.state),
            x509_subject_key_id: authority.x509_subject_key_id.clone(),
            jwt_key_id: authority.jwt_key_id.clone(),
            not_before: format_unix_time(authority.not_before),
            not_after: format_unix_time(authority.not_after),
            x509_certificate: pem_block("CERTIFICATE", &authority.x509_certificate),
        }
    }
}

impl AuthorityView {
    fn to_text(&self) -> String {
        Fields::new()
            .row("Authority ID", &self.id)
            .row("State", self.state)
            .row("X.509 subject key ID", &self.x509_subject_key_id)
            .row("JWT key ID", &self.jwt_key_id)
            .row("Not before", &self.not_before)
            .row("Not after", &self.not_after)
            .render()
    }
}

#[derive(Serialize)]
struct AuthoritiesView {
    authorities: Vec<AuthorityView>,
}

#[derive(Serialize)]
struct PreparedView {
    prepared: AuthorityView,
}

#[derive(Serialize)]
struct ActivatedView {
    activated: Option<AuthorityView>,
    retired: Option<AuthorityView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(id: &str, state: AuthorityState) -> Authority {
        Authority {
            id: id.to_owned(),
            state: state as i32,
            x509_subject_key_id: "ab01".to_owned(),
            jwt_key_id: "kid".to_owned(),
            not_before: 1_800_000_000,
            not_after: 1_800_086_400,
            x509_certificate: vec![0x30, 0x00],
        }
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(AuthorityState::Active as i32), "active");
        assert_eq!(state_name(AuthorityState::Prepared as i32), "prepared");
        assert_eq!(state_name(AuthorityState::Retired as i32), "retired");
        assert_eq!(state_name(0), "unknown");
        assert_eq!(state_name(99), "unknown");
    }

    #[test]
    fn view_formats_times_and_certificate() {
        let view = AuthorityView::from(&authority("a1", AuthorityState::Active));
        assert_eq!(view.not_before, "2027-01-15T08:00:00Z");
        assert_eq!(view.not_after, "2027-01-16T08:00:00Z");
        assert!(
            view.x509_certificate
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
    }

    #[test]
    fn text_leaves_out_the_certificate() {
        let view = AuthorityView::from(&authority("a1", AuthorityState::Prepared));
        let text = view.to_text();
        assert!(text.contains("State                : prepared\n"), "{text}");
        assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    }

    #[test]
    fn activated_text_names_both_authorities() {
        let activated = AuthorityView::from(&authority("a2", AuthorityState::Active));
        let retired = AuthorityView::from(&authority("a1", AuthorityState::Retired));
        let text = activated_text(Some(&activated), Some(&retired));
        assert!(text.starts_with("Activated authority a2\n"), "{text}");
        assert!(
            text.contains(
                "Authority a1 is retired and stays in the trust bundle until 2027-01-16T08:00:00Z"
            ),
            "{text}"
        );
    }
}
