//! `tessera svid fetch`: this process's X.509-SVIDs from the Workload API,
//! printed, and written to files with `--write`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tessera_proto::workload::{X509svid, X509svidResponse};
use zeroize::Zeroize as _;

use crate::cli::{SvidCommand, SvidFetchArgs};
use crate::client::workload::WorkloadClient;
use crate::commands::workload_target;
use crate::output::{
    self, Fields, OutputFormat, certificates_pem, format_unix_time, private_key_pem,
    split_certificates,
};
use crate::parse;

/// File mode of written certificates and bundles.
const PUBLIC_FILE_MODE: u32 = 0o644;
/// File mode of written private keys.
const KEY_FILE_MODE: u32 = 0o600;

/// Runs one `tessera svid` subcommand.
pub async fn run(command: SvidCommand, format: OutputFormat) -> Result<()> {
    match command {
        SvidCommand::Fetch(args) => fetch(args, format).await,
    }
}

/// A Workload API response whose private keys are zeroized on drop.
struct SvidResponse(X509svidResponse);

impl Drop for SvidResponse {
    fn drop(&mut self) {
        for svid in &mut self.0.svids {
            svid.x509_svid_key.zeroize();
        }
    }
}

async fn fetch(args: SvidFetchArgs, format: OutputFormat) -> Result<()> {
    let (socket, timeout) = workload_target(&args.workload)?;
    let client = WorkloadClient::connect(&socket, timeout).await?;
    let response = SvidResponse(client.fetch_x509_svids().await?);
    let svids = &response.0.svids;
    if svids.is_empty() {
        bail!("the agent returned no X.509-SVIDs");
    }

    let mut views = svids
        .iter()
        .map(SvidView::new)
        .collect::<Result<Vec<_>>>()?;
    let mut federated: Vec<String> = response.0.federated_bundles.keys().cloned().collect();
    federated.sort();

    if let Some(dir) = &args.write {
        write_files(dir, &response.0, &mut views)?;
    }

    match format {
        OutputFormat::Json => output::print_json(&FetchView {
            svids: &views,
            federated_trust_domains: &federated,
        }),
        OutputFormat::Text => output::print_text(&fetch_text(&views, &federated)),
    }
}

/// The printed part of one SVID, which leaves out the private key.
#[derive(Debug, Serialize)]
struct SvidView {
    spiffe_id: String,
    hint: String,
    /// Unix seconds.
    expires_at: i64,
    serial: String,
    chain_length: usize,
    files: Vec<PathBuf>,
}

impl SvidView {
    fn new(svid: &X509svid) -> Result<Self> {
        let chain = split_certificates(&svid.x509_svid)
            .with_context(|| format!("invalid certificate chain for {}", svid.spiffe_id))?;
        let leaf = chain
            .first()
            .with_context(|| format!("the agent sent an empty chain for {}", svid.spiffe_id))?;
        let (_, certificate) = x509_parser::parse_x509_certificate(leaf)
            .with_context(|| format!("invalid leaf certificate for {}", svid.spiffe_id))?;
        Ok(Self {
            spiffe_id: svid.spiffe_id.clone(),
            hint: svid.hint.clone(),
            expires_at: certificate.validity().not_after.timestamp(),
            serial: hex_serial(certificate.tbs_certificate.raw_serial()),
            chain_length: chain.len(),
            files: Vec::new(),
        })
    }
}

/// Formats a certificate serial number as lowercase hex without
/// separators, as `tessera agent list` shows serials.
fn hex_serial(serial: &[u8]) -> String {
    serial.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Serialize)]
struct FetchView<'a> {
    svids: &'a [SvidView],
    federated_trust_domains: &'a [String],
}

fn fetch_text(views: &[SvidView], federated: &[String]) -> String {
    let mut text = String::new();
    if views.len() > 1 {
        text.push_str(&format!(
            "Received {} SVIDs; the first is the default\n\n",
            views.len()
        ));
    }
    for (index, view) in views.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        let mut fields = Fields::new();
        fields.row("SPIFFE ID", &view.spiffe_id);
        if !view.hint.is_empty() {
            fields.row("Hint", &view.hint);
        }
        fields
            .row(
                "Expires at",
                expiry_text(view.expires_at, SystemTime::now()),
            )
            .row("Serial", &view.serial)
            .row("Chain length", view.chain_length)
            .rows("Written", view.files.iter().map(|path| path.display()));
        text.push_str(&fields.render());
    }
    if !federated.is_empty() {
        text.push_str(&format!("\nFederated bundles: {}\n", federated.join(", ")));
    }
    text
}

/// Formats an expiry time with the time left, such as
/// `2027-01-15T08:00:00Z (in 59m 59s)`.
fn expiry_text(expires_at: i64, now: SystemTime) -> String {
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let when = format_unix_time(expires_at);
    match u64::try_from(expires_at.saturating_sub(now_secs)) {
        Ok(0) | Err(_) => format!("{when} (expired)"),
        Ok(left) => {
            let left = humantime::format_duration(std::time::Duration::from_secs(left));
            format!("{when} (in {left})")
        }
    }
}

/// Names of the files written for the SVID at `index` of `count`.
fn file_names(index: usize, count: usize) -> [String; 3] {
    if count == 1 {
        [
            "svid.pem".to_owned(),
            "svid.key".to_owned(),
            "bundle.pem".to_owned(),
        ]
    } else {
        [
            format!("svid.{index}.pem"),
            format!("svid.{index}.key"),
            format!("bundle.{index}.pem"),
        ]
    }
}

fn write_files(dir: &Path, response: &X509svidResponse, views: &mut [SvidView]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;

    let count = response.svids.len();
    for (index, (svid, view)) in response.svids.iter().zip(views.iter_mut()).enumerate() {
        let [chain_name, key_name, bundle_name] = file_names(index, count);
        let chain_pem = certificates_pem(&svid.x509_svid)?;
        let key_pem = private_key_pem(&svid.x509_svid_key);
        let bundle_pem = certificates_pem(&svid.bundle)
            .with_context(|| format!("invalid bundle for {}", svid.spiffe_id))?;

        view.files.push(write_file(
            dir,
            &chain_name,
            chain_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?);
        view.files.push(write_file(
            dir,
            &key_name,
            key_pem.as_bytes(),
            KEY_FILE_MODE,
        )?);
        view.files.push(write_file(
            dir,
            &bundle_name,
            bundle_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?);
    }

    for (key, der) in &response.federated_bundles {
        // The map is keyed by the trust domain's SPIFFE ID. A parsed trust
        // domain name contains only [a-z0-9._-], so it is safe in a file name.
        let trust_domain = parse::trust_domain("federated trust domain", key)
            .context("the agent sent a federated bundle under an invalid key")?;
        let pem = certificates_pem(der)
            .with_context(|| format!("invalid federated bundle for {trust_domain}"))?;
        let name = format!("federated_bundle.{}.pem", trust_domain.name());
        write_file(dir, &name, pem.as_bytes(), PUBLIC_FILE_MODE)?;
    }
    Ok(())
}

/// Writes `contents` to `dir/name` with `mode` by writing a temporary file
/// and renaming it, so a reader never sees a partial file and an existing
/// key file never keeps looser permissions.
fn write_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<PathBuf> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&temporary);
        anyhow::Error::new(err).context(format!("failed to write {}", path.display()))
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    #[test]
    fn hex_serial_is_lowercase_without_separators() {
        assert_eq!(hex_serial(&[0x4c, 0xb9, 0x01]), "4cb901");
    }

    #[test]
    fn file_names_for_one_svid() {
        assert_eq!(file_names(0, 1), ["svid.pem", "svid.key", "bundle.pem"]);
    }

    #[test]
    fn file_names_for_several_svids() {
        assert_eq!(
            file_names(1, 2),
            ["svid.1.pem", "svid.1.key", "bundle.1.pem"]
        );
    }

    #[test]
    fn write_file_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("svid.key");
        fs::write(&path, "old").expect("write old file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

        let written = write_file(dir.path(), "svid.key", b"new", KEY_FILE_MODE).expect("write");
        assert_eq!(written, path);
        assert_eq!(fs::read_to_string(&path).expect("read back"), "new");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_files_writes_svid_key_and_bundles() {
        let certified = tessera_spiffe::rcgen::generate_simple_self_signed(vec!["a.test".into()])
            .expect("self-signed certificate");
        let der = certified.cert.der().to_vec();
        let response = X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: "spiffe://example.org/web".to_owned(),
                x509_svid: der.clone(),
                x509_svid_key: certified.signing_key.serialize_der(),
                bundle: der.clone(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: [("spiffe://other.org".to_owned(), der)].into(),
        };
        let mut views = response
            .svids
            .iter()
            .map(SvidView::new)
            .collect::<Result<Vec<_>>>()
            .expect("valid SVIDs");
        let dir = tempfile::tempdir().expect("temporary directory");

        write_files(dir.path(), &response, &mut views).expect("files written");

        let key = fs::read_to_string(dir.path().join("svid.key")).expect("key file");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
        let key_mode = fs::metadata(dir.path().join("svid.key")).expect("metadata");
        assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);
        let chain = fs::read_to_string(dir.path().join("svid.pem")).expect("chain file");
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(dir.path().join("bundle.pem").exists());
        assert!(dir.path().join("federated_bundle.other.org.pem").exists());
        assert_eq!(views[0].files.len(), 3);
    }

    #[test]
    fn expiry_text_cases() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            expiry_text(1_800_003_600, now),
            "2027-01-15T09:00:00Z (in 1h)"
        );
        assert_eq!(
            expiry_text(1_799_999_000, now),
            "2027-01-15T07:43:20Z (expired)"
        );
    }
}
