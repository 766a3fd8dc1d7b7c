//! The tenant context: who acts, in which tenant, under which correlation id.
//!
//! Every repository method that reads or writes tenant data takes a
//! [`TenantContext`] first. It cannot be built from nothing by accident: it comes
//! from an authentication layer ([`TenantContext::from_authentication`]), from an
//! explicit, reasoned [`TenantContext::system`] call that stands out in review
//! and is carried into every audit event made under it, or from
//! `TenantContext::for_test` behind the `test-support` feature.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{ApiKeyId, OperatorId, ServiceId, TenantId, UserId, WorkspaceId};

/// A request or unit-of-work correlation id, echoed in logs and error bodies.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// The longest correlation id accepted from a caller.
    pub const MAX_LEN: usize = 128;

    /// A fresh random correlation id.
    #[must_use]
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts a caller-supplied id if it is 1..=128 visible ASCII characters;
    /// anything else is refused so that logs cannot be forged through it.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(value.to_owned()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({})", self.0)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Principal {
    /// A signed-in human user.
    User {
        /// The user.
        id: UserId,
    },
    /// An API key presented by a program.
    ApiKey {
        /// The key.
        id: ApiKeyId,
    },
    /// A service identity (non-human principal with its own roles).
    Service {
        /// The service identity.
        id: ServiceId,
    },
    /// A platform operator acting inside a tenant.
    Operator {
        /// The operator credential.
        id: OperatorId,
    },
    /// The system itself, for a stated reason (jobs, migrations, scheduled deletion).
    System {
        /// Why the system acts in this tenant; recorded in the audit trail.
        reason: String,
    },
}

impl Principal {
    /// The acting user, if a human user acts.
    #[must_use]
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::User { id } => Some(*id),
            _ => None,
        }
    }
}

/// The tenant, principal, optional workspace and correlation id of one unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    tenant: TenantId,
    principal: Principal,
    workspace: Option<WorkspaceId>,
    correlation_id: CorrelationId,
}

impl TenantContext {
    /// Built by an authentication layer once it has verified the caller's
    /// credentials for `tenant`. Only authentication code should call this.
    #[must_use]
    pub fn from_authentication(
        tenant: TenantId,
        principal: Principal,
        correlation_id: CorrelationId,
    ) -> Self {
        Self {
            tenant,
            principal,
            workspace: None,
            correlation_id,
        }
    }

    /// The system acting in `tenant` for `reason` (a job, a scheduled purge, a
    /// migration). The reason travels with the context into audit events, and
    /// the call is logged.
    #[must_use]
    pub fn system(tenant: TenantId, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        tracing::info!(tenant = %tenant, reason = %reason, "system context created");
        Self {
            tenant,
            principal: Principal::System { reason },
            workspace: None,
            correlation_id: CorrelationId::generate(),
        }
    }

    /// A context for tests. Only with the `test-support` feature.
    #[cfg(feature = "test-support")]
    #[must_use]
    pub fn for_test(tenant: TenantId, principal: Principal) -> Self {
        Self {
            tenant,
            principal,
            workspace: None,
            correlation_id: CorrelationId::generate(),
        }
    }

    /// The same context narrowed to a workspace.
    #[must_use]
    pub fn with_workspace(mut self, workspace: WorkspaceId) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// The same context with another correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: CorrelationId) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// The tenant every read and write of this unit of work is confined to.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Who acts.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The workspace the request is narrowed to, if any.
    #[must_use]
    pub fn workspace(&self) -> Option<WorkspaceId> {
        self.workspace
    }

    /// The correlation id of this unit of work.
    #[must_use]
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }
}

/// Context for platform-level work that spans tenants: creating, listing,
/// suspending and purging tenants, and claiming jobs. Built only by an
/// operator-authentication layer or an explicit, reasoned `system` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformContext {
    actor: PlatformActor,
    correlation_id: CorrelationId,
}

/// Who acts at the platform level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlatformActor {
    /// An authenticated platform operator.
    Operator {
        /// The operator credential.
        id: OperatorId,
    },
    /// The system, for a stated reason.
    System {
        /// Why.
        reason: String,
    },
}

impl PlatformContext {
    /// Built by the operator-authentication layer once it has verified an operator credential.
    #[must_use]
    pub fn operator(id: OperatorId, correlation_id: CorrelationId) -> Self {
        Self {
            actor: PlatformActor::Operator { id },
            correlation_id,
        }
    }

    /// The system acting across tenants for `reason`; logged.
    #[must_use]
    pub fn system(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        tracing::info!(reason = %reason, "platform system context created");
        Self {
            actor: PlatformActor::System { reason },
            correlation_id: CorrelationId::generate(),
        }
    }

    /// Who acts.
    #[must_use]
    pub fn actor(&self) -> &PlatformActor {
        &self.actor
    }

    /// The correlation id.
    #[must_use]
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }

    /// A context for an operator acting inside one tenant.
    #[must_use]
    pub fn act_in(&self, tenant: TenantId) -> TenantContext {
        let principal = match &self.actor {
            PlatformActor::Operator { id } => Principal::Operator { id: *id },
            PlatformActor::System { reason } => Principal::System {
                reason: reason.clone(),
            },
        };
        TenantContext {
            tenant,
            principal,
            workspace: None,
            correlation_id: self.correlation_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_from_callers_are_bounded_and_printable() {
        assert!(CorrelationId::parse("abc-123").is_some());
        assert!(CorrelationId::parse("").is_none());
        assert!(CorrelationId::parse("has space").is_none());
        assert!(CorrelationId::parse("line\nbreak").is_none());
        assert!(CorrelationId::parse(&"x".repeat(129)).is_none());
    }

    #[test]
    fn system_context_carries_its_reason() {
        let t = TenantId::new();
        let ctx = TenantContext::system(t, "purge");
        assert_eq!(ctx.tenant(), t);
        assert_eq!(
            ctx.principal(),
            &Principal::System {
                reason: "purge".into()
            }
        );
    }
}
