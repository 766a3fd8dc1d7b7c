//! [`Auth`]: the facade over every identity flow, and what authentication
//! yields ([`Authenticated`]).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use saas_audit::{AuditEvent, AuditLog, Outcome, PersonalData, Target};
use saas_core::db::sea_query::{Expr, ExprTrait, Query};
use saas_core::db::{Db, Heard, Tx};
use saas_core::{CorrelationId, PlatformContext, Principal, TenantContext, TenantId, UserId};

use crate::cache::Caches;
use crate::error::AuthError;
use crate::keys::KeyRing;
use crate::password::PasswordPolicy;
use crate::secret::MasterKey;

/// Login throttling: per account and per client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failed logins of one account within `window` before it is locked.
    pub account_failures: i32,
    /// Failed logins from one address within `window` before it is locked.
    pub ip_failures: i32,
    /// The counting window.
    pub window: Duration,
    /// How long a lock lasts (an admin can lift it earlier).
    pub lockout: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_failures: 5,
            ip_failures: 50,
            window: Duration::minutes(15),
            lockout: Duration::minutes(15),
        }
    }
}

/// How identity behaves. `Default` gives production values except for the
/// master key, which must come from configuration.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every access token.
    pub audience: String,
    /// Access-token lifetime (default 10 minutes).
    pub access_ttl: Duration,
    /// Refresh-token and session lifetime (default 30 days).
    pub session_ttl: Duration,
    /// MFA challenge lifetime during login (default 5 minutes).
    pub challenge_ttl: Duration,
    /// How recent an MFA verification must be for a sensitive operation
    /// (default 10 minutes).
    pub step_up_window: Duration,
    /// Invitation lifetime (default 7 days).
    pub invitation_ttl: Duration,
    /// Password-reset link lifetime (default 1 hour).
    pub reset_ttl: Duration,
    /// Email-verification link lifetime (default 2 days).
    pub verification_ttl: Duration,
    /// Password length and argon2id cost.
    pub password: PasswordPolicy,
    /// Failed-login throttling.
    pub throttle: ThrottlePolicy,
    /// Issuer shown in authenticator apps.
    pub totp_issuer: String,
    /// Base URL put into links in mail, e.g. `https://app.example.com`.
    pub public_url: String,
    /// Encrypts signing keys and TOTP seeds at rest.
    pub master_key: MasterKey,
}

impl AuthConfig {
    /// Defaults around a master key.
    #[must_use]
    pub fn new(master_key: MasterKey) -> Self {
        Self {
            issuer: "saas".into(),
            audience: "saas-api".into(),
            access_ttl: Duration::minutes(10),
            session_ttl: Duration::days(30),
            challenge_ttl: Duration::minutes(5),
            step_up_window: Duration::minutes(10),
            invitation_ttl: Duration::days(7),
            reset_ttl: Duration::hours(1),
            verification_ttl: Duration::days(2),
            password: PasswordPolicy::default(),
            throttle: ThrottlePolicy::default(),
            totp_issuer: "SaaS".into(),
            public_url: "http://localhost:8080".into(),
            master_key,
        }
    }
}

/// Where a request came from, recorded on sessions and in audit events (as
/// personal data, encrypted under the subject's key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMeta {
    /// Client IP address.
    pub ip: Option<String>,
    /// User agent (truncated to 256 characters).
    pub user_agent: Option<String>,
}

/// What authentication proves about a caller: the [`TenantContext`] every
/// repository needs, plus how strongly the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Tenant, principal and correlation id.
    pub ctx: TenantContext,
    /// The session, for a signed-in user.
    pub session: Option<uuid::Uuid>,
    /// Authentication methods (`pwd`, `otp`, `api_key`, `client_secret`).
    pub amr: Vec<String>,
    /// When MFA was last verified in this session.
    pub mfa_at: Option<DateTime<Utc>>,
    /// API-key scopes (`None` for users and services).
    pub scopes: Option<Vec<String>>,
}

impl Authenticated {
    /// A caller authenticated by other means (a platform operator acting in a
    /// tenant, say), with no session and no MFA.
    #[must_use]
    pub fn external(ctx: TenantContext, method: &str) -> Self {
        Self {
            ctx,
            session: None,
            amr: vec![method.to_owned()],
            mfa_at: None,
            scopes: None,
        }
    }

    /// The acting user, if a user acts.
    #[must_use]
    pub fn user(&self) -> Option<UserId> {
        self.ctx.principal().user_id()
    }
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) audit: AuditLog,
    pub(crate) keys: KeyRing,
    pub(crate) config: AuthConfig,
    pub(crate) caches: Caches,
    pub(crate) dummy_hash: String,
    pub(crate) accounts: PlatformContext,
}

/// Identity: every flow of accounts, sessions, MFA, keys and services.
/// Cheap to clone.
///
/// ```no_run
/// # async fn f(db: saas_core::db::Db, audit: saas_audit::AuditLog) -> Result<(), saas_auth::AuthError> {
/// use saas_auth::{Auth, AuthConfig, MasterKey};
/// let auth = Auth::new(db, audit, AuthConfig::new(MasterKey::random())).await?;
/// let jwks = auth.jwks()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Auth {
    pub(crate) inner: Arc<Inner>,
    /// Who decides member management; `None` is the built-in owner/admin rule.
    /// Held by the handle, not by `inner`, so that an authority which itself
    /// holds an earlier clone of this `Auth` (as saas-policy's grant source
    /// does) makes no reference cycle.
    pub(crate) authority: Option<Arc<dyn crate::authority::MemberAuthority>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("issuer", &self.inner.config.issuer)
            .field("member_authority", &self.authority.is_some())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the signing keys (creating the first) and prepares the caches.
    pub async fn new(db: Db, audit: AuditLog, config: AuthConfig) -> Result<Self, AuthError> {
        let keys = KeyRing::load(
            db.clone(),
            config.master_key.clone(),
            config.issuer.clone(),
            config.audience.clone(),
        )
        .await?;
        let policy = config.password.clone();
        let dummy_hash =
            tokio::task::spawn_blocking(move || policy.hash("dummy password for timing"))
                .await
                .map_err(|e| AuthError::Crypto(e.to_string()))??;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                audit,
                keys,
                config,
                caches: Caches::new(),
                dummy_hash,
                accounts: PlatformContext::system("account authentication"),
            }),
            authority: None,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The signing keys.
    #[must_use]
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// The public signing keys as a JWKS document.
    pub fn jwks(&self) -> Result<serde_json::Value, AuthError> {
        self.inner.keys.jwks()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.db.clock().now()
    }

    /// The context of a request that has not authenticated yet (login,
    /// refresh, invitation acceptance): the tenant is known, nobody is.
    pub(crate) fn anonymous(tenant: TenantId, cid: &CorrelationId) -> TenantContext {
        TenantContext::from_authentication(
            tenant,
            Principal::System {
                reason: "unauthenticated request".into(),
            },
            cid.clone(),
        )
    }

    pub(crate) fn user_ctx(tenant: TenantId, user: UserId, cid: &CorrelationId) -> TenantContext {
        TenantContext::from_authentication(tenant, Principal::User { id: user }, cid.clone())
    }

    /// Appends an audit event to `ctx`'s chain inside `tx`. `subject` owns the
    /// client metadata, which is stored encrypted under their key.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site shape for every audited action"
    )]
    pub(crate) async fn audit(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        action: &str,
        target: Target,
        outcome: Outcome,
        details: serde_json::Value,
        subject: Option<UserId>,
        meta: Option<&ClientMeta>,
    ) -> Result<(), AuthError> {
        let event = audit_event(action, target, outcome, details, subject, meta);
        self.inner.audit.append(tx, ctx, event).await?;
        Ok(())
    }

    /// Like [`Auth::audit`], in a transaction of its own (saas-audit's
    /// `record`), for an action that wrote nothing in the tenant (a refused
    /// login) or whose writes were account-level.
    #[expect(clippy::too_many_arguments, reason = "the same shape as `audit`")]
    pub(crate) async fn audit_alone(
        &self,
        ctx: &TenantContext,
        action: &str,
        target: Target,
        outcome: Outcome,
        details: serde_json::Value,
        subject: Option<UserId>,
        meta: Option<&ClientMeta>,
    ) -> Result<(), AuthError> {
        let event = audit_event(action, target, outcome, details, subject, meta);
        self.inner.audit.record(ctx, event).await?;
        Ok(())
    }

    /// A manager (allowed `row.requires`) ends a tenant row (revokes a key or
    /// an invitation, disables a service identity): stamps `row.column` where
    /// it is still empty, audits it, and drops the cached entry on every
    /// replica.
    pub(crate) async fn end_row(
        &self,
        who: &Authenticated,
        row: &EndRow,
        id: uuid::Uuid,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.require_action(who, meta, row.requires, crate::authority::Scope::Org)
            .await?;
        let mut tx = self.db().begin(&who.ctx).await?;
        let now = tx.now();
        let mut q = Query::update();
        q.table(row.table)
            .value(row.column, now)
            .and_where(Expr::col("tenant_id").eq(who.ctx.tenant()))
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col(row.column).is_null());
        if let Some(col) = row.also_null {
            q.and_where(Expr::col(col).is_null());
        }
        if tx.execute(&q).await? == 0 {
            return Err(AuthError::NotFound { entity: row.entity });
        }
        let key = row.cache_kind.map(|kind| format!("{kind}:{id}"));
        if let Some(key) = &key {
            crate::cache::notify(&mut tx, key).await?;
        }
        self.audit(
            &mut tx,
            &who.ctx,
            row.action,
            Target::new(row.target_kind, id),
            Outcome::Success,
            serde_json::json!({}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(key.as_slice());
        Ok(())
    }

    /// Refuses unless MFA was verified within the step-up window.
    pub fn require_recent_mfa(&self, who: &Authenticated) -> Result<(), AuthError> {
        let fresh = who
            .mfa_at
            .is_some_and(|t| self.now() - t <= self.inner.config.step_up_window);
        if fresh {
            Ok(())
        } else {
            Err(AuthError::StepUpRequired)
        }
    }

    /// Hashes a password on a blocking thread.
    pub(crate) async fn hash_password(&self, password: &str) -> Result<String, AuthError> {
        self.inner.config.password.check(password)?;
        let policy = self.inner.config.password.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || policy.hash(&password))
            .await
            .map_err(|e| AuthError::Crypto(e.to_string()))?
    }

    /// Verifies a password on a blocking thread; `stored = None` verifies
    /// against a dummy hash so that unknown accounts take as long.
    pub(crate) async fn verify_password(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<crate::password::Verified, AuthError> {
        let policy = self.inner.config.password.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.inner.dummy_hash).to_owned();
        let password = password.to_owned();
        let v = tokio::task::spawn_blocking(move || policy.verify(&password, &stored))
            .await
            .map_err(|e| AuthError::Crypto(e.to_string()))?;
        Ok(if known {
            v
        } else {
            crate::password::Verified::NoMatch
        })
    }
}

fn audit_event(
    action: &str,
    target: Target,
    outcome: Outcome,
    details: serde_json::Value,
    subject: Option<UserId>,
    meta: Option<&ClientMeta>,
) -> AuditEvent {
    let mut event = AuditEvent::new(action, target)
        .outcome(outcome)
        .details(details);
    if let (Some(subject), Some(meta)) = (subject, meta) {
        let personal = PersonalData {
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            ..PersonalData::default()
        };
        if !personal.is_empty() {
            event = event.personal(Some(subject.as_uuid()), personal);
        }
    }
    event
}

/// What [`Auth::end_row`] ends.
pub(crate) struct EndRow {
    pub(crate) table: &'static str,
    /// The timestamp set, e.g. `revoked_at`; only rows where it is empty match.
    pub(crate) column: &'static str,
    /// Another column that must still be empty (an invitation not yet accepted).
    pub(crate) also_null: Option<&'static str>,
    pub(crate) entity: &'static str,
    /// The catalogue action the caller must be allowed, e.g. `api_keys.revoke`.
    pub(crate) requires: &'static str,
    /// The audit action recorded.
    pub(crate) action: &'static str,
    pub(crate) target_kind: &'static str,
    /// The cache the row's entry lives in (`apikey`, `service`), if any.
    pub(crate) cache_kind: Option<&'static str>,
}

/// Lowercases and checks an email address.
pub(crate) fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    if email.len() > 254 || email.parse::<lettre::Address>().is_err() {
        return Err(AuthError::validation("email", "not a valid email address"));
    }
    Ok(email)
}

pub(crate) fn clip(s: Option<&str>, max: usize) -> Option<String> {
    s.map(|s| s.chars().take(max).collect())
}

impl Auth {
    /// Follows invalidations from other replicas until `stop` turns true
    /// (PostgreSQL; returns at once on SQLite). Spawn it once per process.
    /// After a lost connection every cache is cleared, since messages may
    /// have been missed, and the listener reconnects.
    pub async fn listen(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.inner
            .db
            .listen(crate::cache::CHANNEL, stop, |heard| async move {
                let reload = match heard {
                    // Anything revoked while we were not listening is dropped here.
                    Heard::Reset => {
                        self.inner.caches.clear();
                        false
                    }
                    Heard::Message(m) => self.inner.caches.apply(&m),
                };
                if reload && let Err(e) = self.inner.keys.reload().await {
                    tracing::warn!(error = %e, "signing key reload failed");
                }
            })
            .await;
    }
}
