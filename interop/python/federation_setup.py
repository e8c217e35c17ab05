"""Three trust domains for the federation interop tests.

Each trust domain is a Cluster whose server also runs an https_spiffe
bundle endpoint on a loopback port. A's server federates with B and C,
but the entry of the test process in A federates with B only, so A's
agent has C's bundle and must keep it from that workload. A copy of the
tessera binary, `c-peer`, has an entry in A that federates with C and
serves as the control that C's bundle did reach A's agent.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from conftest import Cluster, run_tessera, start_cluster, tessera_bin, wait_until

BUNDLE_ENDPOINT = (
    "[federation.bundle_endpoint]\n"
    'address = "127.0.0.1:0"\n'
    'profile = "https_spiffe"\n'
)

CLIENT_ID = "spiffe://a.test/python/client"
C_PEER_ID = "spiffe://a.test/c-peer"
SERVER_ID = "spiffe://b.test/python/server"
OUTSIDER_ID = "spiffe://c.test/python/outsider"


@dataclass
class FederatedDomains:
    """Running trust domains a.test, b.test and c.test, and the control binary."""

    a: Cluster
    b: Cluster
    c: Cluster
    c_peer: Path

    @property
    def clusters(self) -> list[Cluster]:
        return [self.a, self.b, self.c]

    def stop(self) -> None:
        for cluster in self.clusters:
            cluster.stop()


def bundle_endpoint_url(cluster: Cluster) -> str:
    """URL of the bundle endpoint, from the address file the server writes."""
    address_file = cluster.root / "server" / "bundle_endpoint.addr"
    wait_until(f"{address_file}", address_file.is_file, [cluster.server])
    return f"https://{address_file.read_text().strip()}/"


def federate(local: Cluster, peer: Cluster) -> None:
    """Create a relationship from `local` to `peer` and refresh it once."""
    local.tessera(
        "federation", "create",
        "--trust-domain", peer.trust_domain,
        "--bundle-endpoint-url", bundle_endpoint_url(peer),
        "--trust-bundle", str(peer.root / "server" / "bundle.pem"),
    )
    refreshed = local.tessera(
        "federation", "refresh", "--trust-domain", peer.trust_domain, "--output", "json"
    )
    status = json.loads(refreshed.stdout)
    assert status["last_error"] is None, f"refresh of {peer.trust_domain} failed: {status}"
    assert status["x509_authorities"] >= 1, f"no X.509 authority from {peer.trust_domain}"


def create_entry(cluster: Cluster, spiffe_id: str, selectors: list[str],
                 federates_with: list[str]) -> None:
    args = ["entry", "create", "--spiffe-id", spiffe_id, "--parent-id", cluster.agent_id]
    for selector in selectors:
        args += ["--selector", selector]
    for trust_domain in federates_with:
        args += ["--federates-with", trust_domain]
    cluster.tessera(*args)


def bundle_served(cluster: Cluster, program: Path, trust_domain: str) -> bool:
    """Run `program` as a workload of `cluster` and check that
    FetchX509Bundles gives it the bundle of `trust_domain`."""
    result = run_tessera(cluster.admin_socket, cluster.endpoint,
                         ["bundle", "fetch", "--output", "json"], check=False, program=program)
    if result.returncode != 0:
        return False
    return f"spiffe://{trust_domain}" in json.loads(result.stdout)["bundles"]


def svid_served(cluster: Cluster, spiffe_id: str) -> bool:
    result = cluster.tessera("svid", "fetch", "--output", "json", "--timeout", "1s", check=False)
    return spiffe_id in result.stdout


def start_federated_domains(root: Path) -> FederatedDomains:
    """Start a.test, b.test and c.test in `root` and create their entries.

    Returns once A's agent serves C's bundle to the control binary and the
    agents of B and C serve their SVIDs. The caller stops the domains."""
    started: list[Cluster] = []
    try:
        for name in ("a", "b", "c"):
            (root / name).mkdir()
            started.append(start_cluster(root / name, f"{name}.test", BUNDLE_ENDPOINT))
        a, b, c = started
        federate(a, b)
        federate(a, c)

        c_peer = root / "c-peer"
        shutil.copy2(tessera_bin(), c_peer)
        uid = f"unix:uid:{os.getuid()}"
        # The agent reads /proc/<pid>/exe, which names the interpreter
        # binary, not the virtualenv's symlink.
        python = f"unix:path:{os.readlink('/proc/self/exe')}"
        create_entry(a, CLIENT_ID, [uid, python], ["b.test"])
        create_entry(a, C_PEER_ID, [uid, f"unix:path:{c_peer}"], ["c.test"])
        create_entry(b, SERVER_ID, [uid], [])
        create_entry(c, OUTSIDER_ID, [uid], [])

        daemons = [daemon for cluster in started for daemon in (cluster.server, cluster.agent)]
        wait_until("C's bundle served to c-peer in A",
                   lambda: bundle_served(a, c_peer, "c.test"), daemons)
        wait_until(f"an X.509-SVID for {SERVER_ID}", lambda: svid_served(b, SERVER_ID), daemons)
        wait_until(f"an X.509-SVID for {OUTSIDER_ID}", lambda: svid_served(c, OUTSIDER_ID),
                   daemons)
    except BaseException:
        for cluster in started:
            print(cluster.logs())
            cluster.stop()
        raise
    return FederatedDomains(a=a, b=b, c=c, c_peer=c_peer)
