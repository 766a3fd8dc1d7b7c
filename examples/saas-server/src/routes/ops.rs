//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::{AppState, metrics_handle};
use crate::problem::ApiError;

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn ready(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let not_ready =
        |detail: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail);
    state
        .db()
        .ping()
        .await
        .map_err(|_| not_ready("the database does not answer".into()))?;
    let applied = saas_core::db::applied_migrations(state.db())
        .await
        .map_err(|_| not_ready("the migration table cannot be read".into()))?;
    for set in crate::migration_sets() {
        for m in set.migrations {
            if !applied
                .iter()
                .any(|(c, v)| c == set.component && *v == m.version)
            {
                return Err(not_ready(format!(
                    "migration {} {} is not applied",
                    set.component, m.version
                )));
            }
        }
    }
    Ok(Json(
        json!({ "status": "ready", "backend": format!("{:?}", state.db().backend()).to_lowercase() }),
    ))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pool = state.db().pool_stats();
    metrics::gauge!("db_pool_connections", "state" => "open").set(f64::from(pool.size));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("db_pool_connections", "state" => "max").set(f64::from(pool.max));
    match state.jobs().depth(state.resolver()).await {
        Ok(d) => {
            metrics::gauge!("job_queue_depth", "state" => "queued").set(d.queued as f64);
            metrics::gauge!("job_queue_depth", "state" => "running").set(d.running as f64);
            metrics::gauge!("job_queue_depth", "state" => "dead").set(d.dead as f64);
        }
        Err(e) => tracing::warn!(error = %e, "job queue depth unavailable"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_handle().render(),
    )
}
