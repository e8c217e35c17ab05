//! Writing command results to standard output, as text for people or as one
//! JSON object for programs, and the formats for times and durations that
//! the text output shares.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::ValueEnum;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// Output format of a command's result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    #[default]
    Text,
    /// One JSON object for programs.
    Json,
}

/// Writes `text` to standard output as it is.
pub fn print_text(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("failed to write to standard output")
}

/// Writes `value` to standard output as pretty-printed JSON and a newline.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("failed to encode JSON output")?;
    text.push('\n');
    print_text(&text)
}

/// Formats Unix seconds as an RFC 3339 UTC time, or as the number itself
/// when it is out of the representable range.
pub fn format_unix_time(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Formats an expiry time in Unix seconds, where 0 means the entry or key
/// never expires.
pub fn format_expiry(secs: i64) -> String {
    if secs == 0 {
        "never".to_owned()
    } else {
        format_unix_time(secs)
    }
}

/// Formats a lifetime in seconds, where 0 means the server's default.
pub fn format_ttl(secs: i32) -> String {
    match u64::try_from(secs) {
        Ok(0) | Err(_) => "server default".to_owned(),
        Ok(secs) => humantime::format_duration(Duration::from_secs(secs)).to_string(),
    }
}

/// Builds text lines of `label: value` pairs with the values aligned.
#[derive(Debug, Default)]
pub struct Fields {
    rows: Vec<(&'static str, String)>,
}

impl Fields {
    /// Creates an empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one row.
    pub fn row(&mut self, label: &'static str, value: impl ToString) -> &mut Self {
        self.rows.push((label, value.to_string()));
        self
    }

    /// Appends one row per value, all with the same label.
    pub fn rows<I, T>(&mut self, label: &'static str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = T>,
        T: ToString,
    {
        for value in values {
            self.row(label, value);
        }
        self
    }

    /// Renders the rows, each ending in a newline.
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(label, _)| label.len())
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for (label, value) in &self.rows {
            // `fmt::Write` for String never returns an error.
            let _ = writeln!(text, "{label:<width$} : {value}");
        }
        text
    }
}

/// Encodes DER bytes as one PEM block with the given label.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let mut pem = String::new();
    write_pem(&mut pem, label, der);
    pem
}

/// Encodes a private key's PKCS#8 DER as a PEM `PRIVATE KEY` block in memory
/// that is zeroized on drop.
pub fn private_key_pem(pkcs8_der: &[u8]) -> Zeroizing<String> {
    let mut pem = Zeroizing::new(String::new());
    write_pem(&mut pem, "PRIVATE KEY", pkcs8_der);
    pem
}

/// Splits concatenated DER certificates, as the Workload API sends chains
/// and bundles, into one slice per certificate.
pub fn split_certificates(der: &[u8]) -> Result<Vec<&[u8]>> {
    let mut certificates = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        let (remaining, _) = x509_parser::parse_x509_certificate(rest).map_err(|err| {
            anyhow::anyhow!(
                "invalid DER certificate at byte {} of {}: {err}",
                der.len() - rest.len(),
                der.len()
            )
        })?;
        let (certificate, _) = rest.split_at(rest.len() - remaining.len());
        certificates.push(certificate);
        rest = remaining;
    }
    Ok(certificates)
}

/// Encodes concatenated DER certificates as PEM `CERTIFICATE` blocks.
pub fn certificates_pem(der: &[u8]) -> Result<String> {
    let pem = split_certificates(der)?
        .into_iter()
        .map(|certificate| pem_block("CERTIFICATE", certificate))
        .collect();
    Ok(pem)
}

fn write_pem(out: &mut String, label: &str, der: &[u8]) {
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ttl_cases() {
        let cases = [
            (0, "server default"),
            (-5, "server default"),
            (3600, "1h"),
            (90, "1m 30s"),
        ];
        for (secs, expected) in cases {
            assert_eq!(format_ttl(secs), expected, "ttl {secs}");
        }
    }

    #[test]
    fn format_expiry_zero_is_never() {
        assert_eq!(format_expiry(0), "never");
    }

    #[test]
    fn format_unix_time_is_rfc3339() {
        assert_eq!(format_unix_time(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn fields_align_values() {
        let text = Fields::new().row("A", 1).row("Longer", "x").render();
        assert_eq!(text, "A      : 1\nLonger : x\n");
    }

    #[test]
    fn pem_block_wraps_at_64_columns() {
        let pem = pem_block("CERTIFICATE", &[0u8; 60]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.get(1).map(|l| l.len()), Some(64));
        assert_eq!(lines.get(2).map(|l| l.len()), Some(16));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
