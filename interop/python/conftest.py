"""Fixtures that run a Tessera server and agent from the built binary.

The binary comes from TESSERA_BIN (default: target/debug/tessera at the
repository root). One cluster serves the whole session: a server, a join
token, an agent, and an entry that gives every process of the current user
the SPIFFE ID in WORKLOAD_ID. Modules that need clusters of their own start
them with start_cluster.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUST_DOMAIN = "interop.test"
WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/python/workload"

# Upper bounds sized for a loaded 2-core machine.
READY_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0


def tessera_bin() -> Path:
    """Path of the binary under test."""
    configured = os.environ.get("TESSERA_BIN")
    path = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "tessera"
    if not path.is_file():
        raise FileNotFoundError(
            f"tessera binary not found at {path}; build it with `cargo build` "
            "or set TESSERA_BIN"
        )
    return path


def socket_accepts(path: Path) -> bool:
    """Whether a Unix socket at `path` accepts connections."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


class Daemon:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def assert_running(self) -> None:
        """Raise with the log when the child has exited."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited early with {code}:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


@dataclass
class Cluster:
    """A running server and agent in one temporary directory."""

    root: Path
    server: Daemon
    agent: Daemon
    agent_id: str
    trust_domain: str = TRUST_DOMAIN

    @property
    def admin_socket(self) -> Path:
        return self.root / "server" / "admin.sock"

    @property
    def workload_socket(self) -> Path:
        return self.root / "agent-api" / "api.sock"

    @property
    def endpoint(self) -> str:
        """`unix://` URI of the Workload API, the form SPIFFE_ENDPOINT_SOCKET takes."""
        return f"unix://{self.workload_socket}"

    def tessera(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the CLI against this cluster."""
        return run_tessera(self.admin_socket, self.endpoint, list(args), check=check)

    def logs(self) -> str:
        return "\n".join(
            f"---- {daemon.name} ----\n{daemon.log_text()}" for daemon in (self.server, self.agent)
        )

    def stop(self) -> None:
        self.agent.stop()
        self.server.stop()


def run_tessera(
    admin_socket: Path, endpoint: str, args: list[str], check: bool = True,
    program: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI, or `program` (a copy of it under another path)."""
    program = program or tessera_bin()
    env = dict(os.environ)
    env["TESSERA_ADMIN_SOCKET"] = str(admin_socket)
    env["SPIFFE_ENDPOINT_SOCKET"] = endpoint
    result = subprocess.run(
        [str(program), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{program.name} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def wait_until(what: str, ready, daemons: list[Daemon]) -> None:
    """Poll `ready` until it returns true; fail fast if a daemon exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        for daemon in daemons:
            daemon.assert_running()
        if ready():
            return
        if time.monotonic() >= deadline:
            logs = "\n".join(f"---- {d.name} ----\n{d.log_text()}" for d in daemons)
            raise TimeoutError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def write_server_config(root: Path, trust_domain: str = TRUST_DOMAIN, extra: str = "") -> Path:
    """Write server.toml with `extra` TOML appended. With port 0 the server
    picks the agent API port and writes the bound address to
    <data_dir>/agent_api.addr."""
    data_dir = root / "server"
    data_dir.mkdir()
    config = root / "server.toml"
    config.write_text(
        f'trust_domain = "{trust_domain}"\n'
        f'data_dir = "{data_dir}"\n'
        'bind_address = "127.0.0.1:0"\n'
        f'admin_socket = "{data_dir / "admin.sock"}"\n'
        'log_level = "info"\n'
        f"{extra}"
    )
    return config


def write_agent_config(
    root: Path, server_address: str, join_token: str, trust_domain: str = TRUST_DOMAIN
) -> Path:
    data_dir = root / "agent"
    data_dir.mkdir()
    config = root / "agent.toml"
    config.write_text(
        f'trust_domain = "{trust_domain}"\n'
        f'server_address = "{server_address}"\n'
        f'data_dir = "{data_dir}"\n'
        f'socket_path = "{root / "agent-api" / "api.sock"}"\n'
        f'join_token = "{join_token}"\n'
        f'trust_bundle_path = "{root / "server" / "bundle.pem"}"\n'
        'log_level = "info"\n'
    )
    return config


def start_cluster(root: Path, trust_domain: str = TRUST_DOMAIN, server_extra: str = "") -> Cluster:
    """Start a server and an agent of `trust_domain` in `root`.

    `server_extra` is TOML appended to the server's configuration. The
    daemons' names start with the trust domain when it is not the default,
    so the logs of several clusters can be distinguished."""
    binary = str(tessera_bin())
    prefix = "" if trust_domain == TRUST_DOMAIN else f"{trust_domain} "
    server_config = write_server_config(root, trust_domain, server_extra)
    server = Daemon(f"{prefix}server", [binary, "server", "run", "--config", str(server_config)],
                    root / "server.log")
    agent = None
    try:
        admin_socket = root / "server" / "admin.sock"
        bundle = root / "server" / "bundle.pem"
        wait_until(
            "the server's admin socket and bundle.pem",
            lambda: socket_accepts(admin_socket) and bundle.is_file(),
            [server],
        )

        endpoint = f"unix://{root / 'agent-api' / 'api.sock'}"
        token_output = run_tessera(admin_socket, endpoint,
                                   ["token", "generate", "--output", "json"])
        token = json.loads(token_output.stdout)

        server_address = (root / "server" / "agent_api.addr").read_text().strip()
        agent_config = write_agent_config(root, server_address, token["token"], trust_domain)
        agent = Daemon(f"{prefix}agent", [binary, "agent", "run", "--config", str(agent_config)],
                       root / "agent.log")
        running = Cluster(root=root, server=server, agent=agent, agent_id=token["agent_id"],
                          trust_domain=trust_domain)
        wait_until(
            "the agent's Workload API socket",
            lambda: socket_accepts(running.workload_socket),
            [server, agent],
        )
    except BaseException:
        for daemon in (agent, server):
            if daemon is not None:
                print(f"---- {daemon.name} log ----\n{daemon.log_text()}")
                daemon.stop()
        raise
    return running


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A server and an agent, with an entry for the current user."""
    # A short base path keeps socket paths under the 108-byte sun_path limit.
    running = start_cluster(tmp_path_factory.mktemp("tessera"))
    try:
        running.tessera(
            "entry", "create",
            "--spiffe-id", WORKLOAD_ID,
            "--parent-id", running.agent_id,
            "--selector", f"unix:uid:{os.getuid()}",
        )
        wait_until(
            f"an X.509-SVID for {WORKLOAD_ID}",
            lambda: WORKLOAD_ID in running.tessera(
                "svid", "fetch", "--output", "json", "--timeout", "1s", check=False).stdout,
            [running.server, running.agent],
        )
    except BaseException:
        print(running.logs())
        running.stop()
        raise

    yield running

    running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the daemon logs to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for value in item.funcargs.values():
            # A fixture value is one cluster or, like the federation
            # fixture, has a `clusters` list.
            clusters = [value] if isinstance(value, Cluster) else getattr(value, "clusters", [])
            for running in clusters:
                if isinstance(running, Cluster):
                    report.sections.append((f"tessera logs ({running.trust_domain})",
                                            running.logs()))
