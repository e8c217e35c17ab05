//! Tessera's hot paths, each to be read beside the raw limit it is built
//! on, which the `raw_limits` bench of the same `cargo bench` run measures.
//! The paths: SPIFFE ID parsing, X.509-SVID signing by the CA from a public
//! key and from a CSR, X.509-SVID validation, JWT-SVID minting and
//! validation, bundle serialization, and selector matching over a large
//! entry set.

// Criterion's macros generate undocumented public functions, and a bench
// that cannot set up has nothing to measure, so it stops with a message.
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rcgen::PublicKeyData;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use tessera_ca::{CaConfig, CertificateAuthority, KeyStorage};
use tessera_registration::{EntryId, RegistrationEntry, Selector, SelectorSet};
use tessera_spiffe::jwt::validate_jwt_svid;
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{KeyAlgorithm, PrivateKey, SpiffeId, TrustDomain};

const TRUST_DOMAIN: &str = "bench.tessera.test";
const SVID_TTL: Duration = Duration::from_secs(3600);
const AUDIENCE: &str = "tessera-bench";

fn trust_domain() -> TrustDomain {
    TrustDomain::new(TRUST_DOMAIN).expect("valid trust domain")
}

fn certificate_authority() -> CertificateAuthority {
    let config = CaConfig::new(trust_domain());
    CertificateAuthority::load_or_create(config, KeyStorage::Memory, SystemTime::now())
        .expect("an in-memory CA starts")
}

fn workload_id() -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{TRUST_DOMAIN}/ns/prod/sa/payments"))
        .expect("valid SPIFFE ID")
}

fn spiffe_id_parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("ours/spiffe_id_parse");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("short", format!("spiffe://{TRUST_DOMAIN}/w")),
        (
            "k8s",
            format!("spiffe://{TRUST_DOMAIN}/ns/prod/sa/payments-api"),
        ),
        (
            "long_path",
            format!("spiffe://{TRUST_DOMAIN}/{}", ["segment"; 32].join("/")),
        ),
    ];
    for (name, id) in &cases {
        group.bench_with_input(BenchmarkId::from_parameter(name), id, |b, id| {
            b.iter(|| SpiffeId::parse(black_box(id)).expect("valid SPIFFE ID"))
        });
    }
    group.finish();
}

fn x509_svid(c: &mut Criterion) {
    let ca = certificate_authority();
    let id = workload_id();
    let workload_key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("P-256 key");
    let public_key = workload_key.public_key_der();

    let mut group = c.benchmark_group("ours/x509_svid");
    group.throughput(Throughput::Elements(1));

    // The design: the agent sends a public key and the server signs.
    group.bench_function("sign_from_public_key", |b| {
        b.iter(|| {
            ca.sign_x509_svid(
                &id,
                black_box(&public_key),
                &[],
                SVID_TTL,
                SystemTime::now(),
            )
            .expect("CA signs")
        })
    });

    // The alternative: the agent sends a CSR, which the server parses and
    // whose signature it checks before signing.
    let csr = csr_der(&workload_key);
    group.bench_function("sign_from_csr", |b| {
        b.iter(|| {
            let request = rcgen::CertificateSigningRequestParams::from_der(black_box(&csr))
                .expect("valid CSR");
            let public_key = request.public_key.subject_public_key_info();
            ca.sign_x509_svid(&id, &public_key, &[], SVID_TTL, SystemTime::now())
                .expect("CA signs")
        })
    });

    let chain: Vec<CertificateDer<'static>> = ca
        .sign_x509_svid(&id, &public_key, &[], SVID_TTL, SystemTime::now())
        .expect("CA signs");
    let bundle = ca.bundle();
    group.bench_function("validate", |b| {
        b.iter(|| {
            validate_x509_svid(black_box(&chain), &bundle, SystemTime::now()).expect("valid SVID")
        })
    });
    group.finish();
}

fn csr_der(key: &PrivateKey) -> CertificateSigningRequestDer<'static> {
    let key_pair = key.to_rcgen().expect("rcgen key pair");
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("empty params");
    let csr = params.serialize_request(&key_pair).expect("CSR serializes");
    csr.der().clone()
}

fn jwt_svid(c: &mut Criterion) {
    let ca = certificate_authority();
    let id = workload_id();
    let audience = vec![AUDIENCE.to_owned()];

    let mut group = c.benchmark_group("ours/jwt_svid");
    group.throughput(Throughput::Elements(1));
    group.bench_function("mint", |b| {
        b.iter(|| {
            ca.mint_jwt_svid(&id, black_box(&audience), SVID_TTL, SystemTime::now())
                .expect("CA mints")
        })
    });

    let token = ca
        .mint_jwt_svid(&id, &audience, SVID_TTL, SystemTime::now())
        .expect("CA mints")
        .token;
    let bundle = ca.bundle();
    group.bench_function("validate", |b| {
        b.iter(|| {
            validate_jwt_svid(
                black_box(token.as_str()),
                AUDIENCE,
                &bundle,
                SystemTime::now(),
            )
            .expect("valid token")
        })
    });
    group.finish();
}

fn bundle_serialization(c: &mut Criterion) {
    let ca = certificate_authority();
    let now = SystemTime::now();
    let single = ca.bundle();
    // A rotation publishes a prepared authority beside the active one.
    ca.prepare(now).expect("CA prepares its next authority");
    let rotating = ca.bundle();

    let mut group = c.benchmark_group("ours/bundle_to_jwks");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_authority", |b| b.iter(|| black_box(&single).to_jwks()));
    group.bench_function("two_authorities", |b| {
        b.iter(|| black_box(&rotating).to_jwks())
    });
    group.finish();
}

/// Entries of one agent, each with two selectors out of a pool, like
/// Kubernetes namespace and service account pairs.
fn entry_set(count: usize, parent: &SpiffeId) -> Vec<RegistrationEntry> {
    let td = trust_domain();
    (0..count)
        .map(|i| {
            let mut selectors = vec![
                Selector::new("k8s", &format!("ns:ns-{}", i % 100)).expect("valid selector"),
                Selector::new("k8s", &format!("sa:sa-{i}")).expect("valid selector"),
            ];
            selectors.sort();
            RegistrationEntry {
                id: EntryId::generate(),
                spiffe_id: SpiffeId::from_path(&td, &format!("/workload/{i}")).expect("valid ID"),
                parent_id: parent.clone(),
                selectors,
                x509_svid_ttl: None,
                jwt_svid_ttl: None,
                federates_with: Vec::new(),
                dns_names: Vec::new(),
                hint: String::new(),
                admin: false,
                downstream: false,
                expires_at: None,
                revision: 0,
                created_at: 0,
            }
        })
        .collect()
}

fn selector_matching(c: &mut Criterion) {
    let parent = SpiffeId::parse(&format!(
        "spiffe://{TRUST_DOMAIN}/tessera/agent/join_token/0"
    ))
    .expect("valid agent ID");
    // What a Kubernetes workload attestor reports about one pod.
    let workload: SelectorSet = [
        "k8s:ns:ns-42",
        "k8s:sa:sa-42",
        "k8s:pod-name:payments-7d4f9",
        "k8s:node-name:node-3",
        "unix:uid:1000",
        "unix:gid:1000",
    ]
    .into_iter()
    .map(|s| Selector::parse(s).expect("valid selector"))
    .collect();

    let mut group = c.benchmark_group("ours/selector_match_scan");
    for count in [1_000usize, 10_000, 100_000] {
        let entries = entry_set(count, &parent);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(count),
            &entries,
            |b, entries| {
                b.iter(|| {
                    let matched = entries
                        .iter()
                        .filter(|entry| entry.matches(black_box(&workload)))
                        .count();
                    assert_eq!(matched, 1);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    spiffe_id_parsing,
    x509_svid,
    jwt_svid,
    bundle_serialization,
    selector_matching
);
criterion_main!(benches);
