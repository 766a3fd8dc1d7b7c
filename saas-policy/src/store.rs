//! The tables of saas-policy, one query per function. Every query filters on
//! the tenant itself; PostgreSQL RLS is the second wall.

use chrono::{DateTime, Utc};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::{OperatorId, TenantId, WorkspaceId};
use sqlx::types::Json;

use crate::catalogue::{Level, Role};
use crate::error::PolicyError;

pub(crate) const ROLES: &str = "policy_roles";
pub(crate) const ASSIGNMENTS: &str = "policy_assignments";
pub(crate) const VERSIONS: &str = "policy_versions";
pub(crate) const BREAK_GLASS: &str = "policy_break_glass";
pub(crate) const QUOTAS: &str = "policy_quota_usage";

/// An organization's custom roles.
pub(crate) async fn custom_roles(tx: &mut Tx, tenant: TenantId) -> Result<Vec<Role>, PolicyError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(["level", "name", "description", "permissions"])
                .from(ROLES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .order_by("level", Order::Asc)
                .order_by("name", Order::Asc),
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Role {
                level: Level::parse(&r.get::<String>("level")?)?,
                name: r.get("name")?,
                description: r.get("description")?,
                permissions: r
                    .get::<Json<Vec<String>>>("permissions")?
                    .0
                    .into_iter()
                    .collect(),
                built_in: false,
            })
        })
        .collect()
}

/// One stored role assignment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Assignment {
    /// `User` or `Service`.
    pub principal_kind: String,
    /// The principal's id.
    pub principal_id: uuid::Uuid,
    /// The role's level.
    pub level: Level,
    /// The workspace, for a workspace role.
    pub workspace: Option<WorkspaceId>,
    /// The role.
    pub role: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

fn assignment_from(r: &saas_core::db::Row, tenant: TenantId) -> Result<Assignment, PolicyError> {
    let level = Level::parse(&r.get::<String>("level")?)?;
    let scope: uuid::Uuid = r.get("scope_id")?;
    Ok(Assignment {
        principal_kind: r.get("principal_kind")?,
        principal_id: r.get("principal_id")?,
        workspace: match level {
            Level::Workspace => Some(WorkspaceId::from_uuid(scope)),
            Level::Org => {
                debug_assert_eq!(scope, tenant.as_uuid());
                None
            }
        },
        level,
        role: r.get("role")?,
        created_at: r.get("created_at")?,
    })
}

const ASSIGNMENT_COLUMNS: [&str; 6] = [
    "principal_kind",
    "principal_id",
    "level",
    "scope_id",
    "role",
    "created_at",
];

/// The assignments of one principal.
pub(crate) async fn assignments_of(
    tx: &mut Tx,
    tenant: TenantId,
    kind: &str,
    id: &str,
) -> Result<Vec<Assignment>, PolicyError> {
    let Ok(id) = uuid::Uuid::parse_str(id) else {
        return Ok(vec![]);
    };
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(ASSIGNMENT_COLUMNS)
                .from(ASSIGNMENTS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("principal_kind").eq(kind))
                .and_where(Expr::col("principal_id").eq(id)),
        )
        .await?;
    rows.iter().map(|r| assignment_from(r, tenant)).collect()
}

/// Every assignment of the tenant.
pub(crate) async fn assignments(
    tx: &mut Tx,
    tenant: TenantId,
) -> Result<Vec<Assignment>, PolicyError> {
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(ASSIGNMENT_COLUMNS)
                .from(ASSIGNMENTS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .order_by("created_at", Order::Asc),
        )
        .await?;
    rows.iter().map(|r| assignment_from(r, tenant)).collect()
}

/// The current version of a tenant policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredPolicy {
    /// The policy's name.
    pub name: String,
    /// Its version (1, 2, ...).
    pub version: i64,
    /// The Cedar text; `None` for a version that deleted the policy.
    pub source: Option<String>,
    /// When the version was saved.
    pub created_at: DateTime<Utc>,
    /// Who saved it (`user:<id>`, `operator:<id>`, ...).
    pub created_by: String,
}

/// A live tenant policy (its newest version has a source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LivePolicy {
    pub(crate) name: String,
    pub(crate) source: String,
}

fn stored_from(r: &saas_core::db::Row) -> Result<StoredPolicy, PolicyError> {
    Ok(StoredPolicy {
        name: r.get("name")?,
        version: r.get("version")?,
        source: r.get("source")?,
        created_at: r.get("created_at")?,
        created_by: r.get("created_by")?,
    })
}

const VERSION_COLUMNS: [&str; 5] = ["name", "version", "source", "created_at", "created_by"];

/// Every version of every policy, newest first per name.
pub(crate) async fn all_versions(
    tx: &mut Tx,
    tenant: TenantId,
    name: Option<&str>,
) -> Result<Vec<StoredPolicy>, PolicyError> {
    let mut q = Query::select();
    q.columns(VERSION_COLUMNS)
        .from(VERSIONS)
        .and_where(Expr::col("tenant_id").eq(tenant))
        .order_by("name", Order::Asc)
        .order_by("version", Order::Desc);
    if let Some(n) = name {
        q.and_where(Expr::col("name").eq(n));
    }
    let rows = tx.fetch_all(&q).await?;
    rows.iter().map(stored_from).collect()
}

/// The newest version of each policy, deleted ones included.
pub(crate) async fn newest_versions(
    tx: &mut Tx,
    tenant: TenantId,
) -> Result<Vec<StoredPolicy>, PolicyError> {
    let all = all_versions(tx, tenant, None).await?;
    let mut out: Vec<StoredPolicy> = Vec::new();
    for v in all {
        if out.last().is_none_or(|l| l.name != v.name) {
            out.push(v);
        }
    }
    Ok(out)
}

/// The live policies of a tenant.
pub(crate) async fn current_policies(
    tx: &mut Tx,
    tenant: TenantId,
) -> Result<Vec<LivePolicy>, PolicyError> {
    Ok(newest_versions(tx, tenant)
        .await?
        .into_iter()
        .filter_map(|v| {
            v.source.map(|source| LivePolicy {
                name: v.name,
                source,
            })
        })
        .collect())
}

/// The break-glass grant under which `operator` may act in `tenant` now,
/// and when it expires.
pub(crate) async fn active_break_glass(
    tx: &mut Tx,
    tenant: TenantId,
    operator: OperatorId,
    now: DateTime<Utc>,
) -> Result<Option<(uuid::Uuid, DateTime<Utc>)>, PolicyError> {
    let row = tx
        .fetch_optional(
            Query::select()
                .columns(["id", "expires_at"])
                .from(BREAK_GLASS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("operator_id").eq(operator))
                .and_where(Expr::col("ended_at").is_null())
                .and_where(Expr::col("expires_at").gt(now))
                .order_by("expires_at", Order::Desc)
                .limit(1),
        )
        .await?;
    row.map(|r| Ok((r.get("id")?, r.get("expires_at")?)))
        .transpose()
}
