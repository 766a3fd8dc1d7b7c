//! The saas-audit error type.

use saas_core::CoreError;

/// Everything that can go wrong in saas-audit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The event, or a setting such as a retention period, is not acceptable.
    #[error("invalid audit input: {0}")]
    Invalid(String),
    /// The transaction does not belong to the chain being written.
    #[error("scope mismatch: {0}")]
    ScopeMismatch(&'static str),
    /// A stored record cannot be read back.
    #[error("corrupt audit record: {0}")]
    Corrupt(String),
    /// Encryption or signing failed.
    #[error("crypto error: {0}")]
    Crypto(&'static str),
    /// The checkpoint key is unusable.
    #[error("checkpoint key must be at least 32 bytes")]
    WeakKey,
    /// An export file is malformed.
    #[error("malformed export at line {line}: {reason}")]
    Export {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing an export failed.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl AuditError {
    /// A stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_audit_event",
            Self::ScopeMismatch(_) => "audit_scope_mismatch",
            Self::Corrupt(_) => "audit_record_corrupt",
            Self::Crypto(_) => "audit_crypto_error",
            Self::WeakKey => "audit_weak_key",
            Self::Export { .. } => "audit_export_malformed",
            Self::Io(_) => "audit_io_error",
            Self::Core(e) => e.code(),
        }
    }
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::Database(e))
    }
}
