//! Tenants (organizations), their tiers, and their lifecycle.
//!
//! An organization *is* the tenant. Its tier carries limits and feature flags.
//! The lifecycle is an explicit state machine:
//!
//! ```text
//! provisioning --activate--> active --suspend--> suspended --reactivate--> active
//! provisioning | active | suspended --schedule_deletion--> pending_deletion
//! pending_deletion --cancel_deletion--> suspended
//! pending_deletion --purge--> (every row of the tenant is gone)
//! ```
//!
//! Suspended, provisioning and pending-deletion tenants keep their data, but
//! [`Tenant::ensure_usable`] refuses them, and the server refuses every request.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use sea_query::{Expr, ExprTrait, Order, Query};
use serde::{Deserialize, Serialize};

use crate::TenantContext;
use crate::change::{Change, ChangeBy};
use crate::context::PlatformContext;
use crate::db::{Db, Row, Tx, is_unique_violation};
use crate::error::CoreError;
use crate::id::TenantId;
use crate::jobs::{JobQueue, NewJob};

/// The commercial tier of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// One person.
    Individual,
    /// A small team.
    Team,
    /// A department of a larger company.
    Department,
    /// A whole enterprise, with nested workspaces and SSO.
    Enterprise,
}

/// Numeric limits of a tier; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierLimits {
    /// Most member accounts.
    pub max_users: Option<u64>,
    /// Most workspaces.
    pub max_workspaces: Option<u64>,
    /// Most AI/API requests per calendar month.
    pub monthly_requests: Option<u64>,
}

/// Feature flags of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierFeatures {
    /// Advanced analytics dashboards.
    pub advanced_analytics: bool,
    /// Shared workspaces and discussions.
    pub team_collaboration: bool,
    /// Organization-defined frameworks.
    pub custom_frameworks: bool,
    /// Programmatic access with API keys.
    pub api_access: bool,
    /// Single sign-on (OIDC, SAML).
    pub sso: bool,
}

impl Tier {
    /// Every tier, smallest first.
    pub const ALL: [Tier; 4] = [
        Tier::Individual,
        Tier::Team,
        Tier::Department,
        Tier::Enterprise,
    ];

    /// The tier's name as stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Individual => "individual",
            Self::Team => "team",
            Self::Department => "department",
            Self::Enterprise => "enterprise",
        }
    }

    /// The tier's limits.
    #[must_use]
    pub fn limits(self) -> TierLimits {
        match self {
            Self::Individual => TierLimits {
                max_users: Some(1),
                max_workspaces: Some(3),
                monthly_requests: Some(1_000),
            },
            Self::Team => TierLimits {
                max_users: Some(10),
                max_workspaces: Some(10),
                monthly_requests: Some(10_000),
            },
            Self::Department => TierLimits {
                max_users: Some(100),
                max_workspaces: Some(50),
                monthly_requests: Some(100_000),
            },
            Self::Enterprise => TierLimits {
                max_users: None,
                max_workspaces: None,
                monthly_requests: Some(1_000_000),
            },
        }
    }

    /// The tier's feature flags.
    #[must_use]
    pub fn features(self) -> TierFeatures {
        match self {
            Self::Individual => TierFeatures {
                advanced_analytics: false,
                team_collaboration: false,
                custom_frameworks: false,
                api_access: false,
                sso: false,
            },
            Self::Team => TierFeatures {
                advanced_analytics: false,
                team_collaboration: true,
                custom_frameworks: false,
                api_access: true,
                sso: false,
            },
            Self::Department => TierFeatures {
                advanced_analytics: true,
                team_collaboration: true,
                custom_frameworks: false,
                api_access: true,
                sso: false,
            },
            Self::Enterprise => TierFeatures {
                advanced_analytics: true,
                team_collaboration: true,
                custom_frameworks: true,
                api_access: true,
                sso: true,
            },
        }
    }
}

impl FromStr for Tier {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| CoreError::validation("tier", "unknown tier"))
    }
}

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Created, not yet activated.
    Provisioning,
    /// In service.
    Active,
    /// Refused on every request; data kept.
    Suspended,
    /// Refused on every request; rows are purged at `deletion_due_at`.
    PendingDeletion,
}

impl TenantStatus {
    const ALL: [TenantStatus; 4] = [
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::PendingDeletion,
    ];

    /// The state's name as stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::PendingDeletion => "pending_deletion",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| CoreError::validation("status", "unknown tenant status"))
    }
}

/// An organization: the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// The tenant id.
    pub id: TenantId,
    /// A DNS-safe handle, used for subdomain resolution.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Commercial tier.
    pub tier: Tier,
    /// Lifecycle state.
    pub status: TenantStatus,
    /// Why it was suspended, if it was.
    pub status_reason: Option<String>,
    /// When a scheduled deletion purges it.
    pub deletion_due_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    /// The tier's limits.
    #[must_use]
    pub fn limits(&self) -> TierLimits {
        self.tier.limits()
    }

    /// The tier's feature flags.
    #[must_use]
    pub fn features(&self) -> TierFeatures {
        self.tier.features()
    }

    /// Refuses a tenant that may not serve requests.
    pub fn ensure_usable(&self) -> Result<(), CoreError> {
        match self.status {
            TenantStatus::Active => Ok(()),
            status => Err(CoreError::TenantUnavailable {
                status,
                reason: self.status_reason.clone(),
            }),
        }
    }
}

/// Input for [`Tenants::create`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 3 to 63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
    pub slug: String,
    /// 1 to 200 characters.
    pub name: String,
    /// Commercial tier.
    pub tier: Tier,
}

/// Input for [`Tenants::update`]; absent fields are left alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New display name.
    pub name: Option<String>,
    /// New tier.
    pub tier: Option<Tier>,
}

/// How to find a tenant for an incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantKey {
    /// By id.
    Id(TenantId),
    /// By slug (e.g. from a subdomain).
    Slug(String),
}

/// The job kind that purges a tenant whose deletion is due.
pub const PURGE_JOB_KIND: &str = "saas_core.tenant_purge";

pub(crate) const TABLE: &str = "tenants";
const COLS: [&str; 9] = [
    "id",
    "slug",
    "name",
    "tier",
    "status",
    "status_reason",
    "deletion_due_at",
    "created_at",
    "updated_at",
];

fn from_row(row: &Row) -> Result<Tenant, CoreError> {
    Ok(Tenant {
        id: row.get("id")?,
        slug: row.get("slug")?,
        name: row.get("name")?,
        tier: row.get::<String>("tier")?.parse()?,
        status: row.get::<String>("status")?.parse()?,
        status_reason: row.get("status_reason")?,
        deletion_due_at: row.get("deletion_due_at")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

pub(crate) fn validate_name(field: &'static str, name: &str) -> Result<String, CoreError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 {
        return Err(CoreError::validation(field, "must be 1 to 200 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(CoreError::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

fn validate_slug(slug: &str) -> Result<(), CoreError> {
    let ok = (3..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CoreError::validation(
            "slug",
            "must be 3 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ))
    }
}

/// The tenant repository.
#[derive(Debug, Clone)]
pub struct Tenants {
    db: Db,
}

impl Tenants {
    /// A repository over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates a tenant in `provisioning`.
    pub async fn create(
        &self,
        pctx: &PlatformContext,
        new: NewTenant,
    ) -> Result<Tenant, CoreError> {
        validate_slug(&new.slug)?;
        let name = validate_name("name", &new.name)?;
        let mut tx = self.db.begin_platform(pctx).await?;
        let now = tx.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: new.slug,
            name,
            tier: new.tier,
            status: TenantStatus::Provisioning,
            status_reason: None,
            deletion_due_at: None,
            created_at: now,
            updated_at: now,
        };
        let insert = Query::insert()
            .into_table(TABLE)
            .columns(COLS)
            .values([
                tenant.id.into(),
                tenant.slug.clone().into(),
                tenant.name.clone().into(),
                tenant.tier.as_str().into(),
                tenant.status.as_str().into(),
                None::<String>.into(),
                None::<DateTime<Utc>>.into(),
                now.into(),
                now.into(),
            ])
            .map_err(|e| CoreError::Internal(e.to_string()))?
            .to_owned();
        match tx.execute(&insert).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(CoreError::Conflict {
                    code: "slug_taken",
                    message: "a tenant with this slug already exists".into(),
                });
            }
            Err(e) => return Err(e),
        }
        tx.record_change(Change {
            by: ChangeBy::Platform(pctx),
            action: "tenant.create",
            target_kind: "tenant",
            target_id: Some(tenant.id.to_string()),
            details: serde_json::json!({ "slug": tenant.slug, "tier": tenant.tier }),
        })
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %tenant.id, "tenant created");
        Ok(tenant)
    }

    /// Reads a tenant by id (platform view).
    pub async fn get(&self, pctx: &PlatformContext, id: TenantId) -> Result<Tenant, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let t = load(&mut tx, id).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Finds a tenant by id or slug, for request routing (platform view).
    pub async fn lookup(
        &self,
        pctx: &PlatformContext,
        key: &TenantKey,
    ) -> Result<Tenant, CoreError> {
        let mut q = Query::select();
        q.columns(COLS).from(TABLE);
        match key {
            TenantKey::Id(id) => q.and_where(Expr::col("id").eq(*id)),
            TenantKey::Slug(slug) => q.and_where(Expr::col("slug").eq(slug.as_str())),
        };
        let mut tx = self.db.begin_platform(pctx).await?;
        let row = tx.fetch_optional(&q).await?;
        tx.commit().await?;
        row.as_ref()
            .map(from_row)
            .transpose()?
            .ok_or(CoreError::NotFound { entity: "tenant" })
    }

    /// The caller's own tenant.
    pub async fn current(&self, ctx: &TenantContext) -> Result<Tenant, CoreError> {
        let mut tx = self.db.read(ctx).await?;
        let t = load(&mut tx, ctx.tenant()).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Lists tenants by id, `limit` at a time, after the `after` cursor (platform view).
    pub async fn list(
        &self,
        pctx: &PlatformContext,
        after: Option<TenantId>,
        limit: u64,
    ) -> Result<Vec<Tenant>, CoreError> {
        let mut q = Query::select();
        q.columns(COLS)
            .from(TABLE)
            .order_by("id", Order::Asc)
            .limit(limit.clamp(1, 500));
        if let Some(after) = after {
            q.and_where(Expr::col("id").gt(after));
        }
        let mut tx = self.db.begin_platform(pctx).await?;
        let rows = tx.fetch_all(&q).await?;
        tx.commit().await?;
        rows.iter().map(from_row).collect()
    }

    /// Renames a tenant or changes its tier.
    pub async fn update(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
        patch: TenantPatch,
    ) -> Result<Tenant, CoreError> {
        let name = patch
            .name
            .as_deref()
            .map(|n| validate_name("name", n))
            .transpose()?;
        let mut tx = self.db.begin_platform(pctx).await?;
        let mut t = load(&mut tx, id).await?;
        if let Some(name) = name {
            t.name = name;
        }
        if let Some(tier) = patch.tier {
            t.tier = tier;
        }
        t.updated_at = tx.now();
        tx.execute(
            Query::update()
                .table(TABLE)
                .value("name", t.name.clone())
                .value("tier", t.tier.as_str())
                .value("updated_at", t.updated_at)
                .and_where(Expr::col("id").eq(id)),
        )
        .await?;
        tx.record_change(Change {
            by: ChangeBy::Platform(pctx),
            action: "tenant.update",
            target_kind: "tenant",
            target_id: Some(id.to_string()),
            details: serde_json::json!({ "name": t.name, "tier": t.tier }),
        })
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    /// `provisioning` → `active`.
    pub async fn activate(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
    ) -> Result<Tenant, CoreError> {
        self.transition(pctx, id, &ACTIVATE, None).await
    }

    /// `active` → `suspended`; every request is refused, data is kept.
    pub async fn suspend(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
        reason: &str,
    ) -> Result<Tenant, CoreError> {
        let reason = validate_name("reason", reason)?;
        self.transition(pctx, id, &SUSPEND, Some(reason)).await
    }

    /// `suspended` → `active`.
    pub async fn reactivate(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
    ) -> Result<Tenant, CoreError> {
        self.transition(pctx, id, &REACTIVATE, None).await
    }

    /// Schedules the purge of every row of the tenant after `grace`, and
    /// enqueues the purge job in the same transaction.
    pub async fn schedule_deletion(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
        grace: Duration,
    ) -> Result<Tenant, CoreError> {
        if grace < Duration::zero() {
            return Err(CoreError::validation("grace", "must not be negative"));
        }
        let mut tx = self.db.begin_platform(pctx).await?;
        let due = tx.now() + grace;
        let mut t = transition_in(
            &mut tx,
            pctx,
            id,
            &SCHEDULE_DELETION,
            Some("deletion scheduled".into()),
        )
        .await?;
        t.deletion_due_at = Some(due);
        tx.execute(
            Query::update()
                .table(TABLE)
                .value("deletion_due_at", due)
                .and_where(Expr::col("id").eq(id)),
        )
        .await?;
        JobQueue::enqueue(
            &mut tx,
            NewJob::new(PURGE_JOB_KIND, serde_json::json!({ "tenant_id": id }))
                .run_at(due)
                .dedupe_key(purge_key(id)),
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    /// `pending_deletion` → `suspended` (an operator then reactivates
    /// explicitly); the pending purge job is removed in the same transaction.
    pub async fn cancel_deletion(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
    ) -> Result<Tenant, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let t = transition_in(
            &mut tx,
            pctx,
            id,
            &CANCEL_DELETION,
            Some("deletion cancelled".into()),
        )
        .await?;
        JobQueue::cancel(&mut tx, crate::jobs::DEFAULT_QUEUE, &purge_key(id)).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Deletes every row of a tenant that is pending deletion (now, whatever
    /// its due date). Every tenant table references `tenants(id) ON DELETE
    /// CASCADE` (or, where a per-row foreign key costs too much, has a delete
    /// trigger on `tenants` that does the same), so one delete removes them
    /// all in one transaction.
    pub async fn purge(&self, pctx: &PlatformContext, id: TenantId) -> Result<(), CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        purge_in(&mut tx, pctx, id, None).await?;
        tx.commit().await
    }

    async fn transition(
        &self,
        pctx: &PlatformContext,
        id: TenantId,
        step: &Transition,
        reason: Option<String>,
    ) -> Result<Tenant, CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let t = transition_in(&mut tx, pctx, id, step, reason).await?;
        tx.commit().await?;
        Ok(t)
    }
}

/// One step of the lifecycle state machine.
struct Transition {
    action: &'static str,
    audit_action: &'static str,
    from: &'static [TenantStatus],
    to: TenantStatus,
}

const ACTIVATE: Transition = Transition {
    action: "activate",
    audit_action: "tenant.activate",
    from: &[TenantStatus::Provisioning],
    to: TenantStatus::Active,
};
const SUSPEND: Transition = Transition {
    action: "suspend",
    audit_action: "tenant.suspend",
    from: &[TenantStatus::Active],
    to: TenantStatus::Suspended,
};
const REACTIVATE: Transition = Transition {
    action: "reactivate",
    audit_action: "tenant.reactivate",
    from: &[TenantStatus::Suspended],
    to: TenantStatus::Active,
};
const SCHEDULE_DELETION: Transition = Transition {
    action: "schedule deletion of",
    audit_action: "tenant.schedule_deletion",
    from: &[
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
    ],
    to: TenantStatus::PendingDeletion,
};
const CANCEL_DELETION: Transition = Transition {
    action: "cancel deletion of",
    audit_action: "tenant.cancel_deletion",
    from: &[TenantStatus::PendingDeletion],
    to: TenantStatus::Suspended,
};

fn purge_key(id: TenantId) -> String {
    format!("tenant-purge:{id}")
}

/// Reads a tenant inside an open transaction (of that tenant, or a platform one).
pub async fn get_in(tx: &mut Tx, id: TenantId) -> Result<Tenant, CoreError> {
    load(tx, id).await
}

pub(crate) async fn load(tx: &mut Tx, id: TenantId) -> Result<Tenant, CoreError> {
    load_opt(tx, id, false)
        .await?
        .ok_or(CoreError::NotFound { entity: "tenant" })
}

/// Reads a tenant row, optionally locking it for the rest of the transaction.
/// The tenant `id`, its row locked until `tx` ends: counting rows and then
/// adding one under a tier limit (members, workspaces) holds against
/// concurrent requests on any replica.
pub async fn lock_in(tx: &mut Tx, id: TenantId) -> Result<Tenant, CoreError> {
    load_opt(tx, id, true)
        .await?
        .ok_or(CoreError::NotFound { entity: "tenant" })
}

pub(crate) async fn load_opt(
    tx: &mut Tx,
    id: TenantId,
    lock: bool,
) -> Result<Option<Tenant>, CoreError> {
    let mut q = Query::select();
    q.columns(COLS)
        .from(TABLE)
        .and_where(Expr::col("id").eq(id));
    if lock {
        q.lock(sea_query::LockType::Update);
    }
    tx.fetch_optional(&q)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

async fn transition_in(
    tx: &mut Tx,
    pctx: &PlatformContext,
    id: TenantId,
    step: &Transition,
    reason: Option<String>,
) -> Result<Tenant, CoreError> {
    let mut t = load_opt(tx, id, true)
        .await?
        .ok_or(CoreError::NotFound { entity: "tenant" })?;
    if !step.from.contains(&t.status) {
        return Err(CoreError::InvalidTransition {
            from: t.status,
            action: step.action,
        });
    }
    t.status = step.to;
    t.status_reason = reason;
    t.deletion_due_at = None;
    t.updated_at = tx.now();
    tx.execute(
        Query::update()
            .table(TABLE)
            .value("status", step.to.as_str())
            .value("status_reason", t.status_reason.clone())
            .value("deletion_due_at", None::<DateTime<Utc>>)
            .value("updated_at", t.updated_at)
            .and_where(Expr::col("id").eq(id)),
    )
    .await?;
    tx.record_change(Change {
        by: ChangeBy::Platform(pctx),
        action: step.audit_action,
        target_kind: "tenant",
        target_id: Some(id.to_string()),
        details: serde_json::json!({ "status": step.to, "reason": t.status_reason }),
    })
    .await?;
    tracing::info!(tenant = %id, status = %step.to, "tenant lifecycle transition");
    Ok(t)
}

/// Purges a tenant pending deletion. With `due_by`, only if its deletion is due
/// by then (the purge job); returns whether it purged.
pub(crate) async fn purge_in(
    tx: &mut Tx,
    pctx: &PlatformContext,
    id: TenantId,
    due_by: Option<DateTime<Utc>>,
) -> Result<bool, CoreError> {
    let t = load_opt(tx, id, true)
        .await?
        .ok_or(CoreError::NotFound { entity: "tenant" })?;
    if t.status != TenantStatus::PendingDeletion {
        return Err(CoreError::InvalidTransition {
            from: t.status,
            action: "purge",
        });
    }
    if let (Some(by), Some(due)) = (due_by, t.deletion_due_at)
        && due > by
    {
        return Ok(false);
    }
    tx.execute(
        Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("id").eq(id)),
    )
    .await?;
    tx.record_change(Change {
        by: ChangeBy::Platform(pctx),
        action: "tenant.purge",
        target_kind: "tenant",
        target_id: Some(id.to_string()),
        details: serde_json::json!({ "slug": t.slug }),
    })
    .await?;
    tracing::info!(tenant = %id, "tenant purged");
    Ok(true)
}
