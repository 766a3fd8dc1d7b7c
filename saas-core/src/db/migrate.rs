//! Versioned, forward-only migrations for both backends.
//!
//! Each crate that owns tables ships a [`MigrationSet`]: a component name and
//! an ordered list of [`Migration`]s, each with its PostgreSQL and SQLite text.
//! [`migrate`] applies what is missing, one transaction per migration, records
//! a SHA-256 checksum of what it ran, and refuses to start when an applied
//! migration was edited afterwards or the database holds migrations this binary
//! does not know (it is newer than the code). On PostgreSQL it runs as the
//! connection's own (owner) role and serialises concurrent runners with an
//! advisory lock, so several replicas may start at once.

use std::str::FromStr;
use std::sync::Arc;

use sea_query::{Expr, ExprTrait, Query};
use sha2::{Digest, Sha256};

use super::{Backend, Db, DbConfig, Pool, Scope, Tx};
use crate::error::CoreError;

/// One schema change, written once per dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing within its set.
    pub version: i64,
    /// Short name, e.g. `"tenants_and_workspaces"`.
    pub name: &'static str,
    /// The PostgreSQL script.
    pub postgres: &'static str,
    /// The SQLite script.
    pub sqlite: &'static str,
}

impl Migration {
    fn script(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Postgres => self.postgres,
            Backend::Sqlite => self.sqlite,
        }
    }

    fn checksum(&self, backend: Backend) -> String {
        let digest = Sha256::digest(self.script(backend).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The migrations of one component (crate).
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// The owning component, e.g. `"saas-core"`.
    pub component: &'static str,
    /// In version order.
    pub migrations: &'static [Migration],
}

const TABLE: &str = "saas_migrations";

const CREATE_PG: &str = "SELECT pg_advisory_xact_lock(7206300001);
CREATE TABLE IF NOT EXISTS saas_migrations (
    component text NOT NULL,
    version bigint NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL,
    PRIMARY KEY (component, version)
);";

const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS saas_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (component, version)
);";

const LOCK_PG: &str = "SELECT pg_advisory_xact_lock(7206300001)";

/// Applies every missing migration of `sets`, in order.
pub async fn migrate(db: &Db, sets: &[MigrationSet]) -> Result<(), CoreError> {
    let (runner, dedicated) = runner_db(db).await?;
    let result = run(&runner, sets).await;
    if dedicated {
        runner.close().await;
    }
    result
}

/// The migrations recorded as applied, as `(component, version)` pairs.
pub async fn applied_migrations(db: &Db) -> Result<Vec<(String, i64)>, CoreError> {
    let mut tx = db.begin_scoped(Scope::Platform, false).await?;
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(["component", "version"])
                .from(TABLE)
                .order_by("component", sea_query::Order::Asc)
                .order_by("version", sea_query::Order::Asc),
        )
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| Ok((r.get::<String>("component")?, r.get::<i64>("version")?)))
        .collect()
}

/// PostgreSQL migrations run on a dedicated owner connection (no `SET ROLE`);
/// SQLite uses the pool itself. The flag says whether the handle is dedicated.
async fn runner_db(db: &Db) -> Result<(Db, bool), CoreError> {
    match (&db.inner.pool, db.admin_options()) {
        (Pool::Postgres(_), Some(admin)) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(admin.clone())
                .await?;
            let runner = Db {
                inner: Arc::new(super::Inner {
                    pool: Pool::Postgres(pool),
                    recorder: std::sync::OnceLock::new(),
                    admin: None,
                    clock: Arc::clone(&db.inner.clock),
                }),
            };
            Ok((runner, true))
        }
        _ => Ok((db.clone(), false)),
    }
}

async fn run(db: &Db, sets: &[MigrationSet]) -> Result<(), CoreError> {
    let backend = db.backend();
    let mut tx = db.begin_scoped(Scope::Platform, true).await?;
    tx.execute_script(match backend {
        Backend::Postgres => CREATE_PG,
        Backend::Sqlite => CREATE_SQLITE,
    })
    .await?;
    tx.commit().await?;

    for set in sets {
        let mut last = 0;
        for m in set.migrations {
            if m.version <= last {
                return Err(CoreError::Migration(format!(
                    "{} migrations are not in increasing version order at {}",
                    set.component, m.version
                )));
            }
            last = m.version;
            apply_one(db, set.component, m).await?;
        }
    }

    // Refuse a database that is ahead of this binary.
    for (component, version) in applied_migrations(db).await? {
        let known = sets
            .iter()
            .any(|s| s.component == component && s.migrations.iter().any(|m| m.version == version));
        let owned = sets.iter().any(|s| s.component == component);
        if owned && !known {
            return Err(CoreError::Migration(format!(
                "database has {component} migration {version}, unknown to this binary (is it older than the database?)"
            )));
        }
    }
    Ok(())
}

async fn apply_one(db: &Db, component: &'static str, m: &Migration) -> Result<(), CoreError> {
    let backend = db.backend();
    let mut tx = db.begin_scoped(Scope::Platform, true).await?;
    if backend == Backend::Postgres {
        tx.execute_script(LOCK_PG).await?;
    }
    let existing = tx
        .fetch_optional(
            Query::select()
                .column("checksum")
                .from(TABLE)
                .and_where(Expr::col("component").eq(component))
                .and_where(Expr::col("version").eq(m.version)),
        )
        .await?;
    let checksum = m.checksum(backend);
    if let Some(row) = existing {
        let recorded: String = row.get("checksum")?;
        tx.rollback().await?;
        if recorded != checksum {
            return Err(CoreError::Migration(format!(
                "{component} migration {} ({}) was changed after it was applied; add a new migration instead",
                m.version, m.name
            )));
        }
        return Ok(());
    }
    tracing::info!(
        component,
        version = m.version,
        name = m.name,
        "applying migration"
    );
    tx.execute_script(m.script(backend)).await.map_err(|e| {
        CoreError::Migration(format!(
            "{component} migration {} ({}) failed: {e}",
            m.version, m.name
        ))
    })?;
    let now = tx.now();
    tx.execute(
        Query::insert()
            .into_table(TABLE)
            .columns(["component", "version", "name", "checksum", "applied_at"])
            .values([
                component.into(),
                m.version.into(),
                m.name.into(),
                checksum.into(),
                now.into(),
            ])
            .map_err(|e| CoreError::Migration(e.to_string()))?,
    )
    .await?;
    tx.commit().await
}

impl Tx {
    /// Runs a trusted, static multi-statement script (migrations only).
    pub(crate) async fn execute_script(&mut self, sql: &'static str) -> Result<(), CoreError> {
        match &mut self.conn {
            super::TxConn::Postgres(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
            super::TxConn::Sqlite(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}

impl DbConfig {
    /// Parses the URL only, to validate configuration early.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.url.starts_with("postgres") {
            sqlx::postgres::PgConnectOptions::from_str(&self.url)?;
        }
        Ok(())
    }
}
