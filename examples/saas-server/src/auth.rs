//! Who is calling, and in which tenant.
//!
//! Tenant-scoped routes resolve the tenant from the `X-Tenant-Id` header (an
//! id or a slug) or from the subdomain of `Host` under the configured base
//! domain, refuse tenants that are not active, and authenticate the bearer
//! credential for that tenant: a user's or service identity's access token,
//! an API key (saas-auth), or a platform operator token. Handlers get the
//! [`TenantContext`] through [`Tenant`] and the full [`Authenticated`] through
//! [`Authn`]; neither exists unless the layer ran. Public identity routes
//! (login, refresh, invitations) only resolve the tenant ([`PublicTenant`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use saas_auth::{Authenticated, ClientMeta};
use saas_core::tenant::TenantKey;
use saas_core::{CoreError, CorrelationId, PlatformContext, TenantContext, TenantId};

use crate::app::AppState;
use crate::problem::ApiError;

const OPERATOR_PREFIX: &str = "sop_";

pub(crate) fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "send a valid bearer token",
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
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
        let token = bearer(&parts.headers).ok_or_else(unauthenticated)?;
        match state.operators().authenticate(token).await? {
            Some(id) => Ok(Self(PlatformContext::operator(
                id,
                correlation(&parts.extensions),
            ))),
            None => Err(unauthenticated()),
        }
    }
}

/// The tenant context of a tenant-scoped route, set by [`tenant_scope`].
#[derive(Debug)]
pub(crate) struct Tenant(pub(crate) TenantContext);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        require_guard(parts)?;
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Self)
            .ok_or_else(unauthenticated)
    }
}

/// The authenticated caller of a tenant-scoped route, set by [`tenant_scope`].
#[derive(Debug)]
pub(crate) struct Authn(pub(crate) Authenticated);

impl<S: Send + Sync> FromRequestParts<S> for Authn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        require_guard(parts)?;
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .map(Self)
            .ok_or_else(unauthenticated)
    }
}

/// Fails closed when a tenant route's guard did not run: such a route was
/// added around [`crate::guard::Api`], and the route-walking test names it.
fn require_guard(parts: &Parts) -> Result<(), ApiError> {
    if parts.extensions.get::<crate::guard::Authorized>().is_some() {
        Ok(())
    } else {
        tracing::error!(path = %parts.uri.path(), "tenant route without a declared action");
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "route_not_guarded",
            "this route declares no action; it is refused",
        ))
    }
}

/// The resolved tenant of a public identity route, and the correlation id.
#[derive(Debug, Clone)]
pub(crate) struct PublicTenant(pub(crate) TenantId, pub(crate) CorrelationId);

impl<S: Send + Sync> FromRequestParts<S> for PublicTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let tenant = parts
            .extensions
            .get::<ResolvedTenant>()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "tenant_required",
                    "no tenant resolved",
                )
            })?
            .0;
        Ok(Self(tenant, correlation(&parts.extensions)))
    }
}

#[derive(Debug, Clone, Copy)]
struct ResolvedTenant(TenantId);

/// The client's address and user agent.
#[derive(Debug, Clone)]
pub(crate) struct Meta(pub(crate) ClientMeta);

impl FromRequestParts<AppState> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let forwarded = state
            .config()
            .trust_proxy
            .then(|| {
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .map(|v| v.trim().to_owned())
                    .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
            })
            .flatten();
        let ip = forwarded.or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        });
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect());
        Ok(Self(ClientMeta { ip, user_agent }))
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

/// Resolves the request's tenant and refuses one that is not usable.
async fn resolve_tenant(state: &AppState, headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let key = tenant_key(state, headers)?;
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
    Ok(tenant.id)
}

/// Authenticates a bearer credential for `tenant`.
pub(crate) async fn authenticate(
    state: &AppState,
    tenant: TenantId,
    token: &str,
    cid: CorrelationId,
) -> Result<Authenticated, ApiError> {
    if token.starts_with(OPERATOR_PREFIX) {
        return match state.operators().authenticate(token).await? {
            Some(id) => Ok(Authenticated::external(
                PlatformContext::operator(id, cid).act_in(tenant),
                "operator",
            )),
            None => Err(unauthenticated()),
        };
    }
    Ok(state.auth().authenticate(tenant, token, &cid).await?)
}

/// Middleware for tenant-scoped routes: require a credential, resolve the
/// tenant, authenticate the credential for it, and attach the
/// [`TenantContext`] and the [`Authenticated`] caller.
pub(crate) async fn tenant_scope(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(req.headers())
        .ok_or_else(unauthenticated)?
        .to_owned();
    let tenant = resolve_tenant(&state, req.headers()).await?;
    let cid = correlation(req.extensions());
    let authn = authenticate(&state, tenant, &token, cid).await?;
    req.extensions_mut().insert(authn.ctx.clone());
    req.extensions_mut().insert(authn);
    Ok(next.run(req).await)
}

/// Middleware for public identity routes: resolve the tenant only.
pub(crate) async fn tenant_only(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let tenant = resolve_tenant(&state, req.headers()).await?;
    req.extensions_mut().insert(ResolvedTenant(tenant));
    Ok(next.run(req).await)
}
