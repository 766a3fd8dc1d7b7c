//! Who is calling, and in which tenant.
//!
//! Until saas-auth lands, callers authenticate with a platform operator token
//! (`Authorization: Bearer sop_...`). Tenant-scoped routes also resolve the
//! tenant, from the `X-Tenant-Id` header (an id or a slug) or from the
//! subdomain of `Host` under the configured base domain, refuse tenants that
//! are not active, and hand handlers a [`TenantContext`] through [`Tenant`].

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use saas_core::tenant::TenantKey;
use saas_core::{
    CoreError, CorrelationId, OperatorId, PlatformContext, Principal, TenantContext, TenantId,
};

use crate::app::AppState;
use crate::problem::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller {
    Operator(OperatorId),
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "send a valid bearer token",
    )
}

pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthenticated)?;
    match state.operators().authenticate(token.trim()).await? {
        Some(id) => Ok(Caller::Operator(id)),
        None => Err(unauthenticated()),
    }
}

fn correlation(parts_ext: &axum::http::Extensions) -> CorrelationId {
    parts_ext
        .get::<CorrelationId>()
        .cloned()
        .unwrap_or_else(CorrelationId::generate)
}

/// A platform operator's context, for platform routes.
#[derive(Debug)]
pub(crate) struct Platform(pub(crate) PlatformContext);

impl FromRequestParts<AppState> for Platform {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller::Operator(id) = authenticate(state, &parts.headers).await?;
        Ok(Self(PlatformContext::operator(
            id,
            correlation(&parts.extensions),
        )))
    }
}

/// The tenant context of a tenant-scoped route, set by [`tenant_scope`].
#[derive(Debug)]
pub(crate) struct Tenant(pub(crate) TenantContext);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Self)
            .ok_or_else(unauthenticated)
    }
}

fn tenant_key(state: &AppState, headers: &HeaderMap) -> Result<TenantKey, ApiError> {
    if let Some(v) = headers.get("x-tenant-id") {
        let v = v.to_str().map_err(|_| bad_tenant())?.trim();
        if let Ok(id) = v.parse::<TenantId>() {
            return Ok(TenantKey::Id(id));
        }
        if !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Ok(TenantKey::Slug(v.to_owned()));
        }
        return Err(bad_tenant());
    }
    if let Some(base) = &state.config().base_domain {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
        if let Some(host) = host
            && let Some(sub) = host
                .strip_suffix(base.as_str())
                .and_then(|s| s.strip_suffix('.'))
            && !sub.is_empty()
            && !sub.contains('.')
        {
            return Ok(TenantKey::Slug(sub.to_owned()));
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "tenant_required",
        "name the tenant with the X-Tenant-Id header or a tenant subdomain",
    ))
}

fn bad_tenant() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        "X-Tenant-Id must be a tenant id or slug",
    )
}

/// Middleware for tenant-scoped routes: authenticate, resolve, refuse
/// unusable tenants, and attach the [`TenantContext`].
pub(crate) async fn tenant_scope(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, req.headers()).await?;
    let key = tenant_key(&state, req.headers())?;
    let tenant = match state.tenants().lookup(state.resolver(), &key).await {
        Ok(t) => t,
        Err(CoreError::NotFound { .. }) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "tenant_not_found",
                "no such tenant",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if let Err(e) = tenant.ensure_usable() {
        let mut err = ApiError::from(e);
        if let Some(reason) = &tenant.status_reason {
            err = ApiError::new(
                err.status(),
                err.problem().code,
                format!("tenant is {}: {reason}", tenant.status),
            );
        }
        return Err(err);
    }
    let cid = correlation(req.extensions());
    let principal = match caller {
        Caller::Operator(id) => Principal::Operator { id },
    };
    let ctx = TenantContext::from_authentication(tenant.id, principal, cid);
    req.extensions_mut().insert(ctx);
    Ok(next.run(req).await)
}
