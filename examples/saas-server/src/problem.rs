//! RFC 9457 problem details: every error leaves the server as
//! `application/problem+json` with a stable `code` and the correlation id.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use saas_core::CoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem, before the correlation id is stamped on it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary (the status reason).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// Stable, machine-readable code.
    pub code: String,
    /// The field at fault, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request's correlation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Problem-specific members (the denied `action`, the exceeded `quota`,
    /// policy `errors` with lines).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// An error a handler returns.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
    field: Option<String>,
    extensions: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    /// A problem with a status, code and detail.
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            field: None,
            extensions: None,
        }
    }

    /// 404 `not_found` naming what was looked for.
    fn not_found(entity: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{entity} not found"),
        )
    }

    /// Adds a problem-specific member.
    #[must_use]
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions
            .get_or_insert_with(Box::default)
            .insert(key.to_owned(), value);
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem body (without correlation id).
    #[must_use]
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("https://saas.dev/problems/{}", self.code.replace('_', "-")),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
            field: self.field.clone(),
            correlation_id: None,
            extensions: self.extensions.as_deref().cloned().unwrap_or_default(),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let code = e.code().to_owned();
        let (status, field) = match &e {
            CoreError::NotFound { .. } => (StatusCode::NOT_FOUND, None),
            CoreError::Validation { field, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, Some((*field).to_owned()))
            }
            CoreError::Conflict { .. } | CoreError::InvalidTransition { .. } => {
                (StatusCode::CONFLICT, None)
            }
            CoreError::TenantUnavailable { .. } => (StatusCode::FORBIDDEN, None),
            CoreError::LimitExceeded { .. } => (StatusCode::PAYMENT_REQUIRED, None),
            _ if e.code() == "database_unavailable" => {
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is busy; retry shortly",
                );
            }
            _ => {
                tracing::error!(error = %e, "internal error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred; quote the correlation id when reporting it",
                );
            }
        };
        Self {
            status,
            code,
            detail: e.to_string(),
            field,
            extensions: None,
        }
    }
}

impl From<saas_policy::PolicyError> for ApiError {
    fn from(e: saas_policy::PolicyError) -> Self {
        use saas_policy::PolicyError as E;
        match e {
            E::Core(c) => c.into(),
            E::Validation { field, message } => {
                let mut err = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    message,
                );
                err.field = Some(field.to_owned());
                err
            }
            E::InvalidPolicy(diags) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                format!(
                    "the policy is invalid: {}",
                    diags.first().map_or("", |d| d.message.as_str())
                ),
            )
            .with("errors", serde_json::json!(diags)),
            E::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            E::NotFound { entity } => Self::not_found(entity),
            E::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            E::QuotaExceeded(q) => {
                // A periodic quota comes back by itself (429, retry later); a
                // stock quota needs a bigger plan (402).
                let status = if q.resets_at.is_some() {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::PAYMENT_REQUIRED
                };
                Self::new(
                    status,
                    "quota_exceeded",
                    format!(
                        "the {} quota is exhausted ({} of {})",
                        q.quota, q.used, q.limit
                    ),
                )
                .with("quota", serde_json::json!(q.quota))
                .with("limit", serde_json::json!(q.limit))
                .with("used", serde_json::json!(q.used))
                .with("resets_at", serde_json::json!(q.resets_at))
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred; quote the correlation id when reporting it",
                )
            }
        }
    }
}

impl From<saas_billing::BillingError> for ApiError {
    fn from(e: saas_billing::BillingError) -> Self {
        use saas_billing::BillingError as E;
        match e {
            E::Core(c) => c.into(),
            E::Policy(p) => p.into(),
            E::Validation { field, reason } => {
                let mut err = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    format!("invalid {field}: {reason}"),
                );
                err.field = Some(field);
                err
            }
            E::Money(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "money_error", m),
            E::WebhookSignature(m) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_webhook_signature",
                format!("webhook signature rejected: {m}"),
            ),
            E::Provider { provider, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "payment_provider_failed",
                format!("the payment provider {provider} failed; retry later"),
            ),
            E::NotFound { entity } => Self::not_found(entity),
            E::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            other => {
                tracing::error!(error = %other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred; quote the correlation id when reporting it",
                )
            }
        }
    }
}

impl From<saas_auth::AuthError> for ApiError {
    fn from(e: saas_auth::AuthError) -> Self {
        use saas_auth::AuthError as E;
        let e = match e {
            E::Core(c) => return c.into(),
            other => other,
        };
        let code = e.code().to_owned();
        let (status, field) = match &e {
            E::InvalidCredentials
            | E::InvalidToken(_)
            | E::SessionRevoked
            | E::RefreshReuse
            | E::InvalidCode => (StatusCode::UNAUTHORIZED, None),
            E::Locked { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
            E::StepUpRequired | E::Forbidden(_) | E::Denied { .. } => (StatusCode::FORBIDDEN, None),
            E::WeakPassword(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("password".to_owned()),
            ),
            E::InvalidLink => (StatusCode::BAD_REQUEST, None),
            E::NotFound { .. } => (StatusCode::NOT_FOUND, None),
            E::Validation { field, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, Some((*field).to_owned()))
            }
            E::Conflict { code, .. } if *code == "mfa_enrolment_required" => {
                (StatusCode::FORBIDDEN, None)
            }
            E::Conflict { .. } => (StatusCode::CONFLICT, None),
            _ => {
                tracing::error!(error = %e, "internal error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred; quote the correlation id when reporting it",
                );
            }
        };
        let err = Self {
            status,
            code,
            detail: e.to_string(),
            field,
            extensions: None,
        };
        match e {
            // A policy denial names its action, as the route guard's does.
            E::Denied {
                action: Some(action),
                ..
            } => err.with("action", serde_json::json!(action)),
            _ => err,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut res = self.status.into_response();
        res.extensions_mut().insert(problem);
        res
    }
}

/// Renders a problem with the correlation id into a response.
pub fn render(mut problem: Problem, correlation_id: &str) -> Response {
    problem.correlation_id = Some(correlation_id.to_owned());
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, Json(problem)).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

/// The problem for an error status that carries no problem of its own
/// (a body-limit 413, a timeout, an unknown route, a wrong method).
#[must_use]
pub fn from_status(status: StatusCode) -> Problem {
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("route_not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the request body exceeds the server's limit",
        ),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send application/json"),
        s if s.is_client_error() => ("bad_request", "the request was refused"),
        _ => (
            "internal_error",
            "an internal error occurred; quote the correlation id when reporting it",
        ),
    };
    ApiError::new(status, code, detail).problem()
}

/// JSON body extractor whose rejections are problems.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rej) => Err(json_rejection(&rej)),
        }
    }
}

fn json_rejection(rej: &JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", rej.body_text())
        }
        JsonRejection::JsonDataError(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            rej.body_text(),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body exceeds the server's limit",
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            "the request body could not be read",
        ),
    }
}

/// Path extractor whose rejections are problems (`invalid_id`).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rej) => Err(path_rejection(&rej)),
        }
    }
}

fn path_rejection(rej: &PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_id",
        format!("a path parameter is invalid: {}", rej.body_text()),
    )
}

/// Query-string extractor whose rejections are problems (`invalid_query`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rej) => Err(query_rejection(&rej)),
        }
    }
}

fn query_rejection(rej: &QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rej.body_text())
}
