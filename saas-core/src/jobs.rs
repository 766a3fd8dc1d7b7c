//! The durable job queue with a transactional outbox.
//!
//! Work that must happen after a commit (mail, audit fan-out, webhooks,
//! dunning, data-subject steps) is enqueued with [`JobQueue::enqueue`] *inside
//! the caller's transaction*: if the transaction rolls back, the job never
//! existed. Workers claim due jobs with `FOR UPDATE SKIP LOCKED` on PostgreSQL
//! (on SQLite the claim is a single `UPDATE ... RETURNING` under the database's
//! one writer lock, which is equally exclusive), run them, and either delete
//! them, reschedule them with exponential backoff and jitter, or move them to
//! the dead-letter table after their last attempt. A claim is a lease: a job
//! whose worker died is claimed again once the lease expires.
//!
//! Handlers must be idempotent: a job can run more than once (a worker may die
//! after the work but before the acknowledgement). Each run gets a stable
//! [`JobRun::idempotency_key`] to deduplicate side effects.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use sea_query::{Cond, Expr, ExprTrait, LockBehavior, LockType, OnConflict, Order, Query};
use serde::Serialize;
use sqlx::types::Json;
use tokio::sync::watch;

use crate::context::{PlatformContext, TenantContext};
use crate::db::{Db, Row, Tx};
use crate::error::CoreError;
use crate::id::{JobId, TenantId};

/// The queue used when none is named.
pub const DEFAULT_QUEUE: &str = "default";
const TABLE: &str = "jobs";
const DEAD: &str = "dead_jobs";
const MAX_ERROR_LEN: usize = 2000;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: String,
    payload: serde_json::Value,
    queue: String,
    run_at: Option<DateTime<Utc>>,
    max_attempts: u32,
    dedupe_key: Option<String>,
}

impl NewJob {
    /// A job of `kind` (the handler that runs it) with a JSON payload.
    /// Defaults: the default queue, due now, 5 attempts, no dedupe key.
    #[must_use]
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            queue: DEFAULT_QUEUE.into(),
            run_at: None,
            max_attempts: 5,
            dedupe_key: None,
        }
    }

    /// Puts the job on another queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Delays the job until `at`.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// How many runs before the job is dead-lettered (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = std::cmp::max(n, 1);
        self
    }

    /// At most one live job per queue carries this key: a second enqueue with
    /// the same key is a no-op. Tenant-scoped keys are prefixed with the tenant.
    #[must_use]
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }
}

/// Enqueues jobs inside a caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct JobQueue;

impl JobQueue {
    /// Enqueues `job` in `tx`. The job belongs to the transaction's tenant (or
    /// to the platform, for a platform transaction) and exists only if `tx`
    /// commits. Returns `None` when a live job with the same dedupe key exists.
    pub async fn enqueue(tx: &mut Tx, job: NewJob) -> Result<Option<JobId>, CoreError> {
        if job.kind.is_empty() || job.queue.is_empty() {
            return Err(CoreError::validation(
                "kind",
                "job kind and queue must not be empty",
            ));
        }
        let tenant = tx.tenant();
        let now = tx.now();
        let id = JobId::new();
        let dedupe = job.dedupe_key.map(|k| match tenant {
            Some(t) => format!("{t}:{k}"),
            None => k,
        });
        let mut insert = queued_insert(QueuedJob {
            id,
            tenant,
            queue: job.queue,
            kind: job.kind,
            payload: job.payload,
            dedupe_key: dedupe,
            max_attempts: i32::try_from(job.max_attempts).unwrap_or(i32::MAX),
            run_at: job.run_at.unwrap_or(now),
            created_at: now,
            now,
        })?;
        insert
            .on_conflict(
                OnConflict::columns(["queue", "dedupe_key"])
                    .target_and_where(Expr::col("dedupe_key").is_not_null())
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col("id");
        Ok(tx.fetch_optional(&insert).await?.map(|_| id))
    }

    /// Removes the live job with `dedupe_key` (e.g. a cancelled scheduled
    /// purge). Returns whether one was removed.
    pub async fn cancel(tx: &mut Tx, queue: &str, dedupe_key: &str) -> Result<bool, CoreError> {
        let key = match tx.tenant() {
            Some(t) => format!("{t}:{dedupe_key}"),
            None => dedupe_key.to_owned(),
        };
        let n = tx
            .execute(
                Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("queue").eq(queue))
                    .and_where(Expr::col("dedupe_key").eq(key))
                    .and_where(Expr::col("status").eq("queued")),
            )
            .await?;
        Ok(n > 0)
    }
}

/// A job claimed by a worker.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimedJob {
    /// The job id.
    pub id: JobId,
    /// The tenant it belongs to, or `None` for a platform job.
    pub tenant_id: Option<TenantId>,
    /// Its queue.
    pub queue: String,
    /// Its kind (which handler runs it).
    pub kind: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// The dedupe key it was enqueued with, if any.
    pub dedupe_key: Option<String>,
    /// This run's number, from 1.
    pub attempts: i32,
    /// Runs allowed before it is dead-lettered.
    pub max_attempts: i32,
    /// The previous run's error, if any.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// The worker that holds it (fencing token together with `attempts`).
    #[serde(skip)]
    locked_by: String,
}

fn claimed_from_row(row: &Row) -> Result<ClaimedJob, CoreError> {
    Ok(ClaimedJob {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        queue: row.get("queue")?,
        kind: row.get("kind")?,
        payload: row.get::<Json<serde_json::Value>>("payload")?.0,
        dedupe_key: row.get("dedupe_key")?,
        attempts: row.get("attempts")?,
        max_attempts: row.get("max_attempts")?,
        last_error: row.get("last_error")?,
        created_at: row.get("created_at")?,
        locked_by: row.get::<Option<String>>("locked_by")?.unwrap_or_default(),
    })
}

/// A job that exhausted its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadJob {
    /// The job id (kept on replay).
    pub id: JobId,
    /// The tenant it belongs to, if any.
    pub tenant_id: Option<TenantId>,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Runs made.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was first enqueued.
    pub created_at: DateTime<Utc>,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
}

const DEAD_COLS: [&str; 11] = [
    "id",
    "tenant_id",
    "queue",
    "kind",
    "payload",
    "dedupe_key",
    "attempts",
    "max_attempts",
    "last_error",
    "created_at",
    "failed_at",
];

fn dead_from_row(row: &Row) -> Result<DeadJob, CoreError> {
    Ok(DeadJob {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        queue: row.get("queue")?,
        kind: row.get("kind")?,
        payload: row.get::<Json<serde_json::Value>>("payload")?.0,
        attempts: row.get("attempts")?,
        last_error: row.get("last_error")?,
        created_at: row.get("created_at")?,
        failed_at: row.get("failed_at")?,
    })
}

/// Exponential backoff with jitter: the n-th retry waits a random time in
/// `[d/2, d]` where `d = min(max, base * 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's upper bound.
    pub base: Duration,
    /// The ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::seconds(2),
            max: Duration::hours(1),
        }
    }
}

impl Backoff {
    /// The upper bound of the wait after failed attempt `attempt` (from 1).
    #[must_use]
    pub fn ceiling(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let factor = 1i32.checked_shl(exp).unwrap_or(i32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// A jittered wait after failed attempt `attempt`.
    #[must_use]
    pub fn delay(&self, attempt: i32) -> Duration {
        let ceil = std::cmp::max(self.ceiling(attempt).num_milliseconds(), 2);
        let half = ceil / 2;
        Duration::milliseconds(half + rand::random_range(0..=ceil - half))
    }
}

/// What happened to a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Rescheduled for another attempt at this time.
    Retried(DateTime<Utc>),
    /// Moved to the dead-letter table.
    DeadLettered,
    /// The lease had been lost to another worker; nothing was changed.
    LeaseLost,
}

/// Queue depth, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueDepth {
    /// Waiting (due or not).
    pub queued: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// In the dead-letter table.
    pub dead: u64,
}

/// Claims, acknowledges and inspects jobs: the worker side of the queue.
#[derive(Debug, Clone)]
pub struct JobStore {
    db: Db,
    backoff: Backoff,
}

impl JobStore {
    /// A store over `db` with the default backoff.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self {
            db,
            backoff: Backoff::default(),
        }
    }

    /// Uses another backoff.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Claims up to `limit` due jobs of `queues` for `worker` with a lease of
    /// `lease`. Jobs whose lease expired (their worker died) are claimed again;
    /// one that has already used all its attempts is dead-lettered instead.
    pub async fn claim(
        &self,
        pctx: &PlatformContext,
        worker: &str,
        queues: &[String],
        limit: u64,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let now = tx.now();
        let due = Query::select()
            .column("id")
            .from(TABLE)
            .cond_where(
                Cond::all()
                    .add(Expr::col("queue").is_in(queues.iter().map(String::as_str)))
                    .add(
                        Cond::any()
                            .add(
                                Expr::col("status")
                                    .eq("queued")
                                    .and(Expr::col("run_at").lte(now)),
                            )
                            .add(
                                Expr::col("status")
                                    .eq("running")
                                    .and(Expr::col("locked_until").lt(now)),
                            ),
                    ),
            )
            .order_by("run_at", Order::Asc)
            .order_by("id", Order::Asc)
            .limit(std::cmp::max(limit, 1))
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .to_owned();
        let rows = tx
            .fetch_all(
                Query::update()
                    .table(TABLE)
                    .value("status", "running")
                    .value("locked_by", worker)
                    .value("locked_until", now + lease)
                    .value("attempts", Expr::col("attempts").add(1))
                    .value("updated_at", now)
                    .and_where(Expr::col("id").in_subquery(due))
                    .returning_all(),
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let job = claimed_from_row(row)?;
            if job.attempts > job.max_attempts {
                tracing::warn!(job = %job.id, kind = %job.kind, "job lease expired after its last attempt; dead-lettering");
                dead_letter(
                    &mut tx,
                    &job,
                    "worker lease expired after the last attempt",
                    now,
                )
                .await?;
            } else {
                claimed.push(job);
            }
        }
        tx.commit().await?;
        claimed.sort_by_key(|j| j.id);
        Ok(claimed)
    }

    /// Acknowledges a finished job (deletes it). Returns `false` if the lease
    /// had been lost to another worker.
    pub async fn complete(
        &self,
        pctx: &PlatformContext,
        job: &ClaimedJob,
    ) -> Result<bool, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let n = tx
            .execute(Query::delete().from_table(TABLE).cond_where(fence(job)))
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records a failed run: reschedules with backoff, or dead-letters after the last attempt.
    pub async fn fail(
        &self,
        pctx: &PlatformContext,
        job: &ClaimedJob,
        error: &str,
    ) -> Result<FailOutcome, CoreError> {
        let error: String = error.chars().take(MAX_ERROR_LEN).collect();
        let mut tx = self.db.begin_platform(pctx).await?;
        let now = tx.now();
        let still_ours = tx
            .fetch_optional(
                Query::select()
                    .column("id")
                    .from(TABLE)
                    .cond_where(fence(job)),
            )
            .await?
            .is_some();
        if !still_ours {
            return Ok(FailOutcome::LeaseLost);
        }
        let outcome = if job.attempts >= job.max_attempts {
            dead_letter(&mut tx, job, &error, now).await?;
            FailOutcome::DeadLettered
        } else {
            let at = now + self.backoff.delay(job.attempts);
            tx.execute(
                Query::update()
                    .table(TABLE)
                    .value("status", "queued")
                    .value("run_at", at)
                    .value("locked_by", None::<String>)
                    .value("locked_until", None::<DateTime<Utc>>)
                    .value("last_error", error)
                    .value("updated_at", now)
                    .cond_where(fence(job)),
            )
            .await?;
            FailOutcome::Retried(at)
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Dead-lettered jobs of every tenant, oldest first (operator view).
    pub async fn dead_letters(
        &self,
        pctx: &PlatformContext,
        limit: u64,
    ) -> Result<Vec<DeadJob>, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(DEAD_COLS)
                    .from(DEAD)
                    .order_by("failed_at", Order::Asc)
                    .limit(limit.clamp(1, 1000)),
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(dead_from_row).collect()
    }

    /// The caller's tenant's dead-lettered jobs.
    pub async fn tenant_dead_letters(
        &self,
        ctx: &TenantContext,
        limit: u64,
    ) -> Result<Vec<DeadJob>, CoreError> {
        let mut tx = self.db.read(ctx).await?;
        let tenant = tx.require_tenant()?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(DEAD_COLS)
                    .from(DEAD)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .order_by("failed_at", Order::Asc)
                    .limit(limit.clamp(1, 1000)),
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(dead_from_row).collect()
    }

    /// Puts a dead-lettered job back on its queue with fresh attempts.
    pub async fn replay(&self, pctx: &PlatformContext, id: JobId) -> Result<(), CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(DEAD_COLS)
                    .from(DEAD)
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?
            .ok_or(CoreError::NotFound { entity: "dead job" })?;
        let dead = dead_from_row(&row)?;
        let dedupe: Option<String> = row.get("dedupe_key")?;
        let max_attempts: i32 = row.get("max_attempts")?;
        let now = tx.now();
        tx.execute(
            Query::delete()
                .from_table(DEAD)
                .and_where(Expr::col("id").eq(id)),
        )
        .await?;
        tx.execute(&queued_insert(QueuedJob {
            id: dead.id,
            tenant: dead.tenant_id,
            queue: dead.queue,
            kind: dead.kind,
            payload: dead.payload,
            dedupe_key: dedupe,
            max_attempts,
            run_at: now,
            created_at: dead.created_at,
            now,
        })?)
        .await
        .map_err(|e| {
            if crate::db::is_unique_violation(&e) {
                CoreError::Conflict {
                    code: "job_already_queued",
                    message: "a live job with the same dedupe key exists".into(),
                }
            } else {
                e
            }
        })?;
        tx.record_change(crate::change::Change {
            by: crate::change::ChangeBy::Platform(pctx),
            action: "job.replay",
            target_kind: "job",
            target_id: Some(id.to_string()),
            details: serde_json::json!({}),
        })
        .await?;
        tx.commit().await
    }

    /// How many jobs wait, run, and lie dead.
    pub async fn depth(&self, pctx: &PlatformContext) -> Result<QueueDepth, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .column("status")
                    .expr_as(Expr::col("id").count(), "n")
                    .from(TABLE)
                    .group_by_col("status"),
            )
            .await?;
        let mut depth = QueueDepth::default();
        for r in &rows {
            let n = u64::try_from(r.get::<i64>("n")?).unwrap_or(0);
            match r.get::<String>("status")?.as_str() {
                "running" => depth.running = n,
                _ => depth.queued += n,
            }
        }
        let dead = tx
            .fetch_optional(
                Query::select()
                    .expr_as(Expr::col("id").count(), "n")
                    .from(DEAD),
            )
            .await?;
        depth.dead = match dead {
            Some(r) => u64::try_from(r.get::<i64>("n")?).unwrap_or(0),
            None => 0,
        };
        tx.commit().await?;
        Ok(depth)
    }
}

/// A job row entering the queue (new, or replayed from the dead letters).
struct QueuedJob {
    id: JobId,
    tenant: Option<TenantId>,
    queue: String,
    kind: String,
    payload: serde_json::Value,
    dedupe_key: Option<String>,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
}

fn queued_insert(job: QueuedJob) -> Result<sea_query::InsertStatement, CoreError> {
    Ok(Query::insert()
        .into_table(TABLE)
        .columns([
            "id",
            "tenant_id",
            "queue",
            "kind",
            "payload",
            "dedupe_key",
            "status",
            "attempts",
            "max_attempts",
            "run_at",
            "created_at",
            "updated_at",
        ])
        .values([
            job.id.into(),
            job.tenant.map(|t| t.as_uuid()).into(),
            job.queue.into(),
            job.kind.into(),
            job.payload.into(),
            job.dedupe_key.into(),
            "queued".into(),
            0i32.into(),
            job.max_attempts.into(),
            job.run_at.into(),
            job.created_at.into(),
            job.now.into(),
        ])
        .map_err(|e| CoreError::Internal(e.to_string()))?
        .to_owned())
}

fn fence(job: &ClaimedJob) -> Cond {
    Cond::all()
        .add(Expr::col("id").eq(job.id))
        .add(Expr::col("locked_by").eq(job.locked_by.as_str()))
        .add(Expr::col("attempts").eq(job.attempts))
}

async fn dead_letter(
    tx: &mut Tx,
    job: &ClaimedJob,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), CoreError> {
    tx.execute(
        Query::insert()
            .into_table(DEAD)
            .columns(DEAD_COLS)
            .values([
                job.id.into(),
                job.tenant_id.map(|t| t.as_uuid()).into(),
                job.queue.clone().into(),
                job.kind.clone().into(),
                job.payload.clone().into(),
                job.dedupe_key.clone().into(),
                job.attempts.into(),
                job.max_attempts.into(),
                error.to_owned().into(),
                job.created_at.into(),
                now.into(),
            ])
            .map_err(|e| CoreError::Internal(e.to_string()))?,
    )
    .await?;
    tx.execute(
        Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("id").eq(job.id)),
    )
    .await?;
    Ok(())
}

/// One run of a job, as a handler sees it.
#[derive(Debug, Clone)]
pub struct JobRun {
    /// The job id.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// This run's number, from 1. A handler may run more than once for one job.
    pub attempt: i32,
    /// The tenant it belongs to, or `None` for a platform job.
    pub tenant: Option<TenantId>,
    /// Stable across every run of this job: use it to deduplicate side effects.
    pub idempotency_key: String,
}

impl JobRun {
    /// A system context in the job's tenant, naming the job as its reason.
    #[must_use]
    pub fn tenant_context(&self) -> Option<TenantContext> {
        self.tenant
            .map(|t| TenantContext::system(t, format!("job {} {}", self.kind, self.id)))
    }
}

/// A failed run; the message is stored (truncated) with the job.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

impl From<CoreError> for JobError {
    fn from(e: CoreError) -> Self {
        Self(e.to_string())
    }
}

/// Runs jobs of one kind.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + fmt::Debug {
    /// The job kind this handler runs.
    fn kind(&self) -> &str;
    /// Runs one job. May be called more than once for the same job.
    async fn run(&self, job: &JobRun) -> Result<(), JobError>;
}

/// How a worker polls.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to take from.
    pub queues: Vec<String>,
    /// Jobs claimed per round (run concurrently).
    pub batch: u64,
    /// How long a claim lasts; a job running longer may be claimed again.
    pub lease: Duration,
    /// Sleep between rounds when idle.
    pub poll_interval: StdDuration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: vec![DEFAULT_QUEUE.into()],
            batch: 8,
            lease: Duration::minutes(5),
            poll_interval: StdDuration::from_millis(500),
        }
    }
}

/// A worker: claims jobs and runs their handlers.
#[derive(Debug, Clone)]
pub struct Worker {
    id: String,
    store: JobStore,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    config: WorkerConfig,
    pctx: PlatformContext,
}

impl Worker {
    /// A worker with a unique id over `store`.
    #[must_use]
    pub fn new(store: JobStore, config: WorkerConfig) -> Self {
        let id = format!("worker-{}", uuid::Uuid::now_v7().simple());
        Self {
            pctx: PlatformContext::system(format!("job worker {id}")),
            id,
            store,
            handlers: HashMap::new(),
            config,
        }
    }

    /// Registers a handler for its kind.
    #[must_use]
    pub fn register(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(handler.kind().to_owned(), handler);
        self
    }

    /// Registers several handlers (e.g. every job of a crate).
    #[must_use]
    pub fn register_all<H: JobHandler + 'static>(
        mut self,
        handlers: impl IntoIterator<Item = H>,
    ) -> Self {
        for h in handlers {
            self = self.register(Arc::new(h));
        }
        self
    }

    /// This worker's id (stored as `locked_by`).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims one batch and runs it to the end; returns how many jobs ran.
    pub async fn run_once(&self) -> Result<usize, CoreError> {
        let jobs = self
            .store
            .claim(
                &self.pctx,
                &self.id,
                &self.config.queues,
                self.config.batch,
                self.config.lease,
            )
            .await?;
        let n = jobs.len();
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let handler = self.handlers.get(&job.kind).cloned();
            let store = self.store.clone();
            let pctx = self.pctx.clone();
            set.spawn(async move {
                let run = JobRun {
                    id: job.id,
                    kind: job.kind.clone(),
                    payload: job.payload.clone(),
                    attempt: job.attempts,
                    tenant: job.tenant_id,
                    idempotency_key: format!("job:{}", job.id),
                };
                let result = match handler {
                    None => Err(JobError(format!("no handler registered for job kind {}", job.kind))),
                    // A nested task turns a handler panic into an ordinary failure.
                    Some(h) => match tokio::spawn(async move { h.run(&run).await }).await {
                        Ok(r) => r,
                        Err(e) => Err(JobError(format!("handler panicked or was cancelled: {e}"))),
                    },
                };
                let ack = match result {
                    Ok(()) => store.complete(&pctx, &job).await.map(|_| ()),
                    Err(e) => {
                        tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempts, error = %e, "job failed");
                        store.fail(&pctx, &job, &e.0).await.map(|_| ())
                    }
                };
                if let Err(e) = ack {
                    tracing::error!(job = %job.id, error = %e, "could not record job outcome; the lease will expire and the job run again");
                }
            });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// Runs until `shutdown` turns true, finishing the batch in hand first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let ran = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "job claim failed");
                    0
                }
            };
            if ran == 0 {
                tokio::select! {
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!(worker = %self.id, "job worker stopped");
    }
}

/// Purges tenants whose scheduled deletion is due ([`crate::tenant::PURGE_JOB_KIND`]).
#[derive(Debug, Clone)]
pub struct TenantPurgeHandler {
    db: Db,
}

impl TenantPurgeHandler {
    /// A handler over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl JobHandler for TenantPurgeHandler {
    fn kind(&self) -> &str {
        crate::tenant::PURGE_JOB_KIND
    }

    async fn run(&self, job: &JobRun) -> Result<(), JobError> {
        let tenant: TenantId = job
            .payload
            .get("tenant_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| JobError("payload lacks a tenant_id".into()))?;
        let pctx = PlatformContext::system(format!("scheduled purge of tenant {tenant}"));
        let mut tx = self.db.begin_platform(&pctx).await?;
        let now = tx.now();
        match crate::tenant::purge_in(&mut tx, &pctx, tenant, Some(now)).await {
            Ok(true) => {
                tx.commit().await?;
                Ok(())
            }
            Ok(false) => Err(JobError("tenant deletion is not due yet".into())),
            // Already purged, or the deletion was cancelled: nothing to do.
            Err(CoreError::NotFound { .. } | CoreError::InvalidTransition { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_bounds_and_caps() {
        let b = Backoff {
            base: Duration::seconds(1),
            max: Duration::seconds(60),
        };
        assert_eq!(b.ceiling(1), Duration::seconds(1));
        assert_eq!(b.ceiling(2), Duration::seconds(2));
        assert_eq!(b.ceiling(4), Duration::seconds(8));
        assert_eq!(b.ceiling(30), Duration::seconds(60));
        for attempt in 1..10 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(
                    d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt),
                    "{d} for {attempt}"
                );
            }
        }
    }
}
