//! API keys: per organization, optionally bound to a workspace, with scopes,
//! expiry, last-used time and revocation.
//!
//! A key reads `sak_<id>_<secret>`: the prefix makes leaked keys easy to
//! recognise (and to scan for), the id finds the row, and only SHA-256 of the
//! secret is stored. A key is shown once. Verification is a cached lookup and
//! a constant-time hash comparison; `last_used_at` is written at most once a
//! minute per key.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use saas_audit::{Outcome, Target};
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::{ApiKeyId, CorrelationId, Principal, TenantContext, TenantId, WorkspaceId};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use crate::accounts::require_workspace;
use crate::authority::Scope;
use crate::cache::KeyState;
use crate::error::AuthError;
use crate::secret::{self, Secret};
use crate::service::{Auth, Authenticated, ClientMeta, EndRow};

pub(crate) const PREFIX: &str = "sak_";
pub(crate) const TABLE: &str = "auth_api_keys";

/// An API key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Label.
    pub name: String,
    /// The recognisable start of the key, e.g. `sak_0193a1b2`.
    pub prefix: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Workspace the key is confined to.
    pub workspace_id: Option<WorkspaceId>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Input for [`Auth::create_api_key`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Label, 1 to 200 characters.
    pub name: String,
    /// Scopes, e.g. `["usage:write"]`: 1 to 32 of `a-z0-9_.:`.
    pub scopes: Vec<String>,
    /// Confine the key to one workspace.
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// Days until it expires (1 to 3650); none means no expiry.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

fn prefix_of(id: ApiKeyId) -> String {
    let simple = id.as_uuid().simple().to_string();
    format!("{PREFIX}{}", simple.get(..12).unwrap_or(&simple))
}

fn key_from(row: &saas_core::db::Row) -> Result<ApiKey, AuthError> {
    let id: ApiKeyId = row.get("id")?;
    Ok(ApiKey {
        id,
        name: row.get("name")?,
        prefix: prefix_of(id),
        scopes: row.get::<Json<Vec<String>>>("scopes")?.0,
        workspace_id: row.get("workspace_id")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        last_used_at: row.get("last_used_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

const COLUMNS: [&str; 8] = [
    "id",
    "name",
    "scopes",
    "workspace_id",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
];

pub(crate) fn validate_scopes(scopes: &[String]) -> Result<(), AuthError> {
    let ok = scopes.len() <= 32
        && scopes.iter().all(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':')
                })
        });
    if ok {
        Ok(())
    } else {
        Err(AuthError::validation(
            "scopes",
            "at most 32 scopes of 1 to 64 characters a-z, 0-9, '_', '.', ':'",
        ))
    }
}

impl Auth {
    /// Creates a key (`api_keys.create`, recent MFA). The secret is in the
    /// result only.
    ///
    /// With a [`MemberAuthority`](crate::MemberAuthority) installed, every
    /// scope is an action the caller must be allowed themselves where the key
    /// holds (its workspace, or the organization): a key never carries more
    /// than its creator. The built-in rule lets owners and admins give any
    /// scope.
    pub async fn create_api_key(
        &self,
        who: &Authenticated,
        new: NewApiKey,
        meta: &ClientMeta,
    ) -> Result<(ApiKey, Secret), AuthError> {
        self.require_action(who, meta, "api_keys.create", Scope::Org)
            .await?;
        self.require_step_up(who)?;
        let name = crate::accounts::validate_name(&new.name)
            .map_err(|_| AuthError::validation("name", "must be 1 to 200 printable characters"))?;
        validate_scopes(&new.scopes)?;
        let where_key_holds = new.workspace_id.map_or(Scope::Org, Scope::Workspace);
        for scope in &new.scopes {
            self.require_action(who, meta, scope, where_key_holds)
                .await?;
        }
        if new
            .expires_in_days
            .is_some_and(|d| !(1..=3650).contains(&d))
        {
            return Err(AuthError::validation(
                "expires_in_days",
                "must be 1 to 3650",
            ));
        }
        let tenant = who.ctx.tenant();
        let mut tx = self.db().begin(&who.ctx).await?;
        if let Some(ws) = new.workspace_id {
            require_workspace(&mut tx, ws).await?;
        }
        let id = ApiKeyId::new();
        let secret_part = secret::token("");
        let full = format!("{PREFIX}{}_{secret_part}", id.as_uuid().simple());
        let now = tx.now();
        let expires = new.expires_in_days.map(|d| now + Duration::days(d));
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns([
                    "tenant_id",
                    "id",
                    "workspace_id",
                    "name",
                    "secret_hash",
                    "scopes",
                    "created_by",
                    "created_at",
                    "expires_at",
                ])
                .values([
                    tenant.into(),
                    id.into(),
                    new.workspace_id.into(),
                    name.into(),
                    secret::hash(&secret_part).into(),
                    serde_json::json!(new.scopes).into(),
                    who.user().into(),
                    now.into(),
                    expires.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.api_key.create",
            Target::new("api_key", id),
            Outcome::Success,
            serde_json::json!({"scopes": new.scopes, "workspace_id": new.workspace_id, "expires_at": expires}),
            who.user(),
            Some(meta),
        )
        .await?;
        let key = tx
            .fetch_optional(
                Query::select()
                    .columns(COLUMNS)
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?
            .ok_or(AuthError::NotFound { entity: "api key" })?;
        let key = key_from(&key)?;
        tx.commit().await?;
        Ok((key, Secret::new(full)))
    }

    /// The organization's keys (`api_keys.read`).
    pub async fn list_api_keys(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
    ) -> Result<Vec<ApiKey>, AuthError> {
        self.require_action(who, meta, "api_keys.read", Scope::Org)
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
        rows.iter().map(key_from).collect()
    }

    /// Revokes a key (`api_keys.revoke`); takes effect on its next use, on
    /// every replica.
    pub async fn revoke_api_key(
        &self,
        who: &Authenticated,
        id: ApiKeyId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.end_row(
            who,
            &EndRow {
                table: TABLE,
                column: "revoked_at",
                also_null: None,
                entity: "api key",
                requires: "api_keys.revoke",
                action: "auth.api_key.revoke",
                target_kind: "api_key",
                cache_kind: Some("apikey"),
            },
            id.as_uuid(),
            meta,
        )
        .await
    }

    pub(crate) async fn authenticate_api_key(
        &self,
        tenant: TenantId,
        presented: &str,
        cid: &CorrelationId,
    ) -> Result<Authenticated, AuthError> {
        let rest = presented
            .strip_prefix(PREFIX)
            .ok_or(AuthError::InvalidToken("malformed"))?;
        let (id, secret_part) = rest
            .split_once('_')
            .ok_or(AuthError::InvalidToken("malformed"))?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| AuthError::InvalidToken("malformed"))?;
        let key_id = ApiKeyId::from_uuid(id);
        let state = match self.inner.caches.api_keys.get(&id) {
            Some(s) => s,
            None => {
                let ctx = Self::anonymous(tenant, cid);
                let mut tx = self.db().read(&ctx).await?;
                let row = tx
                    .fetch_optional(
                        Query::select()
                            .columns([
                                "secret_hash",
                                "scopes",
                                "workspace_id",
                                "expires_at",
                                "revoked_at",
                                "last_used_at",
                            ])
                            .from(TABLE)
                            .and_where(Expr::col("tenant_id").eq(tenant))
                            .and_where(Expr::col("id").eq(key_id)),
                    )
                    .await?;
                tx.commit().await?;
                let Some(row) = row else {
                    return Err(AuthError::InvalidToken("unknown api key"));
                };
                let state = Arc::new(KeyState {
                    tenant,
                    secret_hash: row.get("secret_hash")?,
                    scopes: row.get::<Json<Vec<String>>>("scopes")?.0,
                    workspace: row.get("workspace_id")?,
                    expires_at: row.get("expires_at")?,
                    revoked: row.get::<Option<DateTime<Utc>>>("revoked_at")?.is_some(),
                    last_used_at: row.get("last_used_at")?,
                });
                self.inner.caches.api_keys.insert(id, state.clone());
                state
            }
        };
        let now = self.now();
        let matches = secret::hashes_equal(&state.secret_hash, &secret::hash(secret_part));
        if state.tenant != tenant || !matches {
            return Err(AuthError::InvalidToken("unknown api key"));
        }
        if state.revoked {
            return Err(AuthError::InvalidToken("api key revoked"));
        }
        if state.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::InvalidToken("expired"));
        }
        let mut ctx = TenantContext::from_authentication(
            tenant,
            Principal::ApiKey { id: key_id },
            cid.clone(),
        );
        if let Some(ws) = state.workspace {
            ctx = ctx.with_workspace(ws);
        }
        if state
            .last_used_at
            .is_none_or(|t| now - t > Duration::minutes(1))
        {
            self.touch_api_key(&ctx, key_id, now, &state).await?;
        }
        Ok(Authenticated {
            ctx,
            session: None,
            amr: vec!["api_key".into()],
            mfa_at: None,
            scopes: Some(state.scopes.clone()),
        })
    }

    async fn touch_api_key(
        &self,
        ctx: &TenantContext,
        id: ApiKeyId,
        now: DateTime<Utc>,
        state: &KeyState,
    ) -> Result<(), AuthError> {
        let mut tx = self.db().begin(ctx).await?;
        tx.execute(
            Query::update()
                .table(TABLE)
                .value("last_used_at", now)
                .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                .and_where(Expr::col("id").eq(id)),
        )
        .await?;
        tx.commit().await?;
        let mut updated = state.clone();
        updated.last_used_at = Some(now);
        self.inner
            .caches
            .api_keys
            .insert(id.as_uuid(), Arc::new(updated));
        Ok(())
    }
}
