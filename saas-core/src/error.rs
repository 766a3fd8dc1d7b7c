//! The saas-core error type.
//!
//! Each variant has a stable machine-readable [`CoreError::code`]; the server
//! maps codes to HTTP statuses. Messages are lowercase and never carry secrets
//! or personal data.

use crate::tenant::TenantStatus;

/// Everything that can go wrong in saas-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The entity does not exist in this tenant (or at all).
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for, e.g. `"workspace"`.
        entity: &'static str,
    },
    /// The input is invalid; `field` names the offending field.
    #[error("invalid {field}: {message}")]
    Validation {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The change conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// A stable code, e.g. `"workspace_has_children"`.
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The tenant cannot be used in its current lifecycle state.
    #[error("tenant is {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    TenantUnavailable {
        /// The tenant's state.
        status: TenantStatus,
        /// Why, as recorded with the transition (e.g. the unpaid invoice).
        reason: Option<String>,
    },
    /// A lifecycle action is not allowed from the tenant's current state.
    #[error("cannot {action} a tenant that is {from}")]
    InvalidTransition {
        /// The state the tenant is in.
        from: TenantStatus,
        /// The action attempted.
        action: &'static str,
    },
    /// A tier limit would be exceeded.
    #[error("tier limit {limit} of {max} reached")]
    LimitExceeded {
        /// The limit's name, e.g. `"max_workspaces"`.
        limit: &'static str,
        /// The limit's value.
        max: u64,
    },
    /// A migration failed or the schema does not match this binary.
    #[error("migration error: {0}")]
    Migration(String),
    /// The configuration is unusable.
    #[error("configuration error: {0}")]
    Config(String),
    /// An invariant of ours broke (a stored value we cannot read back).
    #[error("internal error: {0}")]
    Internal(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl CoreError {
    /// A stable, machine-readable code for this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Validation { .. } => "validation_failed",
            Self::Conflict { code, .. } => code,
            Self::TenantUnavailable { status, .. } => match status {
                TenantStatus::Suspended => "tenant_suspended",
                TenantStatus::PendingDeletion => "tenant_pending_deletion",
                TenantStatus::Provisioning => "tenant_not_active",
                TenantStatus::Active => "tenant_unavailable",
            },
            Self::InvalidTransition { .. } => "invalid_lifecycle_transition",
            Self::LimitExceeded { .. } => "tier_limit_exceeded",
            Self::Migration(_) => "migration_failed",
            Self::Config(_) => "configuration_error",
            Self::Internal(_) => "internal_error",
            Self::Database(sqlx::Error::PoolTimedOut) => "database_unavailable",
            Self::Database(_) => "database_error",
        }
    }

    pub(crate) fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}
