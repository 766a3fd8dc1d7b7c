//! Quotas: the tier's limits, checked atomically before an action and
//! counted with it.
//!
//! Periodic quotas (`monthly_requests`) keep one counter row per tenant and
//! calendar month (UTC). [`Authorizer::consume`] runs in the action's own
//! transaction: one conditional `UPDATE ... SET used = used + n WHERE used + n
//! <= limit` both checks and counts, so concurrent requests on any replica can
//! never overshoot, and an action that rolls back un-counts itself. Stock
//! quotas (`max_users`, `max_workspaces`) compare a current count with the
//! limit ([`Authorizer::check_stock`]).

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, OnConflict, Query};
use saas_core::tenant::Tier;
use saas_core::{TenantContext, TenantId};
use serde::Serialize;

use crate::authorizer::Authorizer;
use crate::error::{PolicyError, QuotaExceeded};
use crate::store::QUOTAS;

/// The monthly requests quota.
pub const MONTHLY_REQUESTS: &str = "monthly_requests";

/// One quota as the tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaView {
    /// Its name.
    pub quota: String,
    /// The tier's limit (`None`: unlimited).
    pub limit: Option<u64>,
    /// Used so far (this period, for periodic quotas).
    pub used: u64,
    /// When a periodic quota resets.
    pub resets_at: Option<DateTime<Utc>>,
}

/// Where a tenant's periodic quotas start and reset. Calendar months (UTC)
/// unless one is installed with [`Authorizer::set_quota_periods`]; billing
/// installs its billing cycle, so a quota and the invoice count the same
/// period.
#[async_trait]
pub trait QuotaPeriods: Send + Sync + fmt::Debug {
    /// The period containing `now` for `tenant`: its start and its end (when
    /// the quota resets), read inside `tx`.
    async fn period(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), PolicyError>;
}

/// The limit of `quota` for `tier`.
#[must_use]
pub fn limit_of(tier: Tier, quota: &str) -> Option<u64> {
    let l = tier.limits();
    match quota {
        MONTHLY_REQUESTS => l.monthly_requests,
        "max_users" => l.max_users,
        "max_workspaces" => l.max_workspaces,
        _ => None,
    }
}

/// The calendar month (UTC) containing `now`: its start and the next one's.
#[must_use]
pub fn month_of(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let next = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (start, next)
}

async fn used_in(
    tx: &mut Tx,
    ctx: &TenantContext,
    quota: &str,
    period: DateTime<Utc>,
) -> Result<u64, PolicyError> {
    let row = tx
        .fetch_optional(
            Query::select()
                .column("used")
                .from(QUOTAS)
                .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                .and_where(Expr::col("quota").eq(quota))
                .and_where(Expr::col("period_start").eq(period)),
        )
        .await?;
    let used: i64 = row.map(|r| r.get("used")).transpose()?.unwrap_or(0);
    Ok(u64::try_from(used).unwrap_or(0))
}

impl Authorizer {
    /// Installs where periodic quotas start and reset (once; later calls are
    /// ignored and return false).
    pub fn set_quota_periods(&self, periods: std::sync::Arc<dyn QuotaPeriods>) -> bool {
        self.quota_periods_cell().set(periods).is_ok()
    }

    async fn quota_period(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), PolicyError> {
        let now = tx.now();
        match self.quota_periods_cell().get() {
            Some(p) => p.period(tx, tenant, now).await,
            None => Ok(month_of(now)),
        }
    }

    /// Counts `n` against the periodic quota `quota` of `ctx`'s tenant inside
    /// `tx` (the action's transaction), or refuses with what was exceeded and
    /// when it resets. Returns the new count.
    pub async fn consume(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        quota: &str,
        n: u64,
    ) -> Result<u64, PolicyError> {
        // Read the tier through `tx`: a second connection while the caller
        // holds this one could starve the pool under load.
        let tier = match self.cached_tier(ctx.tenant()) {
            Some(t) => t,
            None => saas_core::tenant::get_in(tx, ctx.tenant()).await?.tier,
        };
        let (period, resets) = self.quota_period(tx, ctx.tenant()).await?;
        let n_i = i64::try_from(n).map_err(|_| PolicyError::validation("n", "too large"))?;
        tx.execute(
            Query::insert()
                .into_table(QUOTAS)
                .columns(["tenant_id", "quota", "period_start", "used"])
                .values([
                    ctx.tenant().into(),
                    quota.into(),
                    period.into(),
                    0i64.into(),
                ])
                .map_err(|e| PolicyError::Engine(e.to_string()))?
                .on_conflict(
                    OnConflict::columns(["tenant_id", "quota", "period_start"])
                        .do_nothing()
                        .to_owned(),
                ),
        )
        .await?;
        let mut update = Query::update();
        update
            .table(QUOTAS)
            .value("used", Expr::col("used").add(n_i))
            .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
            .and_where(Expr::col("quota").eq(quota))
            .and_where(Expr::col("period_start").eq(period));
        let limit = limit_of(tier, quota);
        if let Some(limit) = limit {
            let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
            update.and_where(Expr::col("used").add(n_i).lte(limit_i));
        }
        let changed = tx.execute(&update).await?;
        let used = used_in(tx, ctx, quota, period).await?;
        if changed == 0 {
            return Err(PolicyError::QuotaExceeded(QuotaExceeded {
                quota: quota.to_owned(),
                limit: limit.unwrap_or(0),
                used,
                resets_at: Some(resets),
            }));
        }
        Ok(used)
    }

    /// What the periodic quota `quota` of `ctx`'s tenant has used this
    /// period, read inside `tx`.
    pub async fn quota_used_in(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        quota: &str,
    ) -> Result<u64, PolicyError> {
        let (period, _) = self.quota_period(tx, ctx.tenant()).await?;
        used_in(tx, ctx, quota, period).await
    }

    /// Refuses when a stock quota (`max_users`, `max_workspaces`) is already
    /// reached by `current`.
    pub async fn check_stock(
        &self,
        ctx: &TenantContext,
        quota: &str,
        current: u64,
    ) -> Result<(), PolicyError> {
        let tenant = self.tenant_state(ctx).await?;
        match limit_of(tenant.tier, quota) {
            Some(limit) if current >= limit => Err(PolicyError::QuotaExceeded(QuotaExceeded {
                quota: quota.to_owned(),
                limit,
                used: current,
                resets_at: None,
            })),
            _ => Ok(()),
        }
    }

    /// The tenant's periodic quotas and their use this period.
    pub async fn quotas(&self, ctx: &TenantContext) -> Result<Vec<QuotaView>, PolicyError> {
        let tenant = self.tenant_state(ctx).await?;
        let mut tx = self.db().read(ctx).await?;
        let (period, resets) = self.quota_period(&mut tx, ctx.tenant()).await?;
        let used = used_in(&mut tx, ctx, MONTHLY_REQUESTS, period).await?;
        tx.commit().await?;
        Ok(vec![QuotaView {
            quota: MONTHLY_REQUESTS.into(),
            limit: limit_of(tenant.tier, MONTHLY_REQUESTS),
            used,
            resets_at: Some(resets),
        }])
    }

    /// The tenant's tier and the entitlements it turns on.
    pub async fn entitlements(
        &self,
        ctx: &TenantContext,
    ) -> Result<(Tier, Vec<String>), PolicyError> {
        let tenant = self.tenant_state(ctx).await?;
        Ok((tenant.tier, tenant.entitlements.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_the_year() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (s, n) = month_of(t);
        assert_eq!(s, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(n, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
