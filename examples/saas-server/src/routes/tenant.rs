//! Tenant-scoped routes. Every one sits behind [`crate::auth::tenant_scope`],
//! so no handler here runs without a resolved, active tenant.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use saas_core::WorkspaceId;
use saas_core::config::ConfigVersion;
use saas_core::workspace::{NewWorkspace, Workspace, WorkspacePatch};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Admin, Tenant, tenant_scope};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::platform::TenantView;
use crate::routes::{DEFAULT_LIMIT, Page};

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/tenant", get(current))
        .route("/api/workspaces", get(list).post(create))
        .route(
            "/api/workspaces/{id}",
            get(read).patch(update).delete(delete),
        )
        .route("/api/config", get(config).put(put_config))
        .route("/api/config/history", get(config_history))
        .route("/api/audit-logs", get(super::audit::tenant_list))
        .route("/api/audit-logs/export", get(super::audit::tenant_export))
        .route("/api/audit-logs/verify", get(super::audit::tenant_verify))
        .route_layer(middleware::from_fn_with_state(state, tenant_scope))
}

async fn current(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().current(&ctx).await?.into()))
}

async fn list(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(page): ApiQuery<Page<WorkspaceId>>,
) -> Result<Json<Vec<Workspace>>, ApiError> {
    Ok(Json(
        s.workspaces()
            .list(&ctx, page.after, page.limit.unwrap_or(DEFAULT_LIMIT))
            .await?,
    ))
}

async fn create(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiJson(body): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.workspaces().create(&ctx, body).await?),
    ))
}

async fn read(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(s.workspaces().get(&ctx, id).await?))
}

async fn update(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<WorkspaceId>,
    ApiJson(patch): ApiJson<WorkspacePatch>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(s.workspaces().update(&ctx, id, patch).await?))
}

async fn delete(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<StatusCode, ApiError> {
    s.workspaces().delete(&ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<ConfigVersion>, ApiError> {
    Ok(Json(s.configs().current(&ctx).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutConfig {
    config: serde_json::Value,
    /// The version the change is based on; refused if it is no longer current.
    expected_version: Option<i64>,
}

async fn put_config(
    State(s): State<AppState>,
    Admin(ctx): Admin,
    ApiJson(body): ApiJson<PutConfig>,
) -> Result<Json<ConfigVersion>, ApiError> {
    Ok(Json(
        s.configs()
            .put(&ctx, body.config, body.expected_version)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<u64>,
}

async fn config_history(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<Vec<ConfigVersion>>, ApiError> {
    Ok(Json(
        s.configs()
            .history(&ctx, q.limit.unwrap_or(DEFAULT_LIMIT))
            .await?,
    ))
}
