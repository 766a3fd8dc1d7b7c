//! Accounts and memberships.
//!
//! An account is one person, global to the platform; it belongs to several
//! organizations (tenants) through memberships, with a role in each, and to
//! workspaces inside them. Tenant-scoped reads join through the membership,
//! so a tenant never sees an account that is not its member (on PostgreSQL
//! the `auth_users` policy enforces the same).

use chrono::{DateTime, Utc};
use saas_audit::{Outcome, Target};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query, SelectStatement};
use saas_core::{Principal, TenantId, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::authority::Scope;
use crate::error::AuthError;
use crate::roles;
use crate::service::{Auth, Authenticated, ClientMeta, normalize_email};

pub(crate) const USERS: &str = "auth_users";
pub(crate) const MEMBERS: &str = "auth_memberships";
const WS_MEMBERS: &str = "auth_workspace_members";
const SETTINGS: &str = "auth_org_settings";

/// A member of the caller's organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The account.
    pub id: UserId,
    /// Email address.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// Whether TOTP MFA is enabled.
    pub mfa_enabled: bool,
    /// Organization role.
    pub role: String,
    /// Whether the membership is disabled.
    pub disabled: bool,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

/// One organization an account belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    /// The organization.
    pub tenant_id: TenantId,
    /// The role there.
    pub role: String,
}

/// The caller's own account and organizations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Me {
    /// The account as seen in the current organization.
    pub account: Member,
    /// Every organization the account belongs to.
    pub memberships: Vec<Membership>,
}

/// Input for [`Auth::provision_member`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// Email address (a new account).
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Organization role.
    pub role: String,
}

/// Input for [`Auth::update_member`]; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    /// New display name (the user themself, or a caller allowed `users.update`).
    pub display_name: Option<String>,
    /// New organization role (`users.update` and `roles.assign`; needs a recent MFA).
    pub role: Option<String>,
    /// Disable (revokes their sessions here) or re-enable the membership.
    pub disabled: Option<bool>,
}

/// Organization-wide identity settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Members must use MFA: login stops at an MFA step, and members without
    /// MFA must enrol before they get a session.
    pub mfa_required: bool,
    /// Anyone may register an account into this organization (as a member).
    pub open_signup: bool,
}

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceMember {
    /// The account.
    pub user_id: UserId,
    /// The workspace role.
    pub role: String,
}

/// What an account row holds for authentication.
#[derive(Debug, Clone)]
pub(crate) struct AccountRow {
    pub(crate) id: UserId,
    pub(crate) password_hash: Option<String>,
    pub(crate) totp_confirmed: bool,
}

pub(crate) fn validate_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AuthError::validation(
            "display_name",
            "must be 1 to 200 printable characters",
        ));
    }
    Ok(name.to_owned())
}

/// `NotFound` unless `ws` is a workspace of `tx`'s tenant.
pub(crate) async fn require_workspace(tx: &mut Tx, ws: WorkspaceId) -> Result<(), AuthError> {
    saas_core::workspace::get_in(tx, ws)
        .await?
        .map(|_| ())
        .ok_or(AuthError::NotFound {
            entity: "workspace",
        })
}

/// The built-in rule's refusal of a grant above the caller's own role.
pub(crate) const ABOVE_OWN: &str = "you cannot grant a role above your own";

/// The member's role was checked outside the write transaction; a change in
/// between means the check was about another state.
fn unchanged(checked: &str, now: &str) -> Result<(), AuthError> {
    if checked == now {
        Ok(())
    } else {
        Err(changed())
    }
}

fn changed() -> AuthError {
    AuthError::Conflict {
        code: "member_changed",
        message: "the member's role changed meanwhile; retry".into(),
    }
}

fn member_select() -> SelectStatement {
    let mut q = Query::select();
    q.column((USERS, "id"))
        .column((USERS, "email"))
        .column((USERS, "display_name"))
        .column((USERS, "email_verified_at"))
        .column((USERS, "totp_confirmed_at"))
        .column((MEMBERS, "role"))
        .column((MEMBERS, "disabled_at"))
        .column((MEMBERS, "created_at"))
        .from(MEMBERS)
        .inner_join(USERS, Expr::col((USERS, "id")).equals((MEMBERS, "user_id")));
    q
}

fn member_from(row: &saas_core::db::Row) -> Result<Member, AuthError> {
    Ok(Member {
        id: row.get("id")?,
        email: row.get("email")?,
        display_name: row.get("display_name")?,
        email_verified: row
            .get::<Option<DateTime<Utc>>>("email_verified_at")?
            .is_some(),
        mfa_enabled: row
            .get::<Option<DateTime<Utc>>>("totp_confirmed_at")?
            .is_some(),
        role: row.get("role")?,
        disabled: row.get::<Option<DateTime<Utc>>>("disabled_at")?.is_some(),
        joined_at: row.get("created_at")?,
    })
}

impl Auth {
    /// Looks an account up by email (platform transaction).
    pub(crate) async fn account_by_email(
        &self,
        tx: &mut Tx,
        email: &str,
    ) -> Result<Option<AccountRow>, AuthError> {
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["id", "email", "password_hash", "totp_confirmed_at"])
                    .from(USERS)
                    .and_where(Expr::col("email").eq(email)),
            )
            .await?;
        row.map(|r| {
            Ok(AccountRow {
                id: r.get("id")?,
                password_hash: r.get("password_hash")?,
                totp_confirmed: r
                    .get::<Option<DateTime<Utc>>>("totp_confirmed_at")?
                    .is_some(),
            })
        })
        .transpose()
    }

    /// Inserts an account (platform transaction).
    pub(crate) async fn insert_account(
        &self,
        tx: &mut Tx,
        email: &str,
        display_name: &str,
        password_hash: Option<String>,
        verified: bool,
    ) -> Result<UserId, AuthError> {
        let id = UserId::new();
        let now = tx.now();
        let res = tx
            .execute(
                Query::insert()
                    .into_table(USERS)
                    .columns([
                        "id",
                        "email",
                        "display_name",
                        "password_hash",
                        "password_changed_at",
                        "email_verified_at",
                        "created_at",
                        "updated_at",
                    ])
                    .values([
                        id.into(),
                        email.into(),
                        display_name.into(),
                        password_hash.clone().into(),
                        password_hash.map(|_| now).into(),
                        verified.then_some(now).into(),
                        now.into(),
                        now.into(),
                    ])
                    .map_err(|e| AuthError::Crypto(e.to_string()))?,
            )
            .await;
        match res {
            Ok(_) => Ok(id),
            Err(e) if saas_core::db::is_unique_violation(&e) => Err(AuthError::Conflict {
                code: "account_exists",
                message: "an account with this email exists; invite it instead".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The membership of `user` in `tx`'s tenant: role and whether disabled.
    pub(crate) async fn membership(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<(String, bool)>, AuthError> {
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["role", "disabled_at"])
                    .from(MEMBERS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("user_id").eq(user)),
            )
            .await?;
        row.map(|r| {
            Ok((
                r.get("role")?,
                r.get::<Option<DateTime<Utc>>>("disabled_at")?.is_some(),
            ))
        })
        .transpose()
    }

    pub(crate) async fn insert_membership(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        user: UserId,
        role: &str,
    ) -> Result<(), AuthError> {
        // Seats: the tier's max_users, counted under the tenant's row lock.
        let org = saas_core::tenant::lock_in(tx, tenant).await?;
        if let Some(max) = org.limits().max_users {
            let members = tx
                .fetch_all(
                    Query::select()
                        .column("user_id")
                        .from(MEMBERS)
                        .and_where(Expr::col("tenant_id").eq(tenant))
                        .and_where(Expr::col("disabled_at").is_null()),
                )
                .await?
                .len();
            if u64::try_from(members).unwrap_or(u64::MAX) >= max {
                return Err(saas_core::CoreError::LimitExceeded {
                    limit: "max_users",
                    max,
                }
                .into());
            }
        }
        let now = tx.now();
        let res = tx
            .execute(
                Query::insert()
                    .into_table(MEMBERS)
                    .columns(["tenant_id", "user_id", "role", "created_at", "updated_at"])
                    .values([
                        tenant.into(),
                        user.into(),
                        role.into(),
                        now.into(),
                        now.into(),
                    ])
                    .map_err(|e| AuthError::Crypto(e.to_string()))?,
            )
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if saas_core::db::is_unique_violation(&e) => Err(AuthError::Conflict {
                code: "already_member",
                message: "the account is already a member of this organization".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Step-up applies to people; an operator acting in a tenant has no MFA
    /// session here (they proved MFA when they opened their break-glass grant).
    pub fn require_step_up(&self, who: &Authenticated) -> Result<(), AuthError> {
        match who.ctx.principal() {
            Principal::Operator { .. } => Ok(()),
            _ => self.require_recent_mfa(who),
        }
    }

    /// The members of the caller's organization.
    pub async fn list_members(&self, who: &Authenticated) -> Result<Vec<Member>, AuthError> {
        let mut tx = self.db().read(&who.ctx).await?;
        let rows = tx
            .fetch_all(
                member_select()
                    .and_where(Expr::col((MEMBERS, "tenant_id")).eq(who.ctx.tenant()))
                    .order_by((USERS, "email"), Order::Asc),
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(member_from).collect()
    }

    /// One member of the caller's organization.
    pub async fn get_member(&self, who: &Authenticated, id: UserId) -> Result<Member, AuthError> {
        let mut tx = self.db().read(&who.ctx).await?;
        let m = self.member_in(&mut tx, who.ctx.tenant(), id).await?;
        tx.commit().await?;
        Ok(m)
    }

    async fn member_in(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Member, AuthError> {
        let row = tx
            .fetch_optional(
                member_select()
                    .and_where(Expr::col((MEMBERS, "tenant_id")).eq(tenant))
                    .and_where(Expr::col((MEMBERS, "user_id")).eq(id)),
            )
            .await?;
        row.as_ref()
            .map(member_from)
            .transpose()?
            .ok_or(AuthError::NotFound { entity: "user" })
    }

    /// The caller's account and every organization it belongs to.
    pub async fn me(&self, who: &Authenticated) -> Result<Me, AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a signed-in user has an account"))?;
        let account = self.get_member(who, user).await?;
        let mut tx = self.db().begin_platform(&self.inner.accounts).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(["tenant_id", "role"])
                    .from(MEMBERS)
                    .and_where(Expr::col("user_id").eq(user))
                    .and_where(Expr::col("disabled_at").is_null())
                    .order_by("created_at", Order::Asc),
            )
            .await?;
        tx.commit().await?;
        let memberships = rows
            .iter()
            .map(|r| {
                Ok(Membership {
                    tenant_id: r.get("tenant_id")?,
                    role: r.get("role")?,
                })
            })
            .collect::<Result<_, AuthError>>()?;
        Ok(Me {
            account,
            memberships,
        })
    }

    /// Creates a new account as a member of the caller's organization
    /// (`users.invite`, and standing for its role) and mails it a link to set
    /// its password. An existing account is refused (`account_exists`):
    /// invite it, so that its owner consents.
    pub async fn provision_member(
        &self,
        who: &Authenticated,
        new: NewMember,
        meta: &ClientMeta,
    ) -> Result<Member, AuthError> {
        self.require_action(who, meta, "users.invite", Scope::Org)
            .await?;
        if !roles::is_org_role(&new.role) {
            return Err(AuthError::validation("role", "not an organization role"));
        }
        self.require_grant(who, meta, &new.role, Scope::Org, ABOVE_OWN)
            .await?;
        let email = normalize_email(&new.email)?;
        let name = validate_name(&new.display_name)?;
        // The account, and its password-setting link, are account-level rows.
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let id = self
            .insert_account(&mut ptx, &email, &name, None, false)
            .await?;
        let link = self
            .issue_account_token(
                &mut ptx,
                id,
                crate::tokens::Purpose::PasswordReset,
                self.inner.config.invitation_ttl,
            )
            .await?;
        ptx.commit().await?;
        let mut tx = self.db().begin(&who.ctx).await?;
        self.insert_membership(&mut tx, who.ctx.tenant(), id, &new.role)
            .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.member.provision",
            Target::new("user", id),
            Outcome::Success,
            serde_json::json!({"role": new.role}),
            who.user(),
            Some(meta),
        )
        .await?;
        let url = format!(
            "{}/reset-password?token={}",
            self.inner.config.public_url,
            link.expose()
        );
        self.enqueue_mail(
            &mut tx,
            &email,
            "Your new account",
            &format!("An account was created for you. Set your password here (valid for {} days):\n\n{url}\n", self.inner.config.invitation_ttl.num_days()),
        )
        .await?;
        let m = self.member_in(&mut tx, who.ctx.tenant(), id).await?;
        tx.commit().await?;
        Ok(m)
    }

    /// Changes a member's name, role or status. Anything but renaming oneself
    /// needs `users.update`; role changes also need `roles.assign` and a
    /// recent MFA; a role change or a change of status needs standing for the
    /// member's current role, and a role change for the role granted (see
    /// [`MemberAuthority`](crate::MemberAuthority)); the last active owner
    /// cannot be demoted or disabled.
    pub async fn update_member(
        &self,
        who: &Authenticated,
        id: UserId,
        patch: MemberPatch,
        meta: &ClientMeta,
    ) -> Result<Member, AuthError> {
        let is_self = who.user() == Some(id);
        if patch.role.is_some() || patch.disabled.is_some() || !is_self {
            self.require_action(who, meta, "users.update", Scope::Org)
                .await?;
        }
        if patch.role.is_some() {
            self.require_action(who, meta, "roles.assign", Scope::Org)
                .await?;
            self.require_step_up(who)?;
        }
        let name = patch
            .display_name
            .as_deref()
            .map(validate_name)
            .transpose()?;
        // Standing for the role granted and for the member's current role
        // (a role change takes it away, disabling suspends it), decided
        // before the write transaction (an authority may read and audit).
        let checked = if patch.role.is_some() || patch.disabled.is_some() {
            if let Some(role) = &patch.role {
                if !roles::is_org_role(role) {
                    return Err(AuthError::validation("role", "not an organization role"));
                }
                self.require_grant(who, meta, role, Scope::Org, ABOVE_OWN)
                    .await?;
            }
            let before = self.get_member(who, id).await?;
            let refusal = if patch.role.is_some() {
                ABOVE_OWN
            } else {
                "you cannot change the status of a member above your own role"
            };
            self.require_grant(who, meta, &before.role, Scope::Org, refusal)
                .await?;
            Some(before.role)
        } else {
            None
        };
        let mut tx = self.db().begin(&who.ctx).await?;
        let tenant = who.ctx.tenant();
        let current = self.member_in(&mut tx, tenant, id).await?;
        if let Some(checked) = &checked {
            unchanged(checked, &current.role)?;
        }
        let demotes_owner = current.role == "owner"
            && (patch.role.as_deref().is_some_and(|r| r != "owner")
                || patch.disabled == Some(true));
        if demotes_owner && self.active_owners(&mut tx, tenant).await? <= 1 {
            return Err(AuthError::Conflict {
                code: "last_owner",
                message: "an organization keeps at least one active owner".into(),
            });
        }
        let now = tx.now();
        let mut inval = Vec::new();
        if let Some(name) = &name {
            tx.execute(
                Query::update()
                    .table(USERS)
                    .value("display_name", name.clone())
                    .value("updated_at", now)
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?;
        }
        if let Some(role) = &patch.role {
            tx.execute(
                Query::update()
                    .table(MEMBERS)
                    .value("role", role.clone())
                    .value("updated_at", now)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("user_id").eq(id)),
            )
            .await?;
            self.audit(
                &mut tx,
                &who.ctx,
                "auth.member.role_change",
                Target::new("user", id),
                Outcome::Success,
                serde_json::json!({"from": current.role, "to": role}),
                who.user(),
                Some(meta),
            )
            .await?;
        }
        if let Some(disabled) = patch.disabled {
            tx.execute(
                Query::update()
                    .table(MEMBERS)
                    .value("disabled_at", disabled.then_some(now))
                    .value("updated_at", now)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("user_id").eq(id)),
            )
            .await?;
            if disabled {
                inval = self
                    .revoke_user_sessions_in(&mut tx, tenant, id, "membership disabled")
                    .await?;
            }
            self.audit(
                &mut tx,
                &who.ctx,
                if disabled {
                    "auth.member.disable"
                } else {
                    "auth.member.enable"
                },
                Target::new("user", id),
                Outcome::Success,
                serde_json::json!({}),
                who.user(),
                Some(meta),
            )
            .await?;
        }
        let m = self.member_in(&mut tx, tenant, id).await?;
        tx.commit().await?;
        self.invalidate(&inval);
        Ok(m)
    }

    async fn active_owners(&self, tx: &mut Tx, tenant: TenantId) -> Result<usize, AuthError> {
        let rows = tx
            .fetch_all(
                Query::select()
                    .column("user_id")
                    .from(MEMBERS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("role").eq("owner"))
                    .and_where(Expr::col("disabled_at").is_null()),
            )
            .await?;
        Ok(rows.len())
    }

    /// Removes a member from the organization (`users.remove`, and standing
    /// for their role); their sessions here end, and the account stays for
    /// their other organizations.
    pub async fn remove_member(
        &self,
        who: &Authenticated,
        id: UserId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.require_action(who, meta, "users.remove", Scope::Org)
            .await?;
        let before = self.get_member(who, id).await?;
        self.require_grant(
            who,
            meta,
            &before.role,
            Scope::Org,
            "you cannot remove a member above your own role",
        )
        .await?;
        let mut tx = self.db().begin(&who.ctx).await?;
        let tenant = who.ctx.tenant();
        let current = self.member_in(&mut tx, tenant, id).await?;
        unchanged(&before.role, &current.role)?;
        if current.role == "owner" && self.active_owners(&mut tx, tenant).await? <= 1 {
            return Err(AuthError::Conflict {
                code: "last_owner",
                message: "an organization keeps at least one active owner".into(),
            });
        }
        let inval = self
            .revoke_user_sessions_in(&mut tx, tenant, id, "membership removed")
            .await?;
        tx.execute(
            Query::delete()
                .from_table(MEMBERS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("user_id").eq(id)),
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.member.remove",
            Target::new("user", id),
            Outcome::Success,
            serde_json::json!({"role": current.role}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(&inval);
        Ok(())
    }

    /// The organization's identity settings.
    pub async fn org_settings(&self, who: &Authenticated) -> Result<OrgSettings, AuthError> {
        let mut tx = self.db().read(&who.ctx).await?;
        let s = self.settings_in(&mut tx, who.ctx.tenant()).await?;
        tx.commit().await?;
        Ok(s)
    }

    pub(crate) async fn settings_in(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
    ) -> Result<OrgSettings, AuthError> {
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["mfa_required", "open_signup"])
                    .from(SETTINGS)
                    .and_where(Expr::col("tenant_id").eq(tenant)),
            )
            .await?;
        Ok(match row {
            Some(r) => OrgSettings {
                mfa_required: r.get("mfa_required")?,
                open_signup: r.get("open_signup")?,
            },
            None => OrgSettings::default(),
        })
    }

    /// Replaces the organization's identity settings (`settings.write`,
    /// recent MFA).
    pub async fn set_org_settings(
        &self,
        who: &Authenticated,
        settings: OrgSettings,
        meta: &ClientMeta,
    ) -> Result<OrgSettings, AuthError> {
        self.require_action(who, meta, "settings.write", Scope::Org)
            .await?;
        self.require_step_up(who)?;
        let mut tx = self.db().begin(&who.ctx).await?;
        let tenant = who.ctx.tenant();
        let now = tx.now();
        tx.execute(
            Query::delete()
                .from_table(SETTINGS)
                .and_where(Expr::col("tenant_id").eq(tenant)),
        )
        .await?;
        tx.execute(
            Query::insert()
                .into_table(SETTINGS)
                .columns(["tenant_id", "mfa_required", "open_signup", "updated_at"])
                .values([
                    tenant.into(),
                    settings.mfa_required.into(),
                    settings.open_signup.into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.settings.update",
            Target::kind("org_settings"),
            Outcome::Success,
            serde_json::json!({"mfa_required": settings.mfa_required, "open_signup": settings.open_signup}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(settings)
    }

    /// Sets a member's role in a workspace (`roles.assign` there, recent
    /// MFA, standing for the role given and for the one it replaces).
    pub async fn set_workspace_role(
        &self,
        who: &Authenticated,
        workspace: WorkspaceId,
        user: UserId,
        role: &str,
        meta: &ClientMeta,
    ) -> Result<WorkspaceMember, AuthError> {
        let scope = Scope::Workspace(workspace);
        self.require_action(who, meta, "roles.assign", scope)
            .await?;
        self.require_step_up(who)?;
        if !roles::is_workspace_role(role) {
            return Err(AuthError::validation("role", "not a workspace role"));
        }
        let before = self.workspace_role(who, workspace, user).await?;
        self.require_grant(who, meta, role, scope, ABOVE_OWN)
            .await?;
        if let Some(before) = &before {
            self.require_grant(who, meta, before, scope, ABOVE_OWN)
                .await?;
        }
        let mut tx = self.db().begin(&who.ctx).await?;
        let tenant = who.ctx.tenant();
        self.member_in(&mut tx, tenant, user).await?;
        require_workspace(&mut tx, workspace).await?;
        if self
            .workspace_role_in(&mut tx, tenant, workspace, user)
            .await?
            != before
        {
            return Err(changed());
        }
        tx.execute(
            Query::delete()
                .from_table(WS_MEMBERS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("workspace_id").eq(workspace))
                .and_where(Expr::col("user_id").eq(user)),
        )
        .await?;
        let now = tx.now();
        tx.execute(
            Query::insert()
                .into_table(WS_MEMBERS)
                .columns(["tenant_id", "workspace_id", "user_id", "role", "created_at"])
                .values([
                    tenant.into(),
                    workspace.into(),
                    user.into(),
                    role.into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.workspace_member.set_role",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({"workspace_id": workspace, "role": role}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(WorkspaceMember {
            user_id: user,
            role: role.to_owned(),
        })
    }

    /// Removes a member from a workspace (`roles.assign` there, and
    /// standing for the role they lose).
    pub async fn remove_workspace_member(
        &self,
        who: &Authenticated,
        workspace: WorkspaceId,
        user: UserId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let scope = Scope::Workspace(workspace);
        self.require_action(who, meta, "roles.assign", scope)
            .await?;
        let not_found = AuthError::NotFound {
            entity: "workspace member",
        };
        let role = self
            .workspace_role(who, workspace, user)
            .await?
            .ok_or(not_found)?;
        self.require_grant(
            who,
            meta,
            &role,
            scope,
            "you cannot remove a member above your own role",
        )
        .await?;
        let mut tx = self.db().begin(&who.ctx).await?;
        // Only the role that was checked is removed.
        let n = tx
            .execute(
                Query::delete()
                    .from_table(WS_MEMBERS)
                    .and_where(Expr::col("tenant_id").eq(who.ctx.tenant()))
                    .and_where(Expr::col("workspace_id").eq(workspace))
                    .and_where(Expr::col("user_id").eq(user))
                    .and_where(Expr::col("role").eq(role.as_str())),
            )
            .await?;
        if n == 0 {
            return Err(AuthError::NotFound {
                entity: "workspace member",
            });
        }
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.workspace_member.remove",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({"workspace_id": workspace}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The role `user` holds in `workspace`, if any (a read transaction).
    async fn workspace_role(
        &self,
        who: &Authenticated,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<Option<String>, AuthError> {
        let mut tx = self.db().read(&who.ctx).await?;
        let role = self
            .workspace_role_in(&mut tx, who.ctx.tenant(), workspace, user)
            .await?;
        tx.commit().await?;
        Ok(role)
    }

    async fn workspace_role_in(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        workspace: WorkspaceId,
        user: UserId,
    ) -> Result<Option<String>, AuthError> {
        let row = tx
            .fetch_optional(
                Query::select()
                    .column("role")
                    .from(WS_MEMBERS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("workspace_id").eq(workspace))
                    .and_where(Expr::col("user_id").eq(user)),
            )
            .await?;
        row.map(|r| r.get("role")).transpose().map_err(Into::into)
    }

    /// The members of a workspace.
    pub async fn workspace_members(
        &self,
        who: &Authenticated,
        workspace: WorkspaceId,
    ) -> Result<Vec<WorkspaceMember>, AuthError> {
        let mut tx = self.db().read(&who.ctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(["user_id", "role"])
                    .from(WS_MEMBERS)
                    .and_where(Expr::col("tenant_id").eq(who.ctx.tenant()))
                    .and_where(Expr::col("workspace_id").eq(workspace))
                    .order_by("created_at", Order::Asc),
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(WorkspaceMember {
                    user_id: r.get("user_id")?,
                    role: r.get("role")?,
                })
            })
            .collect()
    }
}

/// The roles identity holds for a principal in its tenant, for an
/// authorization layer (saas-policy's `GrantSource`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleGrants {
    /// Organization roles (a member's role; a service identity's roles).
    pub org_roles: Vec<String>,
    /// Workspace roles and where they hold.
    pub workspace_roles: Vec<(WorkspaceId, String)>,
    /// An API key's scopes.
    pub scopes: Option<Vec<String>>,
    /// The workspace an API key is bound to.
    pub workspace: Option<WorkspaceId>,
}

impl Auth {
    /// What `ctx`'s principal holds: nothing for a disabled member or service,
    /// or a revoked or expired key.
    pub async fn role_grants(
        &self,
        ctx: &saas_core::TenantContext,
    ) -> Result<RoleGrants, AuthError> {
        let tenant = ctx.tenant();
        let mut tx = self.db().read(ctx).await?;
        let mut g = RoleGrants::default();
        match ctx.principal() {
            Principal::User { id } => {
                if let Some((role, false)) = self.membership(&mut tx, tenant, *id).await? {
                    g.org_roles.push(role);
                    let rows = tx
                        .fetch_all(
                            Query::select()
                                .columns(["workspace_id", "role"])
                                .from(WS_MEMBERS)
                                .and_where(Expr::col("tenant_id").eq(tenant))
                                .and_where(Expr::col("user_id").eq(*id)),
                        )
                        .await?;
                    for r in rows {
                        g.workspace_roles
                            .push((r.get("workspace_id")?, r.get("role")?));
                    }
                }
            }
            Principal::Service { id } => {
                let row = tx
                    .fetch_optional(
                        Query::select()
                            .column("roles")
                            .from(crate::services::TABLE)
                            .and_where(Expr::col("tenant_id").eq(tenant))
                            .and_where(Expr::col("id").eq(*id))
                            .and_where(Expr::col("disabled_at").is_null()),
                    )
                    .await?;
                if let Some(r) = row {
                    g.org_roles = r.get::<sqlx::types::Json<Vec<String>>>("roles")?.0;
                }
            }
            Principal::ApiKey { id } => {
                let now = tx.now();
                let row = tx
                    .fetch_optional(
                        Query::select()
                            .columns(["scopes", "workspace_id", "expires_at"])
                            .from(crate::api_keys::TABLE)
                            .and_where(Expr::col("tenant_id").eq(tenant))
                            .and_where(Expr::col("id").eq(*id))
                            .and_where(Expr::col("revoked_at").is_null()),
                    )
                    .await?;
                if let Some(r) = row {
                    let expires: Option<DateTime<Utc>> = r.get("expires_at")?;
                    if expires.is_none_or(|e| e > now) {
                        g.scopes = Some(r.get::<sqlx::types::Json<Vec<String>>>("scopes")?.0);
                        g.workspace = r.get("workspace_id")?;
                    }
                }
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(g)
    }
}
