//! gRPC channels over Unix sockets, and the parser for Workload API socket
//! addresses (`unix:///path`, `unix:/path` or a plain path).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Time allowed to open the socket connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a gRPC channel to the Unix socket at `path`.
///
/// The connection is made before this returns, so a missing socket or a
/// stopped server is reported here. The error is the innermost cause, such
/// as `No such file or directory (os error 2)`, because tonic's wrappers
/// repeat it.
pub async fn connect(path: &Path) -> Result<Channel> {
    let path = path.to_owned();
    // The URI is required by tonic but never dialled: the connector below
    // opens the Unix socket instead.
    let connected = Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await;
    connected.map_err(|err| anyhow::anyhow!(root_cause(&err)))
}

/// Returns the message of the innermost error in `err`'s source chain.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Parses a Workload API endpoint address into the socket path.
///
/// Accepted forms are `unix:///abs/path` and `unix:/abs/path`, as the SPIFFE
/// Workload Endpoint specification writes them, and a plain file path.
pub fn parse_socket_address(address: &str) -> Result<PathBuf> {
    let address = address.trim();
    if address.is_empty() {
        bail!("empty Workload API socket address: expected unix:///path/to/socket or a path");
    }

    let Some((scheme, rest)) = split_scheme(address) else {
        return Ok(PathBuf::from(address));
    };

    if scheme.eq_ignore_ascii_case("tcp") {
        bail!(
            "unsupported Workload API address {address:?}: this client connects only to Unix \
             sockets; use unix:///path/to/socket"
        );
    }
    if !scheme.eq_ignore_ascii_case("unix") {
        bail!(
            "unsupported scheme {scheme:?} in Workload API address {address:?}: expected \
             unix:///path/to/socket"
        );
    }
    if rest.contains(['?', '#']) {
        bail!(
            "invalid Workload API address {address:?}: a unix: address has no query or \
             fragment"
        );
    }

    let path = match rest.strip_prefix("//") {
        Some(after_authority_marker) => {
            // `unix:///path` has an empty authority; anything before the
            // next slash is a host, which the specification forbids.
            if !after_authority_marker.starts_with('/') {
                bail!(
                    "invalid Workload API address {address:?}: a unix: address has no host; \
                     expected unix:///path/to/socket"
                );
            }
            after_authority_marker
        }
        None => rest,
    };
    if !path.starts_with('/') {
        bail!(
            "invalid Workload API address {address:?}: the socket path must be absolute, such \
             as unix:///run/tessera/workload.sock"
        );
    }
    Ok(PathBuf::from(path))
}

/// Splits `scheme:rest` when `address` starts with a URI scheme (a letter,
/// then letters, digits, `+`, `-` or `.`, then a colon).
fn split_scheme(address: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = address.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let is_scheme = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_address_accepted_forms() {
        let cases = [
            ("unix:///run/agent/api.sock", "/run/agent/api.sock"),
            ("unix:/run/agent/api.sock", "/run/agent/api.sock"),
            ("UNIX:///tmp/a.sock", "/tmp/a.sock"),
            ("/tmp/agent.sock", "/tmp/agent.sock"),
            ("relative/agent.sock", "relative/agent.sock"),
            ("./agent.sock", "./agent.sock"),
            ("/tmp/odd:name.sock", "/tmp/odd:name.sock"),
            ("  unix:///tmp/a.sock  ", "/tmp/a.sock"),
        ];
        for (input, expected) in cases {
            let parsed = parse_socket_address(input).expect(input);
            assert_eq!(parsed, PathBuf::from(expected), "input {input:?}");
        }
    }

    #[test]
    fn socket_address_rejected_forms() {
        let cases = [
            ("", "empty"),
            ("tcp://127.0.0.1:8000", "only to Unix sockets"),
            ("http://localhost/api.sock", "unsupported scheme"),
            ("unix://host/run/api.sock", "has no host"),
            ("unix://", "has no host"),
            ("unix:relative.sock", "must be absolute"),
            ("unix:///tmp/a.sock?x=1", "no query"),
            ("unix:///tmp/a.sock#frag", "no query"),
        ];
        for (input, expected) in cases {
            let err = parse_socket_address(input).expect_err(input);
            let message = err.to_string();
            assert!(message.contains(expected), "input {input:?}: {message}");
        }
    }

    #[tokio::test]
    async fn connect_reports_missing_socket() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let err = connect(&dir.path().join("missing.sock"))
            .await
            .expect_err("no socket");
        assert_eq!(err.to_string(), "No such file or directory (os error 2)");
    }
}
