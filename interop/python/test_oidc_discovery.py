"""PyJWT against Tessera's OIDC discovery endpoint.

A relying party that has only the issuer URL reads the discovery
document, follows its jwks_uri with PyJWKClient and validates a JWT-SVID
signature, audience and issuer with PyJWT's own code.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (
    Cluster,
    Daemon,
    run_tessera,
    socket_accepts,
    tessera_bin,
    wait_until,
    write_agent_config,
)

TRUST_DOMAIN = "oidc.test"
WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/python/relying-party"
AUDIENCE = "oidc-audience"


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_certificate(root: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its PKCS#8 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = root / "oidc-cert.pem"
    key_path = root / "oidc-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory):
    """A server with OIDC discovery, an agent and an entry for this user."""
    root = tmp_path_factory.mktemp("oidc")
    binary = str(tessera_bin())
    cert_path, key_path = write_certificate(root)
    issuer = f"https://127.0.0.1:{free_port()}"
    data_dir = root / "server"
    data_dir.mkdir()
    config = root / "server.toml"
    config.write_text(
        f'trust_domain = "{TRUST_DOMAIN}"\n'
        f'data_dir = "{data_dir}"\n'
        'bind_address = "127.0.0.1:0"\n'
        f'admin_socket = "{data_dir / "admin.sock"}"\n'
        'log_level = "info"\n'
        "[oidc]\n"
        f'address = "{issuer.removeprefix("https://")}"\n'
        f'issuer = "{issuer}"\n'
        f'certificate_path = "{cert_path}"\n'
        f'key_path = "{key_path}"\n'
    )
    server = Daemon("server", [binary, "server", "run", "--config", str(config)],
                    root / "server.log")
    agent = None
    try:
        admin_socket = data_dir / "admin.sock"
        wait_until(
            "the server's admin socket and oidc.addr",
            lambda: socket_accepts(admin_socket) and (data_dir / "oidc.addr").is_file(),
            [server],
        )
        endpoint = f"unix://{root / 'agent-api' / 'api.sock'}"
        token = json.loads(
            run_tessera(admin_socket, endpoint, ["token", "generate", "--output", "json"]).stdout
        )
        server_address = (data_dir / "agent_api.addr").read_text().strip()
        agent_config = write_agent_config(root, server_address, token["token"])
        # write_agent_config names the interop trust domain; this cluster's
        # agent belongs to oidc.test.
        agent_config.write_text(
            agent_config.read_text().replace("interop.test", TRUST_DOMAIN)
        )
        agent = Daemon("agent", [binary, "agent", "run", "--config", str(agent_config)],
                       root / "agent.log")
        running = Cluster(root=root, server=server, agent=agent, agent_id=token["agent_id"])
        wait_until("the agent's Workload API socket",
                   lambda: socket_accepts(running.workload_socket), [server, agent])
        running.tessera(
            "entry", "create",
            "--spiffe-id", WORKLOAD_ID,
            "--parent-id", running.agent_id,
            "--selector", f"unix:uid:{os.getuid()}",
        )
        wait_until(
            f"a JWT-SVID for {WORKLOAD_ID}",
            lambda: running.tessera("jwt", "fetch", "--audience", AUDIENCE,
                                    check=False).returncode == 0,
            [server, agent],
        )
    except BaseException:
        for daemon in (agent, server):
            if daemon is not None:
                print(f"---- {daemon.name} log ----\n{daemon.log_text()}")
                daemon.stop()
        raise

    context = ssl.create_default_context(cafile=str(cert_path))
    yield running, issuer, context

    agent.stop()
    server.stop()


def fetch_json(url: str, context: ssl.SSLContext) -> dict:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        assert response.headers.get_content_type() == "application/json"
        return json.load(response)


def test_discovery_document_fields(oidc):
    _, issuer, context = oidc
    document = fetch_json(f"{issuer}/.well-known/openid-configuration", context)
    assert document["issuer"] == issuer
    assert document["jwks_uri"] == f"{issuer}/keys"
    assert document["response_types_supported"] == ["id_token"]
    assert document["subject_types_supported"] == ["public"]
    assert "ES256" in document["id_token_signing_alg_values_supported"]


def test_keys_have_use_and_alg(oidc):
    _, issuer, context = oidc
    keys = fetch_json(f"{issuer}/keys", context)["keys"]
    assert keys, "the JWK Set is empty"
    for key in keys:
        assert key["use"] == "sig"
        assert key["alg"] == "ES256"
        assert key["kid"]


def test_pyjwt_validates_jwt_svid_via_discovery(oidc):
    running, issuer, context = oidc
    token = running.tessera("jwt", "fetch", "--audience", AUDIENCE).stdout.strip().splitlines()[0]

    document = fetch_json(f"{issuer}/.well-known/openid-configuration", context)
    keys = jwt.PyJWKClient(document["jwks_uri"], ssl_context=context)
    signing_key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=document["id_token_signing_alg_values_supported"],
        audience=AUDIENCE,
        issuer=document["issuer"],
    )
    assert claims["sub"] == WORKLOAD_ID

    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, signing_key.key, algorithms=["ES256"], audience="another-audience",
                   issuer=issuer)
