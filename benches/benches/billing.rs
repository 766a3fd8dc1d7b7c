//! Usage metering on PostgreSQL: idempotent batched ingestion through
//! `Meter::record_batch`, side by side with a plain `COPY` of the same rows
//! into an unindexed table (the ceiling), and the current-period usage read
//! of a tenant holding ten million events.
//!
//! Run: `cargo bench -p saas-benches --bench billing`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use saas_billing::metering::{Meter, MetricCatalogue, UsageEvent, UsageQuery};
use saas_core::tenant::Tier;
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_core::{TenantContext, WorkspaceId};
use saas_test_support::{Inspector, TestDb};
use sqlx::PgPool;

/// Batch sizes measured; the issue's headline is the best of them.
const SIZES: [usize; 3] = [1_000, 5_000, 10_000];
/// The batch size of the replay and two-writer cases.
const REPLAY_SIZE: usize = 5_000;
/// Events loaded for the usage read (`BILLING_BENCH_USAGE_EVENTS` overrides
/// it for a quick trial; the figures in docs/PERFORMANCE.md use the default).
const USAGE_EVENTS: usize = 10_000_000;
/// Batch size of that load.
const LOAD_BATCH: usize = 10_000;
/// Concurrent writers of that load.
const LOAD_WRITERS: usize = 2;
/// Workspaces the events are spread over (each event counts for the tenant
/// and for its workspace).
const WORKSPACES: usize = 4;
/// How long the paired record/COPY rounds run for each batch size.
const PAIRED_FOR: Duration = Duration::from_secs(4);

static NEXT_BATCH: AtomicU64 = AtomicU64::new(0);

/// `n` AI requests with fresh transaction ids, spread over `workspaces`.
fn events(n: usize, workspaces: &[WorkspaceId]) -> Vec<UsageEvent> {
    let batch = NEXT_BATCH.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|i| {
            UsageEvent::new(format!("req-{batch:08}-{i:06}"), "ai_requests")
                .workspace(workspaces[i % workspaces.len()])
                .property("tokens", serde_json::json!(100 + i % 900))
                .property("model", serde_json::json!("small"))
        })
        .collect()
}

struct Tenant {
    ctx: TenantContext,
    workspaces: Vec<WorkspaceId>,
}

async fn tenant(t: &TestDb, slug: &str) -> Tenant {
    let ctx = t.tenant(slug, Tier::Enterprise).await;
    let repo = Workspaces::new(t.db.clone());
    let mut workspaces = Vec::new();
    for i in 0..WORKSPACES {
        let w = repo
            .create(
                &ctx,
                NewWorkspace {
                    name: format!("ws-{i}"),
                    parent_id: None,
                    tags: Vec::new(),
                },
            )
            .await
            .unwrap();
        workspaces.push(w.id);
    }
    Tenant { ctx, workspaces }
}

async fn record(meter: &Meter, t: &Tenant, batch: Vec<UsageEvent>) -> u64 {
    meter.record_batch(&t.ctx, batch).await.unwrap().counted
}

/// The rows `tenant` has stored, in `COPY ... FROM STDIN` text format.
async fn stored_rows_as_copy_text(admin: &PgPool, tenant: &Tenant) -> Vec<u8> {
    let text: String = sqlx::query_scalar(
        r"SELECT string_agg(concat_ws(E'\t', tenant_id, key, transaction_id, code,
                coalesce(workspace_id::text, '\N'), coalesce(subject, '\N'), quantity,
                properties, occurred_at, received_at, period_start, late,
                '\\x' || encode(fingerprint, 'hex')), E'\n') || E'\n'
           FROM billing_events WHERE tenant_id = $1",
    )
    .bind(tenant.ctx.tenant().as_uuid())
    .fetch_one(admin)
    .await
    .unwrap();
    text.into_bytes()
}

/// The ceiling: a plain COPY of `rows` into an unindexed, logged table with
/// the same columns, as the application role, one statement and commit.
async fn copy_ceiling(app: &PgPool, rows: &[u8]) {
    let mut conn = app.acquire().await.unwrap();
    let mut copy = conn
        .copy_in_raw("COPY billing_copy_ceiling FROM STDIN")
        .await
        .unwrap();
    copy.send(rows).await.unwrap();
    copy.finish().await.unwrap();
}

async fn admin(inspector: &Inspector, sql: &str) {
    let Inspector::Postgres(pool) = inspector else {
        panic!("PostgreSQL only")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

async fn reset(inspector: &Inspector) {
    admin(
        inspector,
        "TRUNCATE billing_events, billing_usage, billing_usage_uniques, billing_copy_ceiling; \
         CHECKPOINT",
    )
    .await;
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sets = [
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_policy::migrations(),
        saas_billing::migrations(),
    ];
    let (t, inspector, ingest, sample, usage) = rt.block_on(async {
        let t = TestDb::postgres_with(&sets)
            .await
            .expect("PostgreSQL is required for this bench");
        let inspector = t.inspector().await;
        admin(
            &inspector,
            "CREATE TABLE billing_copy_ceiling (LIKE billing_events); \
             GRANT INSERT ON billing_copy_ceiling TO saas_app",
        )
        .await;
        let ingest = tenant(&t, "billing-ingest").await;
        let sample = tenant(&t, "billing-sample").await;
        let usage = tenant(&t, "billing-usage").await;
        (t, inspector, ingest, sample, usage)
    });
    let Inspector::Postgres(admin_pool) = &inspector else {
        panic!("PostgreSQL only")
    };
    let app = t.db.postgres_pool().unwrap().clone();
    let meter = Meter::new(t.db.clone(), MetricCatalogue::default_catalogue().unwrap());

    let mut group = c.benchmark_group("billing_ingest_postgres");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for size in SIZES {
        // Each size starts from empty tables, so later sizes do not pay for
        // a larger index.
        let rows = rt.block_on(async {
            reset(&inspector).await;
            record(&meter, &sample, events(size, &sample.workspaces)).await;
            stored_rows_as_copy_text(admin_pool, &sample).await
        });
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("record_batch/{size}"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (meter, ingest) = (&meter, &ingest);
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = events(size, &ingest.workspaces);
                        let start = Instant::now();
                        let counted = record(meter, ingest, batch).await;
                        spent += start.elapsed();
                        assert_eq!(counted, size as u64);
                    }
                    spent
                }
            });
        });
        group.bench_function(format!("copy_ceiling/{size}"), |b| {
            b.to_async(&rt).iter(|| copy_ceiling(&app, &rows));
        });
        // The ratio, from rounds that run both sides back to back.
        let (rounds, ours, ceiling) = rt.block_on(async {
            let (mut rounds, mut ours, mut ceiling) = (0u32, Duration::ZERO, Duration::ZERO);
            let started = Instant::now();
            while started.elapsed() < PAIRED_FOR || rounds < 5 {
                let batch = events(size, &ingest.workspaces);
                let start = Instant::now();
                assert_eq!(record(&meter, &ingest, batch).await, size as u64);
                ours += start.elapsed();
                let start = Instant::now();
                copy_ceiling(&app, &rows).await;
                ceiling += start.elapsed();
                rounds += 1;
            }
            (rounds, ours, ceiling)
        });
        let rate = |d: Duration| f64::from(rounds) * size as f64 / d.as_secs_f64();
        println!(
            "paired over {rounds} rounds of {size}: record_batch {:.0} events/s, \
             COPY ceiling {:.0} rows/s, ratio {:.1}%",
            rate(ours),
            rate(ceiling),
            100.0 * ceiling.as_secs_f64() / ours.as_secs_f64(),
        );
    }

    group.throughput(Throughput::Elements(REPLAY_SIZE as u64));
    let replay = events(REPLAY_SIZE, &ingest.workspaces);
    rt.block_on(record(&meter, &ingest, replay.clone()));
    group.bench_function(format!("replay_all_duplicates/{REPLAY_SIZE}"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (meter, ingest, replay) = (&meter, &ingest, &replay);
            async move {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch = replay.clone();
                    let start = Instant::now();
                    let receipt = meter.record_batch(&ingest.ctx, batch).await.unwrap();
                    spent += start.elapsed();
                    assert_eq!(receipt.duplicates, REPLAY_SIZE as u64);
                }
                spent
            }
        });
    });
    for writers in [2u64, 4] {
        group.bench_function(
            format!("record_batch_{writers}_writers/{REPLAY_SIZE}"),
            |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (meter, ingest) = (&meter, &ingest);
                    async move {
                        // `iters` batches, shared out over concurrent writers.
                        let shares: Vec<Vec<Vec<UsageEvent>>> = (0..writers)
                            .map(|w| {
                                (0..(iters + writers - 1 - w) / writers)
                                    .map(|_| events(REPLAY_SIZE, &ingest.workspaces))
                                    .collect()
                            })
                            .collect();
                        let mut tasks = tokio::task::JoinSet::new();
                        let start = Instant::now();
                        for batches in shares {
                            let (meter, ctx) = (meter.clone(), ingest.ctx.clone());
                            tasks.spawn(async move {
                                for batch in batches {
                                    let receipt = meter.record_batch(&ctx, batch).await.unwrap();
                                    assert_eq!(receipt.counted, REPLAY_SIZE as u64);
                                }
                            });
                        }
                        while let Some(done) = tasks.join_next().await {
                            done.unwrap();
                        }
                        start.elapsed()
                    }
                });
            },
        );
    }
    group.finish();

    // Ten million events for one tenant, through the same path, untimed.
    let usage_events =
        std::env::var("BILLING_BENCH_USAGE_EVENTS").map_or(USAGE_EVENTS, |v| v.parse().unwrap());
    rt.block_on(async {
        reset(&inspector).await;
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..LOAD_WRITERS {
            let meter = meter.clone();
            let ctx = usage.ctx.clone();
            let workspaces = usage.workspaces.clone();
            writers.spawn(async move {
                for _ in 0..usage_events / LOAD_BATCH / LOAD_WRITERS {
                    let counted = meter
                        .record_batch(&ctx, events(LOAD_BATCH, &workspaces))
                        .await
                        .unwrap()
                        .counted;
                    assert_eq!(counted, LOAD_BATCH as u64);
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        let took = started.elapsed();
        println!(
            "loaded {usage_events} events for one tenant in {:.1} s ({:.0} events/s, \
             {LOAD_WRITERS} writers, batches of {LOAD_BATCH})",
            took.as_secs_f64(),
            usage_events as f64 / took.as_secs_f64()
        );
        admin(&inspector, "VACUUM ANALYZE").await;
        admin(&inspector, "CHECKPOINT").await;
    });
    let all = UsageQuery::default();
    let one = UsageQuery {
        metric: Some("ai_tokens".into()),
        ..UsageQuery::default()
    };
    let report = rt.block_on(meter.usage(&usage.ctx, &all)).unwrap();
    let requests = report.metrics.iter().find(|m| m.metric == "ai_requests");
    assert_eq!(requests.unwrap().events, usage_events as u64);

    let mut group = c.benchmark_group("billing_usage_read_postgres");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("current_period_all_metrics_10m_events", |b| {
        b.to_async(&rt)
            .iter(|| async { meter.usage(&usage.ctx, &all).await.unwrap() });
    });
    group.bench_function("current_period_one_metric_10m_events", |b| {
        b.to_async(&rt)
            .iter(|| async { meter.usage(&usage.ctx, &one).await.unwrap() });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
