//! The crate's error type.

use saas_core::CoreError;

/// Errors of saas-billing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// Bad input: which field, and why.
    #[error("invalid {field}: {reason}")]
    Validation {
        /// The offending field (for a batch, with the event's index).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Arithmetic would overflow, or currencies differ.
    #[error("money error: {0}")]
    Money(String),
    /// A catalogue (metrics, plans) is malformed.
    #[error("{0}")]
    Catalogue(String),
    /// No such thing in this tenant.
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for.
        entity: &'static str,
    },
    /// The request conflicts with what is stored.
    #[error("{message}")]
    Conflict {
        /// A stable code (`idempotency_conflict`, `invalid_transition`, ...).
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// A payment provider failed or refused (a card decline is an outcome,
    /// not this error).
    #[error("payment provider {provider}: {message}")]
    Provider {
        /// The provider's name.
        provider: String,
        /// What went wrong (no secrets).
        message: String,
    },
    /// A webhook's signature or timestamp did not verify.
    #[error("webhook signature rejected: {0}")]
    WebhookSignature(String),
    /// The audit log refused the event.
    #[error(transparent)]
    Audit(#[from] saas_audit::AuditError),
    /// The authorization layer failed.
    #[error(transparent)]
    Policy(#[from] saas_policy::PolicyError),
    /// The data layer failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl BillingError {
    pub(crate) fn validation(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A stable, machine-readable code for the error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::Money(_) => "money_error",
            Self::Catalogue(_) => "invalid_catalogue",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { code, .. } => code,
            Self::Provider { .. } => "payment_provider_failed",
            Self::WebhookSignature(_) => "invalid_webhook_signature",
            Self::Audit(_) => "audit_failed",
            Self::Policy(_) => "policy_failed",
            Self::Core(e) => e.code(),
        }
    }
}

impl From<sqlx::Error> for BillingError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::from(e))
    }
}
