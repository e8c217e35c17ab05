//! Child processes for the harness: commands with a timeout, daemons that
//! log to a file and stop on drop, signals, and `/proc` lookups.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde_json::Value;

/// Interval between two readiness checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Time a daemon gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Polls `ready` every 50 ms until it returns true, panicking with `what`
/// after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Returns whether a Unix socket at `path` accepts connections.
pub fn socket_accepts(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Sends `signal` to the process `pid`; a process that is already gone is
/// not an error.
pub fn send_signal(pid: u32, signal: Signal) {
    let raw = i32::try_from(pid).expect("child PIDs fit in i32");
    let pid = Pid::from_raw(raw).expect("child PIDs are positive");
    let _ = rustix::process::kill_process(pid, signal);
}

/// Returns whether a process with this PID exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the command name, which is in parentheses
    // and may itself contain spaces or parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// PIDs of the live children of process `parent`, read from `/proc`.
pub fn child_pids(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(parent) && process_alive(pid) {
            children.push(pid);
        }
    }
    children
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    /// Human-readable command line, for failure messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code, or -1 when a signal ended the command.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with the full output unless the command exited with 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "command failed: {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Parses stdout as JSON, panicking with the output when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not JSON: {e}\nstdout:\n{}\nstderr:\n{}",
                self.command, self.stdout, self.stderr
            )
        })
    }
}

/// Runs `command` to completion, killing it and panicking after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> CmdOutput {
    let description = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {description}: {e}"));

    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let stdout_reader = thread::spawn(move || read_all(stdout));
    let stderr_reader = thread::spawn(move || read_all(stderr));

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll a CLI child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command timed out after {timeout:?}: {description}");
        }
        thread::sleep(Duration::from_millis(10));
    };

    CmdOutput {
        command: description,
        status,
        stdout: stdout_reader.join().expect("stdout reader thread"),
        stderr: stderr_reader.join().expect("stderr reader thread"),
    }
}

fn read_all(mut source: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = source.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A long-running child process whose stdout and stderr go to a log file.
/// Dropping it sends SIGTERM, then SIGKILL after a grace period.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
    /// Whether the child leads its own process group, whose other members
    /// are signalled with it.
    group_leader: bool,
    /// Whether dropping during a panic prints the log; a `Cluster` prints
    /// the logs of its daemons itself.
    print_log_on_panic: bool,
}

impl Daemon {
    /// Starts `program` with `args`, appending its output to `log`.
    pub fn spawn<I, S>(name: &str, program: &Path, args: I, log: &Path) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args);
        Daemon::spawn_command(name, command, log)
    }

    /// Starts `command` as the leader of a new process group, appending its
    /// output to `log`. Stopping it signals the whole group, and dropping it
    /// during a panic prints the log.
    pub fn spawn_group(name: &str, mut command: Command, log: &Path) -> Daemon {
        command.process_group(0);
        let mut daemon = Daemon::spawn_command(name, command, log);
        daemon.group_leader = true;
        daemon.print_log_on_panic = true;
        daemon
    }

    /// Starts `command`, appending its output to `log`.
    pub fn spawn_command(name: &str, mut command: Command, log: &Path) -> Daemon {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("failed to open log {}: {e}", log.display()));
        writeln!(file, "==== starting {name} ====").expect("write the log header");
        let stderr = file.try_clone().expect("clone the log file handle");

        command
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr));
        let description = format!("{command:?}");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {description}: {e}"));

        Daemon {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            exit: None,
            group_leader: false,
            print_log_on_panic: false,
        }
    }

    /// Process ID of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns whether the child still runs, without reaping it: an exited
    /// child stays a zombie until waited for, and zombies count as exited.
    pub fn is_alive(&self) -> bool {
        self.exit.is_none() && process_alive(self.pid())
    }

    /// Returns the exit status if the child has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("poll a daemon child");
        }
        self.exit
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `signal` to the child unless it has exited.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_exit().is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// Sends `signal` to the child's process group, which it leads.
    pub fn signal_group(&self, signal: Signal) {
        let raw = i32::try_from(self.pid()).expect("child PIDs fit in i32");
        let group = Pid::from_raw(raw).expect("child PIDs are positive");
        let _ = rustix::process::kill_process_group(group, signal);
    }

    /// Stops the child with SIGTERM, escalating to SIGKILL after 10 s. A
    /// group leader's whole group gets both signals.
    pub fn stop(&mut self) -> ExitStatus {
        if self.group_leader {
            self.signal_group(Signal::TERM);
        } else {
            self.signal(Signal::TERM);
        }
        if let Some(status) = self.wait_exit(STOP_GRACE) {
            if self.group_leader {
                self.signal_group(Signal::KILL);
            }
            return status;
        }
        self.kill()
    }

    /// Kills the child (and its group, if it leads one) with SIGKILL and
    /// reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if self.group_leader {
            self.signal_group(Signal::KILL);
        }
        if let Some(status) = self.try_exit() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap a killed daemon");
        self.exit = Some(status);
        status
    }

    /// Everything the child wrote so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the child has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!(
                "{} exited early with {status}\n---- {} log ----\n{}",
                self.name,
                self.name,
                self.log_text()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if self.print_log_on_panic && thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// Remote ports of the established TCP connections that process `pid`
/// has open, found by matching the socket inodes among its file
/// descriptors against `/proc/<pid>/net/tcp` and `tcp6`.
pub fn established_peer_ports(pid: u32) -> Vec<u16> {
    let mut inodes = Vec::new();
    if let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                inodes.push(inode.to_owned());
            }
        }
    }

    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt
        // uid timeout inode ...; addresses are HEXIP:HEXPORT and state 01
        // is ESTABLISHED.
        for line in text.lines().skip(1) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (columns.get(2), columns.get(3), columns.get(9))
            else {
                continue;
            };
            if *state != "01" || !inodes.iter().any(|own| own == inode) {
                continue;
            }
            let port = remote
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            ports.extend(port);
        }
    }
    ports
}
