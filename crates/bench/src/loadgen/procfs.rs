//! CPU time and resident memory of a process, read from `/proc/<pid>`.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// CPU time (user plus system) that process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Memory figures of process `pid`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Reads the resident memory of process `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_memory(&status).with_context(|| format!("parsing {path}"))
}

/// Sums utime and stime, fields 14 and 15 of `/proc/<pid>/stat`. The
/// command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Result<u64> {
    let Some(end_of_name) = stat.rfind(')') else {
        bail!("no command name in parentheses");
    };
    // After the name come field 3 (state) onwards, so utime is the 12th.
    let fields: Vec<&str> = stat[end_of_name + 1..].split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("fewer than 15 fields");
    };
    Ok(utime.parse::<u64>()? + stime.parse::<u64>()?)
}

fn parse_memory(status: &str) -> Result<Memory> {
    let rss_kib = status_kib(status, "VmRSS:").context("no VmRSS line")?;
    let peak_rss_kib = status_kib(status, "VmHWM:").context("no VmHWM line")?;
    Ok(Memory {
        rss_kib,
        peak_rss_kib,
    })
}

/// Value of a `Name:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_name_with_spaces() {
        let stat = "1234 (a) b) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat).expect("valid stat"), 325);
    }

    #[test]
    fn cpu_ticks_truncated_line() {
        assert!(parse_cpu_ticks("1234 (x) S 1 2").is_err());
    }

    #[test]
    fn memory_from_status() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        let memory = parse_memory(status).expect("valid status");
        assert_eq!(memory.rss_kib, 1024);
        assert_eq!(memory.peak_rss_kib, 2048);
    }

    #[test]
    fn memory_missing_rss() {
        assert!(parse_memory("Name:\tx\n").is_err());
    }

    #[test]
    fn own_process_readable() {
        let pid = std::process::id();
        assert!(memory(pid).expect("own status").rss_kib > 0);
        assert!(cpu_time(pid).is_ok());
    }
}
