//! Cross-tenant probes on every billing table: the repository's filter on
//! both backends, and PostgreSQL's row-level security underneath it.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use saas_billing::payment::{
    Scripted, SimulatedCardProvider, WebhookEvent, WebhookKind, WebhookSecret,
};
use saas_billing::{
    BillingAccount, BillingSubjectStore, NewCreditNote, NewSubscription, UsageEvent, UsageQuery,
};
use saas_core::TenantContext;
use saas_core::db::Backend;
use saas_core::jobs::{JobStore, Worker, WorkerConfig};
use saas_core::subject::{DataSubject, DataSubjectStore};
use serde_json::json;
use sqlx::Row;

use super::*;

const BILLING_TABLES: [&str; 12] = [
    "billing_accounts",
    "billing_counters",
    "billing_credits",
    "billing_cycles",
    "billing_events",
    "billing_invoice_lines",
    "billing_invoices",
    "billing_payments",
    "billing_period_closes",
    "billing_subscriptions",
    "billing_usage",
    "billing_usage_uniques",
];

/// Gives `ctx` a row in every billing table.
async fn populate(t: &TestDb, ctx: &TenantContext, card: &Arc<SimulatedCardProvider>) {
    let b = billing(t).with_provider(card.clone());
    b.set_account(
        ctx,
        BillingAccount {
            legal_name: "Org".into(),
            email: Some("ap@org.example".into()),
            address: None,
            tax_id: None,
            tax_rate: 10.into(),
            po_number: None,
        },
    )
    .await
    .unwrap();
    b.grant_credit(ctx, 100, "EUR".parse().unwrap(), "welcome")
        .await
        .unwrap();
    let s = b
        .subscribe(
            ctx,
            NewSubscription {
                plan: "basic".into(),
                version: Some(1),
                seats: None,
            },
        )
        .await
        .unwrap();
    meter(t)
        .record_batch(
            ctx,
            vec![
                UsageEvent::new("u1", "activity").property("user_id", json!("x")),
                UsageEvent::new("c1", "api_calls"),
            ],
        )
        .await
        .unwrap();
    let w =
        Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default()).register_all(b.jobs());
    while w.run_once().await.unwrap() > 0 {}
    t.clock
        .set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap());
    b.advance(ctx, s.id).await.unwrap();
    let inv = b
        .invoices(ctx)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.status == saas_billing::InvoiceStatus::Finalized)
        .unwrap();
    b.credit_note(
        ctx,
        inv.id,
        NewCreditNote {
            amount: 1,
            reason: "goodwill".into(),
        },
    )
    .await
    .unwrap();
    t.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
}

saas_test_support::both_backends! {
    migrations = sets();

    async fn every_billing_table_keeps_tenants_apart(t) {
        t.clock.set(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        let (a, b) = t.two_tenants().await;
        let card = Arc::new(SimulatedCardProvider::new(WebhookSecret::generate()));
        card.script([Scripted::Succeed, Scripted::Succeed, Scripted::Succeed]);
        populate(&t, &a, &card).await;
        populate(&t, &b, &card).await;
        // A webhook names B's tenant: processed for B only.
        let bill = billing(&t).with_provider(card.clone());
        let b_inv = bill.invoices(&b).await.unwrap().into_iter().find(|i| i.kind == saas_billing::DocumentKind::Invoice).unwrap();
        let now = t.db.clock().now();
        let event = WebhookEvent { id: "evt_b".into(), kind: WebhookKind::PaymentFailed, tenant_id: b.tenant().as_uuid(), invoice_id: b_inv.id.as_uuid(), amount: saas_billing::money::Money { amount: 1, currency: b_inv.currency }, reference: "r".into(), failure_code: Some("card_declined".into()), occurred_at: now };
        let (headers, body) = card.webhook_for(&event, now);
        bill.handle_webhook("simulated_card", &headers, &body, now).await.unwrap();
        // A webhook naming A's tenant with B's invoice reaches nothing.
        let forged = WebhookEvent { id: "evt_x".into(), tenant_id: a.tenant().as_uuid(), ..event.clone() };
        let (headers, body) = card.webhook_for(&forged, now);
        assert!(matches!(bill.handle_webhook("simulated_card", &headers, &body, now).await, Err(saas_billing::BillingError::NotFound { .. })));

        let insp = t.inspector().await;
        let mut tables: Vec<String> = insp.tenant_tables().await.into_iter().filter(|x| x.starts_with("billing_")).collect();
        tables.retain(|x| x != "billing_webhook_events_in");
        assert_eq!(tables, BILLING_TABLES, "a new billing table: populate it and add it here");
        for table in BILLING_TABLES {
            assert!(insp.count_where(table, "tenant_id", b.tenant().as_uuid()).await > 0, "{table} empty for b");
        }
        assert_eq!(insp.count_where("billing_webhook_events_in", "tenant_id", b.tenant().as_uuid()).await, 1);
        // Through the API, A sees only its own: invoices, usage, credit, subject data.
        let b_ids: Vec<_> = bill.invoices(&b).await.unwrap().into_iter().map(|i| i.id).collect();
        assert!(bill.invoices(&a).await.unwrap().iter().all(|i| !b_ids.contains(&i.id)));
        let ua = meter(&t).usage(&a, &UsageQuery { metric: Some("active_users".into()), at: Some(Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()), ..UsageQuery::default() }).await.unwrap();
        assert_eq!(ua.metrics[0].value, 1.into());
        let subject = DataSubject { user_id: None, emails: vec!["ap@org.example".into()] };
        BillingSubjectStore::new(t.db.clone()).erase(&a, &subject).await.unwrap();
        assert!(!BillingSubjectStore::new(t.db.clone()).find(&b, &subject).await.unwrap().records.is_empty(), "erasing in A left B alone");

        // PostgreSQL: forced RLS on each table, and a query without any tenant
        // filter, inside A's transaction, returns no row of B.
        if t.backend() == Backend::Postgres {
            let pool = t.db.postgres_pool().unwrap();
            let mut all: Vec<&str> = BILLING_TABLES.to_vec();
            all.push("billing_webhook_events_in");
            for table in all {
                let row = sqlx::query("SELECT c.relrowsecurity AS rls, c.relforcerowsecurity AS forced FROM pg_class c WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace")
                    .bind(table).fetch_one(pool).await.unwrap();
                assert!(row.get::<bool, _>("rls") && row.get::<bool, _>("forced"), "{table} lacks forced RLS");
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT set_config('saas.tenant_id', $1, true)").bind(a.tenant().to_string()).execute(&mut *tx).await.unwrap();
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT tenant_id AS t FROM {table}"))).fetch_all(&mut *tx).await.unwrap();
                let foreign = rows.iter().filter(|r| r.get::<uuid::Uuid, _>("t") != a.tenant().as_uuid()).count();
                assert_eq!(foreign, 0, "{table} leaked {foreign} rows of another tenant");
                tx.rollback().await.unwrap();
            }
        }
    }
}
