//! The tenant-scoped read path: one indexed workspace row by id through the
//! repository layer (transaction, tenant setting, tenant-filtered SELECT,
//! commit), on SQLite and on PostgreSQL, and on PostgreSQL once more with
//! row-level security disabled on the table, to measure what RLS costs.
//!
//! Run: `cargo bench -p saas-benches --bench tenant_read`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use saas_core::TenantContext;
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
                },
            )
            .await
            .unwrap();
        if i == TENANTS / 2 {
            target = Some((ctx, ws.id));
        }
    }
    let insp = t.inspector().await;
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
    insp.execute(&fill).await;
    target.unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sqlite, pg, pg_norls) = rt.block_on(async {
        let sqlite = TestDb::sqlite().await;
        let pg = TestDb::postgres()
            .await
            .expect("PostgreSQL is required for this bench");
        let pg_norls = TestDb::postgres()
            .await
            .expect("PostgreSQL is required for this bench");
        (sqlite, pg, pg_norls)
    });
    let targets = rt.block_on(async {
        let s = fixture(&sqlite).await;
        let p = fixture(&pg).await;
        let n = fixture(&pg_norls).await;
        pg_norls
            .inspector()
            .await
            .execute("ALTER TABLE workspaces NO FORCE ROW LEVEL SECURITY; ALTER TABLE workspaces DISABLE ROW LEVEL SECURITY;")
            .await;
        [s, p, n]
    });

    let mut group = c.benchmark_group("tenant_read_one_workspace_by_id");
    group
        .sample_size(60)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(2));
    for (name, t, (ctx, id)) in [
        ("sqlite", &sqlite, &targets[0]),
        ("postgres_rls", &pg, &targets[1]),
        ("postgres_no_rls", &pg_norls, &targets[2]),
    ] {
        let repo = Workspaces::new(t.db.clone());
        // Same row, same path; sanity-check once outside the timing.
        rt.block_on(async { assert_eq!(repo.get(ctx, *id).await.unwrap().name, "target") });
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { repo.get(ctx, *id).await.unwrap() });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
