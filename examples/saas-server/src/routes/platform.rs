//! Platform operator routes: tenants and their lifecycle, dead jobs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Duration;
use saas_core::jobs::DeadJob;
use saas_core::tenant::{NewTenant, Tenant, TenantPatch, TierFeatures, TierLimits};
use saas_core::{JobId, TenantId};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::{Meta, Platform};
use crate::guard::{Api, Guard};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::{DEFAULT_LIMIT, Page};

pub(crate) fn router(state: AppState) -> Api {
    Api::new(state)
        .get(
            "/api/tenants",
            Guard::Platform("platform.tenants.read"),
            list,
        )
        .post(
            "/api/tenants",
            Guard::Platform("platform.tenants.create"),
            create,
        )
        .get(
            "/api/tenants/{id}",
            Guard::Platform("platform.tenants.read"),
            read,
        )
        .patch(
            "/api/tenants/{id}",
            Guard::Platform("platform.tenants.update"),
            update,
        )
        .delete(
            "/api/tenants/{id}",
            Guard::Platform("platform.tenants.purge"),
            purge,
        )
        .post(
            "/api/tenants/{id}/activate",
            Guard::Platform("platform.tenants.lifecycle"),
            activate,
        )
        .post(
            "/api/tenants/{id}/suspend",
            Guard::Platform("platform.tenants.lifecycle"),
            suspend,
        )
        .post(
            "/api/tenants/{id}/reactivate",
            Guard::Platform("platform.tenants.lifecycle"),
            reactivate,
        )
        .post(
            "/api/tenants/{id}/schedule-deletion",
            Guard::Platform("platform.tenants.lifecycle"),
            schedule_deletion,
        )
        .post(
            "/api/tenants/{id}/cancel-deletion",
            Guard::Platform("platform.tenants.lifecycle"),
            cancel_deletion,
        )
        .get(
            "/api/jobs/dead",
            Guard::Platform("platform.jobs.read"),
            dead_jobs,
        )
        .post(
            "/api/platform/signing-keys/rotate",
            Guard::Platform("platform.keys.rotate"),
            super::identity::rotate_keys,
        )
        .post(
            "/api/jobs/dead/{id}/replay",
            Guard::Platform("platform.jobs.replay"),
            replay,
        )
        .get(
            "/api/platform/audit-logs",
            Guard::Platform("platform.audit.read"),
            super::audit::platform_list,
        )
        .get(
            "/api/platform/audit-logs/export",
            Guard::Platform("platform.audit.export"),
            super::audit::platform_export,
        )
        .get(
            "/api/platform/audit-logs/verify",
            Guard::Platform("platform.audit.read"),
            super::audit::platform_verify,
        )
        .post(
            "/api/platform/audit-logs/checkpoint",
            Guard::Platform("platform.audit.checkpoint"),
            super::audit::platform_checkpoint,
        )
        .post(
            "/api/tenants/{id}/owners",
            Guard::Platform("platform.tenants.provision_owner"),
            provision_owner,
        )
        .post(
            "/api/platform/mfa/setup",
            Guard::Platform("platform.mfa.manage"),
            mfa_setup,
        )
        .post(
            "/api/platform/mfa/confirm",
            Guard::Platform("platform.mfa.manage"),
            mfa_confirm,
        )
        .post(
            "/api/tenants/{id}/break-glass",
            Guard::Platform("platform.break_glass.start"),
            break_glass_start,
        )
        .post(
            "/api/tenants/{id}/break-glass/{grant}/end",
            Guard::Platform("platform.break_glass.end"),
            break_glass_end,
        )
        .post(
            "/api/tenants/{id}/audit/prune",
            Guard::Platform("platform.audit.prune"),
            super::audit::platform_prune,
        )
}

/// A tenant with its tier's limits and features.
#[derive(Debug, Serialize)]
pub(crate) struct TenantView {
    #[serde(flatten)]
    tenant: Tenant,
    limits: TierLimits,
    features: TierFeatures,
}

impl From<Tenant> for TenantView {
    fn from(tenant: Tenant) -> Self {
        Self {
            limits: tenant.limits(),
            features: tenant.features(),
            tenant,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    slug: String,
    name: String,
    tier: saas_core::tenant::Tier,
    /// Activate at once (default: stay in `provisioning`).
    #[serde(default)]
    activate: bool,
}

async fn list(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiQuery(page): ApiQuery<Page<TenantId>>,
) -> Result<Json<Vec<TenantView>>, ApiError> {
    let list = s
        .tenants()
        .list(&p, page.after, page.limit.unwrap_or(DEFAULT_LIMIT))
        .await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

async fn create(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let mut t = s
        .tenants()
        .create(
            &p,
            NewTenant {
                slug: body.slug,
                name: body.name,
                tier: body.tier,
            },
        )
        .await?;
    if body.activate {
        t = s.tenants().activate(&p, t.id).await?;
    }
    Ok((StatusCode::CREATED, Json(t.into())))
}

async fn read(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().get(&p, id).await?.into()))
}

async fn update(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().update(&p, id, patch).await?.into()))
}

async fn purge(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<StatusCode, ApiError> {
    s.tenants().purge(&p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn activate(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().activate(&p, id).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    reason: String,
}

async fn suspend(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<SuspendBody>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(
        s.tenants().suspend(&p, id, &body.reason).await?.into(),
    ))
}

async fn reactivate(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().reactivate(&p, id).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleDeletion {
    /// Days until the purge (default 30, at most 365).
    #[serde(default = "default_grace")]
    grace_days: u32,
}

fn default_grace() -> u32 {
    30
}

async fn schedule_deletion(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<ScheduleDeletion>,
) -> Result<Json<TenantView>, ApiError> {
    if body.grace_days > 365 {
        return Err(saas_core::CoreError::Validation {
            field: "grace_days",
            message: "must be at most 365".into(),
        }
        .into());
    }
    let grace = Duration::days(i64::from(body.grace_days));
    Ok(Json(
        s.tenants().schedule_deletion(&p, id, grace).await?.into(),
    ))
}

async fn cancel_deletion(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.tenants().cancel_deletion(&p, id).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<u64>,
}

async fn dead_jobs(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<Vec<DeadJob>>, ApiError> {
    Ok(Json(
        s.jobs()
            .dead_letters(&p, q.limit.unwrap_or(DEFAULT_LIMIT))
            .await?,
    ))
}

async fn replay(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<JobId>,
) -> Result<StatusCode, ApiError> {
    s.jobs().replay(&p, id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaCode {
    code: String,
}

/// `POST /api/platform/mfa/setup`: the operator's TOTP enrolment (break-glass needs it).
async fn mfa_setup(
    State(s): State<AppState>,
    Platform(p): Platform,
) -> Result<Json<saas_auth::mfa::MfaSetup>, ApiError> {
    Ok(Json(s.auth().operator_mfa_setup(&p).await?))
}

/// `POST /api/platform/mfa/confirm`.
async fn mfa_confirm(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiJson(b): ApiJson<MfaCode>,
) -> Result<StatusCode, ApiError> {
    s.auth().operator_mfa_confirm(&p, &b.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassBody {
    reason: String,
    minutes: u32,
    code: String,
}

/// `POST /api/tenants/{id}/break-glass`: an operator's emergency access,
/// with a stated reason, a TOTP code and a time box.
async fn break_glass_start(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(b): ApiJson<BreakGlassBody>,
) -> Result<(StatusCode, Json<saas_policy::BreakGlass>), ApiError> {
    s.tenants().get(&p, id).await?.ensure_usable()?;
    s.auth().verify_operator_mfa(&p, &b.code).await?;
    let req = saas_policy::BreakGlassRequest {
        reason: b.reason,
        minutes: b.minutes,
    };
    let grant = s.policy().start_break_glass(&p, id, &req, "totp").await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// `POST /api/tenants/{id}/break-glass/{grant}/end`.
async fn break_glass_end(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath((id, grant)): ApiPath<(TenantId, uuid::Uuid)>,
) -> Result<StatusCode, ApiError> {
    s.policy().end_break_glass(&p, id, grant).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOwner {
    email: String,
    display_name: String,
}

/// `POST /api/tenants/{id}/owners`: provisioning, not access. An operator
/// gives an organization an owner (who sets a password through the mailed
/// link) without break-glass; reaching the organization's data still needs
/// one. Audited in the tenant's chain with the operator as actor.
async fn provision_owner(
    State(s): State<AppState>,
    Platform(p): Platform,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(b): ApiJson<NewOwner>,
) -> Result<(StatusCode, Json<saas_auth::Member>), ApiError> {
    s.tenants().get(&p, id).await?.ensure_usable()?;
    let who = saas_auth::Authenticated::external(p.act_in(id), "operator");
    let new = saas_auth::NewMember {
        email: b.email,
        display_name: b.display_name,
        role: "owner".into(),
    };
    // The platform action above authorized this; inside the tenant the
    // operator holds no break-glass grant, so identity's built-in rule
    // (an operator counts as an owner) decides, not the policy.
    let member = s
        .auth()
        .without_member_authority()
        .provision_member(&who, new, &meta)
        .await?;
    s.policy().roles_changed(&who.ctx).await?;
    Ok((StatusCode::CREATED, Json(member)))
}
