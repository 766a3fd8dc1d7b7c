//! Who may manage an organization's members: the [`MemberAuthority`] hook
//! every administrative flow asks (the catalogue action it performs, and
//! each role it hands out), and the built-in owner/admin rule that applies
//! without one. An authorization layer (the reference server installs one
//! over saas-policy's Authorizer) thereby decides for custom roles too, while
//! saas-auth depends on no such layer.

use std::sync::Arc;

use saas_core::{Principal, WorkspaceId};

use crate::error::AuthError;
use crate::roles;
use crate::service::{Auth, Authenticated, ClientMeta};

/// Where an action is performed or a role granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The caller's organization; a role granted here is an organization role.
    Org,
    /// A workspace of the caller's organization (and what is nested under
    /// it); a role granted here is a workspace role.
    Workspace(WorkspaceId),
}

/// Decides whether a caller may perform an administrative identity action,
/// and whether they may grant a role. Install one with
/// [`Auth::with_member_authority`]. Without one, identity uses its built-in
/// rule: only an organization owner or admin ([`roles::can_manage_members`])
/// manages members, nobody grants an organization role above their own
/// ([`roles::may_grant`]), and a platform operator acting in a tenant counts
/// as an owner.
///
/// Rules that are identity's own hold whatever the authority says: the last
/// active owner cannot be demoted, disabled or removed, and role changes,
/// keys, services and settings need a recent MFA. The crate README lists the
/// action and grants each flow asks about.
///
/// Refusals are [`AuthError::Denied`] (or [`AuthError::Forbidden`]); an
/// authority that cannot decide returns the error that stopped it, and the
/// flow fails without changing anything.
///
/// ```
/// use saas_auth::{Auth, AuthError, Authenticated, ClientMeta, MemberAuthority, Scope};
///
/// /// Lets anyone invite members; refuses every other action and every grant
/// /// but `member`.
/// #[derive(Debug)]
/// struct OpenInvitations;
///
/// #[async_trait::async_trait]
/// impl MemberAuthority for OpenInvitations {
///     async fn require(
///         &self,
///         _who: &Authenticated,
///         _meta: &ClientMeta,
///         action: &str,
///         _scope: Scope,
///     ) -> Result<(), AuthError> {
///         if action == "users.invite" {
///             Ok(())
///         } else {
///             Err(AuthError::Denied {
///                 action: Some(action.to_owned()),
///                 message: format!("{action} is not allowed here"),
///             })
///         }
///     }
///
///     async fn require_grant(
///         &self,
///         _who: &Authenticated,
///         _meta: &ClientMeta,
///         role: &str,
///         scope: Scope,
///     ) -> Result<(), AuthError> {
///         if role == "member" && scope == Scope::Org {
///             Ok(())
///         } else {
///             Err(AuthError::Denied {
///                 action: None,
///                 message: format!("you cannot grant role {role}"),
///             })
///         }
///     }
/// }
///
/// fn install(auth: Auth) -> Auth {
///     auth.with_member_authority(std::sync::Arc::new(OpenInvitations))
/// }
/// # let _ = install;
/// ```
#[async_trait::async_trait]
pub trait MemberAuthority: Send + Sync {
    /// Refuses unless `who` may perform `action` (a catalogue action name
    /// such as `users.invite`) on `scope` of their organization. `meta` is the
    /// request's client metadata, for policies on the client address.
    async fn require(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
        action: &str,
        scope: Scope,
    ) -> Result<(), AuthError>;

    /// Refuses unless `who` may grant `role` on `scope` (an organization role
    /// on [`Scope::Org`], a workspace role on a workspace), or change or
    /// remove a member who holds it there: a caller never grants what they
    /// do not hold.
    async fn require_grant(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
        role: &str,
        scope: Scope,
    ) -> Result<(), AuthError>;
}

const NOT_A_MANAGER: &str = "only an organization owner or admin may do this";

impl Auth {
    /// This handle with `authority` deciding who manages members. Handles
    /// cloned from this one share it; clones taken before keep what they had.
    #[must_use]
    pub fn with_member_authority(mut self, authority: Arc<dyn MemberAuthority>) -> Self {
        self.authority = Some(authority);
        self
    }

    /// This handle with the built-in owner/admin rule instead of an
    /// installed authority: for a caller authorized by other means, such as a
    /// platform operator provisioning an organization's first owner.
    #[must_use]
    pub fn without_member_authority(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            authority: None,
        }
    }

    /// Refuses unless the caller may perform `action` on `scope`.
    pub(crate) async fn require_action(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
        action: &str,
        scope: Scope,
    ) -> Result<(), AuthError> {
        match &self.authority {
            Some(a) => a.require(who, meta, action, scope).await,
            None => self.manager_role(who).await.map(|_| ()),
        }
    }

    /// Refuses unless the caller may grant `role` on `scope` (or change a
    /// member who holds it). The built-in rule refuses with `refusal` an
    /// organization role above the caller's own; it leaves workspace roles to
    /// any manager, as identity always has.
    pub(crate) async fn require_grant(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
        role: &str,
        scope: Scope,
        refusal: &'static str,
    ) -> Result<(), AuthError> {
        match &self.authority {
            Some(a) => a.require_grant(who, meta, role, scope).await,
            None => {
                let actor = self.manager_role(who).await?;
                match scope {
                    Scope::Org if !roles::may_grant(&actor, role) => {
                        Err(AuthError::Forbidden(refusal))
                    }
                    Scope::Org | Scope::Workspace(_) => Ok(()),
                }
            }
        }
    }

    /// The built-in rule: the caller's organization role, or `Forbidden`
    /// unless they may manage members (owner or admin). Operators acting in
    /// a tenant count as owners.
    async fn manager_role(&self, who: &Authenticated) -> Result<String, AuthError> {
        match who.ctx.principal() {
            Principal::Operator { .. } => Ok("owner".into()),
            Principal::User { id } => {
                let mut tx = self.db().read(&who.ctx).await?;
                let m = self.membership(&mut tx, who.ctx.tenant(), *id).await?;
                tx.commit().await?;
                match m {
                    Some((role, false)) if roles::can_manage_members(&role) => Ok(role),
                    _ => Err(AuthError::Forbidden(NOT_A_MANAGER)),
                }
            }
            _ => Err(AuthError::Forbidden(NOT_A_MANAGER)),
        }
    }
}
