//! The tenant-scoped read path: one indexed workspace row by id through the
//! repository layer (transaction, tenant setting, tenant-filtered SELECT,
//! commit), on SQLite and on PostgreSQL.
//!
//! The RLS overhead is measured on one PostgreSQL database, the same rows and
//! the same code path: once as the `saas_app` role (forced RLS applies) and once
//! as the superuser (RLS bypassed). The two sides run interleaved, A then B in
//! every iteration, and each side times only its own calls, so drift on a busy
//! machine falls on both alike.
//!
//! Run: `cargo bench -p saas-benches --bench tenant_read`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use saas_core::TenantContext;
use saas_core::db::Db;
use saas_core::db::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use saas_core::tenant::Tier;
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_test_support::TestDb;

/// Tenants in the fixture, and workspaces per tenant, so the table is not tiny.
const TENANTS: usize = 20;
const PER_TENANT: i64 = 1000;

async fn fixture(t: &TestDb) -> (TenantContext, saas_core::WorkspaceId) {
    let mut target = None;
    for i in 0..TENANTS {
        let ctx = t.tenant(&format!("bench-{i:03}"), Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone())
            .create(
                &ctx,
                NewWorkspace {
                    name: "target".into(),
                    parent_id: None,
                    tags: Vec::new(),
                },
            )
            .await
            .unwrap();
        if i == TENANTS / 2 {
            target = Some((ctx, ws.id));
        }
    }
    let fill = match t.backend() {
        saas_core::db::Backend::Postgres => format!(
            "INSERT INTO workspaces (tenant_id, id, parent_id, name, created_at, updated_at) \
             SELECT t.id, gen_random_uuid(), NULL, 'w' || g, now(), now() \
             FROM tenants t, generate_series(1, {PER_TENANT}) g; ANALYZE workspaces;"
        ),
        saas_core::db::Backend::Sqlite => format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {PER_TENANT}) \
             INSERT INTO workspaces (tenant_id, id, parent_id, name, created_at, updated_at) \
             SELECT t.id, randomblob(16), NULL, 'w' || n, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00' \
             FROM tenants t, g; ANALYZE;"
        ),
    };
    t.inspector().await.execute(&fill).await;
    target.unwrap()
}

fn select_by_id(ctx: &TenantContext, id: saas_core::WorkspaceId) -> SelectStatement {
    Query::select()
        .columns([
            "tenant_id",
            "id",
            "parent_id",
            "name",
            "created_by_user",
            "created_at",
            "updated_at",
        ])
        .from("workspaces")
        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
        .and_where(Expr::col("id").eq(id))
        .to_owned()
}

/// Both sides of every interleaved iteration, summed over the whole run: the
/// paired ratio is immune to drift between criterion's separate measurements.
#[derive(Default)]
struct Paired(std::sync::Mutex<(u64, [Duration; 2])>);

impl Paired {
    fn add(&self, iters: u64, times: [Duration; 2]) {
        let mut g = self.0.lock().unwrap();
        g.0 += iters;
        g.1[0] += times[0];
        g.1[1] += times[1];
    }

    fn report(&self, what: &str) {
        let (n, [rls, open]) = *self.0.lock().unwrap();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!(
            "paired over {n} iterations, {what}: RLS {:.1} us/op, bypassed {:.1} us/op, RLS overhead {:+.1}%",
            per(rls),
            per(open),
            (rls.as_secs_f64() / open.as_secs_f64() - 1.0) * 100.0
        );
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sqlite, pg, bypass, targets) = rt.block_on(async {
        let sqlite = TestDb::sqlite().await;
        let pg = TestDb::postgres()
            .await
            .expect("PostgreSQL is required for this bench");
        let s = fixture(&sqlite).await;
        let p = fixture(&pg).await;
        let bypass: Db = pg.superuser_db().await.unwrap();
        (sqlite, pg, bypass, [s, p])
    });
    let (sctx, sid) = &targets[0];
    let (ctx, id) = &targets[1];

    let mut group = c.benchmark_group("tenant_read_one_workspace_by_id");
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));

    let lite = Workspaces::new(sqlite.db.clone());
    rt.block_on(async { assert_eq!(lite.get(sctx, *sid).await.unwrap().name, "target") });
    group.bench_function("sqlite", |b| {
        b.to_async(&rt)
            .iter(|| async { lite.get(sctx, *sid).await.unwrap() })
    });

    let rls = Workspaces::new(pg.db.clone());
    let open = Workspaces::new(bypass.clone());
    rt.block_on(async {
        assert_eq!(rls.get(ctx, *id).await.unwrap().name, "target");
        assert_eq!(open.get(ctx, *id).await.unwrap().name, "target");
    });
    let paired = Paired::default();
    for (name, rls_timed) in [("postgres_rls", true), ("postgres_rls_bypassed", false)] {
        let (rls, open, paired) = (&rls, &open, &paired);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut times = [Duration::ZERO; 2];
                for _ in 0..iters {
                    let t0 = Instant::now();
                    rls.get(ctx, *id).await.unwrap();
                    let t1 = Instant::now();
                    open.get(ctx, *id).await.unwrap();
                    times[0] += t1 - t0;
                    times[1] += t1.elapsed();
                }
                paired.add(iters, times);
                if rls_timed { times[0] } else { times[1] }
            });
        });
    }
    group.finish();
    paired.report("repository read (BEGIN+set_config, SELECT, COMMIT)");

    // The statement alone, inside one open tenant transaction per side: what
    // RLS adds to the query itself, without BEGIN/set_config/COMMIT round trips.
    let mut group = c.benchmark_group("tenant_select_by_id_in_open_transaction");
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    let q = select_by_id(ctx, *id);
    let (tx_rls, tx_open) = rt.block_on(async {
        (
            tokio::sync::Mutex::new(pg.db.read(ctx).await.unwrap()),
            tokio::sync::Mutex::new(bypass.read(ctx).await.unwrap()),
        )
    });
    let paired = Paired::default();
    for (name, rls_timed) in [("postgres_rls", true), ("postgres_rls_bypassed", false)] {
        let (q, tx_rls, tx_open, paired) = (&q, &tx_rls, &tx_open, &paired);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut a = tx_rls.lock().await;
                let mut o = tx_open.lock().await;
                let mut times = [Duration::ZERO; 2];
                for _ in 0..iters {
                    let t0 = Instant::now();
                    a.fetch_optional(q).await.unwrap().unwrap();
                    let t1 = Instant::now();
                    o.fetch_optional(q).await.unwrap().unwrap();
                    times[0] += t1 - t0;
                    times[1] += t1.elapsed();
                }
                paired.add(iters, times);
                if rls_timed { times[0] } else { times[1] }
            });
        });
    }
    group.finish();
    paired.report("statement alone in an open transaction");
    // Pooled connections must go back inside the runtime.
    rt.block_on(async {
        tx_rls.into_inner().rollback().await.unwrap();
        tx_open.into_inner().rollback().await.unwrap();
        bypass.close().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
