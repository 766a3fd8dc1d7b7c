//! Per-tenant configuration, versioned: every change keeps the previous version.

use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Order, Query};
use serde::Serialize;
use sqlx::types::Json;

use crate::context::{Principal, TenantContext};
use crate::db::{Db, Row, is_unique_violation};
use crate::error::CoreError;
use crate::id::UserId;

/// Largest accepted configuration document, serialized.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// One version of a tenant's configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigVersion {
    /// 1 for the first saved version; 0 for the implicit empty configuration.
    pub version: i64,
    /// A JSON object.
    pub config: serde_json::Value,
    /// What kind of principal saved it (`user`, `operator`, `system`, ...).
    pub changed_by: String,
    /// The user who saved it, if a user did (erased on a data-subject request).
    pub changed_by_user: Option<UserId>,
    /// When it was saved.
    pub created_at: Option<DateTime<Utc>>,
}

pub(crate) const TABLE: &str = "tenant_config_versions";
const COLS: [&str; 6] = [
    "tenant_id",
    "version",
    "config",
    "changed_by",
    "changed_by_user",
    "created_at",
];

fn from_row(row: &Row) -> Result<ConfigVersion, CoreError> {
    Ok(ConfigVersion {
        version: row.get("version")?,
        config: row.get::<Json<serde_json::Value>>("config")?.0,
        changed_by: row.get("changed_by")?,
        changed_by_user: row.get("changed_by_user")?,
        created_at: Some(row.get("created_at")?),
    })
}

pub(crate) fn principal_kind(p: &Principal) -> &'static str {
    match p {
        Principal::User { .. } => "user",
        Principal::ApiKey { .. } => "api_key",
        Principal::Service { .. } => "service",
        Principal::Operator { .. } => "operator",
        _ => "system",
    }
}

/// The configuration repository.
#[derive(Debug, Clone)]
pub struct TenantConfigs {
    db: Db,
}

impl TenantConfigs {
    /// A repository over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The current configuration (version 0, `{}`, if none was ever saved).
    pub async fn current(&self, ctx: &TenantContext) -> Result<ConfigVersion, CoreError> {
        Ok(self
            .history(ctx, 1)
            .await?
            .into_iter()
            .next()
            .unwrap_or(ConfigVersion {
                version: 0,
                config: serde_json::json!({}),
                changed_by: "system".into(),
                changed_by_user: None,
                created_at: None,
            }))
    }

    /// The newest `limit` versions, newest first.
    pub async fn history(
        &self,
        ctx: &TenantContext,
        limit: u64,
    ) -> Result<Vec<ConfigVersion>, CoreError> {
        let mut tx = self.db.read(ctx).await?;
        let tenant = tx.require_tenant()?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(COLS)
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .order_by("version", Order::Desc)
                    .limit(limit.clamp(1, 500)),
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(from_row).collect()
    }

    /// Saves a new version. With `expected_version`, refuses with
    /// `config_version_conflict` unless it is the current version (optimistic
    /// concurrency); two concurrent saves never both win.
    pub async fn put(
        &self,
        ctx: &TenantContext,
        config: serde_json::Value,
        expected_version: Option<i64>,
    ) -> Result<ConfigVersion, CoreError> {
        if !config.is_object() {
            return Err(CoreError::validation("config", "must be a JSON object"));
        }
        let size = serde_json::to_vec(&config)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_CONFIG_BYTES {
            return Err(CoreError::validation(
                "config",
                format!("must be at most {MAX_CONFIG_BYTES} bytes"),
            ));
        }
        let conflict = || CoreError::Conflict {
            code: "config_version_conflict",
            message: "the configuration changed since it was read".into(),
        };
        let mut tx = self.db.begin(ctx).await?;
        let tenant = tx.require_tenant()?;
        let current = tx
            .fetch_optional(
                Query::select()
                    .expr_as(Expr::col("version").max(), "v")
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant)),
            )
            .await?
            .map(|r| r.get::<Option<i64>>("v"))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        if expected_version.is_some_and(|e| e != current) {
            return Err(conflict());
        }
        let now = tx.now();
        let v = ConfigVersion {
            version: current + 1,
            config,
            changed_by: principal_kind(ctx.principal()).into(),
            changed_by_user: ctx.principal().user_id(),
            created_at: Some(now),
        };
        let insert = Query::insert()
            .into_table(TABLE)
            .columns(COLS)
            .values([
                tenant.into(),
                v.version.into(),
                v.config.clone().into(),
                v.changed_by.clone().into(),
                v.changed_by_user.map(|u| u.as_uuid()).into(),
                now.into(),
            ])
            .map_err(|e| CoreError::Internal(e.to_string()))?
            .to_owned();
        match tx.execute(&insert).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(conflict()),
            Err(e) => return Err(e),
        }
        tx.record_change(crate::change::Change {
            by: crate::change::ChangeBy::Tenant(ctx),
            action: "tenant_config.update",
            target_kind: "tenant_config",
            target_id: Some(v.version.to_string()),
            details: serde_json::json!({ "version": v.version }),
        })
        .await?;
        tx.commit().await?;
        Ok(v)
    }
}
