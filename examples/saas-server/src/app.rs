//! The router, its shared state and the cross-cutting middleware: correlation
//! ids, problem rendering, metrics, body limits, timeouts and panic capture.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use saas_core::config::TenantConfigs;
use saas_core::db::Db;
use saas_core::jobs::JobStore;
use saas_core::operator::Operators;
use saas_core::tenant::Tenants;
use saas_core::workspace::Workspaces;
use saas_core::{CorrelationId, PlatformContext};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::config::Config;
use crate::guard::{Api, Guard, RouteSpec};
use crate::problem::{self, ApiError, PROBLEM_JSON, Problem};
use crate::routes;

/// Everything handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    config: Config,
    tenants: Tenants,
    workspaces: Workspaces,
    configs: TenantConfigs,
    operators: Operators,
    jobs: JobStore,
    audit: saas_audit::AuditLog,
    auth: saas_auth::Auth,
    policy: saas_policy::Authorizer,
    meter: saas_billing::Meter,
    billing: saas_billing::Billing,
    resolver: PlatformContext,
    maintenance: PlatformContext,
}

impl AppState {
    /// State over a migrated database. Installs the audit recorder on `db`, so
    /// every change the repositories make is audited in its own transaction.
    /// Without `config.audit_key` checkpoints are signed with a random key
    /// that lives as long as the process (use [`crate::prepare`] to persist one).
    /// Loads (or creates) the token signing keys.
    pub async fn new(db: Db, config: Config) -> Result<Self, crate::ServerError> {
        if db
            .set_change_recorder(Arc::new(saas_audit::ChangeAuditor))
            .is_err()
        {
            tracing::debug!("change recorder already installed");
        }
        let signer = config
            .audit_key
            .as_deref()
            .and_then(|k| hex::decode(k).ok())
            .and_then(|k| saas_audit::CheckpointSigner::new("server", &k).ok())
            .unwrap_or_else(|| {
                tracing::warn!(
                    "no usable audit checkpoint key configured; using a key for this process only"
                );
                saas_audit::CheckpointSigner::random("server")
            });
        let audit = saas_audit::AuditLog::new(db.clone(), signer);
        let auth = saas_auth::Auth::new(db.clone(), audit.clone(), config.auth_config()).await?;
        let engine = saas_policy::Engine::new(saas_policy::Catalogue::default_catalogue()?)?;
        let policy = saas_policy::Authorizer::new(
            db.clone(),
            engine,
            audit.clone(),
            Arc::new(AuthGrants(auth.clone())),
        );
        policy.set_require_break_glass(config.require_break_glass);
        // Identity's member management is decided by the policy too. The
        // grant source above keeps the handle without the authority, so the
        // two make no reference cycle.
        let auth =
            auth.with_member_authority(Arc::new(crate::guard::PolicyAuthority(policy.clone())));
        let meter = saas_billing::Meter::new(
            db.clone(),
            saas_billing::MetricCatalogue::default_catalogue()?,
        );
        policy.set_quota_periods(Arc::new(meter.clone()));
        let billing = saas_billing::Billing::new(
            db.clone(),
            audit.clone(),
            saas_billing::plan::PlanCatalogue::default_catalogue()?,
            meter.clone(),
            config.seller.clone(),
        )
        .with_authorizer(policy.clone())
        .with_outbox(Arc::new(AuthOutbox(auth.clone())));
        let billing = match &config.payment_provider {
            Some(p) => billing.with_provider(p.clone()),
            None => billing,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                tenants: Tenants::new(db.clone()),
                workspaces: Workspaces::new(db.clone()),
                configs: TenantConfigs::new(db.clone()),
                operators: Operators::new(db.clone()),
                jobs: JobStore::new(db.clone()),
                policy,
                meter,
                billing,
                audit,
                auth,
                resolver: PlatformContext::system("request tenant resolution"),
                maintenance: PlatformContext::system("audit maintenance"),
                db,
                config,
            }),
        })
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.inner.db
    }
    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }
    pub(crate) fn tenants(&self) -> &Tenants {
        &self.inner.tenants
    }
    pub(crate) fn workspaces(&self) -> &Workspaces {
        &self.inner.workspaces
    }
    pub(crate) fn configs(&self) -> &TenantConfigs {
        &self.inner.configs
    }
    /// Operator credentials.
    #[must_use]
    pub fn operators(&self) -> &Operators {
        &self.inner.operators
    }
    /// The audit log.
    #[must_use]
    pub fn audit(&self) -> &saas_audit::AuditLog {
        &self.inner.audit
    }
    /// Identity.
    #[must_use]
    pub fn auth(&self) -> &saas_auth::Auth {
        &self.inner.auth
    }
    /// Authorization.
    #[must_use]
    pub fn policy(&self) -> &saas_policy::Authorizer {
        &self.inner.policy
    }
    /// Usage metering.
    #[must_use]
    pub fn meter(&self) -> &saas_billing::Meter {
        &self.inner.meter
    }
    /// Billing: subscriptions, invoices, payments.
    #[must_use]
    pub fn billing(&self) -> &saas_billing::Billing {
        &self.inner.billing
    }
    pub(crate) fn jobs(&self) -> &JobStore {
        &self.inner.jobs
    }
    pub(crate) fn resolver(&self) -> &PlatformContext {
        &self.inner.resolver
    }
    /// The context of the server's own audit maintenance (checkpoints, sinks).
    pub(crate) fn maintenance(&self) -> &PlatformContext {
        &self.inner.maintenance
    }
}

/// The Prometheus handle; the recorder is installed once per process.
pub(crate) fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets(&buckets) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /api/metrics shows only this server's view");
        }
        handle
    })
}

/// Every route of the server with its guard: the one list both the router
/// and the route-walking test are built from.
pub(crate) fn api(state: AppState) -> Api {
    Api::new(state.clone())
        .get(
            "/api/health",
            Guard::Public("liveness probe"),
            routes::ops::health,
        )
        .get(
            "/api/ready",
            Guard::Public("readiness probe"),
            routes::ops::ready,
        )
        .get(
            "/api/metrics",
            Guard::Public("Prometheus scrape; bind it to an internal network"),
            routes::ops::metrics,
        )
        .get(
            "/.well-known/jwks.json",
            Guard::Public("public signing keys"),
            routes::identity::jwks,
        )
        .merge(routes::platform::router(state.clone()))
        .merge(routes::tenant::router(state.clone()))
        .merge(routes::identity::public_router(state.clone()))
        .merge(routes::identity::router(state.clone()))
        .merge(routes::billing::router(state.clone()))
        .merge(routes::billing::platform_router(state.clone()))
        .merge(routes::policy::router(state))
}

/// Every route with its guard (for tests and documentation).
#[must_use]
pub fn route_specs(state: AppState) -> Vec<RouteSpec> {
    api(state).into_parts().1
}

/// Builds the whole router.
pub fn router(state: AppState) -> Router {
    let _ = metrics_handle();
    let body_limit = state.config().body_limit;
    let timeout = Duration::from_secs(state.config().request_timeout_secs.max(1));
    let (api, _) = api(state.clone()).into_parts();
    api.fallback(fallback)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred; quote the correlation id when reporting it",
            )
            .into_response()
        }))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// Correlation id in, problem bodies and correlation id out, one log line and
/// metrics per request.
async fn request_context(mut req: Request, next: Next) -> Response {
    let cid = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(CorrelationId::parse)
        .unwrap_or_else(CorrelationId::generate);
    req.extensions_mut().insert(cid.clone());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span =
        tracing::info_span!("request", correlation_id = %cid, method = %method, route = %route);
    let started = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    let mut res = finish_problem(res, &cid);
    if let Ok(v) = HeaderValue::from_str(cid.as_str()) {
        res.headers_mut().insert("x-request-id", v);
    }
    let status = res.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method.to_string(), "route" => route, "status" => status).record(elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            latency_ms = elapsed * 1000.0,
            "request finished"
        )
    });
    res
}

/// Stamps the correlation id on a handler's problem, or turns a bare error
/// status (413 from the body limit, 408, 405, a panic) into a problem.
fn finish_problem(mut res: Response, cid: &CorrelationId) -> Response {
    let problem = res.extensions_mut().remove::<Problem>();
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let problem = match problem {
        Some(p) => p,
        None if (status.is_client_error() || status.is_server_error()) && !is_problem => {
            problem::from_status(status)
        }
        None => return res,
    };
    let rendered = problem::render(problem, cid.as_str());
    let (mut parts, _) = res.into_parts();
    if parts.status == axum::http::StatusCode::UNAUTHORIZED {
        parts
            .headers
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    let (new_parts, body) = rendered.into_parts();
    parts.status = new_parts.status;
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in &new_parts.headers {
        parts.headers.insert(k.clone(), v.clone());
    }
    Response::from_parts(parts, Body::new(body))
}

/// saas-policy learns identity's role grants from saas-auth.
#[derive(Debug)]
struct AuthGrants(saas_auth::Auth);

#[async_trait::async_trait]
impl saas_policy::GrantSource for AuthGrants {
    async fn grants(
        &self,
        ctx: &saas_core::TenantContext,
    ) -> Result<saas_policy::Grants, saas_policy::PolicyError> {
        let g = self.0.role_grants(ctx).await.map_err(|e| match e {
            saas_auth::AuthError::Core(c) => saas_policy::PolicyError::Core(c),
            other => saas_policy::PolicyError::Engine(other.to_string()),
        })?;
        Ok(saas_policy::Grants {
            org_roles: g.org_roles,
            workspace_roles: g.workspace_roles,
            scopes: g.scopes,
            workspace: g.workspace,
        })
    }
}

/// Billing's mail goes through identity's outbox, in billing's transaction.
#[derive(Debug)]
struct AuthOutbox(saas_auth::Auth);

#[async_trait::async_trait]
impl saas_billing::Outbox for AuthOutbox {
    async fn enqueue(
        &self,
        tx: &mut saas_core::db::Tx,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), saas_billing::BillingError> {
        self.0
            .enqueue_mail(tx, to, subject, body)
            .await
            .map_err(|e| match e {
                saas_auth::AuthError::Core(c) => saas_billing::BillingError::Core(c),
                other => saas_billing::BillingError::Provider {
                    provider: "mail outbox".into(),
                    message: other.to_string(),
                },
            })
    }
}
