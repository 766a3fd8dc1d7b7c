//! Billing's personal data, for data-subject requests.
//!
//! What billing holds about a person, and what erasure does with it:
//!
//! | record | personal data | erasure |
//! | --- | --- | --- |
//! | billing account | the billing contact's mail address | cleared |
//! | invoices and credit notes | the buyer contact's mail address | cleared; the documents themselves are **retained**: bookkeeping law (e.g. §147 AO, 10 years; LGPD art. 16 I, legal obligation) requires keeping issued invoices unchanged, and they name the buyer organization, not the person |
//! | usage events | `subject`, or a property value, equal to the person's user id or mail address | cleared (`subject`) or replaced by `"erased"` (properties); the event and its count stay |
//! | unique-count rollups | a value equal to the person's user id or mail address | replaced by a random token, so the count stays right and the person cannot be found again |
//!
//! Event `properties` are meant for product facts; a person in them is found
//! only as a whole value equal to their user id or mail address.

use saas_core::db::sea_query::{Expr, ExprTrait, Query};
use saas_core::db::{Db, Tx};
use saas_core::subject::{
    DataSubject, DataSubjectError, DataSubjectStore, ErasureReport, RecordCount, Retained,
    SubjectExport, SubjectRecords,
};
use saas_core::{TenantContext, TenantId};

use crate::billing::ACCOUNTS;
use crate::error::BillingError;
use crate::invoice::INVOICES;
use crate::metering::{EVENTS, UNIQUES};

const NAME: &str = "saas-billing";

/// saas-billing's [`DataSubjectStore`].
#[derive(Debug, Clone)]
pub struct BillingSubjectStore {
    db: Db,
}

impl BillingSubjectStore {
    /// A store over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// The strings that identify the subject in billing's tables.
fn keys(subject: &DataSubject) -> Vec<String> {
    let mut k: Vec<String> = subject.emails.iter().map(|e| e.to_lowercase()).collect();
    if let Some(u) = subject.user_id {
        k.push(u.to_string());
    }
    k
}

fn wrap(e: impl Into<BillingError>) -> DataSubjectError {
    DataSubjectError::new(NAME, e.into())
}

struct Found {
    accounts: Vec<String>,
    invoices: Vec<(String, Option<String>)>,
    events: Vec<(String, String)>,
    /// Events with the person as a property value: key, transaction id, properties.
    properties: Vec<(
        uuid::Uuid,
        String,
        serde_json::Map<String, serde_json::Value>,
    )>,
    uniques: u64,
}

/// True when some value of `props` names the subject.
fn names_subject(props: &serde_json::Map<String, serde_json::Value>, keys: &[String]) -> bool {
    props.values().any(|v| {
        v.as_str()
            .is_some_and(|s| keys.iter().any(|k| k.eq_ignore_ascii_case(s)))
    })
}

async fn found(tx: &mut Tx, tenant: TenantId, keys: &[String]) -> Result<Found, BillingError> {
    let mut f = Found {
        accounts: Vec::new(),
        invoices: Vec::new(),
        events: Vec::new(),
        properties: Vec::new(),
        uniques: 0,
    };
    if keys.is_empty() {
        return Ok(f);
    }
    for r in tx
        .fetch_all(
            Query::select()
                .column("email")
                .from(ACCOUNTS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("email").is_in(keys.iter().cloned())),
        )
        .await?
    {
        f.accounts.push(r.get("email")?);
    }
    for r in tx
        .fetch_all(
            Query::select()
                .columns(["buyer_contact", "number"])
                .from(INVOICES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("buyer_contact").is_in(keys.iter().cloned())),
        )
        .await?
    {
        f.invoices.push((r.get("buyer_contact")?, r.get("number")?));
    }
    for r in tx
        .fetch_all(
            Query::select()
                .columns(["transaction_id", "subject"])
                .from(EVENTS)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("subject").is_in(keys.iter().cloned())),
        )
        .await?
    {
        f.events.push((r.get("transaction_id")?, r.get("subject")?));
    }
    for key in keys {
        let pattern = format!("%{}%", key.replace(['\\', '%'], "").replace('_', "\\_"));
        for r in tx
            .fetch_all(
                Query::select()
                    .columns(["key", "transaction_id", "properties"])
                    .from(EVENTS)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(
                        Expr::col("properties")
                            .cast_as("text")
                            .like(saas_core::db::sea_query::LikeExpr::new(pattern).escape('\\')),
                    ),
            )
            .await?
        {
            let props = r
                .get::<sqlx::types::Json<serde_json::Map<String, serde_json::Value>>>("properties")?
                .0;
            let k: uuid::Uuid = r.get("key")?;
            if names_subject(&props, keys) && !f.properties.iter().any(|(x, _, _)| *x == k) {
                f.properties.push((k, r.get("transaction_id")?, props));
            }
        }
    }
    f.uniques = u64::try_from(
        tx.fetch_all(
            Query::select()
                .column("value")
                .from(UNIQUES)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("value").is_in(keys.iter().cloned())),
        )
        .await?
        .len(),
    )
    .unwrap_or(u64::MAX);
    Ok(f)
}

fn counts(f: &Found) -> Vec<RecordCount> {
    [
        ("billing_account.email", f.accounts.len() as u64),
        ("invoice.buyer_contact", f.invoices.len() as u64),
        ("usage_event.subject", f.events.len() as u64),
        ("usage_event.properties", f.properties.len() as u64),
        ("usage_rollup.unique_value", f.uniques),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(kind, count)| RecordCount {
        kind: kind.into(),
        count,
    })
    .collect()
}

#[async_trait::async_trait]
impl DataSubjectStore for BillingSubjectStore {
    fn name(&self) -> &str {
        NAME
    }

    async fn find(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectRecords, DataSubjectError> {
        let mut tx = self.db.read(ctx).await.map_err(wrap)?;
        let f = found(&mut tx, ctx.tenant(), &keys(subject))
            .await
            .map_err(wrap)?;
        tx.commit().await.map_err(wrap)?;
        Ok(SubjectRecords {
            store: NAME.into(),
            records: counts(&f),
        })
    }

    async fn export(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectExport, DataSubjectError> {
        let mut tx = self.db.read(ctx).await.map_err(wrap)?;
        let f = found(&mut tx, ctx.tenant(), &keys(subject))
            .await
            .map_err(wrap)?;
        tx.commit().await.map_err(wrap)?;
        Ok(SubjectExport {
            store: NAME.into(),
            data: serde_json::json!({
                "billing_contact": f.accounts,
                "invoices_addressed_to": f.invoices.iter().map(|(to, number)| serde_json::json!({"number": number, "contact": to})).collect::<Vec<_>>(),
                "usage_events": f.events.iter().map(|(id, s)| serde_json::json!({"transaction_id": id, "subject": s})).collect::<Vec<_>>(),
                "usage_event_properties": f.properties.iter().map(|(_, id, p)| serde_json::json!({"transaction_id": id, "properties": p})).collect::<Vec<_>>(),
                "unique_counts_including_them": f.uniques,
            }),
        })
    }

    async fn erase(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<ErasureReport, DataSubjectError> {
        let keys = keys(subject);
        let mut tx = self.db.begin(ctx).await.map_err(wrap)?;
        let tenant = ctx.tenant();
        let f = found(&mut tx, tenant, &keys).await.map_err(wrap)?;
        let mut report = ErasureReport {
            store: NAME.into(),
            ..ErasureReport::default()
        };
        if keys.is_empty() {
            return Ok(report);
        }
        let nullify = |table: &'static str, col: &'static str| {
            let mut q = Query::update();
            q.table(table)
                .value(col, Option::<String>::None)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col(col).is_in(keys.iter().cloned()));
            q
        };
        tx.execute(&nullify(ACCOUNTS, "email"))
            .await
            .map_err(wrap)?;
        tx.execute(&nullify(INVOICES, "buyer_contact"))
            .await
            .map_err(wrap)?;
        tx.execute(&nullify(EVENTS, "subject"))
            .await
            .map_err(wrap)?;
        for (k, _, props) in &f.properties {
            let cleaned: serde_json::Map<String, serde_json::Value> = props
                .iter()
                .map(|(name, v)| {
                    let named = v
                        .as_str()
                        .is_some_and(|s| keys.iter().any(|k| k.eq_ignore_ascii_case(s)));
                    (
                        name.clone(),
                        if named {
                            serde_json::json!("erased")
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect();
            tx.execute(
                Query::update()
                    .table(EVENTS)
                    .value("properties", serde_json::Value::Object(cleaned))
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("key").eq(*k)),
            )
            .await
            .map_err(wrap)?;
        }
        for key in &keys {
            tx.execute(
                Query::update()
                    .table(UNIQUES)
                    .value("value", format!("erased:{}", uuid::Uuid::now_v7().simple()))
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("value").eq(key.as_str())),
            )
            .await
            .map_err(wrap)?;
        }
        tx.commit().await.map_err(wrap)?;
        report.anonymised = counts(&f);
        if !f.invoices.is_empty() {
            report.retained.push(Retained {
                kind: "invoice".into(),
                count: f.invoices.len() as u64,
                reason: "issued invoices are kept unchanged for bookkeeping (e.g. §147 AO, 10 years; LGPD art. 16 I); only the contact's mail address was cleared".into(),
            });
        }
        Ok(report)
    }
}
