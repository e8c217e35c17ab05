//! The kernel's view of who is on the other end of a Workload API
//! connection: `SO_PEERCRED` (PID, UID, GID) and a pidfd for the peer
//! process, captured when the connection is accepted. The pidfd lets the
//! attestor prove later that the PID still names the process that
//! connected, so a recycled PID never receives another process's identity.

// The pidfd calls (`SO_PEERPIDFD`, `pidfd_open`, `pidfd_send_signal`) have
// no safe wrapper in std, tokio or libc, so this module calls them through
// `libc` in `unsafe` blocks. Every other module of the crate denies unsafe code.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

use crate::workload::authority::AuthorityRewriter;

/// `SO_PEERPIDFD` from `<asm-generic/socket.h>`, Linux 6.5 and later.
const SO_PEERPIDFD: libc::c_int = 77;

/// Credentials of the process that connected to the Workload API socket.
#[derive(Debug)]
pub struct PeerCredentials {
    pid: i32,
    uid: u32,
    gid: u32,
    start_time: u64,
    pidfd: OwnedFd,
}

impl PeerCredentials {
    /// Captures the credentials of the peer of `stream`.
    ///
    /// Uses `SO_PEERPIDFD` when the kernel has it. On older kernels it
    /// opens a pidfd for the `SO_PEERCRED` PID and checks that the
    /// process start time is the same before and after, so the pidfd
    /// cannot name a process that took over the PID in between.
    ///
    /// # Errors
    ///
    /// Returns an error when the peer has no PID (it is in another PID
    /// namespace), when the peer process has already exited, or when a
    /// system call fails.
    pub fn capture(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the peer has no PID visible to the agent (another PID namespace)",
            )
        })?;

        let pidfd = match peer_pidfd(stream.as_raw_fd()) {
            Ok(pidfd) => {
                check_pidfd_names_pid(&pidfd, pid)?;
                pidfd
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                open_pidfd_checked(pid)?
            }
            Err(error) => return Err(error),
        };

        let start_time = process_start_time(pid)?;
        let credentials = Self {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            start_time,
            pidfd,
        };
        // The start time above belongs to the peer only if the peer is still
        // alive after it was read: a live process keeps its PID.
        if !credentials.is_alive()? {
            return Err(exited_error(pid));
        }
        Ok(credentials)
    }

    /// Opens credentials for process `pid` without a socket, as tests of
    /// attestors need for processes they start.
    #[cfg(test)]
    pub(crate) fn for_process(pid: i32) -> io::Result<Self> {
        let pidfd = open_pidfd_checked(pid)?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let effective_id = |prefix: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok())
                .unwrap_or(u32::MAX)
        };
        Ok(Self {
            pid,
            uid: effective_id("Uid:"),
            gid: effective_id("Gid:"),
            start_time: process_start_time(pid)?,
            pidfd,
        })
    }

    /// Returns the PID of the peer when it connected.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Returns the effective UID of the peer when it connected.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Returns the effective GID of the peer when it connected.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Returns the start time of the peer process, in clock ticks after
    /// boot (field 22 of `/proc/<pid>/stat`).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Returns whether the process that connected is still running, so its
    /// PID still names it.
    ///
    /// # Errors
    ///
    /// Returns an error when `pidfd_send_signal` fails for a reason other
    /// than the process being gone or the agent lacking permission to
    /// signal it.
    pub fn is_alive(&self) -> io::Result<bool> {
        // SAFETY: `pidfd` is an open pidfd owned by `self`. Signal 0 only
        // checks that the process exists, and a null `siginfo` with flags 0
        // is the documented form of the call.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if result == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            // The process exists but the agent may not signal it (another
            // user, agent not root): it is alive.
            Some(libc::EPERM) => Ok(true),
            _ => Err(error),
        }
    }
}

/// The peer of one Workload API connection, as the request extension that
/// handlers read. Capturing may have failed (the peer exited at once, or it
/// is in another PID namespace); handlers then reject the call.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    credentials: Result<Arc<PeerCredentials>, Arc<io::Error>>,
}

impl PeerInfo {
    /// Captures the peer of `stream`; a failure is kept for the handlers.
    pub fn capture(stream: &UnixStream) -> Self {
        Self {
            credentials: PeerCredentials::capture(stream)
                .map(Arc::new)
                .map_err(Arc::new),
        }
    }

    /// Returns the captured credentials, or the error that prevented
    /// capturing them.
    pub fn credentials(&self) -> Result<&Arc<PeerCredentials>, &io::Error> {
        self.credentials.as_ref().map_err(|e| e.as_ref())
    }
}

/// A Workload API connection with the credentials of its peer, so that
/// tonic hands [`PeerInfo`] to every request on the connection.
#[derive(Debug)]
pub struct PeerStream {
    stream: UnixStream,
    peer: PeerInfo,
    rewriter: AuthorityRewriter,
    /// Rewritten client bytes not yet handed to the HTTP/2 server.
    pending: Vec<u8>,
    pending_start: usize,
}

impl PeerStream {
    /// Captures the peer of an accepted connection.
    pub fn new(stream: UnixStream) -> Self {
        let peer = PeerInfo::capture(&stream);
        Self {
            stream,
            peer,
            rewriter: AuthorityRewriter::default(),
            pending: Vec::new(),
            pending_start: 0,
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    /// Reads client bytes through the [`AuthorityRewriter`], so that the
    /// HTTP/2 server receives a valid `:authority`.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pending_start < this.pending.len() {
                let available = &this.pending[this.pending_start..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.pending_start += n;
                if this.pending_start == this.pending.len() {
                    this.pending.clear();
                    this.pending_start = 0;
                }
                return Poll::Ready(Ok(()));
            }

            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut chunk_buf))?;
            if chunk_buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter
                .feed(chunk_buf.filled(), &mut this.pending)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Reads the start time of process `pid` in clock ticks after boot, field
/// 22 of `/proc/<pid>/stat`. It never changes for one process, so two equal
/// readings name the same process.
///
/// # Errors
///
/// Returns an error when the process does not exist or the file is malformed.
pub fn process_start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed /proc/{pid}/stat: no start time in field 22"),
        )
    })
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces
    // and parentheses, so the fields are counted from the last `)`. The
    // first field after it is field 3 (state), so field 22 is index 19.
    let (_, after_command) = stat.rsplit_once(')')?;
    after_command.split_whitespace().nth(19)?.parse().ok()
}

fn exited_error(pid: i32) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("the peer process {pid} has exited"),
    )
}

/// Returns a pidfd for the peer of the Unix socket `fd` (`SO_PEERPIDFD`).
fn peer_pidfd(fd: RawFd) -> io::Result<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("c_int size does not fit socklen_t"))?;
    // SAFETY: `fd` is an open socket borrowed from the caller's stream, and
    // `pidfd` and `len` are valid for writes of the sizes passed.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut pidfd).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    if pidfd < 0 {
        return Err(io::Error::other("SO_PEERPIDFD returned no pidfd"));
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else
    // owns, so `OwnedFd` may take it and close it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// Opens a pidfd for `pid` on kernels without `SO_PEERPIDFD`, checking the
/// start time before and after so that the pidfd names the process that
/// had `pid` before the call.
///
/// NOTE: if the peer exits and its PID is reused before the first start
/// time is read, this names the new process. `SO_PEERPIDFD` (Linux 6.5)
/// closes that window; this path is only for older kernels.
fn open_pidfd_checked(pid: i32) -> io::Result<OwnedFd> {
    let before = process_start_time(pid).map_err(|_| exited_error(pid))?;
    // SAFETY: `pidfd_open` takes a PID and flags 0 and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let result = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Err(exited_error(pid));
        }
        return Err(error);
    }
    let raw = RawFd::try_from(result)
        .map_err(|_| io::Error::other("pidfd_open returned an out-of-range descriptor"))?;
    // SAFETY: the kernel returned a new file descriptor that nothing else
    // owns, so `OwnedFd` may take it and close it on drop.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };

    let after = process_start_time(pid).map_err(|_| exited_error(pid))?;
    if before != after {
        return Err(exited_error(pid));
    }
    Ok(pidfd)
}

/// Checks that a pidfd from `SO_PEERPIDFD` names the PID from
/// `SO_PEERCRED`, using the `Pid:` line of its `/proc/self/fdinfo` entry
/// (`-1` once the process has exited).
fn check_pidfd_names_pid(pidfd: &OwnedFd, pid: i32) -> io::Result<()> {
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    let Some(fd_pid) = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|value| value.trim().parse::<i32>().ok())
    else {
        // Kernels that have SO_PEERPIDFD also print `Pid:`; without it
        // there is nothing more to check.
        return Ok(());
    };
    if fd_pid == -1 {
        return Err(exited_error(pid));
    }
    if fd_pid != pid {
        return Err(io::Error::other(format!(
            "SO_PEERPIDFD names PID {fd_pid} but SO_PEERCRED names PID {pid}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parse_handles_parentheses() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
    }

    #[test]
    fn start_time_parse_rejects_short_line() {
        assert_eq!(parse_start_time("42 (sh) S 1 2"), None);
    }

    #[test]
    fn start_time_of_current_process() {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let first = process_start_time(pid).ok();
        let second = process_start_time(pid).ok();
        assert!(first.is_some());
        assert_eq!(first, second);
    }

    #[tokio::test]
    async fn capture_names_current_process() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let credentials = PeerCredentials::capture(&a).expect("capture");

        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        assert_eq!(credentials.pid(), pid);
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!(credentials.uid(), uid);
        assert_eq!(credentials.gid(), gid);
        assert!(credentials.is_alive().expect("pidfd_send_signal"));
    }

    #[test]
    fn pidfd_fallback_opens_current_process() {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        assert!(open_pidfd_checked(pid).is_ok());
    }

    #[test]
    fn pidfd_detects_exited_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let credentials =
            PeerCredentials::for_process(pid).expect("credentials of a running child");
        assert!(credentials.is_alive().expect("pidfd_send_signal"));

        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!credentials.is_alive().expect("pidfd_send_signal"));
    }
}
