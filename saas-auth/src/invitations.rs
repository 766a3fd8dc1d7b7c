//! Invitations to an organization (and optionally a workspace), registration,
//! password change and lock lifting.
//!
//! An invitation is a single-use, expiring link mailed to an address. It is
//! accepted by a new account (which sets its password then) or by an existing
//! one (which proves itself with its password). Accepting is one conditional
//! UPDATE, so a link works once.

use chrono::{DateTime, Utc};
use saas_audit::{Outcome, Target};
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::{CorrelationId, TenantId, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::accounts::require_workspace;
use crate::accounts::{ABOVE_OWN, validate_name};
use crate::authority::Scope;
use crate::error::AuthError;
use crate::roles;
use crate::secret;
use crate::service::{Auth, Authenticated, ClientMeta, EndRow, normalize_email};
use crate::tokens::Purpose;

const TABLE: &str = "auth_invitations";
const PREFIX: &str = "inv_";

/// An invitation as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    /// Id.
    pub id: uuid::Uuid,
    /// Invited address.
    pub email: String,
    /// Organization role on acceptance.
    pub role: String,
    /// Workspace to join as well.
    pub workspace_id: Option<WorkspaceId>,
    /// Expires.
    pub expires_at: DateTime<Utc>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Input for [`Auth::invite`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    /// Address to invite.
    pub email: String,
    /// Organization role on acceptance.
    pub role: String,
    /// Also join this workspace, with `workspace_role`.
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// Role in that workspace (default `product_manager`).
    #[serde(default)]
    pub workspace_role: Option<String>,
}

/// Input for [`Auth::accept_invitation`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    /// The token from the link.
    pub token: String,
    /// The new account's password, or the existing account's.
    pub password: String,
    /// A new account's display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

fn invitation_from(row: &saas_core::db::Row) -> Result<Invitation, AuthError> {
    Ok(Invitation {
        id: row.get("id")?,
        email: row.get("email")?,
        role: row.get("role")?,
        workspace_id: row.get("workspace_id")?,
        expires_at: row.get("expires_at")?,
        accepted_at: row.get("accepted_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

const COLUMNS: [&str; 7] = [
    "id",
    "email",
    "role",
    "workspace_id",
    "expires_at",
    "accepted_at",
    "revoked_at",
];

impl Auth {
    /// Invites an address (`users.invite`; nobody invites into a role, or a
    /// workspace role, they could not grant).
    pub async fn invite(
        &self,
        who: &Authenticated,
        new: NewInvitation,
        meta: &ClientMeta,
    ) -> Result<Invitation, AuthError> {
        self.require_action(who, meta, "users.invite", Scope::Org)
            .await?;
        let email = normalize_email(&new.email)?;
        if !roles::is_org_role(&new.role) {
            return Err(AuthError::validation("role", "not an organization role"));
        }
        self.require_grant(who, meta, &new.role, Scope::Org, ABOVE_OWN)
            .await?;
        let ws_role = match (&new.workspace_id, new.workspace_role.as_deref()) {
            (Some(_), Some(r)) if roles::is_workspace_role(r) => Some(r.to_owned()),
            (Some(_), None) => Some("product_manager".to_owned()),
            (None, None) => None,
            _ => {
                return Err(AuthError::validation(
                    "workspace_role",
                    "not a workspace role, or no workspace_id",
                ));
            }
        };
        if let (Some(ws), Some(r)) = (new.workspace_id, &ws_role) {
            self.require_grant(who, meta, r, Scope::Workspace(ws), ABOVE_OWN)
                .await?;
        }
        let tenant = who.ctx.tenant();
        let mut tx = self.db().begin(&who.ctx).await?;
        if let Some(ws) = new.workspace_id {
            require_workspace(&mut tx, ws).await?;
        }
        let id = uuid::Uuid::now_v7();
        let token = secret::token(PREFIX);
        let now = tx.now();
        let expires = now + self.inner.config.invitation_ttl;
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns([
                    "tenant_id",
                    "id",
                    "email",
                    "role",
                    "workspace_id",
                    "workspace_role",
                    "token_hash",
                    "invited_by",
                    "expires_at",
                    "created_at",
                ])
                .values([
                    tenant.into(),
                    id.into(),
                    email.clone().into(),
                    new.role.clone().into(),
                    new.workspace_id.into(),
                    ws_role.into(),
                    secret::hash(&token).into(),
                    who.user().into(),
                    expires.into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        let url = format!(
            "{}/accept-invitation?tenant={tenant}&token={token}",
            self.inner.config.public_url
        );
        self.enqueue_mail(
            &mut tx,
            &email,
            "You are invited",
            &format!(
                "You have been invited to join an organization. Accept within {} days:\n\n{url}\n",
                self.inner.config.invitation_ttl.num_days()
            ),
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.invitation.create",
            Target::new("invitation", id),
            Outcome::Success,
            serde_json::json!({"role": new.role, "workspace_id": new.workspace_id}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(Invitation {
            id,
            email,
            role: new.role,
            workspace_id: new.workspace_id,
            expires_at: expires,
            accepted_at: None,
            revoked_at: None,
        })
    }

    /// The organization's invitations (`users.invite`: those who may send
    /// and revoke invitations see them; the invitees are not members yet).
    pub async fn list_invitations(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
    ) -> Result<Vec<Invitation>, AuthError> {
        self.require_action(who, meta, "users.invite", Scope::Org)
            .await?;
        let mut tx = self.db().read(&who.ctx).await?;
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns(COLUMNS)
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(who.ctx.tenant()))
                    .order_by("created_at", Order::Desc),
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(invitation_from).collect()
    }

    /// Revokes a pending invitation (`users.invite`).
    pub async fn revoke_invitation(
        &self,
        who: &Authenticated,
        id: uuid::Uuid,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.end_row(
            who,
            &EndRow {
                table: TABLE,
                column: "revoked_at",
                also_null: Some("accepted_at"),
                entity: "invitation",
                requires: "users.invite",
                action: "auth.invitation.revoke",
                target_kind: "invitation",
                cache_kind: None,
            },
            id,
            meta,
        )
        .await
    }

    /// Accepts an invitation of `tenant`: a new account is created with the
    /// given password (its address counts as verified: the link reached it);
    /// an existing account must give its own password. Returns the account.
    pub async fn accept_invitation(
        &self,
        tenant: TenantId,
        accept: AcceptInvitation,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<UserId, AuthError> {
        if !accept.token.starts_with(PREFIX) || accept.token.len() > 128 {
            return Err(AuthError::InvalidLink);
        }
        let hash = secret::hash(&accept.token);
        let ctx = Self::anonymous(tenant, cid);
        let mut tx = self.db().read(&ctx).await?;
        let now = tx.now();
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["email", "accepted_at", "revoked_at", "expires_at"])
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("token_hash").eq(hash.clone())),
            )
            .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Err(AuthError::InvalidLink);
        };
        let email: String = row.get("email")?;
        let live = row.get::<Option<DateTime<Utc>>>("accepted_at")?.is_none()
            && row.get::<Option<DateTime<Utc>>>("revoked_at")?.is_none()
            && row.get::<DateTime<Utc>>("expires_at")? > now;
        if !live {
            return Err(AuthError::InvalidLink);
        }
        // The account: existing (prove it) or new (account-level transaction
        // first; an account without a membership grants nothing).
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let existing = self.account_by_email(&mut ptx, &email).await?;
        ptx.commit().await?;
        let user = match existing {
            Some(a) => {
                let v = self
                    .verify_password(&accept.password, a.password_hash.as_deref())
                    .await?;
                if !v.matched() {
                    return Err(AuthError::InvalidCredentials);
                }
                a.id
            }
            None => {
                let name = validate_name(accept.display_name.as_deref().unwrap_or(""))?;
                let hash = self.hash_password(&accept.password).await?;
                let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
                let id = self
                    .insert_account(&mut ptx, &email, &name, Some(hash), true)
                    .await?;
                ptx.commit().await?;
                id
            }
        };
        let user_ctx = Self::user_ctx(tenant, user, cid);
        let mut tx = self.db().begin(&user_ctx).await?;
        let n = tx
            .execute(
                Query::update()
                    .table(TABLE)
                    .value("accepted_at", now)
                    .value("accepted_by", user)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("token_hash").eq(hash.clone()))
                    .and_where(Expr::col("accepted_at").is_null())
                    .and_where(Expr::col("revoked_at").is_null()),
            )
            .await?;
        if n != 1 {
            return Err(AuthError::InvalidLink);
        }
        let inv = tx
            .fetch_optional(
                Query::select()
                    .columns(["id", "role", "workspace_id", "workspace_role"])
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("token_hash").eq(hash)),
            )
            .await?
            .ok_or(AuthError::InvalidLink)?;
        let role: String = inv.get("role")?;
        let ws_role: Option<String> = inv.get("workspace_role")?;
        let inv_id: uuid::Uuid = inv.get("id")?;
        let workspace: Option<WorkspaceId> = inv.get("workspace_id")?;
        if self.membership(&mut tx, tenant, user).await?.is_none() {
            self.insert_membership(&mut tx, tenant, user, &role).await?;
        }
        if let (Some(ws), Some(ws_role)) = (workspace, ws_role) {
            tx.execute(
                Query::insert()
                    .into_table("auth_workspace_members")
                    .columns(["tenant_id", "workspace_id", "user_id", "role", "created_at"])
                    .values([
                        tenant.into(),
                        ws.into(),
                        user.into(),
                        ws_role.into(),
                        now.into(),
                    ])
                    .map_err(|e| AuthError::Crypto(e.to_string()))?
                    .on_conflict(
                        saas_core::db::sea_query::OnConflict::columns([
                            "tenant_id",
                            "workspace_id",
                            "user_id",
                        ])
                        .do_nothing()
                        .to_owned(),
                    ),
            )
            .await?;
        }
        self.audit(
            &mut tx,
            &user_ctx,
            "auth.invitation.accept",
            Target::new("invitation", inv_id),
            Outcome::Success,
            serde_json::json!({"role": role, "workspace_id": workspace}),
            Some(user),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Self-registration into `tenant`, if the organization allows it. The
    /// answer is the same whether or not the address has an account (an
    /// existing one is mailed a notice instead), so registration does not
    /// reveal who has an account.
    pub async fn register(
        &self,
        tenant: TenantId,
        email: &str,
        password: &str,
        display_name: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let ctx = Self::anonymous(tenant, cid);
        let mut tx = self.db().read(&ctx).await?;
        let settings = self.settings_in(&mut tx, tenant).await?;
        tx.commit().await?;
        if !settings.open_signup {
            return Err(AuthError::Forbidden(
                "this organization does not accept sign-ups; ask for an invitation",
            ));
        }
        let email = normalize_email(email)?;
        let name = validate_name(display_name)?;
        let hash = self.hash_password(password).await?;
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        if self.account_by_email(&mut ptx, &email).await?.is_some() {
            ptx.commit().await?;
            let mut tx = self.db().begin(&ctx).await?;
            self.enqueue_mail(
                &mut tx,
                &email,
                "Sign-up attempt",
                "Someone tried to sign up with this address, which already has an account. If it was you, sign in or reset your password instead.\n",
            )
            .await?;
            tx.commit().await?;
            return Ok(());
        }
        let user = self
            .insert_account(&mut ptx, &email, &name, Some(hash), false)
            .await?;
        let link = self
            .issue_account_token(
                &mut ptx,
                user,
                Purpose::VerifyEmail,
                self.inner.config.verification_ttl,
            )
            .await?;
        ptx.commit().await?;
        let user_ctx = Self::user_ctx(tenant, user, cid);
        let mut tx = self.db().begin(&user_ctx).await?;
        self.insert_membership(&mut tx, tenant, user, "member")
            .await?;
        let url = format!(
            "{}/verify-email?tenant={tenant}&token={}",
            self.inner.config.public_url,
            link.expose()
        );
        self.enqueue_mail(
            &mut tx,
            &email,
            "Verify your email address",
            &format!("Welcome. Confirm your address here:\n\n{url}\n"),
        )
        .await?;
        self.audit(
            &mut tx,
            &user_ctx,
            "auth.register",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({}),
            Some(user),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes the caller's password: the current one is required, and a
    /// recent MFA when the account has MFA. Every session of the account ends
    /// (in every organization), so every old token stops working.
    pub async fn change_password(
        &self,
        who: &Authenticated,
        current: &str,
        new: &str,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a user has a password"))?;
        let me = self.get_member(who, user).await?;
        if me.mfa_enabled {
            self.require_recent_mfa(who)?;
        }
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let account = self
            .account_by_email(&mut ptx, &me.email)
            .await?
            .ok_or(AuthError::NotFound { entity: "user" })?;
        ptx.commit().await?;
        let v = self
            .verify_password(current, account.password_hash.as_deref())
            .await?;
        if !v.matched() {
            return Err(AuthError::InvalidCredentials);
        }
        let hash = self.hash_password(new).await?;
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let inval = self.set_password_in(&mut ptx, user, hash, true).await?;
        ptx.commit().await?;
        self.invalidate(&inval);
        self.audit_alone(
            &who.ctx,
            "auth.password.change",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({}),
            Some(user),
            Some(meta),
        )
        .await?;
        Ok(())
    }

    /// Lifts a member's login lock (`users.unlock`).
    pub async fn unlock_member(
        &self,
        who: &Authenticated,
        user: UserId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.require_action(who, meta, "users.unlock", Scope::Org)
            .await?;
        let member = self.get_member(who, user).await?;
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        self.clear_lock(&mut ptx, &member.email).await?;
        ptx.commit().await?;
        self.audit_alone(
            &who.ctx,
            "auth.member.unlock",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({}),
            who.user(),
            Some(meta),
        )
        .await?;
        Ok(())
    }
}
