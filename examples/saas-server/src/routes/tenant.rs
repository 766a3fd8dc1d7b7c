//! Tenant-scoped routes. Every one sits behind [`crate::auth::tenant_scope`],
//! so no handler here runs without a resolved, active tenant.
//!
//! `GET /api/workspaces` answers with the workspaces the caller may read:
//! its guard lets through anyone who holds `workspaces.read` somewhere, and
//! the handler turns the Authorizer's visible set into the query's filter.

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::{Extension, Json};
use saas_core::WorkspaceId;
use saas_core::config::ConfigVersion;
use saas_core::workspace::{NewWorkspace, Workspace, WorkspacePatch};
use saas_policy::Visible;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Authn, Meta, Tenant, tenant_scope};
use crate::guard::{Api, Guard, facts_of};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::platform::TenantView;
use crate::routes::{DEFAULT_LIMIT, Page};

pub(crate) fn router(state: AppState) -> Api {
    Api::new(state.clone())
        .get("/api/tenant", Guard::Tenant("org.read"), current)
        .get("/api/workspaces", Guard::Anywhere(LIST_ACTION), list)
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
        .get(
            "/api/audit-logs/retention",
            Guard::Tenant("audit.read"),
            super::audit::tenant_retention,
        )
        .put(
            "/api/audit-logs/retention",
            Guard::Tenant("audit.manage"),
            super::audit::tenant_set_retention,
        )
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_scope)))
}

async fn current(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().current(&ctx).await?.into()))
}

/// What listing workspaces needs, on each workspace listed.
const LIST_ACTION: &str = "workspaces.read";

/// The workspaces the caller may read, by id, a page at a time. The visible
/// set filters the query itself (keyset pages are cut from it), so a page
/// is never short for rows the caller may not see.
async fn list(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    from_guard: Option<Extension<Visible>>,
    ApiQuery(page): ApiQuery<Page<WorkspaceId>>,
) -> Result<Json<Vec<Workspace>>, ApiError> {
    let visible = match from_guard {
        Some(Extension(v)) => v,
        None => {
            s.policy()
                .visible_workspaces(&who.ctx, LIST_ACTION, &facts_of(&who, &meta))
                .await?
        }
    };
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    let rows = match visible {
        Visible::All => s.workspaces().list(&who.ctx, page.after, limit).await?,
        Visible::Only(ids) => {
            s.workspaces()
                .list_among(&who.ctx, &ids, page.after, limit)
                .await?
        }
    };
    Ok(Json(rows))
}

async fn create(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiJson(new): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.workspaces().create(&ctx, new).await?),
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
