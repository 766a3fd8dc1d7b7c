//! The crate's error type.

use saas_core::CoreError;
use serde::Serialize;

/// A problem in a submitted Cedar policy, located in its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDiagnostic {
    /// What is wrong.
    pub message: String,
    /// 1-based line, when the engine points at one.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
}

/// An exceeded quota: which, how far, and when it resets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaExceeded {
    /// The quota's name (`monthly_requests`, `max_users`, `max_workspaces`).
    pub quota: String,
    /// Its limit for the tenant's tier.
    pub limit: u64,
    /// What is used now.
    pub used: u64,
    /// When a periodic quota resets (`None` for stock quotas such as seats).
    pub resets_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Errors of saas-policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Bad input.
    #[error("invalid {field}: {message}")]
    Validation {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The catalogue file is malformed.
    #[error("{0}")]
    Catalogue(String),
    /// A submitted policy does not parse or does not validate against the schema.
    #[error("the policy is invalid: {}", .0.first().map_or("", |d| d.message.as_str()))]
    InvalidPolicy(Vec<PolicyDiagnostic>),
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such thing in this tenant.
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for.
        entity: &'static str,
    },
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// A stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// A quota is exhausted.
    #[error("quota {} exceeded ({} of {})", .0.quota, .0.used, .0.limit)]
    QuotaExceeded(QuotaExceeded),
    /// The Cedar engine refused our own generated input (a bug).
    #[error("policy engine: {0}")]
    Engine(String),
    /// Audit failed.
    #[error(transparent)]
    Audit(#[from] saas_audit::AuditError),
    /// The database failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl PolicyError {
    pub(crate) fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}
