//! Billing endpoints: usage ingestion and reads, the billable metrics, the
//! plan catalogue, the billing account, subscriptions and invoices; and the
//! operator's actions on a tenant's invoices.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use saas_billing::{
    BatchReceipt, BillingAccount, Invoice, Metric, NewCreditNote, NewSubscription, PlanChange,
    PlanChangeResult, RunReport, Subscription, UsageEvent, UsageQuery, UsageReport,
};
use saas_core::{InvoiceId, SubscriptionId, TenantId};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Platform, Tenant, tenant_scope};
use crate::guard::{Api, Guard};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};

/// The most events one HTTP request carries (the SDK takes more).
pub(crate) const MAX_HTTP_BATCH: usize = 1_000;

pub(crate) fn router(state: AppState) -> Api {
    Api::new(state.clone())
        .post("/api/usage", Guard::Tenant("usage.record"), record_usage)
        .get("/api/usage", Guard::Tenant("usage.read"), usage)
        .get("/api/usage/metrics", Guard::Tenant("usage.read"), metrics)
        .get("/api/plans", Guard::Tenant("org.read"), plans)
        .get(
            "/api/billing/account",
            Guard::Tenant("billing.read"),
            account,
        )
        .put(
            "/api/billing/account",
            Guard::Tenant("billing.manage"),
            set_account,
        )
        .get(
            "/api/subscriptions",
            Guard::Tenant("billing.read"),
            subscriptions,
        )
        .post(
            "/api/subscriptions",
            Guard::Tenant("billing.manage"),
            subscribe,
        )
        .post(
            "/api/subscriptions/{id}/plan",
            Guard::Tenant("billing.manage"),
            change_plan,
        )
        .post(
            "/api/subscriptions/{id}/cancel",
            Guard::Tenant("billing.manage"),
            cancel,
        )
        .post(
            "/api/subscriptions/{id}/pause",
            Guard::Tenant("billing.manage"),
            pause,
        )
        .post(
            "/api/subscriptions/{id}/resume",
            Guard::Tenant("billing.manage"),
            resume,
        )
        .get(
            "/api/billing/activity",
            Guard::Tenant("billing.read"),
            activity,
        )
        .get("/api/invoices", Guard::Tenant("billing.read"), invoices)
        .get("/api/invoices/{id}", Guard::Tenant("billing.read"), invoice)
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_scope)))
}

/// The operator's billing routes, and the payment provider's webhook.
pub(crate) fn platform_router(state: AppState) -> Api {
    Api::new(state)
        .post(
            "/api/billing/webhooks/{provider}",
            Guard::Public("payment provider webhooks, verified by their signature"),
            webhook,
        )
        .post(
            "/api/platform/billing/run",
            Guard::Platform("platform.billing.run"),
            run,
        )
        .post(
            "/api/tenants/{tenant}/invoices/{id}/mark-paid",
            Guard::Platform("platform.billing.mark_paid"),
            mark_paid,
        )
        .post(
            "/api/tenants/{tenant}/invoices/{id}/void",
            Guard::Platform("platform.billing.void"),
            void,
        )
        .post(
            "/api/tenants/{tenant}/invoices/{id}/credit-notes",
            Guard::Platform("platform.billing.credit_note"),
            credit_note,
        )
        .post(
            "/api/tenants/{tenant}/credits",
            Guard::Platform("platform.billing.credit"),
            grant_credit,
        )
}

fn invalid_body(detail: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail)
}

/// One event (an object with `transaction_id`), or `{"events": [...]}`.
/// The answer comes once every event is durable: each is either counted now
/// or reported as a duplicate of the event first sent under its id.
async fn record_usage(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<BatchReceipt>, ApiError> {
    let mut events: Vec<UsageEvent> = match body {
        serde_json::Value::Object(mut map) if map.contains_key("events") => {
            if map.len() > 1 {
                return Err(invalid_body(
                    "a batch is {\"events\": [...]} and nothing else".into(),
                ));
            }
            let list = map.remove("events").unwrap_or_default();
            serde_json::from_value(list).map_err(|e| invalid_body(format!("events: {e}")))?
        }
        one @ serde_json::Value::Object(_) => {
            vec![serde_json::from_value(one).map_err(|e| invalid_body(e.to_string()))?]
        }
        _ => {
            return Err(invalid_body(
                "send one event object or {\"events\": [...]}".into(),
            ));
        }
    };
    if events.len() > MAX_HTTP_BATCH {
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("at most {MAX_HTTP_BATCH} events per request"),
        );
        err = err.with("max_events", serde_json::json!(MAX_HTTP_BATCH));
        return Err(err);
    }
    // A key bound to one workspace reports usage of that workspace only.
    if let Some(bound) = ctx.workspace() {
        for e in &mut events {
            match e.workspace_id {
                None => e.workspace_id = Some(bound),
                Some(w) if w == bound => {}
                Some(_) => {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "this credential reports usage of its own workspace only",
                    ));
                }
            }
        }
    }
    Ok(Json(s.meter().record_batch(&ctx, events).await?))
}

/// Usage in the current period (or the period containing `at`), tenant-wide
/// or for one workspace, read from the rollups.
async fn usage(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    Ok(Json(s.meter().usage(&ctx, &q).await?))
}

/// The billable metrics.
async fn metrics(State(s): State<AppState>) -> Json<Vec<Metric>> {
    Json(s.meter().metrics().metrics().to_vec())
}

/// The plan catalogue (every version, so subscribers see theirs).
async fn plans(State(s): State<AppState>) -> Json<Vec<saas_billing::plan::Plan>> {
    Json(s.billing().plans().plans().to_vec())
}

async fn account(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<BillingAccount>, ApiError> {
    Ok(Json(s.billing().account(&ctx).await?))
}

async fn set_account(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiJson(body): ApiJson<BillingAccount>,
) -> Result<Json<BillingAccount>, ApiError> {
    Ok(Json(s.billing().set_account(&ctx, body).await?))
}

/// The live subscription, as a list of zero or one.
async fn subscriptions(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<Subscription>>, ApiError> {
    Ok(Json(
        s.billing().subscription(&ctx).await?.into_iter().collect(),
    ))
}

async fn subscribe(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiJson(body): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.billing().subscribe(&ctx, body).await?),
    ))
}

async fn change_plan(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<SubscriptionId>,
    ApiJson(body): ApiJson<PlanChange>,
) -> Result<Json<PlanChangeResult>, ApiError> {
    Ok(Json(s.billing().change_plan(&ctx, id, body).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// At once (with a prorated credit) instead of at the period end.
    #[serde(default)]
    immediately: Option<bool>,
}

async fn cancel(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<SubscriptionId>,
    body: axum::body::Bytes,
) -> Result<Json<Subscription>, ApiError> {
    // The body is optional: none means the plan's default timing.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| invalid_body(e.to_string()))?
    };
    Ok(Json(s.billing().cancel(&ctx, id, body.immediately).await?))
}

async fn pause(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<SubscriptionId>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(s.billing().pause(&ctx, id).await?))
}

async fn resume(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(id): ApiPath<SubscriptionId>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(s.billing().resume(&ctx, id).await?))
}

async fn invoices(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
) -> Result<Json<Vec<Invoice>>, ApiError> {
    Ok(Json(s.billing().invoices(&ctx).await?))
}

/// One invoice as JSON, HTML or PDF: by suffix (`/api/invoices/{id}.pdf`)
/// or by the Accept header.
async fn invoice(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiPath(raw): ApiPath<String>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use saas_billing::render::{self, Format};
    let (id, format) = match raw.rsplit_once('.') {
        Some((id, suffix)) => (
            id,
            Some(Format::from_suffix(suffix).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_format",
                    "invoices are served as .json, .html or .pdf",
                )
            })?),
        ),
        None => (raw.as_str(), None),
    };
    let id: InvoiceId = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", "not an invoice id"))?;
    let format = match format {
        Some(f) => f,
        None => {
            let accept = headers
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty())
                .unwrap_or("*/*");
            Format::from_accept(accept).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    "invoices are served as application/json, text/html or application/pdf",
                )
            })?
        }
    };
    let inv = s.billing().invoice(&ctx, id).await?;
    let ct = [(axum::http::header::CONTENT_TYPE, format.content_type())];
    Ok(match format {
        Format::Json => Json(inv).into_response(),
        Format::Html => (ct, render::to_html(&inv)).into_response(),
        Format::Pdf => (ct, render::to_pdf(&inv)?).into_response(),
    })
}

/// Enqueues the due periods' closing jobs (the worker runs them).
async fn run(
    State(s): State<AppState>,
    Platform(p): Platform,
) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(s.billing().run_due(&p).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
    reference: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credit {
    amount: i64,
    currency: saas_billing::money::Currency,
    reason: String,
}

async fn mark_paid(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath((tenant, id)): ApiPath<(TenantId, InvoiceId)>,
    ApiJson(b): ApiJson<Reference>,
) -> Result<Json<Invoice>, ApiError> {
    s.tenants().get(&p, tenant).await?;
    Ok(Json(
        s.billing()
            .mark_paid(&p.act_in(tenant), id, &b.reference)
            .await?,
    ))
}

async fn void(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath((tenant, id)): ApiPath<(TenantId, InvoiceId)>,
    ApiJson(b): ApiJson<Reason>,
) -> Result<Json<Invoice>, ApiError> {
    s.tenants().get(&p, tenant).await?;
    Ok(Json(
        s.billing().void(&p.act_in(tenant), id, &b.reason).await?,
    ))
}

async fn credit_note(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath((tenant, id)): ApiPath<(TenantId, InvoiceId)>,
    ApiJson(b): ApiJson<NewCreditNote>,
) -> Result<(StatusCode, Json<Invoice>), ApiError> {
    s.tenants().get(&p, tenant).await?;
    let note = s.billing().credit_note(&p.act_in(tenant), id, b).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn grant_credit(
    State(s): State<AppState>,
    Platform(p): Platform,
    ApiPath(tenant): ApiPath<TenantId>,
    ApiJson(b): ApiJson<Credit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.tenants().get(&p, tenant).await?;
    let balance = s
        .billing()
        .grant_credit(&p.act_in(tenant), b.amount, b.currency, &b.reason)
        .await?;
    Ok(Json(
        serde_json::json!({"currency": b.currency, "balance": balance}),
    ))
}

/// A payment provider's webhook: verified (signature over a timestamped
/// payload, within a tolerance) and applied once per event id.
async fn webhook(
    State(s): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut h = saas_billing::payment::WebhookHeaders::new();
    for (name, value) in &headers {
        if let Ok(v) = value.to_str() {
            h.insert(name.as_str(), v);
        }
    }
    let now = s.db().clock().now();
    let result = s
        .billing()
        .handle_webhook(&provider, &h, &body, now)
        .await?;
    Ok(Json(serde_json::json!({"result": result})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityQuery {
    before_seq: Option<i64>,
    limit: Option<u64>,
}

/// Billing's part of the audit trail (subscription changes, invoices,
/// payments, every dunning step), for the people who hold billing.read
/// without audit.read (billing admins).
async fn activity(
    State(s): State<AppState>,
    Tenant(ctx): Tenant,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> Result<Json<saas_audit::AuditPage>, ApiError> {
    let query = saas_audit::AuditQuery {
        action_prefix: Some("billing.".into()),
        before_seq: q.before_seq,
        limit: q.limit,
        ..saas_audit::AuditQuery::default()
    };
    Ok(Json(s.audit().query(&ctx, &query).await?))
}
