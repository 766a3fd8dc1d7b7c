//! Failed-login throttling per account and per client address.
//!
//! Counters live in `auth_login_throttle` under the SHA-256 of
//! `account:<email>` or `ip:<address>`, so the table holds no address in
//! clear. The account key is counted whether or not the account exists, so a
//! lock says nothing about existence. Increments are single UPDATE statements.

use chrono::{DateTime, Utc};
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, OnConflict, Query};

use crate::error::AuthError;
use crate::secret;
use crate::service::Auth;

const TABLE: &str = "auth_login_throttle";

/// What [`Auth::throttle_state`] found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Throttle {
    pub(crate) locked_until: Option<DateTime<Utc>>,
    pub(crate) account_failures: bool,
}

fn account_key(email: &str) -> Vec<u8> {
    secret::hash(&format!("account:{email}"))
}

fn ip_key(ip: &str) -> Vec<u8> {
    secret::hash(&format!("ip:{ip}"))
}

impl Auth {
    /// Whether the account or the address is locked, and whether the account
    /// has failures on record (which a successful login clears).
    pub(crate) async fn throttle_state(
        &self,
        ptx: &mut Tx,
        email: &str,
        ip: Option<&str>,
    ) -> Result<Throttle, AuthError> {
        let now = ptx.now();
        let account = account_key(email);
        let mut keys = vec![account.clone()];
        if let Some(ip) = ip {
            keys.push(ip_key(ip));
        }
        let rows = ptx
            .fetch_all(
                Query::select()
                    .columns(["throttle_key", "locked_until"])
                    .from(TABLE)
                    .and_where(Expr::col("throttle_key").is_in(keys)),
            )
            .await?;
        let mut state = Throttle::default();
        for r in rows {
            let key: Vec<u8> = r.get("throttle_key")?;
            state.account_failures |= key == account;
            let t: Option<DateTime<Utc>> = r.get("locked_until")?;
            if let Some(t) = t.filter(|t| *t > now) {
                state.locked_until = std::cmp::max(state.locked_until, Some(t));
            }
        }
        Ok(state)
    }

    /// Counts one failure for the account and the address; locks whichever
    /// reached its limit.
    pub(crate) async fn record_failure(
        &self,
        ptx: &mut Tx,
        email: &str,
        ip: Option<&str>,
    ) -> Result<(), AuthError> {
        let policy = self.inner.config.throttle.clone();
        self.bump(ptx, account_key(email), policy.account_failures)
            .await?;
        if let Some(ip) = ip {
            self.bump(ptx, ip_key(ip), policy.ip_failures).await?;
        }
        Ok(())
    }

    async fn bump(&self, ptx: &mut Tx, key: Vec<u8>, limit: i32) -> Result<(), AuthError> {
        let policy = &self.inner.config.throttle;
        let now = ptx.now();
        let n = ptx
            .execute(
                Query::update()
                    .table(TABLE)
                    .value("failures", Expr::col("failures").add(1))
                    .and_where(Expr::col("throttle_key").eq(key.clone()))
                    .and_where(Expr::col("window_start").gt(now - policy.window)),
            )
            .await?;
        if n == 0 {
            ptx.execute(
                Query::insert()
                    .into_table(TABLE)
                    .columns(["throttle_key", "failures", "window_start"])
                    .values([key.clone().into(), 1.into(), now.into()])
                    .map_err(|e| AuthError::Crypto(e.to_string()))?
                    .on_conflict(
                        OnConflict::column("throttle_key")
                            .update_columns(["failures", "window_start"])
                            .to_owned(),
                    ),
            )
            .await?;
        }
        ptx.execute(
            Query::update()
                .table(TABLE)
                .value("locked_until", now + policy.lockout)
                .value("failures", 0)
                .value("window_start", now)
                .and_where(Expr::col("throttle_key").eq(key))
                .and_where(Expr::col("failures").gte(limit)),
        )
        .await?;
        Ok(())
    }

    /// Forgets the account's failures and lifts its lock.
    pub(crate) async fn clear_lock(&self, ptx: &mut Tx, email: &str) -> Result<(), AuthError> {
        ptx.execute(
            Query::delete()
                .from_table(TABLE)
                .and_where(Expr::col("throttle_key").eq(account_key(email))),
        )
        .await?;
        Ok(())
    }
}
