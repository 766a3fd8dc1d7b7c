//! Billing endpoints: usage ingestion and reads, and the billable metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use saas_billing::{BatchReceipt, Metric, UsageEvent, UsageQuery, UsageReport};

use crate::app::AppState;
use crate::auth::{Tenant, tenant_scope};
use crate::guard::{Api, Guard};
use crate::problem::{ApiError, ApiJson, ApiQuery};

/// The most events one HTTP request carries (the SDK takes more).
pub(crate) const MAX_HTTP_BATCH: usize = 1_000;

pub(crate) fn router(state: AppState) -> Api {
    Api::new(state.clone())
        .post("/api/usage", Guard::Tenant("usage.record"), record_usage)
        .get("/api/usage", Guard::Tenant("usage.read"), usage)
        .get("/api/usage/metrics", Guard::Tenant("usage.read"), metrics)
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_scope)))
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
