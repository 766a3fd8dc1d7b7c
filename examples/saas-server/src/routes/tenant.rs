//! Tenant-scoped routes. Every one sits behind [`crate::auth::tenant_scope`],
//! so no handler here runs without a resolved, active tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use saas_core::WorkspaceId;
use saas_core::config::ConfigVersion;
use saas_core::workspace::{NewWorkspace, Workspace, WorkspacePatch};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Tenant, tenant_scope};
use crate::guard::{Api, Guard};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::platform::TenantView;
use crate::routes::{DEFAULT_LIMIT, Page};

pub(crate) fn router(state: AppState) -> Api {
    Api::new(state.clone())
        .get("/api/tenant", Guard::Tenant("org.read"), current)
        .get("/api/workspaces", Guard::Tenant("workspaces.read"), list)
        .post(
            "/api/workspaces",
            Guard::Tenant("workspaces.create"),
            create,
        )
        .get(
            "/api/workspaces/{id}",
            Guard::Workspace("workspaces.read"),
            read,
        )
        .patch(
            "/api/workspaces/{id}",
            Guard::Workspace("workspaces.update"),
            update,
        )
        .delete(
            "/api/workspaces/{id}",
            Guard::Workspace("workspaces.delete"),
            delete,
        )
        .get("/api/config", Guard::Tenant("config.read"), config)
        .put("/api/config", Guard::Tenant("config.write"), put_config)
        .get(
            "/api/config/history",
            Guard::Tenant("config.read"),
            config_history,
        )
        .get(
            "/api/audit-logs",
            Guard::Tenant("audit.read"),
            super::audit::tenant_list,
        )
        .get(
            "/api/audit-logs/export",
            Guard::Tenant("audit.export"),
            super::audit::tenant_export,
        )
        .get(
            "/api/audit-logs/verify",
            Guard::Tenant("audit.read"),
            super::audit::tenant_verify,
        )
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_scope)))
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
    Tenant(ctx): Tenant,
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
