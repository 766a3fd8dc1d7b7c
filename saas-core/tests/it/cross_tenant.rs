use saas_core::CoreError;
use saas_core::config::TenantConfigs;
use saas_core::db::Backend;
use saas_core::jobs::JobStore;
use saas_core::subject::{CoreSubjectStore, DataSubject, DataSubjectStore};
use saas_core::tenant::Tenants;
use saas_core::workspace::{NewWorkspace, WorkspacePatch, Workspaces};
use saas_test_support::both_backends;
use serde_json::json;
use sqlx::Row;

use crate::populate;

both_backends! {
    async fn every_repository_method_in_tenant_a_leaves_tenant_b_untouched(t) {
        let (a, b) = t.two_tenants().await;
        populate(&t.db, &a).await;
        let b_ws = populate(&t.db, &b).await;
        let insp = t.inspector().await;
        let tables = insp.tenant_tables().await;
        assert_eq!(tables, vec!["dead_jobs", "jobs", "tenant_config_versions", "workspaces"], "new tenant table: add it to populate() and this probe");
        let mut before = Vec::new();
        for table in &tables {
            let n = insp.count_where(table, "tenant_id", b.tenant().as_uuid()).await;
            assert!(n > 0, "fixture left {table} empty for tenant b");
            before.push(n);
        }

        let ws = Workspaces::new(t.db.clone());
        for w in &b_ws {
            assert!(matches!(ws.get(&a, w.id).await, Err(CoreError::NotFound { .. })));
            assert!(matches!(
                ws.update(&a, w.id, WorkspacePatch { name: Some("pwned".into()), ..WorkspacePatch::default() }).await,
                Err(CoreError::NotFound { .. })
            ));
            assert!(matches!(ws.delete(&a, w.id).await, Err(CoreError::NotFound { .. })));
            assert!(matches!(
                ws.create(&a, NewWorkspace { name: "child".into(), parent_id: Some(w.id), tags: Vec::new() }).await,
                Err(CoreError::NotFound { .. })
            ));
        }
        // Moving one of A's workspaces under one of B's is refused too.
        let own = ws.list(&a, None, 100).await.unwrap();
        assert!(matches!(
            ws.update(&a, own[0].id, WorkspacePatch { parent_id: Some(Some(b_ws[0].id)), ..WorkspacePatch::default() }).await,
            Err(CoreError::NotFound { .. })
        ));
        assert!(own.iter().all(|w| w.tenant_id == a.tenant()));

        let configs = TenantConfigs::new(t.db.clone());
        let a_hist = configs.history(&a, 100).await.unwrap();
        assert_eq!(a_hist.len(), 2);
        configs.put(&a, json!({"theme": "a-only"}), Some(2)).await.unwrap();
        assert_eq!(configs.current(&b).await.unwrap().config, json!({"theme": "light"}));

        let dead = JobStore::new(t.db.clone()).tenant_dead_letters(&a, 100).await.unwrap();
        assert!(!dead.is_empty() && dead.iter().all(|d| d.tenant_id == Some(a.tenant())));

        assert_eq!(Tenants::new(t.db.clone()).current(&a).await.unwrap().id, a.tenant());

        // B's user, looked up and erased from A's side, is untouched in B.
        let store = CoreSubjectStore::new(t.db.clone());
        let subject = DataSubject::user(b.principal().user_id().unwrap());
        assert!(store.find(&a, &subject).await.unwrap().records.is_empty());
        assert_eq!(store.export(&a, &subject).await.unwrap().data["workspaces_created"], json!([]));
        assert!(store.erase(&a, &subject).await.unwrap().anonymised.is_empty());
        assert_eq!(store.find(&b, &subject).await.unwrap().records.len(), 2);

        for (table, n) in tables.iter().zip(before) {
            assert_eq!(insp.count_where(table, "tenant_id", b.tenant().as_uuid()).await, n, "{table} of b changed");
        }
        for w in &b_ws {
            assert_eq!(ws.get(&b, w.id).await.unwrap().name, w.name);
        }
    }
}

/// The second wall: with the tenant filter forgotten, PostgreSQL row-level
/// security still returns no foreign row, on every tenant table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_returns_no_foreign_rows_to_queries_without_a_tenant_filter() {
    let Some(t) = saas_test_support::TestDb::postgres().await else {
        return;
    };
    assert_eq!(t.backend(), Backend::Postgres);
    let (a, b) = t.two_tenants().await;
    populate(&t.db, &a).await;
    populate(&t.db, &b).await;
    let insp = t.inspector().await;
    let mut tables = insp.tenant_tables().await;
    tables.push("tenants".into());
    let pool = t.db.postgres_pool().unwrap();

    // The application role owns nothing and RLS is forced on every tenant table.
    let mut conn = pool.acquire().await.unwrap();
    let role: String = sqlx::query("SELECT current_user::text AS r")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get("r");
    assert_eq!(role, saas_core::db::APP_ROLE);
    for table in &tables {
        let row = sqlx::query(
            "SELECT c.relrowsecurity AS rls, c.relforcerowsecurity AS forced, pg_get_userbyid(c.relowner)::text AS owner \
             FROM pg_class c WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!(
            row.get::<bool, _>("rls") && row.get::<bool, _>("forced"),
            "{table} lacks forced RLS"
        );
        assert_ne!(
            row.get::<String, _>("owner"),
            saas_core::db::APP_ROLE,
            "{table} is owned by the app role"
        );
    }
    drop(conn);

    let mut total_foreign = 0i64;
    for table in &tables {
        let key = if table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('saas.tenant_id', $1, true)")
            .bind(a.tenant().to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        // No tenant filter at all: only A's rows come back.
        let sql = format!("SELECT {key} AS t FROM {table}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let foreign = rows
            .iter()
            .filter(|r| r.get::<Option<uuid::Uuid>, _>("t") != Some(a.tenant().as_uuid()))
            .count();
        total_foreign += foreign as i64;
        assert_eq!(foreign, 0, "{table} leaked {foreign} foreign rows");
        assert_eq!(
            rows.len() as i64,
            insp.count_where(table, key, a.tenant().as_uuid()).await,
            "{table}: A should see its own rows"
        );
        tx.rollback().await.unwrap();

        // No tenant set at all: nothing.
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap()
            .get("n");
        assert_eq!(n, 0, "{table} visible without a tenant");
    }
    println!(
        "rls probe: {} tables, {total_foreign} foreign rows returned",
        tables.len()
    );

    // Writing a row for B from A's transaction is refused by the policy.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('saas.tenant_id', $1, true)")
        .bind(a.tenant().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO workspaces (tenant_id, id, name, created_at, updated_at) VALUES ($1, $2, 'x', now(), now())")
        .bind(b.tenant().as_uuid())
        .bind(uuid::Uuid::now_v7())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);
    let updated = {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('saas.tenant_id', $1, true)")
            .bind(a.tenant().to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let n = sqlx::query("UPDATE workspaces SET name = 'pwned' WHERE tenant_id = $1")
            .bind(b.tenant().as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        tx.commit().await.unwrap();
        n
    };
    assert_eq!(updated, 0);
}

/// The production setup: the application logs in as its own role (a member of
/// `saas_app`, owner of nothing, no `SET ROLE`), migrations run as the owner,
/// and RLS still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_login_role_with_a_separate_migration_url_is_confined_by_rls() {
    let Some(t) = saas_test_support::TestDb::postgres().await else {
        return;
    };
    let (a, b) = t.two_tenants().await;
    populate(&t.db, &b).await;
    let insp = t.inspector().await;
    insp.execute(
        "DO $$ BEGIN CREATE ROLE saas_web_test LOGIN IN ROLE saas_app; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .await;
    let saas_test_support::Inspector::Postgres(admin_pool) = &insp else {
        unreachable!()
    };
    let dbname: String = sqlx::query("SELECT current_database() AS d")
        .fetch_one(admin_pool)
        .await
        .unwrap()
        .get("d");
    let base = std::env::var("SAAS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let owner_url = format!("{}/{dbname}", base.rsplit_once('/').unwrap().0);
    let web_url = owner_url.replacen("postgres@", "saas_web_test@", 1);
    let mut cfg = saas_core::db::DbConfig::new(web_url);
    cfg.app_role = None;
    cfg.migration_url = Some(owner_url);
    let db = saas_core::db::Db::connect(cfg).await.unwrap();
    saas_core::db::migrate(&db, &[saas_core::migrations()])
        .await
        .unwrap();
    let who: String = sqlx::query("SELECT current_user::text AS u")
        .fetch_one(db.postgres_pool().unwrap())
        .await
        .unwrap()
        .get("u");
    assert_eq!(who, "saas_web_test");
    let ws = Workspaces::new(db.clone());
    assert!(ws.list(&a, None, 100).await.unwrap().is_empty());
    assert_eq!(ws.list(&b, None, 100).await.unwrap().len(), 2);
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM workspaces")
        .fetch_one(db.postgres_pool().unwrap())
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 0, "no tenant set: nothing visible");
    db.close().await;
}
