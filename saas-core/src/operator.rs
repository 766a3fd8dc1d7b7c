//! Platform operator credentials: bearer tokens for the people who run the
//! platform (create and suspend tenants, inspect dead jobs).
//!
//! A token is `sop_<id>_<secret>`. Only SHA-256 of the secret is stored; the
//! token is shown once, at creation. Verification looks the row up by id and
//! compares hashes in constant time.

use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Query};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::context::PlatformContext;
use crate::db::Db;
use crate::error::CoreError;
use crate::id::OperatorId;

const TABLE: &str = "platform_operators";
const PREFIX: &str = "sop_";

/// An operator credential (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// The credential id.
    pub id: OperatorId,
    /// A label.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A freshly issued token: shown once, never stored.
pub struct IssuedToken(String);

impl IssuedToken {
    /// The bearer token. Show it once; it cannot be recovered.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedToken(<redacted>)")
    }
}

/// The operator credential repository.
#[derive(Debug, Clone)]
pub struct Operators {
    db: Db,
    pctx: PlatformContext,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Operators {
    /// A repository over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self {
            db,
            pctx: PlatformContext::system("operator authentication"),
        }
    }

    /// Issues a new operator token.
    pub async fn create(
        &self,
        pctx: &PlatformContext,
        name: &str,
    ) -> Result<(Operator, IssuedToken), CoreError> {
        let name = crate::tenant::validate_name("name", name)?;
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let mut tx = self.db.begin_platform(pctx).await?;
        let op = Operator {
            id: OperatorId::new(),
            name,
            created_at: tx.now(),
        };
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns(["id", "name", "secret_hash", "created_at"])
                .values([
                    op.id.into(),
                    op.name.clone().into(),
                    hash(&secret).into(),
                    op.created_at.into(),
                ])
                .map_err(|e| CoreError::Internal(e.to_string()))?,
        )
        .await?;
        tx.record_change(crate::change::Change {
            by: crate::change::ChangeBy::Platform(pctx),
            action: "operator.create",
            target_kind: "operator",
            target_id: Some(op.id.to_string()),
            details: serde_json::json!({}),
        })
        .await?;
        tx.commit().await?;
        let token = IssuedToken(format!("{PREFIX}{}_{secret}", op.id.as_uuid().simple()));
        Ok((op, token))
    }

    /// Whether any operator credential exists (first-start bootstrap).
    pub async fn any(&self) -> Result<bool, CoreError> {
        let mut tx = self.db.begin_platform(&self.pctx).await?;
        let row = tx
            .fetch_optional(Query::select().column("id").from(TABLE).limit(1))
            .await?;
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// Verifies a bearer token; `None` for anything that is not a live operator token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<OperatorId>, CoreError> {
        let Some(rest) = token.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let Some((id, secret)) = rest.split_once('_') else {
            return Ok(None);
        };
        let Ok(id) = id.parse::<OperatorId>() else {
            return Ok(None);
        };
        let mut tx = self.db.begin_platform(&self.pctx).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["secret_hash", "revoked_at"])
                    .from(TABLE)
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.get("secret_hash")?;
        let revoked: Option<DateTime<Utc>> = row.get("revoked_at")?;
        let matches: bool = stored.ct_eq(&hash(secret)).into();
        Ok((matches && revoked.is_none()).then_some(id))
    }

    /// Revokes a credential.
    pub async fn revoke(&self, pctx: &PlatformContext, id: OperatorId) -> Result<(), CoreError> {
        let mut tx = self.db.begin_platform(pctx).await?;
        let now = tx.now();
        let n = tx
            .execute(
                Query::update()
                    .table(TABLE)
                    .value("revoked_at", now)
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?;
        if n == 0 {
            return Err(CoreError::NotFound { entity: "operator" });
        }
        tx.record_change(crate::change::Change {
            by: crate::change::ChangeBy::Platform(pctx),
            action: "operator.revoke",
            target_kind: "operator",
            target_id: Some(id.to_string()),
            details: serde_json::json!({}),
        })
        .await?;
        tx.commit().await
    }
}
