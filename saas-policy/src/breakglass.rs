//! Break-glass: a platform operator's emergency access to one tenant.
//!
//! An operator opens a grant with a stated reason, after proving a second
//! factor (the caller verifies it; the reference server checks the
//! operator's TOTP through saas-auth), for at most four hours. The opening is
//! audited on the platform chain and on the tenant's own chain, so the
//! tenant's owners see it in their audit log and in
//! [`Authorizer::break_glass_grants`]; every action under the grant is audited
//! on the tenant chain (`policy.break_glass.action`, naming the grant). A
//! grant ends when it expires or when the operator closes it; without one,
//! the Authorizer denies operators everything in the tenant.

use chrono::{DateTime, Duration, Utc};
use saas_audit::{AuditEvent, Outcome, Target};
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::{PlatformActor, PlatformContext, TenantContext, TenantId};
use serde::{Deserialize, Serialize};

use crate::authorizer::Authorizer;
use crate::error::PolicyError;
use crate::store::BREAK_GLASS;

/// The longest grant, in minutes.
pub const MAX_MINUTES: u32 = 240;

/// What an operator asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    /// Why (10 to 500 characters); shown to the tenant's owners.
    pub reason: String,
    /// How long, 1 to 240 minutes.
    pub minutes: u32,
}

/// A break-glass grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakGlass {
    /// Its id (named in every audit event made under it).
    pub id: uuid::Uuid,
    /// The operator.
    pub operator_id: uuid::Uuid,
    /// The stated reason.
    pub reason: String,
    /// When it opened.
    pub started_at: DateTime<Utc>,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
    /// When the operator closed it early.
    pub ended_at: Option<DateTime<Utc>>,
}

fn operator_of(pctx: &PlatformContext) -> Result<saas_core::OperatorId, PolicyError> {
    match pctx.actor() {
        PlatformActor::Operator { id } => Ok(*id),
        _ => Err(PolicyError::Forbidden(
            "only a platform operator opens break-glass".into(),
        )),
    }
}

impl Authorizer {
    /// Opens a grant for the operator of `pctx` in `tenant`. `mfa_method`
    /// names the second factor the caller has just verified (e.g. `totp`);
    /// it is recorded with the grant's audit events.
    pub async fn start_break_glass(
        &self,
        pctx: &PlatformContext,
        tenant: TenantId,
        req: &BreakGlassRequest,
        mfa_method: &str,
    ) -> Result<BreakGlass, PolicyError> {
        let operator = operator_of(pctx)?;
        let reason = req.reason.trim();
        if !(10..=500).contains(&reason.chars().count()) {
            return Err(PolicyError::validation(
                "reason",
                "state the reason in 10 to 500 characters",
            ));
        }
        if !(1..=MAX_MINUTES).contains(&req.minutes) {
            return Err(PolicyError::validation("minutes", "1 to 240 minutes"));
        }
        let ctx = pctx.clone().act_in(tenant);
        let now = self.db().clock().now();
        let grant = BreakGlass {
            id: uuid::Uuid::now_v7(),
            operator_id: operator.as_uuid(),
            reason: reason.to_owned(),
            started_at: now,
            expires_at: now + Duration::minutes(i64::from(req.minutes)),
            ended_at: None,
        };
        let details = serde_json::json!({
            "grant": grant.id,
            "tenant_id": tenant,
            "reason": grant.reason,
            "expires_at": grant.expires_at,
            "mfa": mfa_method,
        });
        // The platform chain records the request first: an entry that fails
        // below still leaves its trace there.
        self.audit_log()
            .record(
                pctx,
                AuditEvent::new("policy.break_glass.start", Target::new("tenant", tenant))
                    .outcome(Outcome::Success)
                    .details(details.clone()),
            )
            .await?;
        let mut tx = self.db().begin(&ctx).await?;
        tx.execute(
            Query::insert()
                .into_table(BREAK_GLASS)
                .columns([
                    "tenant_id",
                    "id",
                    "operator_id",
                    "reason",
                    "started_at",
                    "expires_at",
                ])
                .values([
                    tenant.into(),
                    grant.id.into(),
                    operator.into(),
                    grant.reason.clone().into(),
                    grant.started_at.into(),
                    grant.expires_at.into(),
                ])
                .map_err(|e| PolicyError::Engine(e.to_string()))?,
        )
        .await?;
        self.commit_change(
            tx,
            &ctx,
            "policy.break_glass.start",
            Target::new("break_glass", grant.id),
            details,
        )
        .await?;
        Ok(grant)
    }

    /// Closes the operator's grant `id` in `tenant` before it expires.
    pub async fn end_break_glass(
        &self,
        pctx: &PlatformContext,
        tenant: TenantId,
        id: uuid::Uuid,
    ) -> Result<(), PolicyError> {
        let operator = operator_of(pctx)?;
        let ctx = pctx.clone().act_in(tenant);
        let mut tx = self.db().begin(&ctx).await?;
        let now = tx.now();
        let n = tx
            .execute(
                Query::update()
                    .table(BREAK_GLASS)
                    .value("ended_at", now)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(id))
                    .and_where(Expr::col("operator_id").eq(operator))
                    .and_where(Expr::col("ended_at").is_null()),
            )
            .await?;
        if n == 0 {
            return Err(PolicyError::NotFound {
                entity: "open break-glass grant",
            });
        }
        self.commit_change(
            tx,
            &ctx,
            "policy.break_glass.end",
            Target::new("break_glass", id),
            serde_json::json!({}),
        )
        .await?;
        self.audit_log()
            .record(
                pctx,
                AuditEvent::new("policy.break_glass.end", Target::new("tenant", tenant))
                    .outcome(Outcome::Success)
                    .details(serde_json::json!({"grant": id})),
            )
            .await?;
        Ok(())
    }

    /// Every break-glass grant into `ctx`'s tenant, newest first: what the
    /// tenant's owners review.
    pub async fn break_glass_grants(
        &self,
        ctx: &TenantContext,
    ) -> Result<Vec<BreakGlass>, PolicyError> {
        let mut tx = self.db().read(ctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns([
                        "id",
                        "operator_id",
                        "reason",
                        "started_at",
                        "expires_at",
                        "ended_at",
                    ])
                    .from(BREAK_GLASS)
                    .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                    .order_by("started_at", Order::Desc)
                    .limit(500),
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(BreakGlass {
                    id: r.get("id")?,
                    operator_id: r.get("operator_id")?,
                    reason: r.get("reason")?,
                    started_at: r.get("started_at")?,
                    expires_at: r.get("expires_at")?,
                    ended_at: r.get("ended_at")?,
                })
            })
            .collect()
    }
}
