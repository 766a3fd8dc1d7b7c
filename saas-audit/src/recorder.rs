//! saas-audit as saas-core's [`ChangeRecorder`]: every change a saas-core
//! repository makes is appended to the tenant's chain (or the platform chain)
//! in the change's own transaction.

use saas_core::CoreError;
use saas_core::change::{Change, ChangeBy, ChangeRecorder};
use saas_core::db::Tx;

use crate::event::{AuditEvent, Target};
use crate::store::{Scope, append_in};

/// Install with `db.set_change_recorder(Arc::new(ChangeAuditor))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangeAuditor;

#[async_trait::async_trait]
impl ChangeRecorder for ChangeAuditor {
    async fn record(&self, tx: &mut Tx, change: &Change<'_>) -> Result<(), CoreError> {
        let scope = match change.by {
            ChangeBy::Tenant(ctx) => Scope::Tenant(ctx),
            ChangeBy::Platform(p) => Scope::Platform(p),
        };
        let event = AuditEvent::new(
            change.action,
            Target {
                kind: change.target_kind.to_owned(),
                id: change.target_id.clone(),
            },
        )
        .details(change.details.clone());
        append_in(tx, scope, vec![event])
            .await
            .map(|_| ())
            .map_err(|e| match e {
                crate::AuditError::Core(c) => c,
                other => CoreError::Internal(format!("audit append failed: {other}")),
            })
    }
}
