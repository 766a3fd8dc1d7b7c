//! Single-use, expiring account links: password reset and email verification.
//! Only the SHA-256 of a link's token is stored; using it is one conditional
//! UPDATE, so a link works once even under concurrent clicks.

use chrono::Duration;
use saas_audit::{Outcome, Target};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, Query};
use saas_core::{CorrelationId, TenantId, UserId};

use crate::error::AuthError;
use crate::secret::{self, Secret};
use crate::service::{Auth, ClientMeta, normalize_email};

const TABLE: &str = "auth_account_tokens";

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    PasswordReset,
    VerifyEmail,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::VerifyEmail => "verify_email",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Self::PasswordReset => "rst_",
            Self::VerifyEmail => "evt_",
        }
    }
}

impl Auth {
    /// Issues a link token (platform transaction).
    pub(crate) async fn issue_account_token(
        &self,
        tx: &mut Tx,
        user: UserId,
        purpose: Purpose,
        ttl: Duration,
    ) -> Result<Secret, AuthError> {
        let token = secret::token(purpose.prefix());
        let now = tx.now();
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns([
                    "token_hash",
                    "user_id",
                    "purpose",
                    "expires_at",
                    "created_at",
                ])
                .values([
                    secret::hash(&token).into(),
                    user.into(),
                    purpose.as_str().into(),
                    (now + ttl).into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        Ok(Secret::new(token))
    }

    /// Uses a link token once; returns its account.
    async fn consume_account_token(
        &self,
        tx: &mut Tx,
        token: &str,
        purpose: Purpose,
    ) -> Result<UserId, AuthError> {
        if !token.starts_with(purpose.prefix()) || token.len() > 128 {
            return Err(AuthError::InvalidLink);
        }
        let hash = secret::hash(token);
        let now = tx.now();
        let n = tx
            .execute(
                Query::update()
                    .table(TABLE)
                    .value("used_at", now)
                    .and_where(Expr::col("token_hash").eq(hash.clone()))
                    .and_where(Expr::col("purpose").eq(purpose.as_str()))
                    .and_where(Expr::col("used_at").is_null())
                    .and_where(Expr::col("expires_at").gt(now)),
            )
            .await?;
        if n != 1 {
            return Err(AuthError::InvalidLink);
        }
        let row = tx
            .fetch_optional(
                Query::select()
                    .column("user_id")
                    .from(TABLE)
                    .and_where(Expr::col("token_hash").eq(hash)),
            )
            .await?
            .ok_or(AuthError::InvalidLink)?;
        Ok(row.get("user_id")?)
    }

    /// Starts a password reset. Answers the same whether or not the address
    /// belongs to a member of `tenant`; mails a link only if it does.
    pub async fn forgot_password(
        &self,
        tenant: TenantId,
        email: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let Ok(email) = normalize_email(email) else {
            return Ok(());
        };
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let Some(account) = self.account_by_email(&mut ptx, &email).await? else {
            ptx.commit().await?;
            return Ok(());
        };
        let member = self.membership(&mut ptx, tenant, account.id).await?;
        if !matches!(member, Some((_, false))) {
            ptx.commit().await?;
            return Ok(());
        }
        let link = self
            .issue_account_token(
                &mut ptx,
                account.id,
                Purpose::PasswordReset,
                self.inner.config.reset_ttl,
            )
            .await?;
        ptx.commit().await?;
        let ctx = Self::anonymous(tenant, cid);
        let mut tx = self.db().begin(&ctx).await?;
        let url = format!(
            "{}/reset-password?token={}",
            self.inner.config.public_url,
            link.expose()
        );
        self.enqueue_mail(
            &mut tx,
            &email,
            "Reset your password",
            &format!("Someone asked to reset your password. If it was you, follow this link within {} minutes:\n\n{url}\n\nIf not, ignore this message.\n", self.inner.config.reset_ttl.num_minutes()),
        )
        .await?;
        self.audit(
            &mut tx,
            &ctx,
            "auth.password.reset_requested",
            Target::new("user", account.id),
            Outcome::Success,
            serde_json::json!({}),
            Some(account.id),
            Some(meta),
        )
        .await?;
        tx.commit().await.map_err(AuthError::from)
    }

    /// Sets a new password with a reset link: every session of the account
    /// ends, and a login lock on it lifts.
    pub async fn reset_password(
        &self,
        tenant: TenantId,
        token: &str,
        new_password: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let hash = self.hash_password(new_password).await?;
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let user = self
            .consume_account_token(&mut ptx, token, Purpose::PasswordReset)
            .await?;
        let inval = self.set_password_in(&mut ptx, user, hash, true).await?;
        ptx.commit().await?;
        self.invalidate(&inval);
        let ctx = Self::anonymous(tenant, cid);
        self.audit_alone(
            &ctx,
            "auth.password.reset",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({}),
            Some(user),
            Some(meta),
        )
        .await?;
        Ok(())
    }

    /// Marks the address of the link's account as verified.
    pub async fn verify_email(
        &self,
        tenant: TenantId,
        token: &str,
        cid: &CorrelationId,
    ) -> Result<(), AuthError> {
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let user = self
            .consume_account_token(&mut ptx, token, Purpose::VerifyEmail)
            .await?;
        let now = ptx.now();
        ptx.execute(
            Query::update()
                .table(crate::accounts::USERS)
                .value("email_verified_at", now)
                .value("updated_at", now)
                .and_where(Expr::col("id").eq(user)),
        )
        .await?;
        ptx.commit().await?;
        let ctx = Self::anonymous(tenant, cid);
        self.audit_alone(
            &ctx,
            "auth.email.verify",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({}),
            None,
            None,
        )
        .await?;
        Ok(())
    }

    /// Stores a new password hash (platform transaction) and, with
    /// `end_sessions`, revokes every session of the account in every tenant;
    /// returns the cache invalidations to apply after commit.
    pub(crate) async fn set_password_in(
        &self,
        ptx: &mut Tx,
        user: UserId,
        hash: String,
        end_sessions: bool,
    ) -> Result<Vec<String>, AuthError> {
        let now = ptx.now();
        ptx.execute(
            Query::update()
                .table(crate::accounts::USERS)
                .value("password_hash", hash)
                .value("password_changed_at", now)
                .value("updated_at", now)
                .and_where(Expr::col("id").eq(user)),
        )
        .await?;
        let mut inval = Vec::new();
        if end_sessions {
            inval = self
                .revoke_all_user_sessions(ptx, user, "password changed")
                .await?;
            let email: String = ptx
                .fetch_optional(
                    Query::select()
                        .column("email")
                        .from(crate::accounts::USERS)
                        .and_where(Expr::col("id").eq(user)),
                )
                .await?
                .ok_or(AuthError::NotFound { entity: "user" })?
                .get("email")?;
            self.clear_lock(ptx, &email).await?;
        }
        Ok(inval)
    }
}
