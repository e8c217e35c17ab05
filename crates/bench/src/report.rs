//! `tessera-bench criterion-table`: reads the estimates that `cargo bench`
//! left under `target/criterion` and prints them as a Markdown table, each
//! of Tessera's hot paths beside the raw limit it is built on, with their
//! ratio.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Each hot path and the raw limit its rate is divided by.
const REFERENCES: &[(&str, &str)] = &[
    ("ours/x509_svid/sign_from_public_key", "raw/ecdsa_p256/sign"),
    ("ours/x509_svid/sign_from_csr", "raw/ecdsa_p256/sign"),
    ("ours/x509_svid/validate", "raw/ecdsa_p256/verify"),
    ("ours/jwt_svid/mint", "raw/ecdsa_p256/sign"),
    ("ours/jwt_svid/validate", "raw/ecdsa_p256/verify"),
];

/// One benchmark's result.
#[derive(Debug, Clone)]
struct Estimate {
    id: String,
    /// Mean time per iteration, in nanoseconds.
    mean_ns: f64,
    /// Elements per iteration, when the benchmark declared a throughput.
    elements: Option<f64>,
}

impl Estimate {
    /// Elements (or iterations) per second.
    fn rate(&self) -> f64 {
        self.elements.unwrap_or(1.0) * 1e9 / self.mean_ns
    }
}

/// Prints the table for the criterion directory `dir`.
pub fn print_table(dir: &Path) -> Result<()> {
    let estimates = read_all(dir)?;
    if estimates.is_empty() {
        bail!(
            "no criterion results under {}; run `cargo bench -p tessera-bench` first",
            dir.display()
        );
    }
    println!("| benchmark | mean time | per second | reference | ratio to reference |");
    println!("| --- | ---: | ---: | --- | ---: |");
    for estimate in &estimates {
        let reference = REFERENCES
            .iter()
            .find(|(ours, _)| *ours == estimate.id)
            .and_then(|(_, raw)| estimates.iter().find(|e| e.id == *raw));
        let (reference_id, ratio) = match reference {
            Some(raw) => (
                raw.id.as_str(),
                format!("{:.2}", estimate.rate() / raw.rate()),
            ),
            None => ("", String::new()),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            estimate.id,
            format_time(estimate.mean_ns),
            format_rate(estimate.rate()),
            reference_id,
            ratio
        );
    }
    Ok(())
}

/// Reads every `new/benchmark.json` and `new/estimates.json` pair under
/// `dir`, sorted by benchmark ID.
fn read_all(dir: &Path) -> Result<Vec<Estimate>> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("reading {}", current.display()))?;
        for entry in entries {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|name| name == "new") {
                if let Some(estimate) = read_one(&path)? {
                    found.push(estimate);
                }
            } else {
                pending.push(path);
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

fn read_one(new_dir: &Path) -> Result<Option<Estimate>> {
    let benchmark_path = new_dir.join("benchmark.json");
    let estimates_path = new_dir.join("estimates.json");
    if !benchmark_path.is_file() || !estimates_path.is_file() {
        return Ok(None);
    }
    let benchmark: Value = serde_json::from_slice(&std::fs::read(&benchmark_path)?)
        .with_context(|| format!("parsing {}", benchmark_path.display()))?;
    let estimates: Value = serde_json::from_slice(&std::fs::read(&estimates_path)?)
        .with_context(|| format!("parsing {}", estimates_path.display()))?;
    let id = benchmark["full_id"]
        .as_str()
        .with_context(|| format!("no full_id in {}", benchmark_path.display()))?
        .to_owned();
    let mean_ns = estimates["mean"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("no mean in {}", estimates_path.display()))?;
    let elements = benchmark["throughput"]["Elements"].as_f64();
    Ok(Some(Estimate {
        id,
        mean_ns,
        elements,
    }))
}

fn format_time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn format_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else {
        format!("{rate:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_result(root: &Path, group: &str, name: &str, mean_ns: f64) {
        let dir = root.join(group).join(name).join("new");
        std::fs::create_dir_all(&dir).expect("create result dir");
        let benchmark = serde_json::json!({
            "full_id": format!("{group}/{name}"),
            "throughput": { "Elements": 1 },
        });
        std::fs::write(dir.join("benchmark.json"), benchmark.to_string()).expect("write");
        let estimates = serde_json::json!({ "mean": { "point_estimate": mean_ns } });
        std::fs::write(dir.join("estimates.json"), estimates.to_string()).expect("write");
    }

    #[test]
    fn read_all_finds_nested_results() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_result(dir.path(), "a", "x", 1000.0);
        write_result(dir.path(), "b", "y", 2000.0);
        let estimates = read_all(dir.path()).expect("readable");
        assert_eq!(estimates.len(), 2);
        assert!((estimates[0].rate() - 1e6).abs() < 1e-6);
        assert!((estimates[1].rate() - 5e5).abs() < 1e-6);
    }

    #[test]
    fn format_time_units() {
        assert_eq!(format_time(500.0), "500 ns");
        assert_eq!(format_time(1500.0), "1.50 µs");
        assert_eq!(format_time(2.5e6), "2.50 ms");
    }
}
