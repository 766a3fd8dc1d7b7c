//! Service identities: non-human principals with their own roles, which get
//! short-lived access tokens by the client-credentials grant (id and secret).
//! The secret (`ssk_...`) is shown once and stored as SHA-256; disabling an
//! identity refuses its tokens on the next request.

use chrono::{DateTime, Utc};
use saas_audit::{Outcome, Target};
use saas_core::db::sea_query::{Expr, ExprTrait, Order, Query};
use saas_core::{CorrelationId, Principal, ServiceId, TenantContext, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use crate::accounts::ABOVE_OWN;
use crate::authority::Scope;
use crate::error::AuthError;
use crate::roles;
use crate::secret::{self, Secret};
use crate::service::{Auth, Authenticated, ClientMeta, EndRow};

pub(crate) const TABLE: &str = "auth_services";

/// A service identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceIdentity {
    /// Id (the client id).
    pub id: ServiceId,
    /// Label.
    pub name: String,
    /// Organization roles it holds.
    pub roles: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Disabled.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Input for [`Auth::create_service`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    /// Label.
    pub name: String,
    /// Organization roles (not `owner`).
    pub roles: Vec<String>,
}

/// A client-credentials access token.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceToken {
    /// The JWT (`Debug` never prints it).
    pub access_token: Secret,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: i64,
}

fn service_from(row: &saas_core::db::Row) -> Result<ServiceIdentity, AuthError> {
    Ok(ServiceIdentity {
        id: row.get("id")?,
        name: row.get("name")?,
        roles: row.get::<Json<Vec<String>>>("roles")?.0,
        created_at: row.get("created_at")?,
        disabled_at: row.get("disabled_at")?,
    })
}

const COLUMNS: [&str; 5] = ["id", "name", "roles", "created_at", "disabled_at"];

impl Auth {
    /// Creates a service identity (`services.manage`, recent MFA, standing
    /// for each of its roles); returns its secret once.
    pub async fn create_service(
        &self,
        who: &Authenticated,
        new: NewService,
        meta: &ClientMeta,
    ) -> Result<(ServiceIdentity, Secret), AuthError> {
        self.require_action(who, meta, "services.manage", Scope::Org)
            .await?;
        self.require_step_up(who)?;
        let name = crate::accounts::validate_name(&new.name)
            .map_err(|_| AuthError::validation("name", "must be 1 to 200 printable characters"))?;
        if new.roles.is_empty()
            || new.roles.len() > 8
            || new
                .roles
                .iter()
                .any(|r| !roles::is_org_role(r) || r == "owner")
        {
            return Err(AuthError::validation(
                "roles",
                "1 to 8 organization roles other than owner",
            ));
        }
        for role in &new.roles {
            self.require_grant(who, meta, role, Scope::Org, ABOVE_OWN)
                .await?;
        }
        let id = ServiceId::new();
        let client_secret = secret::token("ssk_");
        let mut tx = self.db().begin(&who.ctx).await?;
        let now = tx.now();
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns([
                    "tenant_id",
                    "id",
                    "name",
                    "roles",
                    "secret_hash",
                    "created_by",
                    "created_at",
                ])
                .values([
                    who.ctx.tenant().into(),
                    id.into(),
                    name.clone().into(),
                    serde_json::json!(new.roles).into(),
                    secret::hash(&client_secret).into(),
                    who.user().into(),
                    now.into(),
                ])
                .map_err(|e| AuthError::Crypto(e.to_string()))?,
        )
        .await?;
        self.audit(
            &mut tx,
            &who.ctx,
            "auth.service.create",
            Target::new("service", id),
            Outcome::Success,
            serde_json::json!({"roles": new.roles}),
            who.user(),
            Some(meta),
        )
        .await?;
        tx.commit().await?;
        Ok((
            ServiceIdentity {
                id,
                name,
                roles: new.roles,
                created_at: now,
                disabled_at: None,
            },
            Secret::new(client_secret),
        ))
    }

    /// The organization's service identities (`services.read`).
    pub async fn list_services(
        &self,
        who: &Authenticated,
        meta: &ClientMeta,
    ) -> Result<Vec<ServiceIdentity>, AuthError> {
        self.require_action(who, meta, "services.read", Scope::Org)
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
        rows.iter().map(service_from).collect()
    }

    /// Disables a service identity (`services.manage`); its tokens stop
    /// working at once.
    pub async fn disable_service(
        &self,
        who: &Authenticated,
        id: ServiceId,
        meta: &ClientMeta,
    ) -> Result<(), AuthError> {
        self.end_row(
            who,
            &EndRow {
                table: TABLE,
                column: "disabled_at",
                also_null: None,
                entity: "service identity",
                requires: "services.manage",
                action: "auth.service.disable",
                target_kind: "service",
                cache_kind: Some("service"),
            },
            id.as_uuid(),
            meta,
        )
        .await
    }

    /// The client-credentials grant: a service identity's id and secret for
    /// an access token.
    pub async fn service_token(
        &self,
        tenant: TenantId,
        client_id: &str,
        client_secret: &str,
        cid: &CorrelationId,
    ) -> Result<ServiceToken, AuthError> {
        let invalid = AuthError::InvalidToken("invalid client credentials");
        let Ok(id) = client_id.parse::<ServiceId>() else {
            return Err(invalid);
        };
        let ctx =
            TenantContext::from_authentication(tenant, Principal::Service { id }, cid.clone());
        let mut tx = self.db().begin(&ctx).await?;
        let row = tx
            .fetch_optional(
                Query::select()
                    .columns(["secret_hash", "disabled_at"])
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?;
        let ok = match &row {
            Some(r) => {
                let stored: Vec<u8> = r.get("secret_hash")?;
                let disabled: Option<DateTime<Utc>> = r.get("disabled_at")?;
                secret::hashes_equal(&stored, &secret::hash(client_secret)) && disabled.is_none()
            }
            None => false,
        };
        self.audit(
            &mut tx,
            &ctx,
            "auth.service.token",
            Target::new("service", id),
            if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            serde_json::json!({}),
            None,
            None,
        )
        .await?;
        tx.commit().await?;
        if !ok {
            return Err(invalid);
        }
        let mut claims = self.inner.keys.claims(
            self.now(),
            self.inner.config.access_ttl,
            "service",
            id.to_string(),
            tenant.as_uuid(),
        );
        claims.amr = vec!["client_secret".into()];
        Ok(ServiceToken {
            access_token: Secret::new(self.inner.keys.sign(&claims)?),
            token_type: "Bearer",
            expires_in: self.inner.config.access_ttl.num_seconds(),
        })
    }

    pub(crate) async fn ensure_service_live(
        &self,
        tenant: TenantId,
        id: ServiceId,
    ) -> Result<(), AuthError> {
        let (t, live) = match self.inner.caches.services.get(&id.as_uuid()) {
            Some(s) => s,
            None => {
                let ctx = Self::anonymous(tenant, &CorrelationId::generate());
                let mut tx = self.db().read(&ctx).await?;
                let row = tx
                    .fetch_optional(
                        Query::select()
                            .column("disabled_at")
                            .from(TABLE)
                            .and_where(Expr::col("tenant_id").eq(tenant))
                            .and_where(Expr::col("id").eq(id)),
                    )
                    .await?;
                tx.commit().await?;
                let live = match row {
                    Some(r) => r.get::<Option<DateTime<Utc>>>("disabled_at")?.is_none(),
                    None => false,
                };
                self.inner
                    .caches
                    .services
                    .insert(id.as_uuid(), (tenant, live));
                (tenant, live)
            }
        };
        if t != tenant || !live {
            return Err(AuthError::SessionRevoked);
        }
        Ok(())
    }
}
