//! Audit log throughput on PostgreSQL: appends to one tenant chain and to many,
//! one event per transaction and batched, and verification speed (walking the
//! chain in the database, and checking an export file offline).
//!
//! Run: `cargo bench -p saas-benches --bench audit`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use saas_audit::{AuditEvent, AuditLog, CheckpointSigner, Target};
use saas_core::TenantContext;
use saas_core::tenant::Tier;
use saas_test_support::TestDb;

const BATCH: usize = 500;
const CHAINS: usize = 4;
const VERIFY_EVENTS: usize = 100_000;

fn event(i: usize) -> AuditEvent {
    AuditEvent::new("workspace.update", Target::new("workspace", i))
        .details(serde_json::json!({"field": "name", "n": i}))
}

async fn append_batch(db: &saas_core::db::Db, log: &AuditLog, ctx: &TenantContext, n: usize) {
    let mut tx = db.begin(ctx).await.unwrap();
    log.append_batch(&mut tx, ctx, (0..n).map(event).collect())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sets = [saas_core::migrations(), saas_audit::migrations()];
    let (t, ctxs, verify_ctx) = rt.block_on(async {
        let t = TestDb::postgres_with(&sets)
            .await
            .expect("PostgreSQL is required for this bench");
        let mut ctxs = Vec::new();
        for i in 0..CHAINS {
            ctxs.push(t.tenant(&format!("audit-{i}"), Tier::Enterprise).await);
        }
        let v = t.tenant("audit-verify", Tier::Enterprise).await;
        (t, ctxs, v)
    });
    let log = AuditLog::new(
        t.db.clone(),
        CheckpointSigner::new("bench", &[7u8; 32]).unwrap(),
    );
    let db = t.db.clone();

    let mut group = c.benchmark_group("audit_append_postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));

    group.throughput(Throughput::Elements(1));
    group.bench_function("one_chain_single", |b| {
        b.to_async(&rt)
            .iter(|| async { log.record(&ctxs[0], event(1)).await.unwrap() });
    });
    group.bench_function("many_chains_single_concurrent", |b| {
        let (log, ctxs) = (&log, &ctxs);
        b.to_async(&rt).iter_custom(|iters| async move {
            // `iters` events spread over CHAINS concurrent writers, one chain each.
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for ctx in ctxs.clone() {
                let log = log.clone();
                let n = iters.div_ceil(CHAINS as u64);
                set.spawn(async move {
                    for _ in 0..n {
                        log.record(&ctx, event(1)).await.unwrap();
                    }
                });
            }
            while set.join_next().await.is_some() {}
            start.elapsed()
        });
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("one_chain_batched_500", |b| {
        b.to_async(&rt)
            .iter(|| append_batch(&db, &log, &ctxs[0], BATCH));
    });
    group.bench_function("many_chains_batched_500_concurrent", |b| {
        let (db, log, ctxs) = (&db, &log, &ctxs);
        b.to_async(&rt).iter_custom(|iters| async move {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for ctx in ctxs.clone() {
                let (db, log) = (db.clone(), log.clone());
                let n = iters.div_ceil(CHAINS as u64);
                set.spawn(async move {
                    for _ in 0..n {
                        append_batch(&db, &log, &ctx, BATCH).await;
                    }
                });
            }
            while set.join_next().await.is_some() {}
            start.elapsed()
        });
    });
    group.finish();

    // Verification of a 100,000-event chain.
    rt.block_on(async {
        for _ in 0..VERIFY_EVENTS / BATCH {
            append_batch(&db, &log, &verify_ctx, BATCH).await;
        }
        log.checkpoint(&verify_ctx).await.unwrap();
        // Let PostgreSQL settle after the bulk load, so it does not compete
        // with the measurements for the two cores.
        let insp = t.inspector().await;
        insp.execute("VACUUM ANALYZE audit_events").await;
        insp.execute("CHECKPOINT").await;
    });
    let mut file = Vec::new();
    rt.block_on(log.export(&verify_ctx, 1, None, &mut file))
        .unwrap();
    let mut group = c.benchmark_group("audit_verify");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(VERIFY_EVENTS as u64));
    // As shipped: one connection per core (at most four), each streaming its
    // part of the chain from one shared snapshot.
    group.bench_function("postgres_chain_walk_100k", |b| {
        b.to_async(&rt).iter(|| async {
            let r = log.verify(&verify_ctx, 1).await.unwrap();
            assert!(r.is_valid() && r.checked == VERIFY_EVENTS as u64);
        });
    });
    // The same walk kept to one connection.
    let one = log.clone().verify_connections(1);
    group.bench_function("postgres_chain_walk_100k_one_connection", |b| {
        b.to_async(&rt).iter(|| async {
            let r = one.verify(&verify_ctx, 1).await.unwrap();
            assert!(r.is_valid() && r.checked == VERIFY_EVENTS as u64);
        });
    });
    // The exported events (every line but the header and the checkpoint).
    let events: Vec<saas_audit::StoredEvent> = std::str::from_utf8(&file)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.len(), VERIFY_EVENTS);
    group.bench_function("in_memory_hash_chain_100k", |b| {
        b.iter(|| {
            let r = saas_audit::verify_events(None, &events);
            assert!(r.is_valid() && r.checked == VERIFY_EVENTS as u64);
        });
    });
    group.bench_function("offline_export_100k", |b| {
        b.iter(|| {
            let r = saas_audit::verify_export(&file[..], Some(log.signer())).unwrap();
            assert!(r.is_valid() && r.checked == VERIFY_EVENTS as u64);
        });
    });
    // The walk where the table's guard is not in place (dropped here): every
    // column of every event read and hashed, as before the hashed bytes
    // were stored.
    rt.block_on(async {
        t.inspector()
            .await
            .execute("ALTER TABLE audit_events DROP CONSTRAINT audit_events_canonical")
            .await;
    });
    group.bench_function("postgres_chain_walk_100k_every_column", |b| {
        b.to_async(&rt).iter(|| async {
            let r = log.verify(&verify_ctx, 1).await.unwrap();
            assert!(r.is_valid() && r.checked == VERIFY_EVENTS as u64);
        });
    });
    group.finish();
    rt.block_on(db.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
