//! Per-tenant retention: how long a tenant keeps its audit events, changes of
//! that setting recorded in the tenant's own chain, and pruning what has
//! outlived it ([`AuditLog::prune_expired`]).

use std::io::Write;

use chrono::TimeDelta;
use saas_core::TenantContext;
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, OnConflict, Query};

use crate::error::AuditError;
use crate::event::{AuditEvent, Target};
use crate::store::{AuditLog, PruneReport, Receipt, Scope, append_in, lock_tenant_head};

/// The retention of a tenant that has not chosen one: seven years (with their
/// leap days), as enterprise compliance asks.
pub const DEFAULT_RETENTION_DAYS: u32 = 7 * 365 + 2;
/// The shortest retention a tenant may choose (30 days).
pub const MIN_RETENTION_DAYS: u32 = 30;
/// The longest retention a tenant may choose (100 years, with their leap days).
pub const MAX_RETENTION_DAYS: u32 = 100 * 365 + 25;
/// The action a change of the retention setting records in the chain.
pub const RETENTION_CHANGED_ACTION: &str = "audit.retention_changed";

const SETTINGS: &str = "audit_settings";

/// An archive file for [`AuditLog::prune`]: its `flush` syncs what was
/// written to disk (`sync_all`), and `prune` flushes the archive before it
/// deletes a row, so the archive is durable before any event is gone.
///
/// ```no_run
/// # async fn demo(log: saas_audit::AuditLog, ctx: saas_core::TenantContext) -> Result<(), Box<dyn std::error::Error>> {
/// let mut archive = saas_audit::DurableFile::new(std::fs::File::create("archive.jsonl.tmp")?);
/// if let Some(report) = log.prune_expired(&ctx, &mut archive).await? {
///     std::fs::rename("archive.jsonl.tmp", format!("archive-{}.jsonl", report.up_to_seq))?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DurableFile(std::fs::File);

impl DurableFile {
    /// Wraps an open file.
    #[must_use]
    pub fn new(file: std::fs::File) -> Self {
        Self(file)
    }
}

impl Write for DurableFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.0.sync_all()
    }
}

/// Refuses a retention outside [`MIN_RETENTION_DAYS`]..=[`MAX_RETENTION_DAYS`].
fn check_days(days: u32) -> Result<(), AuditError> {
    if (MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(AuditError::Invalid(format!(
            "retention must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS} days, not {days}"
        )))
    }
}

/// The tenant's stored retention, if it chose one.
async fn stored_days(tx: &mut Tx, ctx: &TenantContext) -> Result<Option<u32>, AuditError> {
    tx.fetch_optional(
        Query::select()
            .column("retention_days")
            .from(SETTINGS)
            .and_where(Expr::col("tenant_id").eq(ctx.tenant().as_uuid())),
    )
    .await?
    .map(|r| -> Result<u32, AuditError> {
        let days: i64 = r.get("retention_days")?;
        u32::try_from(days)
            .map_err(|_| AuditError::Corrupt(format!("stored retention of {days} days")))
    })
    .transpose()
}

impl AuditLog {
    /// The tenant's retention period in days: the one it set with
    /// [`AuditLog::set_retention`], or [`DEFAULT_RETENTION_DAYS`].
    ///
    /// ```no_run
    /// # async fn demo(log: saas_audit::AuditLog, ctx: saas_core::TenantContext) -> Result<(), saas_audit::AuditError> {
    /// let days = log.retention(&ctx).await?;
    /// assert!(days >= saas_audit::MIN_RETENTION_DAYS);
    /// # Ok(()) }
    /// ```
    pub async fn retention(&self, ctx: &TenantContext) -> Result<u32, AuditError> {
        let mut tx = self.db().read(ctx).await?;
        let days = stored_days(&mut tx, ctx).await?;
        tx.commit().await?;
        Ok(days.unwrap_or(DEFAULT_RETENTION_DAYS))
    }

    /// Sets the tenant's retention period to `days` (from
    /// [`MIN_RETENTION_DAYS`] to [`MAX_RETENTION_DAYS`], else
    /// [`AuditError::Invalid`]). The setting and an `audit.retention_changed`
    /// event in the tenant's own chain (details: `old_days`, `new_days`) commit
    /// together. Setting the value already stored writes nothing and returns
    /// `None`.
    ///
    /// ```no_run
    /// # async fn demo(log: saas_audit::AuditLog, ctx: saas_core::TenantContext) -> Result<(), saas_audit::AuditError> {
    /// log.set_retention(&ctx, 10 * 365 + 3).await?;
    /// assert_eq!(log.retention(&ctx).await?, 10 * 365 + 3);
    /// assert!(log.set_retention(&ctx, 7).await.is_err(), "shorter than 30 days");
    /// # Ok(()) }
    /// ```
    pub async fn set_retention(
        &self,
        ctx: &TenantContext,
        days: u32,
    ) -> Result<Option<Receipt>, AuditError> {
        check_days(days)?;
        let mut tx = self.db().begin(ctx).await?;
        // Changes of one tenant's setting queue on its chain head, so
        // `old_days` is the value this change replaces.
        lock_tenant_head(&mut tx, ctx).await?;
        let stored = stored_days(&mut tx, ctx).await?;
        if stored == Some(days) {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = tx.now();
        tx.execute(
            Query::insert()
                .into_table(SETTINGS)
                .columns(["tenant_id", "retention_days", "updated_at"])
                .values([
                    ctx.tenant().as_uuid().into(),
                    i64::from(days).into(),
                    now.into(),
                ])
                .map_err(|e| AuditError::Corrupt(e.to_string()))?
                .on_conflict(
                    OnConflict::column("tenant_id")
                        .update_columns(["retention_days", "updated_at"])
                        .to_owned(),
                ),
        )
        .await?;
        let event = AuditEvent::new(RETENTION_CHANGED_ACTION, Target::kind("audit_log")).details(
            serde_json::json!({
                "old_days": stored.unwrap_or(DEFAULT_RETENTION_DAYS),
                "new_days": days,
            }),
        );
        let mut receipts = append_in(&mut tx, Scope::Tenant(ctx), vec![event]).await?;
        tx.commit().await?;
        receipts
            .pop()
            .map(Some)
            .ok_or(AuditError::Corrupt("append produced no receipt".into()))
    }

    /// Prunes what has outlived the tenant's retention: [`AuditLog::prune`]
    /// of every event recorded before now (the database's clock) less
    /// [`AuditLog::retention`], archived to `archive` first. Returns `None`
    /// when nothing is that old. The archive is flushed before any row is
    /// deleted; give a writer whose `flush` makes it durable, such as
    /// [`DurableFile`].
    pub async fn prune_expired(
        &self,
        ctx: &TenantContext,
        archive: &mut (dyn Write + Send),
    ) -> Result<Option<PruneReport>, AuditError> {
        let days = self.retention(ctx).await?;
        let before = self
            .db()
            .clock()
            .now()
            .checked_sub_signed(TimeDelta::days(i64::from(days)))
            .ok_or_else(|| {
                AuditError::Invalid(format!(
                    "a retention of {days} days reaches before the calendar"
                ))
            })?;
        self.prune(ctx, before, archive).await
    }
}
