"""py-spiffe against federated Tessera trust domains.

A workload in a.test whose entry federates with b.test fetches from A's
agent with py-spiffe. B's SVIDs, fetched with py-spiffe from B's agent,
must validate against the bundles it receives there. C's SVIDs must not:
A's server federates with c.test, but the entry does not. py-spiffe 0.3.2
does not verify an X.509 chain against a bundle, so cryptography's RFC
5280 path validation checks the chains with the authorities py-spiffe
parsed.
"""

from __future__ import annotations

import datetime
import time

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from spiffe import JwtSvid, TrustDomain, WorkloadApiClient, X509Source
from spiffe.bundle.jwt_bundle.errors import AuthorityNotFoundError
from spiffe.workloadapi.errors import WorkloadApiError

from conftest import READY_TIMEOUT_S, Cluster
from federation_setup import (
    CLIENT_ID,
    OUTSIDER_ID,
    SERVER_ID,
    FederatedDomains,
    start_federated_domains,
)

AUDIENCE = "federation-audience"
TRUST_DOMAIN_A = TrustDomain("a.test")
TRUST_DOMAIN_B = TrustDomain("b.test")
TRUST_DOMAIN_C = TrustDomain("c.test")
# Bundles that A's workload may receive: its own and the federated B.
EXPECTED_TRUST_DOMAINS = {"a.test", "b.test"}


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory):
    """Running a.test, b.test and c.test, with A federating with B and C."""
    running = start_federated_domains(tmp_path_factory.mktemp("federation"))
    yield running
    running.stop()


def client_for(cluster: Cluster) -> WorkloadApiClient:
    return WorkloadApiClient(socket_path=cluster.endpoint, default_timeout=10)


def names(bundle_set) -> set[str]:
    """Trust domain names of a py-spiffe X509BundleSet or JwtBundleSet."""
    return {bundle.trust_domain.name for bundle in bundle_set.bundles}


@pytest.fixture(scope="module")
def context_in_a(domains: FederatedDomains):
    """The X.509 context that py-spiffe fetches from A's agent, once it
    contains B's bundle. Tests that do not read it request it to wait for
    that point."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with client_for(domains.a) as client:
        while True:
            try:
                context = client.fetch_x509_context()
                if context.x509_bundle_set.get_bundle_for_trust_domain(TRUST_DOMAIN_B):
                    return context
            except WorkloadApiError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError("timed out waiting for B's bundle in A's X.509 context")
            time.sleep(0.2)


def verified_uris(svid, authorities) -> list[str]:
    """Validate an X.509-SVID chain for client authentication and return the
    URI SANs of the verified leaf."""
    verifier = (
        PolicyBuilder()
        .store(Store(list(authorities)))
        .time(datetime.datetime.now(datetime.timezone.utc))
        .build_client_verifier()
    )
    verified = verifier.verify(svid.leaf, svid.cert_chain[1:])
    subjects = verified.subjects or []
    return [name.value for name in subjects if isinstance(name, x509.UniformResourceIdentifier)]


def authorities_in_a(context, trust_domain: TrustDomain):
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(trust_domain)
    assert bundle is not None, f"A's workload has no bundle for {trust_domain}"
    return bundle.x509_authorities


def test_x509_context_has_only_federated_bundles(context_in_a):
    assert str(context_in_a.default_svid.spiffe_id) == CLIENT_ID
    assert names(context_in_a.x509_bundle_set) == EXPECTED_TRUST_DOMAINS
    assert context_in_a.x509_bundle_set.get_bundle_for_trust_domain(TRUST_DOMAIN_C) is None


def test_x509_bundles_have_only_federated_bundles(domains, context_in_a):
    with client_for(domains.a) as client:
        bundles = client.fetch_x509_bundles()
    assert names(bundles) == EXPECTED_TRUST_DOMAINS
    assert bundles.get_bundle_for_trust_domain(TRUST_DOMAIN_C) is None


def test_x509_source_has_only_federated_bundles(domains, context_in_a):
    with X509Source(socket_path=domains.a.endpoint, timeout_in_seconds=10) as source:
        context = source.get_x509_context()
        assert str(context.default_svid.spiffe_id) == CLIENT_ID
        assert names(context.x509_bundle_set) == EXPECTED_TRUST_DOMAINS
        federated = source.get_bundle_for_trust_domain(TRUST_DOMAIN_B)
        assert federated is not None
        assert federated.x509_authorities, "B's bundle has no X.509 authority"
        assert source.get_bundle_for_trust_domain(TRUST_DOMAIN_C) is None


def test_federated_x509_svid_verifies(domains, context_in_a):
    with client_for(domains.b) as client:
        svid = client.fetch_x509_svid()
    assert str(svid.spiffe_id) == SERVER_ID

    uris = verified_uris(svid, authorities_in_a(context_in_a, svid.spiffe_id.trust_domain))
    assert uris == [SERVER_ID]


def test_federated_x509_svid_rejected_by_own_bundle(domains, context_in_a):
    with client_for(domains.b) as client:
        svid = client.fetch_x509_svid()
    with pytest.raises(VerificationError):
        verified_uris(svid, authorities_in_a(context_in_a, TRUST_DOMAIN_A))


def test_unfederated_x509_svid_rejected(domains, context_in_a):
    with client_for(domains.c) as client:
        svid = client.fetch_x509_svid()
    assert str(svid.spiffe_id) == OUTSIDER_ID
    assert context_in_a.x509_bundle_set.get_bundle_for_trust_domain(TRUST_DOMAIN_C) is None

    every_authority = [
        authority
        for bundle in context_in_a.x509_bundle_set.bundles
        for authority in bundle.x509_authorities
    ]
    with pytest.raises(VerificationError):
        verified_uris(svid, every_authority)


def test_federated_jwt_svid_validates(domains, context_in_a):
    with client_for(domains.b) as client:
        token = client.fetch_jwt_svid({AUDIENCE}).token
    with client_for(domains.a) as client:
        bundles = client.fetch_jwt_bundles()
    assert names(bundles) == EXPECTED_TRUST_DOMAINS

    # A relying party picks the bundle by the trust domain of the token's
    # subject, as the parse_and_validate docstring of py-spiffe 0.3.2 advises.
    subject = JwtSvid.parse_insecure(token, {AUDIENCE}).spiffe_id
    bundle = bundles.get_bundle_for_trust_domain(subject.trust_domain)
    assert bundle is not None, f"A's workload has no JWT bundle for {subject.trust_domain}"
    validated = JwtSvid.parse_and_validate(token, bundle, {AUDIENCE})
    assert str(validated.spiffe_id) == SERVER_ID
    assert AUDIENCE in validated.audience

    own = bundles.get_bundle_for_trust_domain(TRUST_DOMAIN_A)
    with pytest.raises(AuthorityNotFoundError):
        JwtSvid.parse_and_validate(token, own, {AUDIENCE})


def test_unfederated_jwt_svid_rejected(domains, context_in_a):
    with client_for(domains.c) as client:
        token = client.fetch_jwt_svid({AUDIENCE}).token
    with client_for(domains.a) as client:
        bundles = client.fetch_jwt_bundles()
    assert names(bundles) == EXPECTED_TRUST_DOMAINS
    assert bundles.get_bundle_for_trust_domain(TRUST_DOMAIN_C) is None

    for bundle in bundles.bundles:
        with pytest.raises(AuthorityNotFoundError):
            JwtSvid.parse_and_validate(token, bundle, {AUDIENCE})
