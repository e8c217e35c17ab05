//! `tessera bundle show` (the server's own bundle, admin API) and
//! `tessera bundle fetch` (the bundles a workload receives, Workload API).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use tessera_proto::types::Bundle;
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{JwtAuthority, TrustBundle};

use crate::cli::{
    BundleCommand, BundleFetchArgs, BundleShowArgs, ServerBundleFormat, WorkloadBundleFormat,
};
use crate::client::admin::AdminClient;
use crate::client::workload::WorkloadClient;
use crate::commands::workload_target;
use crate::output::{self, OutputFormat, certificates_pem};
use crate::parse;

/// Runs one `tessera bundle` subcommand.
pub async fn run(command: BundleCommand, format: OutputFormat) -> Result<()> {
    match command {
        BundleCommand::Show(args) => show(args, format).await,
        BundleCommand::Fetch(args) => fetch(args, format).await,
        BundleCommand::Set(args) => crate::commands::federation::set_bundle(args, format).await,
    }
}

async fn show(args: BundleShowArgs, format: OutputFormat) -> Result<()> {
    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    let bundle = client.get_bundle().await?;
    let trust_domain = bundle.trust_domain.clone();
    let bundle =
        trust_bundle_from_proto(bundle).context("the server returned an invalid bundle")?;

    let encoded = match args.format {
        ServerBundleFormat::Pem => EncodedBundle::Pem(bundle.to_pem()),
        ServerBundleFormat::Spiffe => EncodedBundle::Jwks(jwks_value(&bundle.to_jwks())?),
    };
    match format {
        OutputFormat::Json => output::print_json(&ShownBundleView {
            trust_domain: &trust_domain,
            bundle: &encoded,
        }),
        OutputFormat::Text => output::print_text(&encoded.to_text()?),
    }
}

/// Converts the admin API's bundle message into a checked trust bundle.
fn trust_bundle_from_proto(bundle: Bundle) -> Result<TrustBundle> {
    let trust_domain = parse::trust_domain("trust domain", &bundle.trust_domain)?;
    let mut trust_bundle = TrustBundle::new(trust_domain);
    for der in bundle.x509_authorities {
        trust_bundle.add_x509_authority(CertificateDer::from(der))?;
    }
    for key in bundle.jwt_authorities {
        let expires_at = u64::try_from(key.expires_at)
            .ok()
            .filter(|secs| *secs > 0)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        trust_bundle.add_jwt_authority(JwtAuthority {
            key_id: key.key_id,
            public_key: key.public_key,
            expires_at,
        })?;
    }
    let refresh_hint = u64::try_from(bundle.refresh_hint)
        .ok()
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs);
    trust_bundle.set_refresh_hint(refresh_hint);
    trust_bundle.set_sequence_number(Some(bundle.sequence_number));
    Ok(trust_bundle)
}

async fn fetch(args: BundleFetchArgs, format: OutputFormat) -> Result<()> {
    let (socket, timeout) = workload_target(&args.workload)?;
    let client = WorkloadClient::connect(&socket, timeout).await?;
    let x509 = client.fetch_x509_bundles().await?;

    let mut bundles = BTreeMap::new();
    match args.format {
        WorkloadBundleFormat::Pem => {
            for (trust_domain, der) in x509.bundles {
                let pem = certificates_pem(&der)
                    .with_context(|| format!("invalid X.509 bundle for {trust_domain}"))?;
                bundles.insert(trust_domain, EncodedBundle::Pem(pem));
            }
        }
        WorkloadBundleFormat::Jwks => {
            let mut jwt = client.fetch_jwt_bundles().await?.bundles;
            for (trust_domain, der) in x509.bundles {
                let jwt_jwks = jwt.remove(&trust_domain);
                let bundle = combined_bundle(&trust_domain, &der, jwt_jwks.as_deref())
                    .with_context(|| format!("invalid bundle for {trust_domain}"))?;
                bundles.insert(
                    trust_domain,
                    EncodedBundle::Jwks(jwks_value(&bundle.to_jwks())?),
                );
            }
            // A trust domain may have JWT authorities and no X.509 ones.
            for (trust_domain, jwt_jwks) in jwt {
                let bundle = combined_bundle(&trust_domain, &[], Some(&jwt_jwks))
                    .with_context(|| format!("invalid JWT bundle for {trust_domain}"))?;
                bundles.insert(
                    trust_domain,
                    EncodedBundle::Jwks(jwks_value(&bundle.to_jwks())?),
                );
            }
        }
    }

    match format {
        OutputFormat::Json => output::print_json(&FetchedBundlesView { bundles: &bundles }),
        OutputFormat::Text => output::print_text(&fetched_bundles_text(&bundles)?),
    }
}

/// Builds one trust domain's bundle from the Workload API's X.509 bundle
/// (concatenated DER) and JWT bundle (a JWK Set).
fn combined_bundle(
    trust_domain: &str,
    x509_der: &[u8],
    jwt_jwks: Option<&[u8]>,
) -> Result<TrustBundle> {
    let trust_domain = parse::trust_domain("trust domain", trust_domain)?;
    let mut bundle = if x509_der.is_empty() {
        TrustBundle::new(trust_domain.clone())
    } else {
        TrustBundle::from_x509_der(&trust_domain, x509_der)?
    };
    if let Some(jwks) = jwt_jwks {
        let jwt_bundle = TrustBundle::from_jwks(&trust_domain, jwks)?;
        for authority in jwt_bundle.jwt_authorities() {
            bundle.add_jwt_authority(authority.clone())?;
        }
    }
    Ok(bundle)
}

fn jwks_value(jwks: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(jwks).context("the SPIFFE bundle encoder produced invalid JSON")
}

/// Renders fetched bundles as text: one bundle as it is, several with a
/// comment line (PEM) or keyed by trust domain (JWKS).
fn fetched_bundles_text(bundles: &BTreeMap<String, EncodedBundle>) -> Result<String> {
    if bundles.len() == 1
        && let Some(bundle) = bundles.values().next()
    {
        return bundle.to_text();
    }
    if bundles
        .values()
        .all(|bundle| matches!(bundle, EncodedBundle::Pem(_)))
    {
        let mut text = String::new();
        for (trust_domain, bundle) in bundles {
            text.push_str(&format!("# trust domain: {trust_domain}\n"));
            text.push_str(&bundle.to_text()?);
        }
        return Ok(text);
    }
    let mut text = serde_json::to_string_pretty(bundles).context("failed to encode bundles")?;
    text.push('\n');
    Ok(text)
}

/// A bundle in the encoding the user asked for.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum EncodedBundle {
    Pem(String),
    Jwks(serde_json::Value),
}

impl EncodedBundle {
    fn to_text(&self) -> Result<String> {
        match self {
            Self::Pem(pem) => Ok(pem.clone()),
            Self::Jwks(jwks) => {
                let mut text =
                    serde_json::to_string_pretty(jwks).context("failed to encode bundle")?;
                text.push('\n');
                Ok(text)
            }
        }
    }
}

#[derive(Serialize)]
struct ShownBundleView<'a> {
    trust_domain: &'a str,
    bundle: &'a EncodedBundle,
}

#[derive(Serialize)]
struct FetchedBundlesView<'a> {
    bundles: &'a BTreeMap<String, EncodedBundle>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_pem_bundles_get_comment_lines() {
        let bundles = BTreeMap::from([
            ("a.org".to_owned(), EncodedBundle::Pem("PEM-A\n".to_owned())),
            ("b.org".to_owned(), EncodedBundle::Pem("PEM-B\n".to_owned())),
        ]);
        let text = fetched_bundles_text(&bundles).expect("renders");
        assert_eq!(
            text,
            "# trust domain: a.org\nPEM-A\n# trust domain: b.org\nPEM-B\n"
        );
    }

    #[test]
    fn single_pem_bundle_is_printed_alone() {
        let bundles =
            BTreeMap::from([("a.org".to_owned(), EncodedBundle::Pem("PEM-A\n".to_owned()))]);
        assert_eq!(fetched_bundles_text(&bundles).expect("renders"), "PEM-A\n");
    }

    #[test]
    fn several_jwks_bundles_are_keyed_by_trust_domain() {
        let bundles = BTreeMap::from([
            (
                "a.org".to_owned(),
                EncodedBundle::Jwks(serde_json::json!({"keys": []})),
            ),
            (
                "b.org".to_owned(),
                EncodedBundle::Jwks(serde_json::json!({"keys": [1]})),
            ),
        ]);
        let text = fetched_bundles_text(&bundles).expect("renders");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["b.org"]["keys"][0], 1);
    }
}
