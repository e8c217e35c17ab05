//! Raw limits of the machine that Tessera's hot paths are compared with.
//! They are bare aws-lc-rs ECDSA P-256 signing (one and two threads) and
//! verification, and a bare tonic unary call over a Unix socket with a
//! 1 KiB reply (one caller, and 64 callers on 64 connections).

// Criterion's macros generate undocumented public functions, and a bench
// that cannot set up has nothing to measure, so it stops with a message.
#![allow(missing_docs, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tessera_bench::baseline::{self, BareSigner};
use tessera_bench::echo::{self, RunningEcho, proto::ReplyRequest};

/// Reply size of the bare gRPC baseline.
const REPLY_BYTES: u32 = 1024;

/// Concurrent callers of the many-clients gRPC baseline.
const CALLERS: u64 = 64;

fn ecdsa_p256(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw/ecdsa_p256");
    group.throughput(Throughput::Elements(1));

    let signer = BareSigner::generate();
    group.bench_function("sign", |b| b.iter(|| signer.sign()));

    // Two threads sign `iters / 2` messages each, so the time per
    // iteration is the time per signature of the two threads together.
    group.bench_function("sign_2_threads", |b| {
        b.iter_custom(|iters| baseline::ecdsa_p256_sign_parallel(2, iters.div_ceil(2)))
    });

    let signature = signer.sign();
    group.bench_function("verify", |b| b.iter(|| signer.verify(&signature)));
    group.finish();
}

fn tonic_unix_socket(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = runtime
        .block_on(async { RunningEcho::start(&dir.path().join("echo.sock")) })
        .expect("echo server binds");

    let mut group = c.benchmark_group("raw/tonic_uds_unary_1k");
    group.throughput(Throughput::Elements(1));

    let client = runtime
        .block_on(server.connect())
        .expect("echo client connects");
    group.bench_function("one_caller", |b| {
        b.iter_custom(|iters| {
            let mut client = client.clone();
            runtime.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let reply = client
                        .reply(ReplyRequest { size: REPLY_BYTES })
                        .await
                        .expect("echo call succeeds");
                    std::hint::black_box(reply);
                }
                start.elapsed()
            })
        })
    });

    // The callers connect once; each sample spawns 64 tasks that share
    // the sample's calls. Fewer, longer samples keep the tasks' start and
    // finish a small part of each.
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let callers = runtime
        .block_on(echo::connect_clients(&server, CALLERS as usize))
        .expect("echo clients connect");
    group.bench_function("64_callers", |b| {
        b.iter_custom(|iters| {
            let calls_per_caller = iters.div_ceil(CALLERS);
            let run = runtime
                .block_on(echo::run_clients(
                    &callers,
                    REPLY_BYTES as usize,
                    calls_per_caller,
                    Duration::from_secs(600),
                ))
                .expect("echo calls succeed");
            // Time per call of all callers together.
            Duration::from_secs_f64(iters as f64 / run.calls_per_second)
        })
    });
    group.finish();
    runtime.block_on(server.stop());
}

criterion_group!(benches, ecdsa_p256, tonic_unix_socket);
criterion_main!(benches);
