//! Audit log routes: the tenant's chain (tenant-scoped) and the platform
//! chain (operators): query, export as JSON lines, verify, checkpoint; a
//! tenant's retention setting, and the operator's prune into an archive file.

use std::io::Write;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use saas_audit::{AuditError, AuditPage, AuditQuery, Checkpoint, Scope, VerifyReport};
use saas_core::CoreError;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::{Platform, Tenant};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};

/// A range of chain positions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Range {
    from_seq: Option<i64>,
    to_seq: Option<i64>,
}

pub(crate) async fn tenant_list(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(s.audit().query(&ctx, &q).await?))
}

pub(crate) async fn tenant_export(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(r): ApiQuery<Range>,
) -> Result<axum::response::Response, ApiError> {
    export(&s, Scope::Tenant(&ctx), r).await
}

pub(crate) async fn tenant_verify(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(r): ApiQuery<Range>,
) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(s.audit().verify(&ctx, r.from_seq.unwrap_or(1)).await?))
}

pub(crate) async fn platform_list(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(s.audit().query(&p, &q).await?))
}

pub(crate) async fn platform_export(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiQuery(r): ApiQuery<Range>,
) -> Result<axum::response::Response, ApiError> {
    export(&s, Scope::Platform(&p), r).await
}

pub(crate) async fn platform_verify(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiQuery(r): ApiQuery<Range>,
) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(s.audit().verify(&p, r.from_seq.unwrap_or(1)).await?))
}

/// Signs every chain head now (also done periodically by the server).
pub(crate) async fn platform_checkpoint(
    State(s): State<AppState>,
    Platform(p): Platform,
) -> Result<Json<Option<Checkpoint>>, ApiError> {
    let platform = s.audit().checkpoint(&p).await?;
    crate::checkpoint_all(&s).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    Ok(Json(platform))
}

async fn export(
    s: &AppState,
    scope: Scope<'_>,
    r: Range,
) -> Result<axum::response::Response, ApiError> {
    if r.to_seq.is_some_and(|to| to < r.from_seq.unwrap_or(1)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "to_seq must not be below from_seq",
        ));
    }
    let mut out = Vec::new();
    s.audit()
        .export(scope, r.from_seq.unwrap_or(1), r.to_seq, &mut out)
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

impl From<saas_audit::AuditError> for ApiError {
    fn from(e: saas_audit::AuditError) -> Self {
        match e {
            saas_audit::AuditError::Core(c) => c.into(),
            saas_audit::AuditError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_audit_event", m)
            }
            other => {
                tracing::error!(error = %other, "audit error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred; quote the correlation id when reporting it",
                )
            }
        }
    }
}

/// A tenant's audit retention, as `GET` and `PUT /api/audit-logs/retention`
/// answer it.
#[derive(Debug, Serialize)]
pub(crate) struct RetentionView {
    /// How many days the tenant's audit events are kept.
    retention_days: u32,
    /// What a tenant that never chose keeps (seven years).
    default_days: u32,
    /// The accepted range.
    min_days: u32,
    max_days: u32,
}

impl RetentionView {
    fn of(retention_days: u32) -> Self {
        Self {
            retention_days,
            default_days: saas_audit::DEFAULT_RETENTION_DAYS,
            min_days: saas_audit::MIN_RETENTION_DAYS,
            max_days: saas_audit::MAX_RETENTION_DAYS,
        }
    }
}

pub(crate) async fn tenant_retention(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<RetentionView>, ApiError> {
    Ok(Json(RetentionView::of(s.audit().retention(&ctx).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionBody {
    retention_days: u32,
}

/// Sets the tenant's retention; the change is recorded in its own chain.
pub(crate) async fn tenant_set_retention(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiJson(body): ApiJson<RetentionBody>,
) -> Result<Json<RetentionView>, ApiError> {
    s.audit()
        .set_retention(&ctx, body.retention_days)
        .await
        .map_err(|e| match e {
            AuditError::Invalid(message) => ApiError::from(CoreError::Validation {
                field: "retention_days",
                message,
            }),
            other => other.into(),
        })?;
    Ok(Json(RetentionView::of(body.retention_days)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PruneBody {
    /// Keep this many days (at least 1) instead of the tenant's retention.
    #[serde(default)]
    retention_days: Option<u32>,
}

/// Archives a tenant's audit events older than its retention period (the
/// tenant's setting, or `retention_days` from the body) to
/// `<data_dir>/audit-archive/<tenant>-<up_to_seq>.jsonl` and prunes them.
///
/// The archive is written to a temporary file in that folder and synced to
/// disk before any row is deleted, then renamed; if the file cannot be
/// created, nothing is pruned.
pub(crate) async fn platform_prune(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<saas_core::TenantId>,
    ApiJson(body): ApiJson<PruneBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = s.tenants().get(&p, id).await?;
    let ctx = p.act_in(tenant.id);
    let before = match body.retention_days {
        Some(days) => {
            let before = (days > 0)
                .then(|| {
                    s.db()
                        .clock()
                        .now()
                        .checked_sub_signed(chrono::TimeDelta::try_days(i64::from(days))?)
                })
                .flatten();
            Some(before.ok_or_else(|| CoreError::Validation {
                field: "retention_days",
                message: "must be at least 1 and reach back no further than the calendar".into(),
            })?)
        }
        None => None,
    };
    let io = |what: &str, e: std::io::Error| {
        tracing::error!(error = %e, "audit archive: {what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "archive_write_failed",
            format!("cannot {what}: {e}"),
        )
    };
    let dir = s.config().data_dir.join("audit-archive");
    std::fs::create_dir_all(&dir).map_err(|e| io("create the archive folder", e))?;
    let partial = dir.join(format!(
        "{}-{}.jsonl.partial",
        tenant.id,
        uuid::Uuid::now_v7()
    ));
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut archive = saas_audit::DurableFile::new(
        open.open(&partial)
            .map_err(|e| io("create the archive file", e))?,
    );
    let pruned = match before {
        Some(before) => s.audit().prune(&ctx, before, &mut archive).await,
        None => s.audit().prune_expired(&ctx, &mut archive).await,
    };
    let report = match pruned {
        Ok(Some(report)) => report,
        Ok(None) => {
            drop(archive);
            remove_partial(&partial);
            return Ok(Json(serde_json::json!({ "pruned": false })));
        }
        Err(e) => {
            drop(archive);
            // A written archive is kept: should the failure have come after
            // the rows were deleted (a lost commit reply), it is their only copy.
            if std::fs::metadata(&partial).is_ok_and(|m| m.len() == 0) {
                remove_partial(&partial);
            } else {
                tracing::error!(error = %e, path = %partial.display(), "audit prune failed; its archive file is kept");
            }
            return Err(e.into());
        }
    };
    archive
        .flush()
        .map_err(|e| io("sync the archive file", e))?;
    drop(archive);
    let path = dir.join(format!("{}-{}.jsonl", tenant.id, report.up_to_seq));
    std::fs::rename(&partial, &path).map_err(|e| {
        io(
            &format!("name the archive (it is kept as {})", partial.display()),
            e,
        )
    })?;
    #[cfg(unix)]
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the archive folder", e))?;
    Ok(Json(
        serde_json::json!({ "pruned": true, "report": report, "archive": path }),
    ))
}

/// Removes an archive file that holds nothing.
fn remove_partial(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(error = %e, path = %path.display(), "audit archive: cannot remove an empty archive file");
    }
}
