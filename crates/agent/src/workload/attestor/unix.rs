//! The Unix workload attestor: selectors from `/proc/<pid>` (user, groups,
//! executable path and its SHA-256), with user and group names read from
//! `/etc/passwd` and `/etc/group` directly (no NSS).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tessera_registration::{Selector, SelectorSet};

use crate::error::AgentError;
use crate::workload::attestor::WorkloadAttestor;
use crate::workload::peer::{PeerCredentials, process_start_time};

/// Selector type of this attestor.
const SELECTOR_TYPE: &str = "unix";

/// Maximum number of executables whose hashes are kept; the cache is
/// emptied when it is full.
const MAX_CACHED_HASHES: usize = 1024;

/// Attests local processes from `/proc`.
///
/// Selectors: `unix:uid:<n>`, `unix:user:<name>`, `unix:gid:<n>`,
/// `unix:group:<name>`, `unix:supplementary_gid:<n>`,
/// `unix:supplementary_group:<name>`, `unix:path:<executable path>` and
/// `unix:sha256:<hex digest of the executable>`. UIDs and GIDs are the
/// effective ones. Path and digest are left out when the agent may not
/// read the process's executable link.
#[derive(Debug)]
pub struct UnixAttestor {
    proc_root: PathBuf,
    passwd_path: PathBuf,
    group_path: PathBuf,
    hashes: Mutex<HashMap<FileVersion, String>>,
}

/// Identifies one version of a file, so an unchanged executable is not
/// hashed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileVersion {
    device: u64,
    inode: u64,
    mtime_seconds: i64,
    mtime_nanos: i64,
    size: u64,
}

/// The user and group IDs of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcessIds {
    uid: u32,
    gid: u32,
    supplementary_gids: Vec<u32>,
}

impl Default for UnixAttestor {
    fn default() -> Self {
        Self::new()
    }
}

impl UnixAttestor {
    /// Creates an attestor that reads `/proc`, `/etc/passwd` and `/etc/group`.
    pub fn new() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            passwd_path: PathBuf::from("/etc/passwd"),
            group_path: PathBuf::from("/etc/group"),
            hashes: Mutex::new(HashMap::new()),
        }
    }

    fn read_ids(&self, pid: i32) -> Result<ProcessIds, AgentError> {
        let path = self.proc_root.join(pid.to_string()).join("status");
        let status = fs::read_to_string(&path).map_err(|source| proc_error(pid, &path, source))?;
        parse_status(&status).ok_or_else(|| AgentError::ProcRead {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, "no Uid, Gid or Groups line"),
        })
    }

    /// Returns the executable path and its SHA-256, or `None` when the agent
    /// may not read the executable link of the process.
    fn read_executable(&self, pid: i32) -> Result<Option<(PathBuf, String)>, AgentError> {
        let link = self.proc_root.join(pid.to_string()).join("exe");
        let path = match fs::read_link(&link) {
            Ok(path) => path,
            Err(error) if is_inaccessible(&error) => {
                tracing::debug!(pid, %error, "executable of the workload is not readable; no path selectors");
                return Ok(None);
            }
            Err(source) => return Err(proc_error(pid, &link, source)),
        };
        // Opening the link, not the path it names, reads the very file the
        // process runs even when the path was replaced or deleted since.
        let digest = match self.executable_sha256(&link) {
            Ok(digest) => digest,
            Err(error) if is_inaccessible(&error) => {
                tracing::debug!(pid, %error, "executable of the workload is not readable; no path selectors");
                return Ok(None);
            }
            Err(source) => return Err(proc_error(pid, &link, source)),
        };
        Ok(Some((path, digest)))
    }

    fn executable_sha256(&self, link: &Path) -> io::Result<String> {
        let mut file = File::open(link)?;
        let metadata = file.metadata()?;
        let version = FileVersion {
            device: metadata.dev(),
            inode: metadata.ino(),
            mtime_seconds: metadata.mtime(),
            mtime_nanos: metadata.mtime_nsec(),
            size: metadata.size(),
        };
        if let Some(digest) = self.lock_hashes().get(&version) {
            return Ok(digest.clone());
        }

        let digest = sha256_hex(&mut file)?;
        let mut hashes = self.lock_hashes();
        if hashes.len() >= MAX_CACHED_HASHES {
            hashes.clear();
        }
        hashes.insert(version, digest.clone());
        Ok(digest)
    }

    fn lock_hashes(&self) -> std::sync::MutexGuard<'_, HashMap<FileVersion, String>> {
        // The map holds only finished digests, so a panic elsewhere cannot
        // leave it inconsistent and a poisoned lock is safe to reuse.
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn selectors(&self, ids: &ProcessIds, executable: Option<(PathBuf, String)>) -> SelectorSet {
        let users = read_name_table(&self.passwd_path);
        let groups = read_name_table(&self.group_path);

        let mut values = vec![format!("uid:{}", ids.uid), format!("gid:{}", ids.gid)];
        if let Some(name) = users.get(&ids.uid) {
            values.push(format!("user:{name}"));
        }
        if let Some(name) = groups.get(&ids.gid) {
            values.push(format!("group:{name}"));
        }
        for gid in &ids.supplementary_gids {
            values.push(format!("supplementary_gid:{gid}"));
            if let Some(name) = groups.get(gid) {
                values.push(format!("supplementary_group:{name}"));
            }
        }
        if let Some((path, digest)) = executable {
            values.push(format!("path:{}", path.display()));
            values.push(format!("sha256:{digest}"));
        }

        let mut selectors = SelectorSet::new();
        for value in values {
            match Selector::new(SELECTOR_TYPE, &value) {
                Ok(selector) => {
                    selectors.insert(selector);
                }
                Err(error) => tracing::debug!(%error, "skipping an invalid workload selector"),
            }
        }
        selectors
    }
}

impl WorkloadAttestor for UnixAttestor {
    fn attest(&self, peer: &PeerCredentials) -> Result<SelectorSet, AgentError> {
        let pid = peer.pid();
        let ids = self.read_ids(pid)?;
        let executable = self.read_executable(pid)?;

        // What was read above belongs to the peer only if the PID still names
        // it now. A live process keeps its PID, and the start time rules out a
        // process that took over the PID before the pidfd was taken.
        let alive = peer.is_alive().map_err(|source| AgentError::ProcRead {
            path: PathBuf::from(format!("pidfd of process {pid}")),
            source,
        })?;
        if !alive {
            return Err(AgentError::WorkloadExited { pid });
        }
        match process_start_time(pid) {
            Ok(start_time) if start_time == peer.start_time() => {}
            _ => return Err(AgentError::WorkloadExited { pid }),
        }

        Ok(self.selectors(&ids, executable))
    }
}

fn proc_error(pid: i32, path: &Path, source: io::Error) -> AgentError {
    if source.kind() == io::ErrorKind::NotFound {
        return AgentError::WorkloadExited { pid };
    }
    AgentError::ProcRead {
        path: path.to_path_buf(),
        source,
    }
}

fn is_inaccessible(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
}

/// Parses the effective UID and GID and the supplementary GIDs from the
/// text of `/proc/<pid>/status`.
fn parse_status(status: &str) -> Option<ProcessIds> {
    let mut uid = None;
    let mut gid = None;
    let mut supplementary_gids = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            // Real, effective, saved and filesystem IDs, in that order.
            uid = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("Gid:") {
            gid = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            let parsed: Result<Vec<u32>, _> = rest.split_whitespace().map(str::parse).collect();
            supplementary_gids = parsed.ok();
        }
    }
    Some(ProcessIds {
        uid: uid?,
        gid: gid?,
        supplementary_gids: supplementary_gids?,
    })
}

/// Reads a `name:password:id:...` table (`/etc/passwd`, `/etc/group`) into
/// a map from ID to the first name listed for it. A missing or unreadable
/// file gives an empty map, so no name selectors are produced.
fn read_name_table(path: &Path) -> HashMap<u32, String> {
    match fs::read_to_string(path) {
        Ok(text) => parse_name_table(&text),
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "cannot read name table");
            HashMap::new()
        }
    }
}

fn parse_name_table(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_password), Some(id)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(id) = id.parse::<u32>() else {
            continue;
        };
        if !name.is_empty() {
            names.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    names
}

fn sha256_hex(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_process_peer() -> PeerCredentials {
        let pid = i32::try_from(std::process::id()).expect("PID fits i32");
        PeerCredentials::for_process(pid).expect("credentials of the test process")
    }

    fn selector(value: &str) -> Selector {
        Selector::new(SELECTOR_TYPE, value).expect("valid selector")
    }

    #[test]
    fn status_parse_reads_effective_ids() {
        let status = "Name:\tcat\nUid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\n\
                      Groups:\t4 27 100 \n";
        let ids = parse_status(status).expect("parse");
        assert_eq!(ids.uid, 1001);
        assert_eq!(ids.gid, 2001);
        assert_eq!(ids.supplementary_gids, vec![4, 27, 100]);
    }

    #[test]
    fn status_parse_table() {
        let cases = [
            (
                "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n",
                Some((0, 0, 0)),
            ),
            ("Uid:\t0\t0\t0\t0\nGroups:\t\n", None),
            ("Gid:\t0\t0\t0\t0\nGroups:\t\n", None),
            ("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", None),
            (
                "Uid:\tx\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n",
                Some((0, 0, 0)),
            ),
            ("Uid:\t0\ty\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n", None),
            ("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t1 z\n", None),
        ];
        for (status, expected) in cases {
            let parsed =
                parse_status(status).map(|ids| (ids.uid, ids.gid, ids.supplementary_gids.len()));
            assert_eq!(parsed, expected, "{status:?}");
        }
    }

    #[test]
    fn name_table_parse() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    # comment\n\
                    \n\
                    daemon:x:1:1::/:/usr/sbin/nologin\n\
                    broken line\n\
                    bad:x:notanumber:1::/:\n\
                    toor:x:0:0::/:\n";
        let names = parse_name_table(text);
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1).map(String::as_str), Some("daemon"));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn sha256_of_known_input() {
        let digest = sha256_hex(&mut &b"abc"[..]).expect("hash");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn attest_current_process() {
        let peer = current_process_peer();
        let selectors = UnixAttestor::new().attest(&peer).expect("attest");

        let status = fs::read_to_string("/proc/self/status").expect("status");
        let ids = parse_status(&status).expect("parse");
        assert!(selectors.contains(&selector(&format!("uid:{}", ids.uid))));
        assert!(selectors.contains(&selector(&format!("gid:{}", ids.gid))));
        for gid in &ids.supplementary_gids {
            assert!(selectors.contains(&selector(&format!("supplementary_gid:{gid}"))));
        }

        let exe = std::env::current_exe().expect("current_exe");
        assert!(selectors.contains(&selector(&format!("path:{}", exe.display()))));
        let digest = sha256_hex(&mut File::open(&exe).expect("open exe")).expect("hash");
        assert!(selectors.contains(&selector(&format!("sha256:{digest}"))));

        let users = read_name_table(Path::new("/etc/passwd"));
        if let Some(name) = users.get(&ids.uid) {
            assert!(selectors.contains(&selector(&format!("user:{name}"))));
        }
    }

    #[test]
    fn attest_names_from_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = fs::read_to_string("/proc/self/status").expect("status");
        let ids = parse_status(&status).expect("parse");
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        fs::write(
            &passwd,
            format!("tester:x:{}:{}::/:/bin/sh\n", ids.uid, ids.gid),
        )
        .expect("write passwd");
        fs::write(&group, format!("testers:x:{}:\n", ids.gid)).expect("write group");

        let attestor = UnixAttestor {
            passwd_path: passwd,
            group_path: group,
            ..UnixAttestor::new()
        };
        let peer = current_process_peer();
        let selectors = attestor.attest(&peer).expect("attest");
        assert!(selectors.contains(&selector("user:tester")));
        assert!(selectors.contains(&selector("group:testers")));
    }

    #[test]
    fn executable_hash_is_cached() {
        let attestor = UnixAttestor::new();
        let link = Path::new("/proc/self/exe");
        let first = attestor.executable_sha256(link).expect("hash");
        assert_eq!(attestor.lock_hashes().len(), 1);

        let second = attestor.executable_sha256(link).expect("hash");
        assert_eq!(first, second);
        assert_eq!(attestor.lock_hashes().len(), 1);
    }

    #[test]
    fn attest_rejects_exited_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("PID fits i32");
        let peer = PeerCredentials::for_process(pid).expect("credentials of a running child");
        let attestor = UnixAttestor::new();
        assert!(attestor.attest(&peer).is_ok());

        child.kill().expect("kill");
        child.wait().expect("wait");
        let result = attestor.attest(&peer);
        assert!(
            matches!(result, Err(AgentError::WorkloadExited { pid: p }) if p == pid),
            "{result:?}"
        );
    }
}
