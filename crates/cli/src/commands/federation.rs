//! `tessera federation create|update|delete|list|show|refresh`, which
//! manage federation relationships with foreign trust domains, and
//! `tessera bundle set`, which stores a foreign trust domain's bundle.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tessera_proto::admin::admin_api_client::AdminApiClient;
use tessera_proto::admin::{
    CreateFederationRequest, DeleteFederationRequest, FederationRelationship, GetFederationRequest,
    ListFederationsRequest, RefreshFederationRequest, SetFederatedBundleRequest,
    UpdateFederationRequest,
};
use tonic::transport::Channel;

use crate::cli::AdminArgs;
use crate::client::{RpcError, unix};
use crate::output::{self, Fields, OutputFormat};

/// Maximum size of a bundle file; the server rejects larger bundles.
const MAX_BUNDLE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// `tessera federation ...`
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Create a federation relationship with a foreign trust domain.
    Create(RelationshipArgs),
    /// Replace a federation relationship's endpoint, profile or bundle.
    Update(RelationshipArgs),
    /// Delete a federation relationship and the foreign bundle.
    Delete(TrustDomainArgs),
    /// List federation relationships with their refresh status.
    List(ListArgs),
    /// Show one relationship: endpoint, last success, last error, bundle
    /// sequence number and next refresh.
    Show(TrustDomainArgs),
    /// Fetch the foreign bundle now and show the outcome.
    Refresh(TrustDomainArgs),
}

/// Bundle endpoint profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// The endpoint presents an X509-SVID of the foreign trust domain.
    #[value(alias = "https_spiffe")]
    HttpsSpiffe,
    /// The endpoint presents a Web PKI certificate, checked against the
    /// server's `federation.https_web_ca_file`.
    #[value(alias = "https_web")]
    HttpsWeb,
}

impl ProfileArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::HttpsSpiffe => "https_spiffe",
            Self::HttpsWeb => "https_web",
        }
    }
}

/// Flags of `tessera federation create` and `update`.
#[derive(Debug, Args)]
pub struct RelationshipArgs {
    /// The foreign trust domain, such as `partner.example`.
    #[arg(long)]
    pub trust_domain: String,
    /// HTTPS URL of the foreign bundle endpoint, such as
    /// `https://127.0.0.1:8443/`.
    #[arg(long)]
    pub bundle_endpoint_url: String,
    /// The bundle endpoint's authentication profile (`https_spiffe` and
    /// `https_web`, the configuration file's spelling, are accepted too).
    /// `create` defaults to https-spiffe; `update` keeps the current one.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// SPIFFE ID the endpoint presents under https_spiffe; defaults to
    /// `spiffe://<trust domain>/tessera/server`. `update` keeps the
    /// current one when the profile stays the same.
    #[arg(long)]
    pub endpoint_spiffe_id: Option<String>,
    /// Bootstrap bundle of the foreign trust domain: PEM certificates or
    /// the SPIFFE bundle format (JSON). Needed for https_spiffe until the
    /// first fetch succeeds.
    #[arg(long, value_name = "FILE")]
    pub trust_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of the subcommands that name one relationship.
#[derive(Debug, Args)]
pub struct TrustDomainArgs {
    /// The foreign trust domain.
    #[arg(long)]
    pub trust_domain: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `tessera federation list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `tessera bundle set`.
#[derive(Debug, Args)]
pub struct BundleSetArgs {
    /// The foreign trust domain whose bundle FILE is.
    #[arg(long)]
    pub trust_domain: String,
    /// PEM certificates or the SPIFFE bundle format (JSON).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs one `tessera federation` subcommand.
pub async fn run(command: FederationCommand, format: OutputFormat) -> Result<()> {
    match command {
        FederationCommand::Create(args) => save(args, format, true).await,
        FederationCommand::Update(args) => save(args, format, false).await,
        FederationCommand::Delete(args) => delete(args, format).await,
        FederationCommand::List(args) => list(args, format).await,
        FederationCommand::Show(args) => show(args, format).await,
        FederationCommand::Refresh(args) => refresh(args, format).await,
    }
}

async fn connect(admin: &AdminArgs) -> Result<AdminApiClient<Channel>> {
    let channel = unix::connect(&admin.admin_socket).await.with_context(|| {
        format!(
            "failed to connect to the admin socket {}; check that the server is running \
             and that --admin-socket (or TESSERA_ADMIN_SOCKET) names its admin_socket",
            admin.admin_socket.display()
        )
    })?;
    Ok(AdminApiClient::new(channel))
}

fn read_bundle_file(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("failed to read the bundle file {}", path.display()))?
        .len();
    if len > MAX_BUNDLE_FILE_BYTES {
        anyhow::bail!(
            "the bundle file {} is {len} bytes, over the maximum of {MAX_BUNDLE_FILE_BYTES}",
            path.display()
        );
    }
    std::fs::read(path)
        .with_context(|| format!("failed to read the bundle file {}", path.display()))
}

async fn save(args: RelationshipArgs, format: OutputFormat, create: bool) -> Result<()> {
    let trust_bundle = match &args.trust_bundle {
        Some(path) => read_bundle_file(path)?,
        None => Vec::new(),
    };
    let mut client = connect(&args.admin).await?;
    let td = &args.trust_domain;
    let (profile, endpoint_spiffe_id) = match (args.profile, create) {
        (Some(profile), _) => (profile.as_str().to_owned(), args.endpoint_spiffe_id),
        (None, true) => (
            ProfileArg::HttpsSpiffe.as_str().to_owned(),
            args.endpoint_spiffe_id,
        ),
        (None, false) => {
            let current = client
                .get_federation(GetFederationRequest {
                    trust_domain: td.clone(),
                })
                .await
                .map_err(|status| {
                    RpcError::new(
                        format!("read the federation relationship with {td}"),
                        &status,
                    )
                })?
                .into_inner();
            let endpoint_id = args.endpoint_spiffe_id.or(Some(current.endpoint_spiffe_id));
            (current.profile, endpoint_id)
        }
    };
    let relationship = FederationRelationship {
        trust_domain: td.clone(),
        bundle_endpoint_url: args.bundle_endpoint_url,
        profile,
        endpoint_spiffe_id: endpoint_spiffe_id.unwrap_or_default(),
        ..FederationRelationship::default()
    };
    let response = if create {
        let request = CreateFederationRequest {
            relationship: Some(relationship),
            trust_bundle,
        };
        client.create_federation(request).await.map_err(|status| {
            RpcError::new(
                format!("create the federation relationship with {td}"),
                &status,
            )
        })?
    } else {
        let request = UpdateFederationRequest {
            relationship: Some(relationship),
            trust_bundle,
        };
        client.update_federation(request).await.map_err(|status| {
            RpcError::new(
                format!("update the federation relationship with {td}"),
                &status,
            )
        })?
    };
    print_relationship(&response.into_inner(), format)
}

async fn delete(args: TrustDomainArgs, format: OutputFormat) -> Result<()> {
    let mut client = connect(&args.admin).await?;
    let td = args.trust_domain;
    let request = DeleteFederationRequest {
        trust_domain: td.clone(),
    };
    client.delete_federation(request).await.map_err(|status| {
        RpcError::new(
            format!("delete the federation relationship with {td}"),
            &status,
        )
    })?;
    match format {
        OutputFormat::Json => output::print_json(&serde_json::json!({ "deleted": td })),
        OutputFormat::Text => output::print_text(&format!("deleted the relationship with {td}\n")),
    }
}

async fn list(args: ListArgs, format: OutputFormat) -> Result<()> {
    let mut client = connect(&args.admin).await?;
    let response = client
        .list_federations(ListFederationsRequest {})
        .await
        .map_err(|status| RpcError::new("list federation relationships", &status))?
        .into_inner();
    let views: Vec<RelationshipView> = response.relationships.iter().map(view).collect();
    match format {
        OutputFormat::Json => output::print_json(&views),
        OutputFormat::Text => {
            let text: Vec<String> = views.iter().map(RelationshipView::to_text).collect();
            output::print_text(&text.join("\n"))
        }
    }
}

async fn show(args: TrustDomainArgs, format: OutputFormat) -> Result<()> {
    let mut client = connect(&args.admin).await?;
    let td = args.trust_domain;
    let request = GetFederationRequest {
        trust_domain: td.clone(),
    };
    let response = client.get_federation(request).await.map_err(|status| {
        RpcError::new(
            format!("get the federation relationship with {td}"),
            &status,
        )
    })?;
    print_relationship(&response.into_inner(), format)
}

async fn refresh(args: TrustDomainArgs, format: OutputFormat) -> Result<()> {
    let mut client = connect(&args.admin).await?;
    let td = args.trust_domain;
    let request = RefreshFederationRequest {
        trust_domain: td.clone(),
    };
    let response = client
        .refresh_federation(request)
        .await
        .map_err(|status| RpcError::new(format!("refresh the bundle of {td}"), &status))?
        .into_inner();
    print_relationship(&response, format)?;
    let failed = response
        .status
        .as_ref()
        .is_some_and(|status| !status.last_error.is_empty());
    if failed {
        anyhow::bail!("the refresh of {td} failed; the last good bundle stays in use");
    }
    Ok(())
}

/// Runs `tessera bundle set`.
pub async fn set_bundle(args: BundleSetArgs, format: OutputFormat) -> Result<()> {
    let bundle = read_bundle_file(&args.file)?;
    let mut client = connect(&args.admin).await?;
    let td = args.trust_domain;
    let request = SetFederatedBundleRequest {
        trust_domain: td.clone(),
        bundle,
    };
    let stored = client
        .set_federated_bundle(request)
        .await
        .map_err(|status| RpcError::new(format!("set the bundle of {td}"), &status))?
        .into_inner();
    let x509 = stored.x509_authorities.len();
    let jwt = stored.jwt_authorities.len();
    match format {
        OutputFormat::Json => output::print_json(&serde_json::json!({
            "trust_domain": td,
            "x509_authorities": x509,
            "jwt_authorities": jwt,
        })),
        OutputFormat::Text => output::print_text(&format!(
            "stored the bundle of {td}: {x509} X.509 authorities, {jwt} JWT authorities\n"
        )),
    }
}

#[derive(Debug, Serialize)]
struct RelationshipView {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: String,
    endpoint_spiffe_id: String,
    last_success_at: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    sequence_number: u64,
    next_refresh_at: Option<String>,
    x509_authorities: usize,
    jwt_authorities: usize,
}

fn time(secs: i64) -> Option<String> {
    (secs > 0).then(|| output::format_unix_time(secs))
}

fn view(relationship: &FederationRelationship) -> RelationshipView {
    let status = relationship.status.clone().unwrap_or_default();
    let bundle = relationship.bundle.as_ref();
    RelationshipView {
        trust_domain: relationship.trust_domain.clone(),
        bundle_endpoint_url: relationship.bundle_endpoint_url.clone(),
        profile: relationship.profile.clone(),
        endpoint_spiffe_id: relationship.endpoint_spiffe_id.clone(),
        last_success_at: time(status.last_success_at),
        last_error: (!status.last_error.is_empty()).then_some(status.last_error),
        last_error_at: time(status.last_error_at),
        sequence_number: status.sequence_number,
        next_refresh_at: time(status.next_refresh_at),
        x509_authorities: bundle.map_or(0, |b| b.x509_authorities.len()),
        jwt_authorities: bundle.map_or(0, |b| b.jwt_authorities.len()),
    }
}

impl RelationshipView {
    fn to_text(&self) -> String {
        let never = || "never".to_owned();
        let mut fields = Fields::new();
        fields
            .row("Trust domain", &self.trust_domain)
            .row("Bundle endpoint URL", &self.bundle_endpoint_url)
            .row("Profile", &self.profile);
        if !self.endpoint_spiffe_id.is_empty() {
            fields.row("Endpoint SPIFFE ID", &self.endpoint_spiffe_id);
        }
        fields
            .row(
                "Last success",
                self.last_success_at.clone().unwrap_or_else(never),
            )
            .row("Last error", self.last_error.as_deref().unwrap_or("none"));
        if let Some(at) = &self.last_error_at {
            fields.row("Last error at", at);
        }
        fields
            .row("Sequence number", self.sequence_number)
            .row(
                "Next refresh",
                self.next_refresh_at.clone().unwrap_or_else(never),
            )
            .row("X.509 authorities", self.x509_authorities)
            .row("JWT authorities", self.jwt_authorities);
        fields.render()
    }
}

fn print_relationship(relationship: &FederationRelationship, format: OutputFormat) -> Result<()> {
    let view = view(relationship);
    match format {
        OutputFormat::Json => output::print_json(&view),
        OutputFormat::Text => output::print_text(&view.to_text()),
    }
}
