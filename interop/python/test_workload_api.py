"""py-spiffe against Tessera's Workload API.

py-spiffe parses and checks what the agent serves with its own code: the
X.509-SVID leaf and CA profile when it builds an X509Svid, and JWT-SVID
signature, audience and expiry in JwtSvid.parse_and_validate. py-spiffe
0.3.2 does not verify an X.509 chain against a bundle, so that step uses
cryptography's RFC 5280 path validation.
"""

from __future__ import annotations

import datetime

import grpc
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from spiffe import JwtSvid, TrustDomain, WorkloadApiClient, X509Source
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.svid.errors import JwtSvidError
from spiffe.workloadapi.errors import ValidateJwtSvidError

from conftest import TRUST_DOMAIN, WORKLOAD_ID

AUDIENCE = "interop-audience"


@pytest.fixture
def client(cluster):
    with WorkloadApiClient(socket_path=cluster.endpoint, default_timeout=10) as api:
        yield api


def verify_chain(leaf: x509.Certificate, intermediates, authorities) -> None:
    """Validate an X.509-SVID chain for client authentication."""
    store = Store(list(authorities))
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(datetime.datetime.now(datetime.timezone.utc))
        .build_client_verifier()
    )
    verified = verifier.verify(leaf, list(intermediates))
    subjects = verified.subjects or []
    uris = [name.value for name in subjects if isinstance(name, x509.UniformResourceIdentifier)]
    assert uris == [WORKLOAD_ID], f"verified subjects: {subjects}"


def test_x509_context_chain_validates(client):
    context = client.fetch_x509_context()
    svid = context.default_svid
    assert str(svid.spiffe_id) == WORKLOAD_ID

    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None, f"no bundle for {TRUST_DOMAIN}"
    assert bundle.x509_authorities, "the bundle has no X.509 authority"

    verify_chain(svid.leaf, svid.cert_chain[1:], bundle.x509_authorities)


def test_x509_bundles_match_context(client):
    bundles = client.fetch_x509_bundles()
    from_bundles = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    context = client.fetch_x509_context()
    from_context = context.x509_bundle_set.get_bundle_for_trust_domain(
        TrustDomain(TRUST_DOMAIN)
    )
    assert from_bundles is not None
    assert from_bundles.x509_authorities == from_context.x509_authorities


def test_x509_source_holds_svid(cluster):
    source = X509Source(socket_path=cluster.endpoint, timeout_in_seconds=10)
    try:
        svid = source.get_x509_context().default_svid
        assert str(svid.spiffe_id) == WORKLOAD_ID
        bundle = source.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        assert bundle is not None
        verify_chain(svid.leaf, svid.cert_chain[1:], bundle.x509_authorities)
    finally:
        source.close()


def test_jwt_svid_validates_with_jwt_bundle(client):
    svid = client.fetch_jwt_svid({AUDIENCE})
    assert str(svid.spiffe_id) == WORKLOAD_ID

    bundles = client.fetch_jwt_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None, f"no JWT bundle for {TRUST_DOMAIN}"
    assert bundle.jwt_authorities, "the JWT bundle has no key"

    validated = JwtSvid.parse_and_validate(svid.token, bundle, {AUDIENCE})
    assert str(validated.spiffe_id) == WORKLOAD_ID
    assert AUDIENCE in validated.audience


def test_jwt_svid_wrong_audience_rejected(client):
    svid = client.fetch_jwt_svid({AUDIENCE})
    bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    with pytest.raises(JwtSvidError):
        JwtSvid.parse_and_validate(svid.token, bundle, {"another-audience"})


def test_validate_jwt_svid_by_agent(client):
    svid = client.fetch_jwt_svid({AUDIENCE})
    validated = client.validate_jwt_svid(svid.token, AUDIENCE)
    assert str(validated.spiffe_id) == WORKLOAD_ID

    with pytest.raises(ValidateJwtSvidError):
        client.validate_jwt_svid(svid.token, "another-audience")


def test_jwt_bundles_key_ids_are_unique(client):
    bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None
    key_ids = list(bundle.jwt_authorities.keys())
    assert key_ids, "the JWT bundle has no key"
    assert all(key_ids), f"a JWT key has an empty kid: {key_ids}"
    assert len(set(key_ids)) == len(key_ids)


def test_request_without_header_is_invalid_argument(cluster):
    """A raw gRPC call without `workload.spiffe.io: true` must be rejected."""
    with grpc.insecure_channel(cluster.endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10)))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def fetch_x509_raw(endpoint: str, options: list[tuple[str, str]]):
    """FetchX509SVID over a plain grpcio channel, with the security header."""
    with grpc.insecure_channel(endpoint, options=options) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        responses = stub.FetchX509SVID(
            workload_pb2.X509SVIDRequest(),
            metadata=[("workload.spiffe.io", "true")],
            timeout=10,
        )
        return next(iter(responses))


def test_grpc_core_default_authority_accepted(cluster):
    """Accept the `:authority` that grpcio sends over a Unix socket.

    grpcio (gRPC C-core) sends the socket's path, which is not a valid URI
    authority. py-spiffe cannot change it, so the agent must accept it. The
    `localhost` call is the control: when only it passes, the agent's HTTP/2
    layer rejects the path authority."""
    control = fetch_x509_raw(cluster.endpoint, [("grpc.default_authority", "localhost")])
    assert [svid.spiffe_id for svid in control.svids] == [WORKLOAD_ID]

    try:
        default = fetch_x509_raw(cluster.endpoint, [])
    except grpc.RpcError as error:
        pytest.fail(
            "the agent rejected grpcio's default :authority for a Unix socket: "
            f"{error.code()} {error.details()}"
        )
    assert [svid.spiffe_id for svid in default.svids] == [WORKLOAD_ID]
