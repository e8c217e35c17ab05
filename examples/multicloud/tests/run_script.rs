//! Runs `run.sh` end to end: two federated trust domains, mTLS between
//! them, and a CA rotation under traffic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bound on the whole script. Each of its steps gives up after 30 s,
/// so a hang here is a bug in the script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    })
}

/// Waits for `child`, stopping it with SIGTERM (which runs the script's
/// cleanup) after `SCRIPT_TIMEOUT`. Returns whether it exited with status 0.
fn wait_or_stop(child: &mut Child) -> bool {
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() >= deadline {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap();
            panic!("run.sh did not finish within {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn run_script_keeps_mtls_across_ca_rotation() {
    // NOTE: the script runs the tessera binary next to this package's
    // binaries. `cargo test --workspace` builds it in the same run; a run of
    // this package alone uses whatever target/debug/tessera was built last.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_multicloud-client"))
        .parent()
        .unwrap();
    assert!(
        bin_dir.join("tessera").is_file(),
        "{} has no tessera binary; run `cargo build -p tessera-cli` first",
        bin_dir.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("run.sh");

    let mut child = Command::new("bash")
        .arg(&script)
        .env("MULTICLOUD_BIN_DIR", bin_dir)
        .env_remove("MULTICLOUD_KEEP")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let succeeded = wait_or_stop(&mut child);
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let output = format!("---- stdout ----\n{stdout}\n---- stderr ----\n{stderr}");

    assert!(succeeded, "run.sh failed\n{output}");
    assert!(
        stdout.contains("client: my SPIFFE ID is spiffe://aws.example/checkout"),
        "{output}"
    );
    assert!(
        stdout.contains("server: my SPIFFE ID is spiffe://gcp.example/payments"),
        "{output}"
    );
    assert!(
        stdout.contains(
            "the server replied: hello spiffe://aws.example/checkout, \
             this is spiffe://gcp.example/payments"
        ),
        "{output}"
    );
    assert!(
        stdout.contains("the bundle of gcp.example has 2 X.509 authorities"),
        "{output}"
    );
    assert!(
        stdout.contains("the server presents an SVID of the new CA"),
        "{output}"
    );
    assert!(stdout.contains("succeeded, 0 failed"), "{output}");
}
