//! The saas-auth error type. Every variant has a stable [`AuthError::code`];
//! the server maps codes to HTTP statuses. Messages never carry secrets or
//! personal data, and authentication failures never say which part was wrong.

use chrono::{DateTime, Utc};
use saas_core::CoreError;

/// Everything that can go wrong in saas-auth.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown account, wrong password, or not a member: one answer for all.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many failed logins for this account or address.
    #[error("too many failed attempts; try again later")]
    Locked {
        /// When the lock lifts.
        until: DateTime<Utc>,
    },
    /// The presented token (access, refresh, API key, challenge) is not acceptable.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The session behind the token has been revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// A refresh token was used twice; its whole session has been revoked.
    #[error("refresh token reuse detected; the session has been revoked")]
    RefreshReuse,
    /// The MFA code or recovery code is wrong or was already used.
    #[error("invalid or already used code")]
    InvalidCode,
    /// The operation needs a recent MFA verification.
    #[error("this operation requires a recent MFA verification")]
    StepUpRequired,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// An authorization layer (the installed
    /// [`MemberAuthority`](crate::MemberAuthority)) refused: same meaning as
    /// [`AuthError::Forbidden`], with the layer's own explanation.
    #[error("{message}")]
    Denied {
        /// The catalogue action refused, when an action (not a grant) was refused.
        action: Option<String>,
        /// Why, e.g. the policies that denied it; no secrets or personal data.
        message: String,
    },
    /// The password does not meet the policy.
    #[error("password rejected: {0}")]
    WeakPassword(String),
    /// A single-use token (invitation, reset, verification) is unknown, used or expired.
    #[error("the link is invalid, used or expired")]
    InvalidLink,
    /// The entity does not exist in this tenant.
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for.
        entity: &'static str,
    },
    /// Invalid input.
    #[error("invalid {field}: {message}")]
    Validation {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The change conflicts with current state.
    #[error("{message}")]
    Conflict {
        /// A stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// Sending mail failed.
    #[error("mail error: {0}")]
    Mail(String),
    /// A cryptographic operation failed (a key we cannot use).
    #[error("crypto error: {0}")]
    Crypto(String),
    /// The audit log refused the event.
    #[error("audit error: {0}")]
    Audit(#[from] saas_audit::AuditError),
    /// saas-core failed (database, tenant state).
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl AuthError {
    /// A stable, machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::Locked { .. } => "login_locked",
            Self::InvalidToken(_) => "invalid_token",
            Self::SessionRevoked => "session_revoked",
            Self::RefreshReuse => "refresh_token_reused",
            Self::InvalidCode => "invalid_mfa_code",
            Self::StepUpRequired => "step_up_required",
            Self::Forbidden(_) | Self::Denied { .. } => "forbidden",
            Self::WeakPassword(_) => "weak_password",
            Self::InvalidLink => "invalid_link",
            Self::NotFound { .. } => "not_found",
            Self::Validation { .. } => "validation_failed",
            Self::Conflict { code, .. } => code,
            Self::Mail(_) => "mail_failed",
            Self::Crypto(_) => "internal_error",
            Self::Audit(_) => "audit_failed",
            Self::Core(e) => e.code(),
        }
    }

    pub(crate) fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}
