//! TOTP MFA (RFC 6238, totp-rs) and recovery codes.
//!
//! Enrolment stores a sealed seed and is confirmed by a first code. Each
//! accepted code advances `totp_last_step` with a conditional UPDATE, so a
//! code (or an older one) is never accepted twice. Ten recovery codes are
//! issued at confirmation, stored as SHA-256, each usable once. Every MFA
//! flow runs in the tenant's transaction with its audit event.

use chrono::{DateTime, Utc};
use saas_audit::{Outcome, Target};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, Query};
use saas_core::{
    CorrelationId, OperatorId, PlatformActor, PlatformContext, TenantContext, TenantId, UserId,
};
use serde::Serialize;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::accounts::USERS;
use crate::error::AuthError;
use crate::secret::{self, Secret};
use crate::service::{Auth, Authenticated, ClientMeta};
use crate::sessions::TokenPair;

const CODES: &str = "auth_recovery_codes";
const STEP: u64 = 30;
const RECOVERY_CODES: usize = 10;

/// What an authenticator app needs to enrol.
#[derive(Debug, Clone, Serialize)]
pub struct MfaSetup {
    /// The seed, base32 (for manual entry). `Debug` never prints it.
    pub secret: Secret,
    /// The `otpauth://` URI (render it as a QR code); it holds the seed.
    pub otpauth_uri: Secret,
}

/// Recovery codes: shown once, at confirmation.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryCodes {
    /// Ten single-use codes.
    pub recovery_codes: Vec<Secret>,
}

fn normalize_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// 16 characters from an alphabet without look-alikes (about 79 bits),
/// grouped by four.
fn new_recovery_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let chars: Vec<char> = (0..16)
        .map(|_| {
            let i = rand::random_range(0..ALPHABET.len());
            ALPHABET.get(i).copied().map_or('a', char::from)
        })
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Operators' TOTP enrolment (a platform table).
const OPERATOR_MFA: &str = "auth_operator_mfa";

fn operator_of(pctx: &PlatformContext) -> Result<OperatorId, AuthError> {
    match pctx.actor() {
        PlatformActor::Operator { id } => Ok(*id),
        _ => Err(AuthError::Forbidden("only an operator has operator MFA")),
    }
}

/// When the operator confirmed their TOTP enrolment, if they did.
async fn operator_confirmed_at(
    tx: &mut Tx,
    operator: OperatorId,
) -> Result<Option<DateTime<Utc>>, AuthError> {
    Ok(tx
        .fetch_optional(
            Query::select()
                .column("totp_confirmed_at")
                .from(OPERATOR_MFA)
                .and_where(Expr::col("operator_id").eq(operator)),
        )
        .await?
        .map(|r| r.get::<Option<DateTime<Utc>>>("totp_confirmed_at"))
        .transpose()?
        .flatten())
}

impl Auth {
    fn totp(&self, seed: Vec<u8>, account: &str) -> Result<TOTP, AuthError> {
        TOTP::new(
            Algorithm::SHA1,
            6,
            1,
            STEP,
            seed,
            Some(self.inner.config.totp_issuer.clone()),
            account.to_owned(),
        )
        .map_err(|e| AuthError::Crypto(format!("totp: {e}")))
    }

    /// Starts (or restarts) enrolment for the signed-in user.
    pub async fn mfa_setup(&self, who: &Authenticated) -> Result<MfaSetup, AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a user can enrol MFA"))?;
        self.setup_for(&who.ctx, user).await
    }

    /// Starts enrolment during a login stopped by an organization that
    /// mandates MFA.
    pub async fn mfa_setup_with_challenge(
        &self,
        tenant: TenantId,
        challenge: &str,
        cid: &CorrelationId,
    ) -> Result<MfaSetup, AuthError> {
        let user = self.open_challenge(tenant, challenge).await?;
        self.setup_for(&Self::user_ctx(tenant, user, cid), user)
            .await
    }

    async fn setup_for(&self, ctx: &TenantContext, user: UserId) -> Result<MfaSetup, AuthError> {
        let mut tx = self.db().begin(ctx).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["email", "totp_confirmed_at"])
                    .from(USERS)
                    .and_where(Expr::col("id").eq(user)),
            )
            .await?
            .ok_or(AuthError::NotFound { entity: "user" })?;
        if row
            .get::<Option<DateTime<Utc>>>("totp_confirmed_at")?
            .is_some()
        {
            return Err(AuthError::Conflict {
                code: "mfa_already_enabled",
                message: "MFA is already enabled; disable it first to enrol again".into(),
            });
        }
        let email: String = row.get("email")?;
        let mut seed = vec![0u8; 20];
        rand::fill(seed.as_mut_slice());
        let totp = self.totp(seed.clone(), &email)?;
        tx.execute(
            Query::update()
                .table(USERS)
                .value("totp_secret", self.inner.config.master_key.seal(&seed)?)
                .value("totp_last_step", 0)
                .and_where(Expr::col("id").eq(user)),
        )
        .await?;
        tx.commit().await?;
        Ok(MfaSetup {
            secret: Secret::new(totp.get_secret_base32()),
            otpauth_uri: Secret::new(totp.get_url()),
        })
    }

    /// Confirms enrolment with a first code; returns the recovery codes.
    pub async fn mfa_confirm(
        &self,
        who: &Authenticated,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<RecoveryCodes, AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a user can enrol MFA"))?;
        self.confirm_for(&who.ctx, user, code, meta).await
    }

    /// Confirms enrolment during a login stopped by a mandate; completes the
    /// login and returns its tokens with the recovery codes.
    pub async fn mfa_confirm_with_challenge(
        &self,
        tenant: TenantId,
        challenge: &str,
        code: &str,
        cid: &CorrelationId,
        meta: &ClientMeta,
    ) -> Result<(TokenPair, RecoveryCodes), AuthError> {
        let user = self.open_challenge(tenant, challenge).await?;
        let ctx = Self::user_ctx(tenant, user, cid);
        let codes = self.confirm_for(&ctx, user, code, meta).await?;
        let pair = self
            .start_session(&ctx, user, &["pwd", "otp"], Some(self.now()), meta)
            .await?;
        Ok((pair, codes))
    }

    async fn confirm_for(
        &self,
        ctx: &TenantContext,
        user: UserId,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<RecoveryCodes, AuthError> {
        let mut tx = self.db().begin(ctx).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["totp_secret", "totp_confirmed_at"])
                    .from(USERS)
                    .and_where(Expr::col("id").eq(user)),
            )
            .await?
            .ok_or(AuthError::NotFound { entity: "user" })?;
        if row
            .get::<Option<DateTime<Utc>>>("totp_confirmed_at")?
            .is_some()
        {
            return Err(AuthError::Conflict {
                code: "mfa_already_enabled",
                message: "MFA is already enabled".into(),
            });
        }
        if row.get::<Option<Vec<u8>>>("totp_secret")?.is_none() {
            return Err(AuthError::Conflict {
                code: "mfa_not_enrolling",
                message: "start MFA setup first".into(),
            });
        }
        if !self.accept_totp(&mut tx, user, code).await? {
            drop(tx);
            self.audit_mfa(ctx, user, "auth.mfa.enable", Outcome::Failure, meta)
                .await?;
            return Err(AuthError::InvalidCode);
        }
        let now = tx.now();
        tx.execute(
            Query::update()
                .table(USERS)
                .value("totp_confirmed_at", now)
                .value("updated_at", now)
                .and_where(Expr::col("id").eq(user)),
        )
        .await?;
        let codes = self.replace_recovery_codes(&mut tx, user).await?;
        self.audit(
            &mut tx,
            ctx,
            "auth.mfa.enable",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({"method": "totp"}),
            Some(user),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(RecoveryCodes {
            recovery_codes: codes,
        })
    }

    async fn replace_recovery_codes(
        &self,
        tx: &mut Tx,
        user: UserId,
    ) -> Result<Vec<Secret>, AuthError> {
        tx.execute(
            Query::delete()
                .from_table(CODES)
                .and_where(Expr::col("user_id").eq(user)),
        )
        .await?;
        let now = tx.now();
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let mut q = Query::insert();
        q.into_table(CODES)
            .columns(["user_id", "code_hash", "created_at"]);
        for c in &codes {
            q.values([
                user.into(),
                secret::hash(&normalize_recovery(c)).into(),
                now.into(),
            ])
            .map_err(|e| AuthError::Crypto(e.to_string()))?;
        }
        tx.execute(&q).await?;
        Ok(codes.into_iter().map(Secret::new).collect())
    }

    /// Checks a TOTP code against the enrolled seed and spends its time step.
    async fn accept_totp(&self, tx: &mut Tx, user: UserId, code: &str) -> Result<bool, AuthError> {
        self.spend_totp(tx, USERS, "id", user.as_uuid(), code).await
    }

    /// Checks `code` against the sealed seed in `table` (row `key_col =
    /// key`) and spends its time step with a conditional UPDATE, so a code
    /// is accepted once. Serves members and platform operators.
    async fn spend_totp(
        &self,
        tx: &mut Tx,
        table: &'static str,
        key_col: &'static str,
        key: uuid::Uuid,
        code: &str,
    ) -> Result<bool, AuthError> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        let row = tx
            .fetch_optional(
                Query::select()
                    .column("totp_secret")
                    .from(table)
                    .and_where(Expr::col(key_col).eq(key)),
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        let Some(sealed) = row.get::<Option<Vec<u8>>>("totp_secret")? else {
            return Ok(false);
        };
        let seed = self.inner.config.master_key.open(&sealed)?;
        let totp = self.totp(seed, "verify")?;
        let now = u64::try_from(tx.now().timestamp()).unwrap_or(0);
        let current = now / STEP;
        let mut matched = None;
        for step in [current.saturating_sub(1), current, current + 1] {
            let expected = totp.generate(step * STEP);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                matched = Some(step);
            }
        }
        let Some(step) = matched.and_then(|s| i64::try_from(s).ok()) else {
            return Ok(false);
        };
        let n = tx
            .execute(
                Query::update()
                    .table(table)
                    .value("totp_last_step", step)
                    .and_where(Expr::col(key_col).eq(key))
                    .and_where(Expr::col("totp_last_step").lt(step)),
            )
            .await?;
        Ok(n == 1)
    }

    /// Starts (or restarts, while unconfirmed) TOTP enrolment for a platform
    /// operator, which break-glass requires.
    pub async fn operator_mfa_setup(&self, pctx: &PlatformContext) -> Result<MfaSetup, AuthError> {
        let operator = operator_of(pctx)?;
        let mut tx = self.db().begin_platform(pctx).await?;
        let confirmed = operator_confirmed_at(&mut tx, operator).await?;
        if confirmed.is_some() {
            return Err(AuthError::Conflict {
                code: "mfa_already_enabled",
                message: "this operator already has MFA".into(),
            });
        }
        let mut seed = vec![0u8; 20];
        rand::fill(seed.as_mut_slice());
        let totp = self.totp(seed.clone(), &format!("operator-{operator}"))?;
        let sealed = self.inner.config.master_key.seal(&seed)?;
        tx.execute(
            Query::delete()
                .from_table(OPERATOR_MFA)
                .and_where(Expr::col("operator_id").eq(operator)),
        )
        .await?;
        tx.execute(
            Query::insert()
                .into_table(OPERATOR_MFA)
                .columns(["operator_id", "totp_secret", "totp_last_step"])
                .values([operator.into(), sealed.into(), 0i64.into()])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        tx.commit().await?;
        Ok(MfaSetup {
            secret: Secret::new(totp.get_secret_base32()),
            otpauth_uri: Secret::new(totp.get_url()),
        })
    }

    /// Confirms an operator's enrolment with a first code.
    pub async fn operator_mfa_confirm(
        &self,
        pctx: &PlatformContext,
        code: &str,
    ) -> Result<(), AuthError> {
        let operator = operator_of(pctx)?;
        let mut tx = self.db().begin_platform(pctx).await?;
        if !self
            .spend_totp(
                &mut tx,
                OPERATOR_MFA,
                "operator_id",
                operator.as_uuid(),
                code,
            )
            .await?
        {
            return Err(AuthError::InvalidCode);
        }
        let now = tx.now();
        tx.execute(
            Query::update()
                .table(OPERATOR_MFA)
                .value("totp_confirmed_at", now)
                .and_where(Expr::col("operator_id").eq(operator)),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Verifies (and spends) a code of an operator with confirmed MFA.
    pub async fn verify_operator_mfa(
        &self,
        pctx: &PlatformContext,
        code: &str,
    ) -> Result<(), AuthError> {
        let operator = operator_of(pctx)?;
        let mut tx = self.db().begin_platform(pctx).await?;
        let confirmed = operator_confirmed_at(&mut tx, operator).await?;
        if confirmed.is_none() {
            return Err(AuthError::Conflict {
                code: "mfa_enrolment_required",
                message: "enrol MFA first: POST /api/platform/mfa/setup".into(),
            });
        }
        let ok = self
            .spend_totp(
                &mut tx,
                OPERATOR_MFA,
                "operator_id",
                operator.as_uuid(),
                code,
            )
            .await?;
        tx.commit().await?;
        if ok {
            Ok(())
        } else {
            Err(AuthError::InvalidCode)
        }
    }

    /// Verifies a TOTP code or a recovery code of an enrolled user in `ctx`'s
    /// tenant, spending it; audits the attempt.
    pub(crate) async fn check_mfa_code(
        &self,
        ctx: &TenantContext,
        user: UserId,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<bool, AuthError> {
        let mut tx = self.db().begin(ctx).await?;
        let enrolled = tx
            .fetch_optional(
                Query::select()
                    .column("totp_confirmed_at")
                    .from(USERS)
                    .and_where(Expr::col("id").eq(user)),
            )
            .await?
            .map(|r| r.get::<Option<DateTime<Utc>>>("totp_confirmed_at"))
            .transpose()?
            .flatten()
            .is_some();
        if !enrolled {
            return Err(AuthError::Conflict {
                code: "mfa_enrolment_required",
                message: "enrol MFA first".into(),
            });
        }
        let ok = if code.trim().len() == 6 {
            self.accept_totp(&mut tx, user, code).await?
        } else {
            let now = tx.now();
            let n = tx
                .execute(
                    Query::update()
                        .table(CODES)
                        .value("used_at", now)
                        .and_where(Expr::col("user_id").eq(user))
                        .and_where(
                            Expr::col("code_hash").eq(secret::hash(&normalize_recovery(code))),
                        )
                        .and_where(Expr::col("used_at").is_null()),
                )
                .await?;
            n == 1
        };
        if !ok {
            drop(tx);
            self.audit_mfa(ctx, user, "auth.mfa.verify", Outcome::Failure, meta)
                .await?;
            return Ok(false);
        }
        self.audit(
            &mut tx,
            ctx,
            "auth.mfa.verify",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({"method": if code.trim().len() == 6 { "totp" } else { "recovery_code" }}),
            Some(user),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn audit_mfa(
        &self,
        ctx: &TenantContext,
        user: UserId,
        action: &str,
        outcome: Outcome,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.audit_alone(
            ctx,
            action,
            Target::new("user", user),
            outcome,
            serde_json::json!({}),
            Some(user),
            Some(meta),
        )
        .await?;
        Ok(())
    }

    /// Turns MFA off for the caller (needs a recent MFA).
    pub async fn mfa_disable(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a user has MFA"))?;
        self.require_recent_mfa(who)?;
        let mut tx = self.db().begin(&who.ctx).await?;
        let now = tx.now();
        tx.execute(
            Query::update()
                .table(USERS)
                .value("totp_secret", None::<Vec<u8>>)
                .value("totp_confirmed_at", None::<DateTime<Utc>>)
                .value("updated_at", now)
                .and_where(Expr::col("id").eq(user)),
        )
        .await?;
        tx.execute(
            Query::delete()
                .from_table(CODES)
                .and_where(Expr::col("user_id").eq(user)),
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.mfa.disable",
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

    /// A fresh set of recovery codes (needs a recent MFA).
    pub async fn regenerate_recovery_codes(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
    ) -> Result<RecoveryCodes, AuthError> {
        let user = who
            .user()
            .ok_or(AuthError::Forbidden("only a user has MFA"))?;
        self.require_recent_mfa(who)?;
        let mut tx = self.db().begin(&who.ctx).await?;
        let codes = self.replace_recovery_codes(&mut tx, user).await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.mfa.recovery_codes",
            Target::new("user", user),
            Outcome::Success,
            serde_json::json!({}),
            Some(user),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok(RecoveryCodes {
            recovery_codes: codes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_grouped_and_normalise() {
        let c = new_recovery_code();
        assert_eq!(c.len(), 19, "{c}");
        assert_eq!(normalize_recovery(&c.to_uppercase()).len(), 16);
    }
}
