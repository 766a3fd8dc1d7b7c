//! Audit log routes: the tenant's chain (tenant-scoped) and the platform
//! chain (operators): query, export as JSON lines, verify, checkpoint.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use saas_audit::{AuditPage, AuditQuery, Checkpoint, Scope, VerifyReport};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Platform, Tenant};
use crate::problem::{ApiError, ApiQuery};

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

/// Default audit retention: seven years, as enterprise compliance asks.
pub(crate) const DEFAULT_RETENTION_DAYS: u32 = 7 * 365 + 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PruneBody {
    /// Keep this many days (default seven years, at least 1).
    #[serde(default)]
    retention_days: Option<u32>,
}

/// Archives a tenant's audit events older than its retention period to
/// `<data_dir>/audit-archive/<tenant>-<up_to_seq>.jsonl` and prunes them.
pub(crate) async fn platform_prune(
    State(s): State<AppState>,
    Platform(p): Platform,
    crate::problem::ApiPath(id): crate::problem::ApiPath<saas_core::TenantId>,
    crate::problem::ApiJson(body): crate::problem::ApiJson<PruneBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let days = body.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if days == 0 {
        return Err(saas_core::CoreError::Validation {
            field: "retention_days",
            message: "must be at least 1".into(),
        }
        .into());
    }
    let tenant = s.tenants().get(&p, id).await?;
    let ctx = p.act_in(tenant.id);
    let before = s.db().clock().now() - chrono::Duration::days(i64::from(days));
    let mut archive = Vec::new();
    let Some(report) = s.audit().prune(&ctx, before, &mut archive).await? else {
        return Ok(Json(serde_json::json!({ "pruned": false })));
    };
    let dir = s.config().data_dir.join("audit-archive");
    let path = dir.join(format!("{}-{}.jsonl", tenant.id, report.up_to_seq));
    let io = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "archive_write_failed",
            format!("cannot write the archive: {e}"),
        )
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(&path, &archive).map_err(io)?;
    Ok(Json(
        serde_json::json!({ "pruned": true, "report": report, "archive": path }),
    ))
}
