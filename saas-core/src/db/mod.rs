//! The data layer: one code path over PostgreSQL and SQLite.
//!
//! SQL is built with sea-query and executed with sqlx; [`Tx`] renders each
//! statement in the dialect of the backend it runs on. A transaction is always
//! opened for a scope: [`Db::begin`] for one tenant (on PostgreSQL it sets
//! `saas.tenant_id` for the transaction, which the row-level-security policies
//! read), or [`Db::begin_platform`] for platform work that spans tenants.

mod migrate;
mod notify;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use sea_query_sqlx::SqlxBinder;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Sqlite};

pub use migrate::{Migration, MigrationSet, applied_migrations, migrate};
pub use notify::{Heard, notify};
pub use sea_query;

use crate::clock::{Clock, SystemClock};
use crate::context::{PlatformContext, TenantContext};
use crate::error::CoreError;
use crate::id::TenantId;

/// The PostgreSQL role the application runs as: it owns no table, so forced
/// row-level security applies to it.
pub const APP_ROLE: &str = "saas_app";

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: production, with row-level security.
    Postgres,
    /// SQLite: the embedded, zero-configuration default.
    Sqlite,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `postgres://...` or `sqlite://path` (`sqlite::memory:` for a throw-away database).
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL: the role each pooled connection switches to with `SET ROLE`
    /// (default [`APP_ROLE`]). Set to `None` when the URL already logs in as a
    /// role that owns no table.
    pub app_role: Option<String>,
    /// PostgreSQL: the URL migrations connect with (an owner role), when the
    /// application's own URL logs in as a role that may not change the schema.
    pub migration_url: Option<String>,
}

impl DbConfig {
    /// Defaults for a URL.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            app_role: Some(APP_ROLE.to_owned()),
            migration_url: None,
        }
    }
}

#[derive(Debug)]
enum Pool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

struct Inner {
    pool: Pool,
    recorder: std::sync::OnceLock<Arc<dyn crate::change::ChangeRecorder>>,
    /// PostgreSQL: how migrations connect (as the owner, without `SET ROLE`).
    admin: Option<PgConnectOptions>,
    clock: Arc<dyn Clock>,
}

/// A handle on the database: cheap to clone, shared by every repository.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Pool statistics, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Of which idle.
    pub idle: u32,
    /// The pool's maximum.
    pub max: u32,
}

impl Db {
    /// Connects with the system clock.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), saas_core::CoreError> {
    /// use saas_core::db::{Db, DbConfig};
    /// let db = Db::connect(DbConfig::new("sqlite://data/saas.db")).await?;
    /// saas_core::db::migrate(&db, &[saas_core::migrations()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: DbConfig) -> Result<Self, CoreError> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Connects with the given clock (tests pass a [`crate::clock::ManualClock`]).
    pub async fn connect_with_clock(
        config: DbConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CoreError> {
        let url = config.url.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let admin = match &config.migration_url {
                Some(m) => PgConnectOptions::from_str(m)?,
                None => opts.clone(),
            };
            let role = config.app_role.clone();
            if let Some(role) = &role
                && !role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(CoreError::Config(
                    "app role must be alphanumeric or underscore".into(),
                ));
            }
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .after_connect(move |conn, _meta| {
                    let role = role.clone();
                    Box::pin(async move {
                        if let Some(role) = role {
                            let sql = format!("SET ROLE \"{role}\"");
                            sqlx::raw_sql(AssertSqlSafe(sql))
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect_lazy_with(opts);
            Ok(Self {
                inner: Arc::new(Inner {
                    pool: Pool::Postgres(pool),
                    recorder: std::sync::OnceLock::new(),
                    admin: Some(admin),
                    clock,
                }),
            })
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            // An in-memory database lives in one connection; keep exactly one.
            let max = if in_memory { 1 } else { config.max_connections };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(u32::from(in_memory))
                .idle_timeout(None::<Duration>)
                .max_lifetime(None::<Duration>)
                .acquire_timeout(config.acquire_timeout)
                .connect_with(opts)
                .await?;
            Ok(Self {
                inner: Arc::new(Inner {
                    pool: Pool::Sqlite(pool),
                    recorder: std::sync::OnceLock::new(),
                    admin: None,
                    clock,
                }),
            })
        } else {
            Err(CoreError::Config(
                "database url must start with postgres:// or sqlite:".into(),
            ))
        }
    }

    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        match self.inner.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The clock every repository reads the time from.
    #[must_use]
    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// Installs the recorder every repository reports its changes to (once;
    /// shared by every clone of this `Db`).
    pub fn set_change_recorder(
        &self,
        recorder: Arc<dyn crate::change::ChangeRecorder>,
    ) -> Result<(), CoreError> {
        self.inner
            .recorder
            .set(recorder)
            .map_err(|_| CoreError::Config("a change recorder is already installed".into()))
    }

    /// Opens a read-write transaction confined to `ctx`'s tenant.
    pub async fn begin(&self, ctx: &TenantContext) -> Result<Tx, CoreError> {
        self.begin_scoped(Scope::Tenant(ctx.tenant()), true).await
    }

    /// Opens a read-only-intent transaction confined to `ctx`'s tenant. On
    /// SQLite it does not take the write lock up front, so readers run side by side.
    pub async fn read(&self, ctx: &TenantContext) -> Result<Tx, CoreError> {
        self.begin_scoped(Scope::Tenant(ctx.tenant()), false).await
    }

    /// Opens a transaction for platform work that spans tenants (tenant
    /// lifecycle, job claiming). Only platform tables are visible across tenants.
    pub async fn begin_platform(&self, _ctx: &PlatformContext) -> Result<Tx, CoreError> {
        self.begin_scoped(Scope::Platform, true).await
    }

    /// Opens a read-only transaction confined to `ctx`'s tenant that sees one
    /// snapshot of the database from its first statement to its end
    /// (`REPEATABLE READ, READ ONLY` on PostgreSQL; on SQLite every
    /// transaction reads one snapshot). [`Tx::share_snapshot`] lets other
    /// transactions read that same snapshot, to split a long read over
    /// several connections.
    pub async fn read_snapshot(&self, ctx: &TenantContext) -> Result<Tx, CoreError> {
        self.begin_snapshot(Scope::Tenant(ctx.tenant()), None).await
    }

    /// [`Db::read_snapshot`] for platform work.
    pub async fn read_snapshot_platform(&self, _ctx: &PlatformContext) -> Result<Tx, CoreError> {
        self.begin_snapshot(Scope::Platform, None).await
    }

    /// Opens a read-only transaction that reads `snapshot`, confined to the
    /// scope of the transaction that shared it (so joining a snapshot never
    /// widens what can be seen), on a connection the pool can spare: an idle
    /// one, or a new one while the pool is below its size limit. `None` when
    /// it has none to spare, so that a caller splitting a read does not queue
    /// behind connections other callers hold; it goes on with what it has.
    /// (Should another caller take the spare connection between the check
    /// and the acquire, this waits for one as any acquire does.)
    ///
    /// # Errors
    ///
    /// The database's error, for instance once the sharing transaction has
    /// ended.
    pub async fn join_snapshot(&self, snapshot: &SharedSnapshot) -> Result<Option<Tx>, CoreError> {
        let spare = match &self.inner.pool {
            Pool::Postgres(p) => p.num_idle() > 0 || p.size() < p.options().get_max_connections(),
            Pool::Sqlite(_) => false,
        };
        if !spare {
            return Ok(None);
        }
        self.begin_snapshot(snapshot.scope, Some(&snapshot.id))
            .await
            .map(Some)
    }

    async fn begin_snapshot(&self, scope: Scope, join: Option<&str>) -> Result<Tx, CoreError> {
        let mut begin = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; ");
        if let Some(id) = join {
            // A snapshot id is hex digits and dashes (checked when it was
            // shared); it must be set before the first query.
            begin.push_str("SET TRANSACTION SNAPSHOT '");
            begin.push_str(id);
            begin.push_str("'; ");
        }
        let mut tx = self.begin_as(scope, false, &begin).await?;
        tx.snapshot = true;
        Ok(tx)
    }

    async fn begin_scoped(&self, scope: Scope, write: bool) -> Result<Tx, CoreError> {
        self.begin_as(scope, write, "BEGIN; ").await
    }

    /// Opens a transaction in `scope`; on PostgreSQL `begin` opens it (and
    /// may set its snapshot), on SQLite `write` says whether to take the
    /// write lock up front.
    async fn begin_as(&self, scope: Scope, write: bool, begin: &str) -> Result<Tx, CoreError> {
        let conn = match &self.inner.pool {
            Pool::Postgres(pool) => {
                // One round trip: BEGIN and the scope setting travel together
                // (simple-query protocol). The only interpolated value is a
                // UUID rendered by `TenantId`'s Display: hex digits and dashes.
                let begin = match scope {
                    Scope::Tenant(tenant) => format!(
                        "{begin}SELECT set_config('saas.tenant_id', '{}', true)",
                        tenant.as_uuid().hyphenated()
                    ),
                    Scope::Platform => {
                        format!("{begin}SELECT set_config('saas.platform', 'on', true)")
                    }
                };
                let tx = pool.begin_with(AssertSqlSafe(begin)).await?;
                TxConn::Postgres(tx)
            }
            Pool::Sqlite(pool) => {
                let tx = if write {
                    pool.begin_with("BEGIN IMMEDIATE").await?
                } else {
                    pool.begin().await?
                };
                TxConn::Sqlite(tx)
            }
        };
        Ok(Tx {
            conn,
            scope,
            snapshot: false,
            clock: Arc::clone(&self.inner.clock),
            recorder: self.inner.recorder.get().cloned(),
        })
    }

    /// Pool statistics, for metrics.
    #[must_use]
    pub fn pool_stats(&self) -> PoolStats {
        match &self.inner.pool {
            Pool::Postgres(p) => PoolStats {
                size: p.size(),
                idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
                max: p.options().get_max_connections(),
            },
            Pool::Sqlite(p) => PoolStats {
                size: p.size(),
                idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
                max: p.options().get_max_connections(),
            },
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), CoreError> {
        match &self.inner.pool {
            Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ())?,
            Pool::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match &self.inner.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }

    /// The raw PostgreSQL pool, for work sea-query cannot express (COPY,
    /// LISTEN/NOTIFY). It runs as the application role, so row-level security
    /// still applies, but **no tenant is set**: callers own the tenant wall.
    #[must_use]
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.inner.pool {
            Pool::Postgres(p) => Some(p),
            Pool::Sqlite(_) => None,
        }
    }

    /// The raw SQLite pool, with the same caveat as [`Db::postgres_pool`]: no
    /// tenant filter is added for you.
    #[must_use]
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.inner.pool {
            Pool::Sqlite(p) => Some(p),
            Pool::Postgres(_) => None,
        }
    }

    pub(crate) fn admin_options(&self) -> Option<&PgConnectOptions> {
        self.inner.admin.as_ref()
    }
}

/// Which rows a transaction may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows.
    Tenant(TenantId),
    /// Platform tables across tenants.
    Platform,
}

/// A snapshot of a PostgreSQL transaction opened by [`Db::read_snapshot`],
/// which other transactions can read through [`Db::join_snapshot`] while
/// that transaction lasts. It carries the transaction's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSnapshot {
    id: String,
    scope: Scope,
}

enum TxConn {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// A unit of work: one database transaction bound to a [`Scope`].
///
/// Dropping it without [`Tx::commit`] rolls everything back, so a failed
/// request leaves no partial write. Like any sqlx transaction it must be
/// dropped inside the Tokio runtime (the connection goes back to the pool on a
/// runtime task).
pub struct Tx {
    conn: TxConn,
    scope: Scope,
    /// Opened by [`Db::read_snapshot`] or [`Db::join_snapshot`].
    snapshot: bool,
    clock: Arc<dyn Clock>,
    recorder: Option<Arc<dyn crate::change::ChangeRecorder>>,
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A value that both backends can decode.
pub trait DbValue:
    for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
{
}

impl<T> DbValue for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
{
}

/// A row from either backend.
#[derive(Debug)]
pub struct Row(RowInner);

#[derive(Debug)]
enum RowInner {
    Postgres(sqlx::postgres::PgRow),
    Sqlite(sqlx::sqlite::SqliteRow),
}

impl Row {
    /// Reads column `col` as `T`.
    pub fn get<T: DbValue>(&self, col: &str) -> Result<T, CoreError> {
        use sqlx::Row as _;
        Ok(match &self.0 {
            RowInner::Postgres(r) => r.try_get::<T, _>(col)?,
            RowInner::Sqlite(r) => r.try_get::<T, _>(col)?,
        })
    }
}

impl Tx {
    /// The scope this transaction is confined to.
    #[must_use]
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The tenant of a tenant-scoped transaction.
    #[must_use]
    pub fn tenant(&self) -> Option<TenantId> {
        match self.scope {
            Scope::Tenant(t) => Some(t),
            Scope::Platform => None,
        }
    }

    /// The backend this transaction runs on.
    #[must_use]
    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Postgres(_) => Backend::Postgres,
            TxConn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The current time from the database's clock.
    #[must_use]
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Runs a statement; returns the number of rows affected.
    pub async fn execute<S: SqlxBinder>(&mut self, stmt: &S) -> Result<u64, CoreError> {
        Ok(match &mut self.conn {
            TxConn::Postgres(tx) => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            TxConn::Sqlite(tx) => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Runs a query and returns every row.
    pub async fn fetch_all<S: SqlxBinder>(&mut self, stmt: &S) -> Result<Vec<Row>, CoreError> {
        Ok(match &mut self.conn {
            TxConn::Postgres(tx) => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .map(|r| Row(RowInner::Postgres(r)))
                    .collect()
            }
            TxConn::Sqlite(tx) => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .map(|r| Row(RowInner::Sqlite(r)))
                    .collect()
            }
        })
    }

    /// Runs a query and returns its first row, if any.
    pub async fn fetch_optional<S: SqlxBinder>(
        &mut self,
        stmt: &S,
    ) -> Result<Option<Row>, CoreError> {
        Ok(match &mut self.conn {
            TxConn::Postgres(tx) => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| Row(RowInner::Postgres(r)))
            }
            TxConn::Sqlite(tx) => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                sqlx::query_with(AssertSqlSafe(sql), values)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| Row(RowInner::Sqlite(r)))
            }
        })
    }

    /// The PostgreSQL connection this transaction runs on, for the few
    /// statements sea-query cannot express well (column arrays bound to
    /// `UNNEST`, `COPY`); `None` on SQLite.
    ///
    /// What runs on it is part of this transaction: it commits or rolls back
    /// with it, `saas.tenant_id` (or the platform flag) stays set and
    /// row-level security still applies. The caller owns the tenant filter
    /// of its SQL, as with [`Db::postgres_pool`]; do not end the transaction
    /// through it (use [`Tx::commit`] or [`Tx::rollback`]).
    pub fn postgres_conn(&mut self) -> Option<&mut sqlx::PgConnection> {
        match &mut self.conn {
            TxConn::Postgres(tx) => Some(&mut **tx),
            TxConn::Sqlite(_) => None,
        }
    }

    /// Shares this transaction's snapshot with [`Db::join_snapshot`]
    /// (PostgreSQL's `pg_export_snapshot`); `None` on SQLite, whose
    /// snapshots cannot be shared.
    ///
    /// # Errors
    ///
    /// [`CoreError::Internal`] when the transaction was not opened by
    /// [`Db::read_snapshot`] (its statements would not all read the shared
    /// snapshot), and the database's error if the export fails.
    pub async fn share_snapshot(&mut self) -> Result<Option<SharedSnapshot>, CoreError> {
        if !self.snapshot {
            return Err(CoreError::Internal(
                "only a transaction opened by read_snapshot can share its snapshot".into(),
            ));
        }
        let scope = self.scope;
        let Some(conn) = self.postgres_conn() else {
            return Ok(None);
        };
        let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(conn)
            .await?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(CoreError::Internal(format!(
                "unexpected snapshot id from the database: {id:?}"
            )));
        }
        Ok(Some(SharedSnapshot { id, scope }))
    }

    /// Reports a change to the installed [`ChangeRecorder`](crate::change::ChangeRecorder),
    /// inside this transaction (a no-op when none is installed).
    pub async fn record_change(
        &mut self,
        change: crate::change::Change<'_>,
    ) -> Result<(), CoreError> {
        match self.recorder.clone() {
            Some(r) => r.record(self, &change).await,
            None => Ok(()),
        }
    }

    /// Commits the unit of work.
    pub async fn commit(self) -> Result<(), CoreError> {
        match self.conn {
            TxConn::Postgres(tx) => tx.commit().await?,
            TxConn::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Rolls the unit of work back (dropping a `Tx` does the same).
    pub async fn rollback(self) -> Result<(), CoreError> {
        match self.conn {
            TxConn::Postgres(tx) => tx.rollback().await?,
            TxConn::Sqlite(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// The tenant of this transaction, or an error for a platform transaction
    /// (tenant repositories refuse to run outside a tenant).
    pub(crate) fn require_tenant(&self) -> Result<TenantId, CoreError> {
        self.tenant().ok_or(CoreError::Internal(
            "a tenant repository was called in a platform transaction".into(),
        ))
    }
}

/// True when a database error is a unique-constraint violation.
#[must_use]
pub fn is_unique_violation(err: &CoreError) -> bool {
    match err {
        CoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
        _ => false,
    }
}
