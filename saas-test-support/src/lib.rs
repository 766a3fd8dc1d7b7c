#![doc = include_str!("../README.md")]
//!
//! PostgreSQL is reached at `SAAS_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). If it cannot be reached the
//! test fails; outside CI, `SAAS_TEST_SKIP_POSTGRES=1` skips PostgreSQL cases
//! with a loud message instead, and under `CI=true` that switch is refused.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures fail the test at once, with a message, when the environment is broken"
)]

use std::str::FromStr;
use std::sync::Arc;

use saas_core::clock::ManualClock;
use saas_core::db::{self, Backend, Db, DbConfig, MigrationSet};
use saas_core::tenant::{NewTenant, Tenants, Tier};
use saas_core::{PlatformContext, Principal, TenantContext, UserId};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

/// Generates one test per backend from one body: `mod name { sqlite, postgres }`.
/// Start with `migrations = <expr>;` to migrate more than saas-core.
///
/// ```text
/// saas_test_support::both_backends! {
///     async fn creates_a_workspace(t) { /* t: TestDb */ }
/// }
/// ```
#[macro_export]
macro_rules! both_backends {
    (migrations = $sets:expr; $(async fn $name:ident($t:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports, reason = "each generated module sees the test file's imports")]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $t = $crate::TestDb::sqlite_with(&$sets).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some($t) = $crate::TestDb::postgres_with(&$sets).await else { return };
                    $body
                }
            }
        )*
    };
    ($(async fn $name:ident($t:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports, reason = "each generated module sees the test file's imports")]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $t = $crate::TestDb::sqlite().await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some($t) = $crate::TestDb::postgres().await else { return };
                    $body
                }
            }
        )*
    };
}

/// A fresh, migrated database for one test; removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    /// The database, as the application sees it.
    pub db: Db,
    /// The clock `db` reads.
    pub clock: ManualClock,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(std::path::PathBuf),
    Postgres {
        admin: Box<PgConnectOptions>,
        name: String,
    },
}

fn default_sets() -> Vec<MigrationSet> {
    vec![saas_core::migrations()]
}

fn pg_admin_url() -> String {
    std::env::var("SAAS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn template_name(sets: &[MigrationSet]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for s in sets {
        s.component.hash(&mut h);
        for m in s.migrations {
            m.version.hash(&mut h);
            m.postgres.hash(&mut h);
        }
    }
    format!("saas_tpl_{:016x}", h.finish())
}

impl TestDb {
    /// A fresh SQLite database file with saas-core's migrations.
    pub async fn sqlite() -> Self {
        Self::sqlite_with(&default_sets()).await
    }

    /// A fresh SQLite database file with the given migrations.
    pub async fn sqlite_with(sets: &[MigrationSet]) -> Self {
        let path = std::env::temp_dir().join(format!("saas-test-{}.db", uuid::Uuid::now_v7()));
        let clock = ManualClock::starting_now();
        let db = Db::connect_with_clock(
            DbConfig::new(format!("sqlite://{}", path.display())),
            Arc::new(clock.clone()),
        )
        .await
        .expect("open sqlite test database");
        db::migrate(&db, sets)
            .await
            .expect("migrate sqlite test database");
        Self {
            db,
            clock,
            cleanup: Cleanup::Sqlite(path),
        }
    }

    /// A fresh PostgreSQL database with saas-core's migrations, or `None` when
    /// PostgreSQL cases are explicitly skipped (never under CI).
    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(&default_sets()).await
    }

    /// A fresh PostgreSQL database with the given migrations.
    pub async fn postgres_with(sets: &[MigrationSet]) -> Option<Self> {
        let skip = std::env::var("SAAS_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if skip && ci {
            panic!("SAAS_TEST_SKIP_POSTGRES is refused under CI=true: PostgreSQL tests must run");
        }
        if skip {
            eprintln!("SKIPPED: PostgreSQL case skipped because SAAS_TEST_SKIP_POSTGRES=1");
            return None;
        }
        let admin = PgConnectOptions::from_str(&pg_admin_url()).expect("SAAS_TEST_PG_URL parses");
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for the test suite and is not reachable at {} ({e}). \
                 Start it (see README.md) or set SAAS_TEST_PG_URL.",
                pg_admin_url()
            )
        });
        let template = template_name(sets);
        let name = format!("saas_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query("SELECT pg_advisory_lock(7206300002)")
            .execute(&mut conn)
            .await
            .expect("advisory lock");
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&template)
            .fetch_optional(&mut conn)
            .await
            .expect("query pg_database")
            .is_some();
        if !exists {
            let building = format!("{template}_build");
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {building} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop stale template");
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {building}")))
                .execute(&mut conn)
                .await
                .expect("create template");
            let url = admin.clone().database(&building);
            let db = Db::connect(DbConfig::new(url.to_url_lossy().to_string()))
                .await
                .expect("connect template");
            db::migrate(&db, sets).await.expect("migrate template");
            db.close().await;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "ALTER DATABASE {building} RENAME TO {template}"
            )))
            .execute(&mut conn)
            .await
            .expect("publish template");
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .execute(&mut conn)
        .await
        .expect("create test database");
        sqlx::query("SELECT pg_advisory_unlock(7206300002)")
            .execute(&mut conn)
            .await
            .expect("advisory unlock");
        let _ = conn.close().await;

        let clock = ManualClock::starting_now();
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        let mut cfg = DbConfig::new(url);
        cfg.max_connections = 8;
        let db = Db::connect_with_clock(cfg, Arc::new(clock.clone()))
            .await
            .expect("connect test database");
        // Migrations are already applied (from the template); this checks them.
        db::migrate(&db, sets).await.expect("verify migrations");
        Some(Self {
            db,
            clock,
            cleanup: Cleanup::Postgres {
                admin: Box::new(admin),
                name,
            },
        })
    }

    /// The backend under test.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// A platform context for fixtures.
    #[must_use]
    pub fn platform(&self) -> PlatformContext {
        PlatformContext::system("test fixture")
    }

    /// Creates and activates a tenant; returns a context of a user acting in it.
    pub async fn tenant(&self, slug: &str, tier: Tier) -> TenantContext {
        let tenants = Tenants::new(self.db.clone());
        let p = self.platform();
        let t = tenants
            .create(
                &p,
                NewTenant {
                    slug: slug.into(),
                    name: format!("Org {slug}"),
                    tier,
                },
            )
            .await
            .expect("create tenant");
        tenants.activate(&p, t.id).await.expect("activate tenant");
        TenantContext::for_test(t.id, Principal::User { id: UserId::new() })
    }

    /// Two active enterprise tenants, `a` and `b`.
    pub async fn two_tenants(&self) -> (TenantContext, TenantContext) {
        (
            self.tenant("tenant-a", Tier::Enterprise).await,
            self.tenant("tenant-b", Tier::Enterprise).await,
        )
    }

    /// PostgreSQL only: the same database through a pool that logs in as the
    /// superuser with no `SET ROLE`, so row-level security does not apply.
    /// For measuring what RLS costs; never for assertions about isolation.
    pub async fn superuser_db(&self) -> Option<Db> {
        let Cleanup::Postgres { admin, name } = &self.cleanup else {
            return None;
        };
        let mut cfg = DbConfig::new((**admin).clone().database(name).to_url_lossy().to_string());
        cfg.app_role = None;
        cfg.max_connections = 4;
        Some(
            Db::connect_with_clock(cfg, Arc::new(self.clock.clone()))
                .await
                .expect("superuser pool"),
        )
    }

    /// A superuser view that bypasses every wall: for assertions only.
    pub async fn inspector(&self) -> Inspector {
        match &self.cleanup {
            Cleanup::Sqlite(_) => {
                Inspector::Sqlite(self.db.sqlite_pool().expect("sqlite pool").clone())
            }
            Cleanup::Postgres { admin, name } => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with((**admin).clone().database(name))
                    .await
                    .expect("inspector connects");
                Inspector::Postgres(pool)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Postgres { admin, name } => {
                let admin = (**admin).clone();
                let name = name.clone();
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    if let Ok(rt) = rt {
                        rt.block_on(async move {
                            if let Ok(mut c) = admin.connect().await {
                                let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .execute(&mut c)
                                .await;
                            }
                        });
                    }
                })
                .join();
            }
        }
    }
}

/// Sees every row of the test database, bypassing the tenant walls.
#[derive(Debug)]
pub enum Inspector {
    /// SQLite (the pool itself: SQLite has no other wall to bypass).
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL as the superuser.
    Postgres(sqlx::PgPool),
}

impl Inspector {
    /// Every table with a `tenant_id` column, read from the database catalogue,
    /// so a table added later cannot be forgotten.
    pub async fn tenant_tables(&self) -> Vec<String> {
        self.table_names(
            "SELECT m.name AS name FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND c.name = 'tenant_id'",
            "SELECT c.table_name::text AS name FROM information_schema.columns c \
             JOIN information_schema.tables t USING (table_schema, table_name) \
             WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' \
             AND t.table_type = 'BASE TABLE'",
        )
        .await
    }

    /// Every table in the database, from the catalogue.
    pub async fn all_tables(&self) -> Vec<String> {
        self.table_names(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .await
    }

    /// The sorted `name` column of a catalogue query, in the backend's dialect.
    async fn table_names(&self, sqlite: &'static str, postgres: &'static str) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Self::Sqlite(p) => sqlx::query(sqlite)
                .fetch_all(p)
                .await
                .expect("sqlite catalogue")
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect(),
            Self::Postgres(p) => sqlx::query(postgres)
                .fetch_all(p)
                .await
                .expect("pg catalogue")
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect(),
        };
        names.sort();
        names
    }

    /// Rows of `table` whose `column` equals `value` (as a superuser sees them).
    pub async fn count_where(&self, table: &str, column: &str, value: uuid::Uuid) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM \"{table}\" WHERE \"{column}\" = $1");
        match self {
            Self::Sqlite(p) => sqlx::query(AssertSqlSafe(sql))
                .bind(value)
                .fetch_one(p)
                .await
                .expect("count")
                .get("n"),
            Self::Postgres(p) => sqlx::query(AssertSqlSafe(sql))
                .bind(value)
                .fetch_one(p)
                .await
                .expect("count")
                .get("n"),
        }
    }

    /// Every row of `table` rendered as one line of text (uuids in both their
    /// hyphenated and hex forms appear as the backend renders them): for
    /// proving that a value appears nowhere in a table.
    pub async fn row_texts(&self, table: &str) -> Vec<String> {
        match self {
            Self::Sqlite(p) => {
                let cols: Vec<String> = sqlx::query(AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}')"
                )))
                .fetch_all(p)
                .await
                .expect("columns")
                .iter()
                .map(|r| format!("quote(\"{}\")", r.get::<String, _>("name")))
                .collect();
                let sql = format!("SELECT {} AS t FROM \"{table}\"", cols.join(" || '|' || "));
                sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(p)
                    .await
                    .expect("rows")
                    .iter()
                    .map(|r| r.get::<String, _>("t"))
                    .collect()
            }
            Self::Postgres(p) => sqlx::query(AssertSqlSafe(format!(
                "SELECT x::text AS t FROM \"{table}\" x"
            )))
            .fetch_all(p)
            .await
            .expect("rows")
            .iter()
            .map(|r| r.get::<String, _>("t"))
            .collect(),
        }
    }

    /// Runs a statement as a superuser would (tamper and probe tests).
    pub async fn execute(&self, sql: &str) -> u64 {
        self.try_execute(sql).await.expect("execute")
    }

    /// Like [`Inspector::execute`], returning the database's refusal (a
    /// trigger or constraint) instead of failing the test.
    pub async fn try_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(p) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(p)
                .await?
                .rows_affected(),
            Self::Postgres(p) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(p)
                .await?
                .rows_affected(),
        })
    }
}
