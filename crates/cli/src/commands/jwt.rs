//! `tessera jwt fetch` and `tessera jwt validate` through the Workload API.
//! Tokens are printed because they are the output the user asked for; they
//! are never logged.

use std::io::Read as _;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::cli::{JwtCommand, JwtFetchArgs, JwtValidateArgs};
use crate::client::workload::WorkloadClient;
use crate::commands::workload_target;
use crate::output::{self, Fields, OutputFormat, format_unix_time};
use crate::parse;

/// Maximum token length read from standard input.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Runs one `tessera jwt` subcommand.
pub async fn run(command: JwtCommand, format: OutputFormat) -> Result<()> {
    match command {
        JwtCommand::Fetch(args) => fetch(args, format).await,
        JwtCommand::Validate(args) => validate(args, format).await,
    }
}

#[derive(Serialize)]
struct JwtSvidView<'a> {
    spiffe_id: &'a str,
    hint: &'a str,
    /// Unix seconds, read from the token's `exp` claim without verifying it.
    expires_at: Option<i64>,
    token: &'a str,
}

#[derive(Serialize)]
struct FetchView<'a> {
    svids: Vec<JwtSvidView<'a>>,
}

async fn fetch(args: JwtFetchArgs, format: OutputFormat) -> Result<()> {
    if let Some(empty) = args.audiences.iter().find(|a| a.trim().is_empty()) {
        bail!("invalid --audience {empty:?}: an audience must not be empty");
    }
    let spiffe_id = match &args.spiffe_id {
        Some(value) => parse::spiffe_id("--spiffe-id", value)?.to_string(),
        None => String::new(),
    };

    let (socket, timeout) = workload_target(&args.workload)?;
    let client = WorkloadClient::connect(&socket, timeout).await?;
    let response = client.fetch_jwt_svids(&args.audiences, &spiffe_id).await?;
    if response.svids.is_empty() {
        bail!("the agent returned no JWT-SVIDs");
    }

    let views: Vec<JwtSvidView<'_>> = response
        .svids
        .iter()
        .map(|svid| JwtSvidView {
            spiffe_id: &svid.spiffe_id,
            hint: &svid.hint,
            expires_at: unverified_expiry(&svid.svid),
            token: &svid.svid,
        })
        .collect();

    match format {
        OutputFormat::Json => output::print_json(&FetchView { svids: views }),
        OutputFormat::Text => {
            // Standard output carries only the tokens, one per line, so that
            // `$(tessera jwt fetch ...)` captures a usable token; the
            // description of each goes to standard error.
            let mut tokens = Zeroizing::new(String::new());
            for view in &views {
                let expiry = view
                    .expires_at
                    .map_or_else(|| "unknown".to_owned(), format_unix_time);
                eprintln!("JWT-SVID for {} (expires at {expiry})", view.spiffe_id);
                tokens.push_str(view.token);
                tokens.push('\n');
            }
            output::print_text(&tokens)
        }
    }
}

/// Reads the `exp` claim of a compact JWT without checking its signature,
/// only to show the user when the token expires.
fn unverified_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    claims.get("exp")?.as_i64()
}

#[derive(Serialize)]
struct ValidateView<'a> {
    spiffe_id: &'a str,
    claims: &'a Map<String, Value>,
}

async fn validate(args: JwtValidateArgs, format: OutputFormat) -> Result<()> {
    if args.audience.trim().is_empty() {
        bail!("invalid --audience \"\": an audience must not be empty");
    }
    let token = if args.token == "-" {
        read_token_from_stdin()?
    } else {
        Zeroizing::new(args.token.trim().to_owned())
    };
    if token.is_empty() {
        bail!("the token is empty: pass a JWT-SVID, or - to read one from standard input");
    }

    let (socket, timeout) = workload_target(&args.workload)?;
    let client = WorkloadClient::connect(&socket, timeout).await?;
    // An invalid token fails with InvalidArgument, and the agent's message
    // gives the reason.
    let response = client.validate_jwt_svid(&args.audience, &token).await?;

    let claims = response.claims.map(struct_to_json).unwrap_or_default();
    match format {
        OutputFormat::Json => output::print_json(&ValidateView {
            spiffe_id: &response.spiffe_id,
            claims: &claims,
        }),
        OutputFormat::Text => {
            let claims_text =
                serde_json::to_string_pretty(&claims).context("failed to encode claims")?;
            let mut text = Fields::new().row("SPIFFE ID", &response.spiffe_id).render();
            text.push_str("Claims:\n");
            text.push_str(&claims_text);
            text.push('\n');
            output::print_text(&text)
        }
    }
}

fn read_token_from_stdin() -> Result<Zeroizing<String>> {
    let mut token = Zeroizing::new(String::new());
    let read = std::io::stdin()
        .lock()
        .take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut token)
        .context("failed to read the token from standard input")?;
    if read as u64 > MAX_TOKEN_BYTES {
        bail!("the token on standard input is longer than the maximum of {MAX_TOKEN_BYTES} bytes");
    }
    Ok(Zeroizing::new(token.trim().to_owned()))
}

/// Converts a protobuf `Struct` into a JSON object. Whole numbers become
/// JSON integers, so `exp` and `iat` print as `1800000000`, not
/// `1800000000.0`.
fn struct_to_json(value: prost_types::Struct) -> Map<String, Value> {
    value
        .fields
        .into_iter()
        .map(|(key, value)| (key, value_to_json(value)))
        .collect()
}

fn value_to_json(value: prost_types::Value) -> Value {
    use prost_types::value::Kind;

    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(value_to_json).collect())
        }
    }
}

fn number_to_json(n: f64) -> Value {
    // Above 2^53, f64 no longer represents every integer exactly.
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        // The range check above makes the cast exact.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "n is a whole number within ±2^53"
        )]
        return Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;

    fn value(kind: Kind) -> prost_types::Value {
        prost_types::Value { kind: Some(kind) }
    }

    #[test]
    fn struct_to_json_converts_every_kind() {
        let nested = prost_types::Struct {
            fields: [("k".to_owned(), value(Kind::StringValue("v".to_owned())))].into(),
        };
        let input = prost_types::Struct {
            fields: [
                (
                    "sub".to_owned(),
                    value(Kind::StringValue("spiffe://a/b".to_owned())),
                ),
                ("exp".to_owned(), value(Kind::NumberValue(1_800_000_000.0))),
                ("ratio".to_owned(), value(Kind::NumberValue(0.5))),
                ("ok".to_owned(), value(Kind::BoolValue(true))),
                ("none".to_owned(), value(Kind::NullValue(0))),
                ("nested".to_owned(), value(Kind::StructValue(nested))),
                (
                    "aud".to_owned(),
                    value(Kind::ListValue(prost_types::ListValue {
                        values: vec![value(Kind::StringValue("x".to_owned()))],
                    })),
                ),
            ]
            .into(),
        };
        let json = Value::Object(struct_to_json(input));
        assert_eq!(json["sub"], "spiffe://a/b");
        assert_eq!(json["exp"].as_i64(), Some(1_800_000_000));
        assert_eq!(json["ratio"].as_f64(), Some(0.5));
        assert_eq!(json["ok"], true);
        assert!(json["none"].is_null());
        assert_eq!(json["nested"]["k"], "v");
        assert_eq!(json["aud"][0], "x");
    }

    #[test]
    fn unverified_expiry_reads_exp() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"spiffe://a/b","exp":1800000000}"#);
        let token = format!("e30.{payload}.c2ln");
        assert_eq!(unverified_expiry(&token), Some(1_800_000_000));
    }

    #[test]
    fn unverified_expiry_of_garbage_is_none() {
        assert_eq!(unverified_expiry("not-a-jwt"), None);
        assert_eq!(unverified_expiry("a.!!!.c"), None);
    }
}
