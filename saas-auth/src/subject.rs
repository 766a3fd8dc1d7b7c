//! saas-auth as a [`DataSubjectStore`]: everything identity holds about a
//! person in one organization, found, exported and erased.
//!
//! Erasure in an organization deletes the person's membership, workspace
//! roles, sessions (and refresh tokens), the invitations addressed to them and
//! their queued mail there; it keeps the organization's API keys, service
//! identities and invitations they created, with the link to them removed.
//! When no membership remains anywhere, the account itself goes (password
//! hash, MFA seed, recovery codes, links, login counters).

use saas_core::TenantContext;
use saas_core::UserId;
use saas_core::db::Tx;
use saas_core::db::sea_query::{Expr, ExprTrait, Query};
use saas_core::subject::{
    DataSubject, DataSubjectError, DataSubjectStore, ErasureReport, RecordCount, Retained,
    SubjectExport, SubjectRecords,
};

use crate::error::AuthError;
use crate::service::Auth;

const NAME: &str = "saas-auth";

/// The [`DataSubjectStore`] of saas-auth.
#[derive(Debug, Clone)]
pub struct AuthSubjectStore {
    auth: Auth,
}

impl AuthSubjectStore {
    /// The store over `auth`'s database.
    #[must_use]
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

fn err(e: impl Into<AuthError>) -> DataSubjectError {
    DataSubjectError::new(NAME, e.into())
}

struct Who {
    user: Option<UserId>,
    emails: Vec<String>,
}

impl Auth {
    async fn resolve_subject(&self, subject: &DataSubject) -> Result<Who, AuthError> {
        let mut emails: Vec<String> = subject
            .emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .collect();
        let mut user = subject.user_id;
        let mut ptx = self.db().begin_platform(&self.inner.accounts).await?;
        if let Some(u) = user {
            if let Some(r) = ptx
                .fetch_optional(
                    Query::select()
                        .column("email")
                        .from(crate::accounts::USERS)
                        .and_where(Expr::col("id").eq(u)),
                )
                .await?
            {
                emails.push(r.get("email")?);
            }
        } else if let Some(e) = emails.first() {
            user = self.account_by_email(&mut ptx, e).await?.map(|a| a.id);
        }
        ptx.commit().await?;
        emails.sort();
        emails.dedup();
        Ok(Who { user, emails })
    }
}

async fn count(
    tx: &mut Tx,
    q: &mut saas_core::db::sea_query::SelectStatement,
) -> Result<u64, AuthError> {
    Ok(u64::try_from(tx.fetch_all(q).await?.len()).unwrap_or(u64::MAX))
}

fn by_user(
    table: &str,
    col: &str,
    ctx: &TenantContext,
    user: UserId,
) -> saas_core::db::sea_query::SelectStatement {
    Query::select()
        .expr(Expr::val(1))
        .from(table.to_owned())
        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
        .and_where(Expr::col(col.to_owned()).eq(user))
        .to_owned()
}

fn by_email(
    table: &str,
    col: &str,
    ctx: &TenantContext,
    emails: &[String],
) -> saas_core::db::sea_query::SelectStatement {
    Query::select()
        .expr(Expr::val(1))
        .from(table.to_owned())
        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
        .and_where(Expr::col(col.to_owned()).is_in(emails.to_vec()))
        .to_owned()
}

/// Record kinds by user column, in the subject's tenant.
const USER_KINDS: [(&str, &str, &str); 7] = [
    ("membership", "auth_memberships", "user_id"),
    ("workspace_membership", "auth_workspace_members", "user_id"),
    ("session", "auth_sessions", "user_id"),
    ("invitation.sent", "auth_invitations", "invited_by"),
    ("invitation.accepted", "auth_invitations", "accepted_by"),
    ("api_key.created_by", "auth_api_keys", "created_by"),
    ("service.created_by", "auth_services", "created_by"),
];

#[async_trait::async_trait]
impl DataSubjectStore for AuthSubjectStore {
    fn name(&self) -> &str {
        NAME
    }

    async fn find(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectRecords, DataSubjectError> {
        let who = self.auth.resolve_subject(subject).await.map_err(err)?;
        let mut tx = self.auth.db().read(ctx).await.map_err(err)?;
        let mut records = Vec::new();
        if let Some(u) = who.user {
            for (kind, table, col) in USER_KINDS {
                let n = count(&mut tx, &mut by_user(table, col, ctx, u))
                    .await
                    .map_err(err)?;
                records.push(RecordCount {
                    kind: kind.into(),
                    count: n,
                });
            }
        }
        for (kind, table, col) in [
            ("invitation.received", "auth_invitations", "email"),
            ("mail", "auth_mail_outbox", "to_addr"),
        ] {
            let n = count(&mut tx, &mut by_email(table, col, ctx, &who.emails))
                .await
                .map_err(err)?;
            records.push(RecordCount {
                kind: kind.into(),
                count: n,
            });
        }
        tx.commit().await.map_err(err)?;
        records.retain(|r| r.count > 0);
        Ok(SubjectRecords {
            store: NAME.into(),
            records,
        })
    }

    async fn export(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectExport, DataSubjectError> {
        let who = self.auth.resolve_subject(subject).await.map_err(err)?;
        let mut tx = self.auth.db().read(ctx).await.map_err(err)?;
        let mut data = serde_json::Map::new();
        if let Some(u) = who.user {
            let account = tx
                .fetch_optional(
                    Query::select()
                        .column((crate::accounts::USERS, "email"))
                        .column((crate::accounts::USERS, "display_name"))
                        .column((crate::accounts::USERS, "created_at"))
                        .column((crate::accounts::USERS, "email_verified_at"))
                        .column((crate::accounts::USERS, "totp_confirmed_at"))
                        .column((crate::accounts::MEMBERS, "role"))
                        .from(crate::accounts::MEMBERS)
                        .inner_join(
                            crate::accounts::USERS,
                            Expr::col((crate::accounts::USERS, "id"))
                                .equals((crate::accounts::MEMBERS, "user_id")),
                        )
                        .and_where(
                            Expr::col((crate::accounts::MEMBERS, "tenant_id")).eq(ctx.tenant()),
                        )
                        .and_where(Expr::col((crate::accounts::MEMBERS, "user_id")).eq(u)),
                )
                .await
                .map_err(err)?;
            if let Some(a) = account {
                let get = |c: &str| -> Result<serde_json::Value, DataSubjectError> {
                    Ok(match c {
                        "created_at" => serde_json::json!(
                            a.get::<chrono::DateTime<chrono::Utc>>(c).map_err(err)?
                        ),
                        "email_verified_at" | "totp_confirmed_at" => {
                            serde_json::json!(
                                a.get::<Option<chrono::DateTime<chrono::Utc>>>(c)
                                    .map_err(err)?
                            )
                        }
                        _ => serde_json::json!(a.get::<String>(c).map_err(err)?),
                    })
                };
                data.insert(
                    "account".into(),
                    serde_json::json!({
                        "id": u,
                        "email": get("email")?,
                        "display_name": get("display_name")?,
                        "created_at": get("created_at")?,
                        "email_verified_at": get("email_verified_at")?,
                        "mfa_enabled_at": get("totp_confirmed_at")?,
                        "role": get("role")?,
                    }),
                );
            }
            let sessions = tx
                .fetch_all(
                    Query::select()
                        .columns([
                            "id",
                            "device",
                            "ip",
                            "created_at",
                            "last_seen_at",
                            "revoked_at",
                        ])
                        .from("auth_sessions")
                        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                        .and_where(Expr::col("user_id").eq(u)),
                )
                .await
                .map_err(err)?;
            let sessions: Vec<serde_json::Value> = sessions
                .iter()
                .map(|r| {
                    Ok(serde_json::json!({
                        "id": r.get::<uuid::Uuid>("id")?,
                        "device": r.get::<Option<String>>("device")?,
                        "ip": r.get::<Option<String>>("ip")?,
                        "created_at": r.get::<chrono::DateTime<chrono::Utc>>("created_at")?,
                        "last_seen_at": r.get::<chrono::DateTime<chrono::Utc>>("last_seen_at")?,
                        "revoked_at": r.get::<Option<chrono::DateTime<chrono::Utc>>>("revoked_at")?,
                    }))
                })
                .collect::<Result<_, saas_core::CoreError>>()
                .map_err(err)?;
            data.insert("sessions".into(), serde_json::json!(sessions));
            let ws = tx
                .fetch_all(
                    Query::select()
                        .columns(["workspace_id", "role"])
                        .from("auth_workspace_members")
                        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                        .and_where(Expr::col("user_id").eq(u)),
                )
                .await
                .map_err(err)?;
            let ws: Vec<serde_json::Value> = ws
                .iter()
                .map(|r| {
                    Ok(serde_json::json!({
                        "workspace_id": r.get::<uuid::Uuid>("workspace_id")?,
                        "role": r.get::<String>("role")?,
                    }))
                })
                .collect::<Result<_, saas_core::CoreError>>()
                .map_err(err)?;
            data.insert("workspace_memberships".into(), serde_json::json!(ws));
        }
        let invitations = tx
            .fetch_all(
                Query::select()
                    .columns(["id", "email", "role", "created_at", "accepted_at"])
                    .from("auth_invitations")
                    .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                    .and_where(Expr::col("email").is_in(who.emails.clone())),
            )
            .await
            .map_err(err)?;
        let invitations: Vec<serde_json::Value> = invitations
            .iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "id": r.get::<uuid::Uuid>("id")?,
                    "email": r.get::<String>("email")?,
                    "role": r.get::<String>("role")?,
                    "created_at": r.get::<chrono::DateTime<chrono::Utc>>("created_at")?,
                    "accepted_at": r.get::<Option<chrono::DateTime<chrono::Utc>>>("accepted_at")?,
                }))
            })
            .collect::<Result<_, saas_core::CoreError>>()
            .map_err(err)?;
        data.insert(
            "invitations_received".into(),
            serde_json::json!(invitations),
        );
        tx.commit().await.map_err(err)?;
        Ok(SubjectExport {
            store: NAME.into(),
            data: serde_json::Value::Object(data),
        })
    }

    async fn erase(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<ErasureReport, DataSubjectError> {
        let who = self.auth.resolve_subject(subject).await.map_err(err)?;
        let tenant = ctx.tenant();
        let mut report = ErasureReport {
            store: NAME.into(),
            ..ErasureReport::default()
        };
        let mut tx = self.auth.db().begin(ctx).await.map_err(err)?;
        let erased = |kind: &str, n: u64, report: &mut ErasureReport| {
            if n > 0 {
                report.erased.push(RecordCount {
                    kind: kind.into(),
                    count: n,
                });
            }
        };
        let mut sessions = Vec::new();
        if let Some(u) = who.user {
            for r in tx
                .fetch_all(
                    &by_user("auth_sessions", "user_id", ctx, u)
                        .column("id")
                        .to_owned(),
                )
                .await
                .map_err(err)?
            {
                sessions.push(format!(
                    "session:{}",
                    r.get::<uuid::Uuid>("id").map_err(err)?
                ));
            }
            for (kind, table) in [
                ("session", "auth_sessions"),
                ("workspace_membership", "auth_workspace_members"),
                ("membership", "auth_memberships"),
            ] {
                let n = tx
                    .execute(
                        Query::delete()
                            .from_table(table.to_owned())
                            .and_where(Expr::col("tenant_id").eq(tenant))
                            .and_where(Expr::col("user_id").eq(u)),
                    )
                    .await
                    .map_err(err)?;
                erased(kind, n, &mut report);
            }
            for (kind, table, col) in [
                ("invitation.sent", "auth_invitations", "invited_by"),
                ("invitation.accepted", "auth_invitations", "accepted_by"),
                ("api_key.created_by", "auth_api_keys", "created_by"),
                ("service.created_by", "auth_services", "created_by"),
            ] {
                let n = tx
                    .execute(
                        Query::update()
                            .table(table.to_owned())
                            .value(col.to_owned(), None::<uuid::Uuid>)
                            .and_where(Expr::col("tenant_id").eq(tenant))
                            .and_where(Expr::col(col.to_owned()).eq(u)),
                    )
                    .await
                    .map_err(err)?;
                if n > 0 {
                    report.anonymised.push(RecordCount {
                        kind: kind.into(),
                        count: n,
                    });
                }
            }
        }
        for (kind, table, col) in [
            ("invitation.received", "auth_invitations", "email"),
            ("mail", "auth_mail_outbox", "to_addr"),
        ] {
            let n = tx
                .execute(
                    Query::delete()
                        .from_table(table.to_owned())
                        .and_where(Expr::col("tenant_id").eq(tenant))
                        .and_where(Expr::col(col.to_owned()).is_in(who.emails.clone())),
                )
                .await
                .map_err(err)?;
            erased(kind, n, &mut report);
        }
        tx.commit().await.map_err(err)?;
        self.auth.invalidate(&sessions);
        // The account: gone once no organization holds it any more.
        let Some(u) = who.user else { return Ok(report) };
        let mut ptx = self
            .auth
            .db()
            .begin_platform(&self.auth.inner.accounts)
            .await
            .map_err(err)?;
        let others = ptx
            .fetch_all(
                Query::select()
                    .column("tenant_id")
                    .from(crate::accounts::MEMBERS)
                    .and_where(Expr::col("user_id").eq(u)),
            )
            .await
            .map_err(err)?
            .len();
        if others > 0 {
            ptx.commit().await.map_err(err)?;
            report.retained.push(Retained {
                kind: "account".into(),
                count: 1,
                reason: format!("the account is a member of {others} other organization(s); erase it there too to delete it"),
            });
            return Ok(report);
        }
        for email in &who.emails {
            self.auth.clear_lock(&mut ptx, email).await.map_err(err)?;
        }
        let mail = ptx
            .execute(
                Query::delete()
                    .from_table("auth_mail_outbox")
                    .and_where(Expr::col("tenant_id").is_null())
                    .and_where(Expr::col("to_addr").is_in(who.emails.clone())),
            )
            .await
            .map_err(err)?;
        erased("mail", mail, &mut report);
        let n = ptx
            .execute(
                Query::delete()
                    .from_table(crate::accounts::USERS)
                    .and_where(Expr::col("id").eq(u)),
            )
            .await
            .map_err(err)?;
        erased("account", n, &mut report);
        ptx.commit().await.map_err(err)?;
        Ok(report)
    }
}
