//! Authorization endpoints: the catalogue, roles and their assignment, the
//! organization's Cedar policies (validated, versioned, rolled back), an
//! explain endpoint, entitlements and quotas, and a metered product action.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use saas_core::{Principal, TenantContext, UserId, WorkspaceId};
use saas_policy::{
    Assignment, Decision, Facts, Level, NewRole, Permission, Resource, Role, RoleGrant,
    StoredPolicy,
};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::{Authn, Meta, Tenant, tenant_scope};
use crate::guard::{Api, Guard};
use crate::problem::{ApiError, ApiJson, ApiPath};

pub(crate) fn router(state: AppState) -> Api {
    Api::new(state.clone())
        .get("/api/permissions", Guard::Tenant("roles.read"), permissions)
        .get("/api/roles", Guard::Tenant("roles.read"), roles)
        .post("/api/roles", Guard::Tenant("roles.manage"), create_role)
        .delete(
            "/api/roles/{level}/{name}",
            Guard::Tenant("roles.manage"),
            delete_role,
        )
        .get("/api/user-roles", Guard::Tenant("roles.read"), assignments)
        .post("/api/user-roles", Guard::Tenant("roles.assign"), assign)
        .delete("/api/user-roles", Guard::Tenant("roles.assign"), unassign)
        .get("/api/policies", Guard::Tenant("policies.read"), policies)
        .get(
            "/api/policies/{name}",
            Guard::Tenant("policies.read"),
            policy_versions,
        )
        .put(
            "/api/policies/{name}",
            Guard::Tenant("policies.write"),
            put_policy,
        )
        .delete(
            "/api/policies/{name}",
            Guard::Tenant("policies.write"),
            delete_policy,
        )
        .post(
            "/api/policies/{name}/rollback",
            Guard::Tenant("policies.write"),
            rollback,
        )
        .get("/api/policy-schema", Guard::Tenant("policies.read"), schema)
        .post(
            "/api/authz/explain",
            Guard::Tenant("policies.read"),
            explain,
        )
        .get(
            "/api/entitlements",
            Guard::Tenant("entitlements.read"),
            entitlements,
        )
        .get("/api/quotas", Guard::Tenant("entitlements.read"), quotas)
        .get(
            "/api/break-glass",
            Guard::Tenant("break_glass.read"),
            break_glass,
        )
        .post(
            "/api/workspaces/{id}/ai/requests",
            Guard::Workspace("use_strategic_ai"),
            ai_request,
        )
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_scope)))
}

async fn permissions(State(s): State<AppState>) -> Json<Vec<Permission>> {
    Json(
        s.policy()
            .engine()
            .catalogue()
            .permissions()
            .cloned()
            .collect(),
    )
}

async fn roles(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<Role>>, ApiError> {
    Ok(Json(s.policy().roles(&ctx).await?))
}

async fn create_role(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<NewRole>,
) -> Result<(StatusCode, Json<Role>), ApiError> {
    let role = s
        .policy()
        .create_role(&who.ctx, &crate::guard::facts_of(&who, &meta), body)
        .await?;
    Ok((StatusCode::CREATED, Json(role)))
}

async fn delete_role(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath((level, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.policy()
        .delete_role(&ctx, Level::parse(&level)?, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn assignments(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<Assignment>>, ApiError> {
    Ok(Json(s.policy().assignments(&ctx).await?))
}

async fn assign(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<RoleGrant>,
) -> Result<(StatusCode, Json<Assignment>), ApiError> {
    s.auth().require_step_up(&who)?;
    let a = s
        .policy()
        .assign(&who.ctx, &crate::guard::facts_of(&who, &meta), &body)
        .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

async fn unassign(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<RoleGrant>,
) -> Result<StatusCode, ApiError> {
    s.auth().require_step_up(&who)?;
    s.policy()
        .unassign(&who.ctx, &crate::guard::facts_of(&who, &meta), &body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policies(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<StoredPolicy>>, ApiError> {
    Ok(Json(s.policy().policies(&ctx).await?))
}

async fn policy_versions(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<StoredPolicy>>, ApiError> {
    Ok(Json(s.policy().policy_versions(&ctx, &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    source: String,
}

async fn put_policy(
    State(s): State<AppState>,
    Authn(who): Authn,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Json<StoredPolicy>, ApiError> {
    s.auth().require_step_up(&who)?;
    Ok(Json(
        s.policy().put_policy(&who.ctx, &name, &body.source).await?,
    ))
}

async fn delete_policy(
    State(s): State<AppState>,
    Authn(who): Authn,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<StoredPolicy>, ApiError> {
    s.auth().require_step_up(&who)?;
    Ok(Json(s.policy().delete_policy(&who.ctx, &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: i64,
}

async fn rollback(
    State(s): State<AppState>,
    Authn(who): Authn,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<Json<StoredPolicy>, ApiError> {
    s.auth().require_step_up(&who)?;
    Ok(Json(
        s.policy()
            .rollback_policy(&who.ctx, &name, body.version)
            .await?,
    ))
}

async fn schema(State(s): State<AppState>) -> String {
    s.policy().engine().schema_source().to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    action: String,
    /// The workspace acted on; the organization when absent.
    #[serde(default)]
    workspace_id: Option<WorkspaceId>,
    /// Explain for this member instead of the caller.
    #[serde(default)]
    user_id: Option<UserId>,
    /// Pretend the request comes from this address.
    #[serde(default)]
    ip: Option<std::net::IpAddr>,
}

async fn explain(
    State(s): State<AppState>,
    Authn(who): Authn,
    ApiJson(body): ApiJson<ExplainBody>,
) -> Result<Json<Decision>, ApiError> {
    let ctx = match body.user_id {
        // Evaluation only: this context reads roles, never tenant data.
        Some(id) => TenantContext::from_authentication(
            who.ctx.tenant(),
            Principal::User { id },
            who.ctx.correlation_id().clone(),
        ),
        None => who.ctx.clone(),
    };
    let resource = body.workspace_id.map_or(Resource::Org, Resource::Workspace);
    let facts = Facts {
        ip: body.ip,
        mfa_at: if body.user_id.is_none() {
            who.mfa_at
        } else {
            None
        },
    };
    Ok(Json(
        s.policy()
            .decide(&ctx, &body.action, &resource, &facts)
            .await?,
    ))
}

#[derive(Debug, Serialize)]
struct EntitlementsView {
    tier: saas_core::tenant::Tier,
    entitlements: Vec<String>,
}

async fn entitlements(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<EntitlementsView>, ApiError> {
    let (tier, entitlements) = s.policy().entitlements(&ctx).await?;
    Ok(Json(EntitlementsView { tier, entitlements }))
}

async fn quotas(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<saas_policy::quota::QuotaView>>, ApiError> {
    Ok(Json(s.policy().quotas(&ctx).await?))
}

#[derive(Debug, Serialize)]
struct AiAnswer {
    workspace_id: WorkspaceId,
    requests_used_this_month: u64,
}

/// The reference product's metered action: one strategic-AI request counts
/// against the tier's monthly requests, atomically, in the request's
/// transaction; past the quota the answer is 429 naming it and its reset.
async fn ai_request(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Json<AiAnswer>, ApiError> {
    s.workspaces().get(&ctx, id).await?;
    // The metered event and the quota count commit together, keyed by the
    // request's correlation id: a retry under the same id counts neither
    // again, so the quota and the invoice agree.
    let event = saas_billing::UsageEvent::new(
        format!("ai-request:{}", ctx.correlation_id()),
        "ai_requests",
    )
    .workspace(id);
    let mut tx = s.db().begin(&ctx).await?;
    let receipt = s
        .meter()
        .record_in(&mut tx, &ctx, std::slice::from_ref(&event))
        .await?;
    let used = if receipt.counted == 1 {
        s.policy()
            .consume(&mut tx, &ctx, saas_policy::quota::MONTHLY_REQUESTS, 1)
            .await?
    } else {
        s.policy()
            .quota_used_in(&mut tx, &ctx, saas_policy::quota::MONTHLY_REQUESTS)
            .await?
    };
    tx.commit().await?;
    Ok(Json(AiAnswer {
        workspace_id: id,
        requests_used_this_month: used,
    }))
}

/// Operators' break-glass access to this organization, for its owners.
async fn break_glass(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<saas_policy::BreakGlass>>, ApiError> {
    Ok(Json(s.policy().break_glass_grants(&ctx).await?))
}
