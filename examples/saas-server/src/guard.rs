//! Every route declares what guards it, through `Api`, the only way routes
//! are added to the server: a tenant route names the catalogue action it
//! needs (and whether its `{id}` is the workspace acted on, or whether it is
//! a list the handler narrows to where the action holds), a platform route
//! its platform action, a public route why it is public. The tenant guard asks
//! saas-policy's Authorizer before the handler runs, and the `Tenant` and
//! `Authn` extractors refuse to hand out a context the guard did not approve,
//! so a handler cannot run unguarded. [`crate::route_specs`] lists every route
//! with its [`Guard`]; a test walks it.
//!
//! Inside a handler, saas-auth's own checks of member management (the
//! action of each flow, and standing for each role it hands out) are decided
//! the same way by `PolicyAuthority`, installed on the server's `Auth`.

use axum::RequestPartsExt as _;
use axum::Router;
use axum::extract::{RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use saas_auth::{AuthError, Authenticated};
use saas_core::WorkspaceId;
use saas_policy::{Decision, Facts, Level, PolicyError, Resource, Visible};

use crate::app::AppState;
use crate::problem::ApiError;

/// Actions whose success changes what the Authorizer caches.
const CHANGES_GRANTS: &[&str] = &[
    "users.update",
    "users.remove",
    "roles.assign",
    "services.manage",
    "api_keys.revoke",
    "workspaces.create",
    "workspaces.update",
    "workspaces.delete",
];

/// What guards a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No credential: the reason says why (login, health, JWKS ...).
    Public(&'static str),
    /// A tenant action on the organization.
    Tenant(&'static str),
    /// A tenant action on the workspace named by the `{id}` path parameter.
    Workspace(&'static str),
    /// A tenant action held on the organization or on at least one of its
    /// workspaces: for a list the handler narrows to the workspaces where it
    /// holds (a workspace-role holder lists their subtree). The guard leaves
    /// the [`Visible`] set it computed in the request's extensions.
    Anywhere(&'static str),
    /// A platform operator action.
    Platform(&'static str),
}

/// One route and its guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The HTTP method.
    pub method: Method,
    /// The axum path.
    pub path: &'static str,
    /// Its guard.
    pub guard: Guard,
}

/// Marks a request whose action the guard allowed.
#[derive(Debug, Clone)]
pub(crate) struct Authorized {
    #[expect(
        dead_code,
        reason = "kept for handlers and logs that want the decision"
    )]
    pub(crate) action: &'static str,
}

/// A router that records every route with its guard.
#[derive(Debug)]
pub(crate) struct Api {
    router: Router<AppState>,
    routes: Vec<RouteSpec>,
    state: AppState,
}

macro_rules! method {
    ($name:ident, $m:ident, $ctor:ident) => {
        pub(crate) fn $name<H, T>(self, path: &'static str, guard: Guard, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.add(Method::$m, path, guard, $ctor(handler))
        }
    };
}

impl Api {
    pub(crate) fn new(state: AppState) -> Self {
        Self {
            router: Router::new(),
            routes: Vec::new(),
            state,
        }
    }

    method!(get, GET, get);
    method!(post, POST, post);
    method!(put, PUT, put);
    method!(patch, PATCH, patch);
    method!(delete, DELETE, delete);

    fn add(
        mut self,
        method: Method,
        path: &'static str,
        guard: Guard,
        mr: MethodRouter<AppState>,
    ) -> Self {
        let mr = match guard {
            Guard::Tenant(_) | Guard::Workspace(_) | Guard::Anywhere(_) => mr.route_layer(
                middleware::from_fn_with_state((self.state.clone(), guard), authorize_route),
            ),
            Guard::Public(_) | Guard::Platform(_) => mr,
        };
        self.router = self.router.route(path, mr);
        self.routes.push(RouteSpec {
            method,
            path,
            guard,
        });
        self
    }

    /// Applies `layer` (tenant resolution, authentication) to the routes added so far.
    pub(crate) fn route_layer<F>(mut self, f: F) -> Self
    where
        F: FnOnce(Router<AppState>) -> Router<AppState>,
    {
        self.router = f(self.router);
        self
    }

    pub(crate) fn merge(mut self, other: Api) -> Self {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }

    pub(crate) fn into_parts(self) -> (Router<AppState>, Vec<RouteSpec>) {
        (self.router, self.routes)
    }
}

/// The guard of a tenant route: decide the declared action on the
/// organization or the workspace in the path; for [`Guard::Anywhere`], a
/// denial on the organization still lets through a caller who holds the
/// action on some workspace.
async fn authorize_route(
    State((state, guard)): State<(AppState, Guard)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (action, resource) = match guard {
        Guard::Tenant(a) | Guard::Anywhere(a) => (a, Resource::Org),
        Guard::Workspace(a) => {
            let (mut parts, body) = req.into_parts();
            let params = parts
                .extract::<RawPathParams>()
                .await
                .map_err(|_| bad_id())?;
            req = Request::from_parts(parts, body);
            let id = params
                .iter()
                .find(|(k, _)| *k == "id")
                .and_then(|(_, v)| v.parse::<WorkspaceId>().ok())
                .ok_or_else(bad_id)?;
            (a, Resource::Workspace(id))
        }
        Guard::Public(_) | Guard::Platform(_) => return Ok(next.run(req).await),
    };
    let who = req
        .extensions()
        .get::<Authenticated>()
        .cloned()
        .ok_or_else(crate::auth::unauthenticated)?;
    let (mut parts, body) = req.into_parts();
    let crate::auth::Meta(meta) = <crate::auth::Meta as axum::extract::FromRequestParts<
        AppState,
    >>::from_request_parts(&mut parts, &state)
    .await?;
    let mut req = Request::from_parts(parts, body);
    let facts = facts_of(&who, &meta);
    let decision = state
        .policy()
        .authorize_with(&who.ctx, action, &resource, &facts)
        .await?;
    let somewhere = match (&decision, guard) {
        (Decision::Deny(_), Guard::Anywhere(_)) => {
            let visible = state
                .policy()
                .visible_workspaces(&who.ctx, action, &facts)
                .await?;
            let any = !matches!(&visible, Visible::Only(ids) if ids.is_empty());
            req.extensions_mut().insert(visible);
            any
        }
        _ => false,
    };
    match decision {
        Decision::Allow(_) => run_allowed(&state, &who, action, req, next).await,
        Decision::Deny(_) if somewhere => run_allowed(&state, &who, action, req, next).await,
        Decision::Deny(why) => Err(match refusal(action, &resource, &why) {
            Refusal::HiddenWorkspace => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "workspace not found")
            }
            Refusal::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
                    .with("action", serde_json::json!(action))
            }
        }),
    }
}

/// How a denial of `action` on `resource` is told to the caller, the same
/// at the route guard and in identity's checks.
enum Refusal {
    /// A workspace of another tenant (or none): not found, so there is no
    /// existence oracle across the wall.
    HiddenWorkspace,
    /// Forbidden, with the reason.
    Forbidden(String),
}

fn refusal(action: &str, resource: &Resource, why: &saas_policy::Explanation) -> Refusal {
    let walled = why
        .policies
        .iter()
        .any(|p| p == saas_policy::TENANT_ISOLATION);
    if walled && matches!(resource, Resource::Workspace(_)) {
        Refusal::HiddenWorkspace
    } else {
        Refusal::Forbidden(format!("{action} is not allowed: {}", why.summary))
    }
}

/// Runs the handler of an allowed request, then drops what the Authorizer
/// caches about the tenant if the request changed it.
async fn run_allowed(
    state: &AppState,
    who: &Authenticated,
    action: &'static str,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    req.extensions_mut().insert(Authorized { action });
    let writes = req.method() != Method::GET;
    let res = next.run(req).await;
    // Roles identity stores, and the workspace tree with its tags, are
    // cached by the Authorizer: drop the tenant's entries on every replica.
    // A failure here leaves the one-minute TTL as the backstop; the change
    // itself has committed, so the answer stays a success.
    if writes
        && res.status().is_success()
        && CHANGES_GRANTS.contains(&action)
        && let Err(e) = state.policy().roles_changed(&who.ctx).await
    {
        tracing::warn!(error = %e, "authorization cache invalidation failed");
    }
    Ok(res)
}

fn bad_id() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_id",
        "a path parameter is invalid: the workspace id is not a UUID",
    )
}

/// The request facts policies see (client address, MFA time).
pub(crate) fn facts_of(who: &Authenticated, meta: &saas_auth::ClientMeta) -> Facts {
    Facts {
        ip: meta.ip.as_deref().and_then(|ip| ip.parse().ok()),
        mfa_at: who.mfa_at,
    }
}

/// saas-auth's member management decided by saas-policy, installed on the
/// server's [`saas_auth::Auth`]: identity names the catalogue action of each
/// flow (`users.invite`, `api_keys.create`, ...) and each role it hands out,
/// and this answers as the route guard does, with the same request facts, so
/// an organization's custom role holding `users.invite` invites, and an
/// operator acts only under break-glass. Grants follow saas-policy's rule:
/// nobody grants a permission they do not hold
/// ([`saas_policy::Authorizer::check_grant`]).
#[derive(Debug)]
pub(crate) struct PolicyAuthority(pub(crate) saas_policy::Authorizer);

#[async_trait::async_trait]
impl saas_auth::MemberAuthority for PolicyAuthority {
    async fn require(
        &self,
        who: &Authenticated,
        meta: &saas_auth::ClientMeta,
        action: &str,
        scope: saas_auth::Scope,
    ) -> Result<(), AuthError> {
        let resource = resource_of(scope);
        let decision = self
            .0
            .authorize_with(&who.ctx, action, &resource, &facts_of(who, meta))
            .await
            .map_err(auth_error)?;
        match decision {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(why) => Err(match refusal(action, &resource, &why) {
                Refusal::HiddenWorkspace => AuthError::NotFound {
                    entity: "workspace",
                },
                Refusal::Forbidden(message) => AuthError::Denied {
                    action: Some(action.to_owned()),
                    message,
                },
            }),
        }
    }

    async fn require_grant(
        &self,
        who: &Authenticated,
        meta: &saas_auth::ClientMeta,
        role: &str,
        scope: saas_auth::Scope,
    ) -> Result<(), AuthError> {
        let level = match scope {
            saas_auth::Scope::Org => Level::Org,
            saas_auth::Scope::Workspace(_) => Level::Workspace,
        };
        let found = self
            .0
            .role(&who.ctx, level, role)
            .await
            .map_err(|e| match e {
                PolicyError::NotFound { .. } => AuthError::Validation {
                    field: "role",
                    message: format!(
                        "{role:?} is not a {} role of this organization",
                        level.as_str()
                    ),
                },
                other => auth_error(other),
            })?;
        // Nobody grants what they do not hold (features the tier leaves
        // out: see `check_grant`).
        self.0
            .check_grant(&who.ctx, &facts_of(who, meta), &found, &resource_of(scope))
            .await
            .map_err(auth_error)
    }
}

fn resource_of(scope: saas_auth::Scope) -> Resource {
    match scope {
        saas_auth::Scope::Org => Resource::Org,
        saas_auth::Scope::Workspace(w) => Resource::Workspace(w),
    }
}

/// saas-policy's refusal as identity's: denials stay 403 `forbidden`.
fn auth_error(e: PolicyError) -> AuthError {
    match e {
        PolicyError::Core(c) => AuthError::Core(c),
        PolicyError::Audit(a) => AuthError::Audit(a),
        PolicyError::Forbidden(message) => AuthError::Denied {
            action: None,
            message,
        },
        PolicyError::Validation { field, message } => AuthError::Validation { field, message },
        PolicyError::NotFound { entity } => AuthError::NotFound { entity },
        PolicyError::Conflict { code, message } => AuthError::Conflict { code, message },
        other => AuthError::Core(saas_core::CoreError::Internal(other.to_string())),
    }
}
