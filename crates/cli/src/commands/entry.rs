//! `tessera entry create|show|list|update|delete`: registration entries
//! through the server's admin API. Every value is checked before the first
//! call, so a malformed flag sends nothing.

mod batch;
mod fields;
mod view;

use anyhow::{Result, bail};
use serde::Serialize;
use tessera_proto::admin::ListEntriesRequest;
use tessera_proto::types::Entry;
use tonic::Code;

use crate::cli::{
    EntryCommand, EntryCreateArgs, EntryDeleteArgs, EntryIdArgs, EntryListArgs, EntryUpdateArgs,
};
use crate::client::admin::AdminClient;
use crate::client::is_rpc_code;
use crate::commands::UsageError;
use crate::output::{self, OutputFormat};
use crate::parse;

use fields::{EntrySpec, FLAG_NAMES, entry_from_spec};
use view::{EntryView, StatusView, entries_text, entry_text};

pub use view::selector_text;

/// Entries sent per create call, to stay well under gRPC's default 4 MiB
/// message limit.
const CREATE_CHUNK: usize = 100;

/// Runs one `tessera entry` subcommand.
pub async fn run(command: EntryCommand, format: OutputFormat) -> Result<()> {
    match command {
        EntryCommand::Create(args) => create(args, format).await,
        EntryCommand::Show(args) => show(args, format).await,
        EntryCommand::List(args) => list(args, format).await,
        EntryCommand::Update(args) => update(args, format).await,
        EntryCommand::Delete(args) => delete(args, format).await,
    }
}

async fn create(args: EntryCreateArgs, format: OutputFormat) -> Result<()> {
    let entries = match &args.data {
        Some(path) => batch::read_batch_file(path)?,
        None => vec![entry_from_flags(&args)?],
    };

    let mut client = AdminClient::connect(&args.admin_api.admin_socket).await?;
    let mut results = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(CREATE_CHUNK) {
        let response = client.create_entries(chunk.to_vec()).await?;
        if response.results.len() != chunk.len() {
            bail!(
                "the server returned {} results for {} entries",
                response.results.len(),
                chunk.len()
            );
        }
        results.extend(response.results);
    }

    let failed = results
        .iter()
        .filter(|result| result.status.as_ref().is_some_and(|s| s.code != 0))
        .count();

    match format {
        OutputFormat::Json => {
            let results = results
                .iter()
                .map(|result| CreateResultView {
                    status: StatusView::from(result.status.as_ref()),
                    entry: result.entry.as_ref().map(EntryView::from),
                })
                .collect();
            output::print_json(&CreateResultsView { results })?;
        }
        OutputFormat::Text => {
            // Created entries go to standard output and failures to
            // standard error, so a script can keep the IDs and still see
            // why the rest failed.
            let mut text = String::new();
            let mut errors = String::new();
            for (index, (requested, result)) in entries.iter().zip(&results).enumerate() {
                match (&result.status, &result.entry) {
                    (Some(status), _) if status.code != 0 => {
                        errors.push_str(&format!(
                            "{}failed to create the entry for {}: {} ({:?})\n",
                            batch_position(index, entries.len()),
                            requested.spiffe_id,
                            status.message,
                            Code::from_i32(status.code)
                        ));
                    }
                    (_, Some(entry)) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str("Created entry\n");
                        text.push_str(&entry_text(entry));
                    }
                    (_, None) => text.push_str("Created entry (the server returned no details)\n"),
                }
            }
            output::print_text(&text)?;
            eprint!("{errors}");
        }
    }

    if failed > 0 {
        bail!("failed to create {failed} of {} entries", results.len());
    }
    Ok(())
}

fn entry_from_flags(args: &EntryCreateArgs) -> Result<Entry> {
    let fields = &args.fields;
    let mut missing = Vec::new();
    if fields.spiffe_id.is_none() {
        missing.push("--spiffe-id");
    }
    if fields.parent_id.is_none() {
        missing.push("--parent-id");
    }
    if fields.selectors.is_empty() {
        missing.push("--selector");
    }
    if !missing.is_empty() {
        return Err(UsageError(format!(
            "entry create needs {} (or --data FILE)",
            missing.join(", ")
        ))
        .into());
    }

    let spec = EntrySpec {
        spiffe_id: fields.spiffe_id.clone().unwrap_or_default(),
        parent_id: fields.parent_id.clone().unwrap_or_default(),
        selectors: fields.selectors.clone(),
        x509_svid_ttl: fields.x509_svid_ttl.clone(),
        jwt_svid_ttl: fields.jwt_svid_ttl.clone(),
        federates_with: fields.federates_with.clone(),
        dns_names: fields.dns_names.clone(),
        hint: fields.hint.clone().unwrap_or_default(),
        admin: args.admin,
        downstream: args.downstream,
        expires_at: fields.expires_at.clone(),
    };
    entry_from_spec(&spec, FLAG_NAMES)
}

async fn show(args: EntryIdArgs, format: OutputFormat) -> Result<()> {
    let id = check_entry_id(&args.id)?;
    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    let entry = client.get_entry(&id).await?;
    match format {
        OutputFormat::Json => output::print_json(&EntryView::from(&entry)),
        OutputFormat::Text => output::print_text(&entry_text(&entry)),
    }
}

async fn list(args: EntryListArgs, format: OutputFormat) -> Result<()> {
    let filter = ListEntriesRequest {
        by_spiffe_id: optional_id("--spiffe-id", args.spiffe_id.as_deref())?,
        by_parent_id: optional_id("--parent-id", args.parent_id.as_deref())?,
        by_selectors: fields::selectors("--selector", &args.selectors)?,
        page_size: 0,
        page_token: String::new(),
    };

    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    let entries = client.list_all_entries(filter).await?;
    match format {
        OutputFormat::Json => output::print_json(&EntriesView {
            entries: entries.iter().map(EntryView::from).collect(),
        }),
        OutputFormat::Text => output::print_text(&entries_text(&entries)),
    }
}

async fn update(args: EntryUpdateArgs, format: OutputFormat) -> Result<()> {
    let id = check_entry_id(&args.id)?;
    let changes = EntryChanges::from_args(&args)?;
    if changes.is_empty() {
        return Err(UsageError(
            "entry update needs at least one field to change, such as --selector or --hint"
                .to_owned(),
        )
        .into());
    }

    let mut client = AdminClient::connect(&args.admin_api.admin_socket).await?;
    let mut entry = client.get_entry(&id).await?;
    let read_revision = entry.revision;
    changes.apply(&mut entry);

    let updated = match client.update_entry(entry).await {
        Ok(updated) => updated,
        Err(err) if is_rpc_code(&err, Code::Aborted) => {
            return Err(err.context(format!(
                "entry {id} changed on the server after it was read at revision \
                 {read_revision}; run the command again to apply the change to the new revision"
            )));
        }
        Err(err) => return Err(err),
    };

    match format {
        OutputFormat::Json => output::print_json(&EntryView::from(&updated)),
        OutputFormat::Text => {
            output::print_text(&format!("Updated entry\n{}", entry_text(&updated)))
        }
    }
}

async fn delete(args: EntryDeleteArgs, format: OutputFormat) -> Result<()> {
    let ids = args
        .ids
        .iter()
        .map(|id| check_entry_id(id))
        .collect::<Result<Vec<_>>>()?;

    let mut client = AdminClient::connect(&args.admin.admin_socket).await?;
    let response = client.delete_entries(ids).await?;
    let failed = response
        .results
        .iter()
        .filter(|result| result.status.as_ref().is_some_and(|s| s.code != 0))
        .count();

    match format {
        OutputFormat::Json => {
            let results = response
                .results
                .iter()
                .map(|result| DeleteResultView {
                    id: result.id.clone(),
                    status: StatusView::from(result.status.as_ref()),
                })
                .collect();
            output::print_json(&DeleteResultsView { results })?;
        }
        OutputFormat::Text => {
            let mut text = String::new();
            let mut errors = String::new();
            for result in &response.results {
                match &result.status {
                    Some(status) if status.code != 0 => errors.push_str(&format!(
                        "failed to delete entry {}: {} ({:?})\n",
                        result.id,
                        status.message,
                        Code::from_i32(status.code)
                    )),
                    _ => text.push_str(&format!("Deleted entry {}\n", result.id)),
                }
            }
            output::print_text(&text)?;
            eprint!("{errors}");
        }
    }

    if failed > 0 {
        bail!(
            "failed to delete {failed} of {} entries",
            response.results.len()
        );
    }
    Ok(())
}

/// Changes requested by `entry update`; `None` and empty lists keep the
/// current value.
#[derive(Debug, Default)]
struct EntryChanges {
    spiffe_id: Option<String>,
    parent_id: Option<String>,
    selectors: Option<Vec<tessera_proto::types::Selector>>,
    x509_svid_ttl: Option<i32>,
    jwt_svid_ttl: Option<i32>,
    dns_names: Option<Vec<String>>,
    federates_with: Option<Vec<String>>,
    hint: Option<String>,
    expires_at: Option<i64>,
    admin: Option<bool>,
    downstream: Option<bool>,
}

impl EntryChanges {
    fn from_args(args: &EntryUpdateArgs) -> Result<Self> {
        let fields = &args.fields;
        let names = FLAG_NAMES;
        Ok(Self {
            spiffe_id: optional_id_value(names.spiffe_id, fields.spiffe_id.as_deref())?,
            parent_id: optional_id_value(names.parent_id, fields.parent_id.as_deref())?,
            selectors: non_empty(&fields.selectors)
                .map(|values| fields::selectors(names.selector, values))
                .transpose()?,
            x509_svid_ttl: fields
                .x509_svid_ttl
                .as_deref()
                .map(|value| parse::ttl_seconds(names.x509_svid_ttl, value))
                .transpose()?,
            jwt_svid_ttl: fields
                .jwt_svid_ttl
                .as_deref()
                .map(|value| parse::ttl_seconds(names.jwt_svid_ttl, value))
                .transpose()?,
            dns_names: if args.clear_dns_names {
                Some(Vec::new())
            } else {
                non_empty(&fields.dns_names)
                    .map(|values| fields::dns_names(names.dns_name, values))
                    .transpose()?
            },
            federates_with: if args.clear_federates_with {
                Some(Vec::new())
            } else {
                non_empty(&fields.federates_with)
                    .map(|values| fields::trust_domains(names.federates_with, values))
                    .transpose()?
            },
            hint: fields.hint.clone(),
            expires_at: fields
                .expires_at
                .as_deref()
                .map(parse::expiry)
                .transpose()?,
            admin: flag_pair(args.admin, args.no_admin),
            downstream: flag_pair(args.downstream, args.no_downstream),
        })
    }

    fn is_empty(&self) -> bool {
        self.spiffe_id.is_none()
            && self.parent_id.is_none()
            && self.selectors.is_none()
            && self.x509_svid_ttl.is_none()
            && self.jwt_svid_ttl.is_none()
            && self.dns_names.is_none()
            && self.federates_with.is_none()
            && self.hint.is_none()
            && self.expires_at.is_none()
            && self.admin.is_none()
            && self.downstream.is_none()
    }

    fn apply(self, entry: &mut Entry) {
        replace(&mut entry.spiffe_id, self.spiffe_id);
        replace(&mut entry.parent_id, self.parent_id);
        replace(&mut entry.selectors, self.selectors);
        replace(&mut entry.x509_svid_ttl, self.x509_svid_ttl);
        replace(&mut entry.jwt_svid_ttl, self.jwt_svid_ttl);
        replace(&mut entry.dns_names, self.dns_names);
        replace(&mut entry.federates_with, self.federates_with);
        replace(&mut entry.hint, self.hint);
        replace(&mut entry.expires_at, self.expires_at);
        replace(&mut entry.admin, self.admin);
        replace(&mut entry.downstream, self.downstream);
    }
}

fn replace<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn non_empty(values: &[String]) -> Option<&[String]> {
    (!values.is_empty()).then_some(values)
}

/// Turns a `--x` / `--no-x` pair into the requested value, if any.
fn flag_pair(set: bool, unset: bool) -> Option<bool> {
    match (set, unset) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    }
}

fn optional_id_value(field: &str, value: Option<&str>) -> Result<Option<String>> {
    value
        .map(|value| Ok(parse::spiffe_id(field, value)?.to_string()))
        .transpose()
}

/// Checks an optional SPIFFE ID filter; an absent filter is the empty string.
fn optional_id(field: &str, value: Option<&str>) -> Result<String> {
    Ok(optional_id_value(field, value)?.unwrap_or_default())
}

/// Checks that `id` has the form of an entry ID. The parser's error names
/// the value and the expected form.
fn check_entry_id(id: &str) -> Result<String> {
    Ok(tessera_registration::EntryId::parse(id)?.to_string())
}

#[derive(Serialize)]
struct EntriesView {
    entries: Vec<EntryView>,
}

#[derive(Serialize)]
struct CreateResultsView {
    results: Vec<CreateResultView>,
}

#[derive(Serialize)]
struct CreateResultView {
    status: StatusView,
    entry: Option<EntryView>,
}

#[derive(Serialize)]
struct DeleteResultsView {
    results: Vec<DeleteResultView>,
}

#[derive(Serialize)]
struct DeleteResultView {
    id: String,
    status: StatusView,
}

/// Returns `entries[i]: ` when a batch has several entries, so a message
/// points at the element of the batch file, and nothing otherwise.
fn batch_position(index: usize, count: usize) -> String {
    if count > 1 {
        format!("entries[{index}]: ")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_pair_cases() {
        assert_eq!(flag_pair(true, false), Some(true));
        assert_eq!(flag_pair(false, true), Some(false));
        assert_eq!(flag_pair(false, false), None);
    }

    #[test]
    fn changes_apply_only_given_fields() {
        let mut entry = Entry {
            hint: "old".to_owned(),
            dns_names: vec!["a.example.org".to_owned()],
            admin: true,
            revision: 7,
            ..Entry::default()
        };
        let changes = EntryChanges {
            hint: Some("new".to_owned()),
            admin: Some(false),
            ..EntryChanges::default()
        };
        assert!(!changes.is_empty());
        changes.apply(&mut entry);
        assert_eq!(entry.hint, "new");
        assert!(!entry.admin);
        assert_eq!(entry.dns_names, ["a.example.org"]);
        assert_eq!(entry.revision, 7);
    }

    #[test]
    fn default_changes_are_empty() {
        assert!(EntryChanges::default().is_empty());
    }
}
