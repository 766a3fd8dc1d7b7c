//! Recording changes in the transaction that makes them.
//!
//! Every saas-core repository reports each change it makes (tenant lifecycle,
//! workspaces, configuration, operator credentials, job replays) to the
//! [`ChangeRecorder`] installed on the [`Db`](crate::db::Db), *inside the
//! change's own transaction*: the record and the change commit together or not
//! at all. saas-audit implements the trait to write the hash-chained audit log;
//! saas-core itself depends on nothing that records.

use std::fmt;

use crate::context::{PlatformContext, TenantContext};
use crate::db::Tx;
use crate::error::CoreError;

/// Who made a change: a tenant-scoped caller or the platform.
#[derive(Debug, Clone, Copy)]
pub enum ChangeBy<'a> {
    /// A principal acting in a tenant (the change is recorded in its chain).
    Tenant(&'a TenantContext),
    /// An operator or the system acting at the platform level.
    Platform(&'a PlatformContext),
}

/// One change, described without personal data.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Who made it.
    pub by: ChangeBy<'a>,
    /// Dotted action name, e.g. `"tenant.suspend"`.
    pub action: &'static str,
    /// The kind of thing changed, e.g. `"tenant"`.
    pub target_kind: &'static str,
    /// Its id.
    pub target_id: Option<String>,
    /// Non-personal details (a JSON object).
    pub details: serde_json::Value,
}

/// Receives every change inside its transaction. An error aborts the change.
#[async_trait::async_trait]
pub trait ChangeRecorder: Send + Sync + fmt::Debug {
    /// Records `change` in `tx`.
    async fn record(&self, tx: &mut Tx, change: &Change<'_>) -> Result<(), CoreError>;
}
