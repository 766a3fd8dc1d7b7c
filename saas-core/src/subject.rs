//! Data-subject rights: the [`DataSubjectStore`] trait every crate that holds
//! personal data implements, so that saas-dsar can find, export and erase one
//! person's records across every store.
//!
//! saas-core's own implementation is [`CoreSubjectStore`]: it holds only
//! references to users (who created a workspace, who saved a configuration
//! version), and erasure anonymises them while the organization's data stays.

use std::fmt;

use sea_query::{Expr, ExprTrait, Query};
use serde::Serialize;

use crate::config;
use crate::context::TenantContext;
use crate::db::Db;
use crate::error::CoreError;
use crate::id::UserId;
use crate::workspace;

/// The person whose records are sought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataSubject {
    /// Their account, if they have one.
    pub user_id: Option<UserId>,
    /// Email addresses known for them (lowercased by the caller).
    pub emails: Vec<String>,
}

impl DataSubject {
    /// A subject known by account.
    #[must_use]
    pub fn user(id: UserId) -> Self {
        Self {
            user_id: Some(id),
            emails: Vec::new(),
        }
    }
}

/// How many records of one kind a store holds (or changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordCount {
    /// The kind of record, e.g. `"workspace.created_by"`.
    pub kind: String,
    /// How many.
    pub count: u64,
}

/// Records kept despite an erasure request, and why (e.g. bookkeeping law).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    /// The kind of record.
    pub kind: String,
    /// How many.
    pub count: u64,
    /// The legal or technical ground.
    pub reason: String,
}

/// What [`DataSubjectStore::find`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectRecords {
    /// The store's name.
    pub store: String,
    /// Counts per record kind (kinds with no record are omitted).
    pub records: Vec<RecordCount>,
}

/// A store's export for one subject: structured, machine-readable data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectExport {
    /// The store's name.
    pub store: String,
    /// The records, as JSON.
    pub data: serde_json::Value,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ErasureReport {
    /// The store's name.
    pub store: String,
    /// Rows deleted.
    pub erased: Vec<RecordCount>,
    /// Rows kept with the personal data removed.
    pub anonymised: Vec<RecordCount>,
    /// Rows kept as they are, with the reason.
    pub retained: Vec<Retained>,
}

/// A [`DataSubjectStore`] operation failed.
#[derive(Debug, thiserror::Error)]
#[error("data-subject store {store} failed: {source}")]
pub struct DataSubjectError {
    /// The store that failed.
    pub store: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl DataSubjectError {
    /// Wraps a store's own error.
    pub fn new(
        store: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            store: store.into(),
            source: Box::new(source),
        }
    }
}

/// Finds, exports and erases one person's records inside one tenant.
///
/// Implementations confine themselves to `ctx`'s tenant and run each erasure
/// in one transaction.
#[async_trait::async_trait]
pub trait DataSubjectStore: Send + Sync + fmt::Debug {
    /// A stable name for reports, e.g. `"saas-core"`.
    fn name(&self) -> &str;
    /// Counts the subject's records.
    async fn find(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectRecords, DataSubjectError>;
    /// Exports the subject's records.
    async fn export(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectExport, DataSubjectError>;
    /// Erases or anonymises the subject's records and reports what it did.
    async fn erase(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<ErasureReport, DataSubjectError>;
}

/// saas-core's personal data: user references on workspaces and configuration versions.
#[derive(Debug, Clone)]
pub struct CoreSubjectStore {
    db: Db,
}

const NAME: &str = "saas-core";

/// (table, user column, id columns exported)
const REFS: [(&str, &str, &str); 2] = [
    (workspace::TABLE, "created_by_user", "workspace.created_by"),
    (
        config::TABLE,
        "changed_by_user",
        "tenant_config_version.changed_by",
    ),
];

impl CoreSubjectStore {
    /// A store over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    async fn counts(
        &self,
        ctx: &TenantContext,
        user: UserId,
    ) -> Result<Vec<RecordCount>, CoreError> {
        let mut tx = self.db.read(ctx).await?;
        let tenant = tx.require_tenant()?;
        let mut out = Vec::new();
        for (table, col, kind) in REFS {
            let row = tx
                .fetch_optional(
                    Query::select()
                        .expr_as(Expr::col(col).count(), "n")
                        .from(table)
                        .and_where(Expr::col("tenant_id").eq(tenant))
                        .and_where(Expr::col(col).eq(user)),
                )
                .await?;
            let n = row.map(|r| r.get::<i64>("n")).transpose()?.unwrap_or(0);
            if n > 0 {
                out.push(RecordCount {
                    kind: kind.into(),
                    count: u64::try_from(n).unwrap_or(0),
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

fn wrap(e: CoreError) -> DataSubjectError {
    DataSubjectError::new(NAME, e)
}

#[async_trait::async_trait]
impl DataSubjectStore for CoreSubjectStore {
    fn name(&self) -> &str {
        NAME
    }

    async fn find(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectRecords, DataSubjectError> {
        let records = match subject.user_id {
            Some(u) => self.counts(ctx, u).await.map_err(wrap)?,
            None => Vec::new(),
        };
        Ok(SubjectRecords {
            store: NAME.into(),
            records,
        })
    }

    async fn export(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectExport, DataSubjectError> {
        let Some(user) = subject.user_id else {
            return Ok(SubjectExport {
                store: NAME.into(),
                data: serde_json::json!({}),
            });
        };
        let mut tx = self.db.read(ctx).await.map_err(wrap)?;
        let tenant = tx.require_tenant().map_err(wrap)?;
        let ws = tx
            .fetch_all(
                Query::select()
                    .columns(["id", "name", "created_at"])
                    .from(workspace::TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("created_by_user").eq(user)),
            )
            .await
            .map_err(wrap)?;
        let cfg = tx
            .fetch_all(
                Query::select()
                    .columns(["version", "created_at"])
                    .from(config::TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("changed_by_user").eq(user)),
            )
            .await
            .map_err(wrap)?;
        tx.commit().await.map_err(wrap)?;
        let workspaces = ws
            .iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "id": r.get::<crate::id::WorkspaceId>("id")?,
                    "name": r.get::<String>("name")?,
                    "created_at": r.get::<chrono::DateTime<chrono::Utc>>("created_at")?,
                }))
            })
            .collect::<Result<Vec<_>, CoreError>>()
            .map_err(wrap)?;
        let versions = cfg
            .iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "version": r.get::<i64>("version")?,
                    "created_at": r.get::<chrono::DateTime<chrono::Utc>>("created_at")?,
                }))
            })
            .collect::<Result<Vec<_>, CoreError>>()
            .map_err(wrap)?;
        Ok(SubjectExport {
            store: NAME.into(),
            data: serde_json::json!({
                "workspaces_created": workspaces,
                "configuration_versions_saved": versions,
            }),
        })
    }

    async fn erase(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<ErasureReport, DataSubjectError> {
        let mut report = ErasureReport {
            store: NAME.into(),
            ..ErasureReport::default()
        };
        let Some(user) = subject.user_id else {
            return Ok(report);
        };
        let mut tx = self.db.begin(ctx).await.map_err(wrap)?;
        let tenant = tx.require_tenant().map_err(wrap)?;
        for (table, col, kind) in REFS {
            let n = tx
                .execute(
                    Query::update()
                        .table(table)
                        .value(col, None::<uuid::Uuid>)
                        .and_where(Expr::col("tenant_id").eq(tenant))
                        .and_where(Expr::col(col).eq(user)),
                )
                .await
                .map_err(wrap)?;
            if n > 0 {
                report.anonymised.push(RecordCount {
                    kind: kind.into(),
                    count: n,
                });
            }
        }
        tx.commit().await.map_err(wrap)?;
        Ok(report)
    }
}
