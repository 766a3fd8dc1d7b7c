//! Login, sessions, refresh-token rotation and request authentication.
//!
//! A session is one sign-in on one device: it holds the authentication
//! methods, the time of the last MFA, the device and address. Its refresh
//! token is opaque, stored as SHA-256, and rotated on every use; using one a
//! second time (a stolen copy, or a replay) revokes the whole session. Access
//! tokens are short-lived JWTs naming the session, and every request checks
//! that the session is still live (cached; see [`Auth::listen`](crate::Auth::listen)), so a
//! revocation takes effect on the next request.

use chrono::{DateTime, Utc};
use saas_audit::{Outcome, Target};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::{CorrelationId, Principal, ServiceId, TenantContext, TenantId, UserId};
use serde::Serialize;

use crate::cache::{SessionState, notify};
use crate::error::AuthError;
use crate::keys::Claims;
use crate::password::Verified;
use crate::secret::{self, Secret};
use crate::service::{Auth, Authenticated, ClientMeta, clip, normalize_email};

const SESSIONS: &str = "auth_sessions";
const REFRESH: &str = "auth_refresh_tokens";
const REFRESH_PREFIX: &str = "srt_";

/// Tokens handed to a client after login, MFA or refresh.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    /// The JWT access token (`Debug` never prints it).
    pub access_token: Secret,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    /// The opaque refresh token (rotated on every use).
    pub refresh_token: Secret,
    /// The session.
    pub session_id: uuid::Uuid,
}

/// The result of a password login.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// Signed in.
    Tokens(TokenPair),
    /// The password was right; now an MFA code is needed. `challenge` is a
    /// short-lived token to send with the code (or, when `enrolment_required`,
    /// to enrol first because the organization mandates MFA).
    MfaRequired {
        /// The challenge token.
        challenge: Secret,
        /// The account has no MFA yet and must enrol.
        enrolment_required: bool,
    },
}

/// A session as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Id.
    pub id: uuid::Uuid,
    /// Device (user agent) at sign-in.
    pub device: Option<String>,
    /// Address at sign-in or last refresh.
    pub ip: Option<String>,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Last refreshed (to the minute).
    pub last_seen_at: DateTime<Utc>,
    /// Ends.
    pub expires_at: DateTime<Utc>,
    /// Whether this is the caller's own session.
    pub current: bool,
}

fn amr_vec(amr: &str) -> Vec<String> {
    amr.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Auth {
    /// Signs a user in with email and password in `tenant`. Unknown account,
    /// wrong password, disabled membership and no membership all answer
    /// [`AuthError::InvalidCredentials`] after the same argon2id work.
    pub async fn login(
        &self,
        tenant: TenantId,
        email: &str,
        password: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<LoginOutcome, AuthError> {
        let ctx = Self::anonymous(tenant, cid);
        let email = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
        let ip = meta.ip.as_deref();
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        let throttle = self.throttle_state(&mut ptx, &email, ip).await?;
        if let Some(until) = throttle.locked_until {
            ptx.commit().await?;
            self.audit_login(&ctx, Outcome::Denied, "locked", meta)
                .await?;
            return Err(AuthError::Locked { until });
        }
        let account = self.account_by_email(&mut ptx, &email).await?;
        let member = match &account {
            Some(a) => self.membership(&mut ptx, tenant, a.id).await?,
            None => None,
        };
        ptx.commit().await?;
        let usable = matches!(member, Some((_, false)));
        let stored = account
            .as_ref()
            .filter(|_| usable)
            .and_then(|a| a.password_hash.as_deref());
        let verified = self.verify_password(password, stored).await?;
        let (Some(account), true) = (account, verified.matched()) else {
            let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
            self.record_failure(&mut ptx, &email, ip).await?;
            ptx.commit().await?;
            self.audit_login(&ctx, Outcome::Failure, "invalid_credentials", meta)
                .await?;
            return Err(AuthError::InvalidCredentials);
        };
        // Account-level upkeep, only when there is any.
        let rehash = verified == Verified::MatchNeedsRehash;
        if throttle.account_failures || rehash {
            let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
            self.clear_lock(&mut ptx, &email).await?;
            if rehash {
                let hash = self.hash_password_unchecked(password).await?;
                self.set_password_in(&mut ptx, account.id, hash, false)
                    .await?;
            }
            ptx.commit().await?;
        }
        // One tenant transaction: the MFA decision, or the session and its audit event.
        let user_ctx = Self::user_ctx(tenant, account.id, cid);
        let mut tx = self.db().begin(&user_ctx).await?;
        let settings = self.settings_in(&mut tx, tenant).await?;
        if account.totp_confirmed || settings.mfa_required {
            let now = tx.now();
            let mut claims = self.inner.keys.claims(
                now,
                self.inner.config.challenge_ttl,
                "mfa_challenge",
                account.id.to_string(),
                tenant.as_uuid(),
            );
            claims.amr = vec!["pwd".into()];
            self.audit(
                &mut tx,
                &user_ctx,
                "auth.login",
                Target::new("user", account.id),
                Outcome::Success,
                serde_json::json!({"reason": "mfa_required"}),
                Some(account.id),
                Some(meta),
            )
            .await?;
            tx.commit().await?;
            return Ok(LoginOutcome::MfaRequired {
                challenge: Secret::new(self.inner.keys.sign(&claims)?),
                enrolment_required: !account.totp_confirmed,
            });
        }
        let pair = self
            .session_in(&mut tx, &user_ctx, account.id, &["pwd"], None, meta)
            .await?;
        tx.commit().await?;
        Ok(LoginOutcome::Tokens(pair))
    }

    async fn hash_password_unchecked(&self, password: &str) -> Result<String, AuthError> {
        let policy = self.inner.config.password.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || policy.hash(&password))
            .await
            .map_err(|e| AuthError::Crypto(e.to_string()))?
    }

    async fn audit_login(
        &self,
        ctx: &TenantContext,
        outcome: Outcome,
        reason: &str,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.audit_alone(
            ctx,
            "auth.login",
            Target::kind("user"),
            outcome,
            serde_json::json!({"reason": reason}),
            None,
            Some(meta),
        )
        .await
    }

    /// Checks an MFA challenge from [`Auth::login`]: its user, still a member.
    pub(crate) async fn open_challenge(
        &self,
        tenant: TenantId,
        challenge: &str,
    ) -> Result<UserId, AuthError> {
        let claims = self.inner.keys.verify(challenge, self.now()).await?;
        if claims.typ != "mfa_challenge" {
            return Err(AuthError::InvalidToken("not an MFA challenge"));
        }
        if claims.tid != tenant.as_uuid() {
            return Err(AuthError::InvalidToken("token is for another tenant"));
        }
        claims
            .sub
            .parse::<UserId>()
            .map_err(|_| AuthError::InvalidToken("malformed"))
    }

    /// Completes a login that stopped at the MFA step.
    pub async fn complete_mfa_login(
        &self,
        tenant: TenantId,
        challenge: &str,
        code: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<TokenPair, AuthError> {
        let user = self.open_challenge(tenant, challenge).await?;
        let ctx = Self::user_ctx(tenant, user, cid);
        if !self.check_mfa_code(&ctx, user, code, meta).await? {
            return Err(AuthError::InvalidCode);
        }
        self.start_session(&ctx, user, &["pwd", "otp"], Some(self.now()), meta)
            .await
    }

    /// Opens a session for `user` in `ctx`'s tenant and signs its tokens.
    pub(crate) async fn start_session(
        &self,
        ctx: &TenantContext,
        user: UserId,
        amr: &[&str],
        mfa_at: Option<DateTime<Utc>>,
        meta: &ClientMeta,
    ) -> Result<TokenPair, AuthError> {
        let mut tx = self.db().begin(ctx).await?;
        let pair = self
            .session_in(&mut tx, ctx, user, amr, mfa_at, meta)
            .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// The session rows, their audit event and the tokens, in `tx`.
    async fn session_in(
        &self,
        tx: &mut Tx,
        ctx: &TenantContext,
        user: UserId,
        amr: &[&str],
        mfa_at: Option<DateTime<Utc>>,
        meta: &ClientMeta,
    ) -> Result<TokenPair, AuthError> {
        let tenant = ctx.tenant();
        match self.membership(tx, tenant, user).await? {
            Some((_, false)) => {}
            _ => return Err(AuthError::InvalidCredentials),
        }
        let sid = uuid::Uuid::now_v7();
        let now = tx.now();
        let amr_s = amr.join(" ");
        tx.execute(
            Query::insert()
                .into_table(SESSIONS)
                .columns([
                    "tenant_id",
                    "id",
                    "user_id",
                    "device",
                    "ip",
                    "amr",
                    "mfa_at",
                    "created_at",
                    "last_seen_at",
                    "expires_at",
                ])
                .values([
                    tenant.into(),
                    sid.into(),
                    user.into(),
                    clip(meta.user_agent.as_deref(), 256).into(),
                    clip(meta.ip.as_deref(), 64).into(),
                    amr_s.clone().into(),
                    mfa_at.into(),
                    now.into(),
                    now.into(),
                    (now + self.inner.config.session_ttl).into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        let refresh = self.insert_refresh(tx, tenant, sid, 1).await?;
        self.audit(
            tx,
            ctx,
            "auth.login",
            Target::new("session", sid),
            Outcome::Success,
            serde_json::json!({"amr": amr_s}),
            Some(user),
            Some(meta),
        )
        .await?;
        let access = self.sign_access(tenant, user, sid, &amr_vec(&amr_s), mfa_at)?;
        Ok(TokenPair {
            access_token: Secret::new(access),
            token_type: "Bearer",
            expires_in: self.inner.config.access_ttl.num_seconds(),
            refresh_token: refresh,
            session_id: sid,
        })
    }

    async fn insert_refresh(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        sid: uuid::Uuid,
        generation: i32,
    ) -> Result<Secret, AuthError> {
        let token = secret::token(REFRESH_PREFIX);
        let now = tx.now();
        tx.execute(
            Query::insert()
                .into_table(REFRESH)
                .columns([
                    "tenant_id",
                    "token_hash",
                    "session_id",
                    "generation",
                    "expires_at",
                    "created_at",
                ])
                .values([
                    tenant.into(),
                    secret::hash(&token).into(),
                    sid.into(),
                    generation.into(),
                    (now + self.inner.config.session_ttl).into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        Ok(Secret::new(token))
    }

    pub(crate) fn sign_access(
        &self,
        tenant: TenantId,
        user: UserId,
        sid: uuid::Uuid,
        amr: &[String],
        mfa_at: Option<DateTime<Utc>>,
    ) -> Result<String, AuthError> {
        let mut claims = self.inner.keys.claims(
            self.now(),
            self.inner.config.access_ttl,
            "user",
            user.to_string(),
            tenant.as_uuid(),
        );
        claims.sid = Some(sid);
        claims.amr = amr.to_vec();
        claims.mfa_at = mfa_at.map(|t| t.timestamp());
        self.inner.keys.sign(&claims)
    }

    /// Rotates a refresh token: the old one is spent, a new one and a fresh
    /// access token come back. A spent token presented again revokes the
    /// session ([`AuthError::RefreshReuse`]); of many concurrent uses of one
    /// token exactly one succeeds.
    pub async fn refresh(
        &self,
        tenant: TenantId,
        refresh_token: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<TokenPair, AuthError> {
        if !refresh_token.starts_with(REFRESH_PREFIX) || refresh_token.len() > 128 {
            return Err(AuthError::InvalidToken("malformed"));
        }
        let ctx = Self::anonymous(tenant, cid);
        let hash = secret::hash(refresh_token);
        let mut tx = self.db().begin(&ctx).await?;
        let now = tx.now();
        // Spend the token: one conditional UPDATE, so of concurrent uses
        // exactly one gets the row back.
        let spent = tx
            .fetch_optional(
                Query::update()
                    .table(REFRESH)
                    .value("used_at", now)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("token_hash").eq(hash.clone()))
                    .and_where(Expr::col("used_at").is_null())
                    .and_where(Expr::col("expires_at").gt(now))
                    .returning(Query::returning().columns(["session_id", "generation"])),
            )
            .await?;
        let Some(spent) = spent else {
            return self.refused_refresh(tx, tenant, hash, cid, meta).await;
        };
        let sid: uuid::Uuid = spent.get("session_id")?;
        let generation: i32 = spent.get("generation")?;
        // The session must be live; read what the new access token needs.
        let session = tx
            .fetch_optional(
                Query::select()
                    .columns(["user_id", "amr", "mfa_at", "ip", "last_seen_at"])
                    .from(SESSIONS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(sid))
                    .and_where(Expr::col("revoked_at").is_null())
                    .and_where(Expr::col("expires_at").gt(now)),
            )
            .await?;
        let Some(session) = session else {
            return Err(AuthError::SessionRevoked);
        };
        let user: UserId = session.get("user_id")?;
        let amr = amr_vec(&session.get::<String>("amr")?);
        let mfa_at: Option<DateTime<Utc>> = session.get("mfa_at")?;
        // Last-seen time to the minute, and the address when it moved: a
        // session row is rewritten only then, not on every rotation.
        let ip = clip(meta.ip.as_deref(), 64);
        let seen: DateTime<Utc> = session.get("last_seen_at")?;
        let moved = ip.is_some() && ip != session.get::<Option<String>>("ip")?;
        if moved || now - seen > chrono::Duration::minutes(1) {
            let mut touch = Query::update();
            touch
                .table(SESSIONS)
                .value("last_seen_at", now)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("id").eq(sid));
            if let Some(ip) = ip {
                touch.value("ip", ip);
            }
            tx.execute(&touch).await?;
        }
        let refresh = self
            .insert_refresh(&mut tx, tenant, sid, generation.saturating_add(1))
            .await?;
        tx.commit().await?;
        let access = self.sign_access(tenant, user, sid, &amr, mfa_at)?;
        Ok(TokenPair {
            access_token: Secret::new(access),
            token_type: "Bearer",
            expires_in: self.inner.config.access_ttl.num_seconds(),
            refresh_token: refresh,
            session_id: sid,
        })
    }

    /// A refresh token that could not be spent: unknown, expired, or used
    /// before, in which case its whole session is revoked.
    async fn refused_refresh(
        &self,
        mut tx: Tx,
        tenant: TenantId,
        hash: Vec<u8>,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<TokenPair, AuthError> {
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["session_id", "generation", "used_at"])
                    .from(REFRESH)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("token_hash").eq(hash)),
            )
            .await?;
        let Some(row) = row else {
            return Err(AuthError::InvalidToken("unknown refresh token"));
        };
        if row.get::<Option<DateTime<Utc>>>("used_at")?.is_none() {
            return Err(AuthError::InvalidToken("expired"));
        }
        let sid: uuid::Uuid = row.get("session_id")?;
        let generation: i32 = row.get("generation")?;
        let mut inval = Vec::new();
        if let Some(s) = self.session_row(&mut tx, tenant, sid).await? {
            self.revoke_session_in(&mut tx, tenant, sid, "refresh token reuse", &mut inval)
                .await?;
            self.audit(
                &mut tx,
                &Self::user_ctx(tenant, s.user, cid),
                "auth.refresh.reuse_detected",
                Target::new("session", sid),
                Outcome::Denied,
                serde_json::json!({"generation": generation}),
                Some(s.user),
                Some(meta),
            )
            .await?;
        }
        tx.commit().await?;
        self.invalidate(&inval);
        Err(AuthError::RefreshReuse)
    }

    async fn session_row(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        sid: uuid::Uuid,
    ) -> Result<Option<SessionRow>, AuthError> {
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["user_id", "expires_at", "revoked_at"])
                    .from(SESSIONS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(sid)),
            )
            .await?;
        row.map(|r| {
            Ok(SessionRow {
                user: r.get("user_id")?,
                expires_at: r.get("expires_at")?,
                revoked_at: r.get("revoked_at")?,
            })
        })
        .transpose()
    }

    /// Revokes one session in `tx`; pushes the invalidation to send after commit.
    pub(crate) async fn revoke_session_in(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        sid: uuid::Uuid,
        reason: &str,
        inval: &mut Vec<String>,
    ) -> Result<u64, AuthError> {
        let now = tx.now();
        let n = tx
            .execute(
                Query::update()
                    .table(SESSIONS)
                    .value("revoked_at", now)
                    .value("revoked_reason", reason)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(sid))
                    .and_where(Expr::col("revoked_at").is_null()),
            )
            .await?;
        let key = format!("session:{sid}");
        notify(tx, &key).await?;
        self.inner.caches.apply(&key);
        inval.push(key);
        Ok(n)
    }

    /// Revokes every live session of `user` in `tenant` (tenant transaction).
    pub(crate) async fn revoke_user_sessions_in(
        &self,
        tx: &mut Tx,
        tenant: TenantId,
        user: UserId,
        reason: &str,
    ) -> Result<Vec<String>, AuthError> {
        let rows = tx
            .fetch_all(
                Query::select()
                    .column("id")
                    .from(SESSIONS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("user_id").eq(user))
                    .and_where(Expr::col("revoked_at").is_null()),
            )
            .await?;
        let mut inval = Vec::new();
        for r in rows {
            let sid: uuid::Uuid = r.get("id")?;
            self.revoke_session_in(tx, tenant, sid, reason, &mut inval)
                .await?;
        }
        Ok(inval)
    }

    /// Revokes every live session of `user` in every tenant (platform
    /// transaction); returns the invalidations to apply after commit.
    pub(crate) async fn revoke_all_user_sessions(
        &self,
        ptx: &mut Tx,
        user: UserId,
        reason: &str,
    ) -> Result<Vec<String>, AuthError> {
        let rows = ptx
            .fetch_all(
                Query::select()
                    .columns(["tenant_id", "id"])
                    .from(SESSIONS)
                    .and_where(Expr::col("user_id").eq(user))
                    .and_where(Expr::col("revoked_at").is_null()),
            )
            .await?;
        let mut inval = Vec::new();
        for r in rows {
            let tenant: TenantId = r.get("tenant_id")?;
            let sid: uuid::Uuid = r.get("id")?;
            self.revoke_session_in(ptx, tenant, sid, reason, &mut inval)
                .await?;
        }
        Ok(inval)
    }

    /// Drops cached entries (after the revoking transaction committed).
    pub(crate) fn invalidate(&self, keys: &[String]) {
        for k in keys {
            self.inner.caches.apply(k);
        }
    }

    /// Ends the caller's session.
    pub async fn logout(&self, who: &Authenticated, meta: &ClientMeta) -> Result<(), AuthError> {
        let sid = who
            .session
            .ok_or(AuthError::Forbidden("only a signed-in user has a session"))?;
        self.end_sessions(who, &[sid], "auth.logout", meta).await
    }

    async fn end_sessions(
        &self,
        who: &Authenticated,
        ids: &[uuid::Uuid],
        action: &str,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let tenant = who.ctx.tenant();
        let mut tx = self.db().begin(&who.ctx).await?;
        let mut inval = Vec::new();
        for sid in ids {
            self.revoke_session_in(&mut tx, tenant, *sid, action, &mut inval)
                .await?;
            self.audit(
                &mut tx,
                &who.ctx,
                action,
                Target::new("session", sid),
                Outcome::Success,
                serde_json::json!({}),
                who.user(),
                Some(meta),
            )
            .await?;
        }
        tx.commit().await?;
        self.invalidate(&inval);
        Ok(())
    }

    /// The caller's live sessions in this organization.
    pub async fn sessions(&self, who: &Authenticated) -> Result<Vec<Session>, AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a signed-in user has sessions"))?;
        let mut tx = self.db().read(&who.ctx).await?;
        let now = tx.now();
        let rows = tx
            .fetch_all(
                Query::select()
                    .columns([
                        "id",
                        "device",
                        "ip",
                        "amr",
                        "created_at",
                        "last_seen_at",
                        "expires_at",
                    ])
                    .from(SESSIONS)
                    .and_where(Expr::col("tenant_id").eq(who.ctx.tenant()))
                    .and_where(Expr::col("user_id").eq(user))
                    .and_where(Expr::col("revoked_at").is_null())
                    .and_where(Expr::col("expires_at").gt(now))
                    .order_by("created_at", Order::Desc),
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let id: uuid::Uuid = r.get("id")?;
                Ok(Session {
                    id,
                    device: r.get("device")?,
                    ip: r.get("ip")?,
                    amr: amr_vec(&r.get::<String>("amr")?),
                    created_at: r.get("created_at")?,
                    last_seen_at: r.get("last_seen_at")?,
                    expires_at: r.get("expires_at")?,
                    current: who.session == Some(id),
                })
            })
            .collect()
    }

    /// Revokes one of the caller's own sessions.
    pub async fn revoke_session(
        &self,
        who: &Authenticated,
        id: uuid::Uuid,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let mine = self.sessions(who).await?.iter().any(|s| s.id == id);
        if !mine {
            return Err(AuthError::NotFound { entity: "session" });
        }
        self.end_sessions(who, &[id], "auth.session.revoke", meta)
            .await
    }

    /// Revokes every session of the caller but the current one.
    pub async fn revoke_other_sessions(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
    ) -> Result<usize, AuthError> {
        let others: Vec<_> = self
            .sessions(who)
            .await?
            .into_iter()
            .filter(|s| !s.current)
            .map(|s| s.id)
            .collect();
        self.end_sessions(who, &others, "auth.session.revoke", meta)
            .await?;
        Ok(others.len())
    }

    /// A manager (`users.sessions_revoke`) revokes every session of a member
    /// in this organization.
    pub async fn revoke_member_sessions(
        &self,
        who: &Authenticated,
        user: UserId,
        meta: &ClientMeta,
    ) -> Result<usize, AuthError> {
        self.require_action(
            who,
            meta,
            "users.sessions_revoke",
            crate::authority::Scope::Org,
        )
        .await?;
        let tenant = who.ctx.tenant();
        let mut tx = self.db().begin(&who.ctx).await?;
        if self.membership(&mut tx, tenant, user).await?.is_none() {
            return Err(AuthError::NotFound { entity: "user" });
        }
        let inval = self
            .revoke_user_sessions_in(&mut tx, tenant, user, "revoked by an admin")
            .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.session.revoke_all",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({"sessions": inval.len()}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(&inval);
        Ok(inval.len())
    }

    /// Authenticates a bearer credential for `tenant`: an access token of a
    /// user or service identity, or an API key. The result carries the
    /// [`TenantContext`] every repository requires.
    pub async fn authenticate(
        &self,
        tenant: TenantId,
        bearer: &str,
        cid: &CorrelationId,
    ) -> Result<Authenticated, AuthError> {
        if bearer.starts_with(crate::api_keys::PREFIX) {
            return self.authenticate_api_key(tenant, bearer, cid).await;
        }
        let now = self.now();
        let claims = self.inner.keys.verify(bearer, now).await?;
        self.authenticate_claims(tenant, claims, cid, now).await
    }

    async fn authenticate_claims(
        &self,
        tenant: TenantId,
        claims: Claims,
        cid: &CorrelationId,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        if claims.tid != tenant.as_uuid() {
            return Err(AuthError::InvalidToken("token is for another tenant"));
        }
        let mfa_at = claims
            .mfa_at
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
        match claims.typ.as_str() {
            "user" => {
                let user: UserId = claims
                    .sub
                    .parse()
                    .map_err(|_| AuthError::InvalidToken("malformed"))?;
                let sid = claims.sid.ok_or(AuthError::InvalidToken("no session"))?;
                self.ensure_session_live(tenant, sid, now).await?;
                Ok(Authenticated {
                    ctx: TenantContext::from_authentication(
                        tenant,
                        Principal::User { id: user },
                        cid.clone(),
                    ),
                    session: Some(sid),
                    amr: claims.amr,
                    mfa_at,
                    scopes: None,
                })
            }
            "service" => {
                let id: ServiceId = claims
                    .sub
                    .parse()
                    .map_err(|_| AuthError::InvalidToken("malformed"))?;
                self.ensure_service_live(tenant, id).await?;
                Ok(Authenticated {
                    ctx: TenantContext::from_authentication(
                        tenant,
                        Principal::Service { id },
                        cid.clone(),
                    ),
                    session: None,
                    amr: claims.amr,
                    mfa_at: None,
                    scopes: None,
                })
            }
            _ => Err(AuthError::InvalidToken("not an access token")),
        }
    }

    async fn ensure_session_live(
        &self,
        tenant: TenantId,
        sid: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let state = match self.inner.caches.sessions.get(&sid) {
            Some(s) => s,
            None => {
                let ctx = Self::anonymous(tenant, &CorrelationId::generate());
                let mut tx = self.db().read(&ctx).await?;
                let row = self.session_row(&mut tx, tenant, sid).await?;
                tx.commit().await?;
                let state = SessionState {
                    tenant,
                    live_until: row.filter(|r| r.revoked_at.is_none()).map(|r| r.expires_at),
                };
                self.inner.caches.sessions.insert(sid, state);
                state
            }
        };
        if state.tenant != tenant || state.live_until.is_none_or(|t| t <= now) {
            return Err(AuthError::SessionRevoked);
        }
        Ok(())
    }

    /// Records a fresh MFA verification in the caller's session (step-up) and
    /// returns a new access token that carries it.
    pub async fn step_up(
        &self,
        who: &Authenticated,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<Secret, AuthError> {
        let (Some(user), Some(sid)) = (who.user(), who.session) else {
            return Err(AuthError::Forbidden("only a signed-in user can step up"));
        };
        if !self.check_mfa_code(&who.ctx, user, code, meta).await? {
            return Err(AuthError::InvalidCode);
        }
        let tenant = who.ctx.tenant();
        let mut tx = self.db().begin(&who.ctx).await?;
        let now = tx.now();
        tx.execute(
            Query::update()
                .table(SESSIONS)
                .value("mfa_at", now)
                .value("amr", "pwd otp")
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("id").eq(sid)),
        )
        .await?;
        tx.commit().await?;
        self.sign_access(tenant, user, sid, &["pwd".into(), "otp".into()], Some(now))
            .map(Secret::new)
    }
}

struct SessionRow {
    user: UserId,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}
