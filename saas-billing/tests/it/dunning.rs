//! Payments, webhooks and dunning, driven by the fake clock.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, TimeZone, Utc};
use saas_billing::payment::{
    Scripted, SimulatedCardProvider, WebhookEvent, WebhookKind, WebhookSecret,
};
use saas_billing::{
    BillingAccount, BillingError, InvoiceStatus, NewSubscription, Outbox, SubscriptionStatus,
    WebhookResult,
};
use saas_core::TenantContext;
use saas_core::db::Tx;
use saas_core::jobs::{JobStore, Worker, WorkerConfig};
use saas_core::tenant::{TenantStatus, Tenants};

use super::*;

/// Mail as the outbox receives it.
#[derive(Debug, Default)]
struct Mails(Mutex<Vec<(String, String)>>);

#[async_trait]
impl Outbox for Mails {
    async fn enqueue(
        &self,
        _tx: &mut Tx,
        to: &str,
        subject: &str,
        _body: &str,
    ) -> Result<(), BillingError> {
        self.0
            .lock()
            .unwrap()
            .push((to.to_owned(), subject.to_owned()));
        Ok(())
    }
}

async fn drain(t: &TestDb, b: &saas_billing::Billing) {
    let w =
        Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default()).register_all(b.jobs());
    while w.run_once().await.unwrap() > 0 {}
}

async fn status(t: &TestDb, ctx: &TenantContext) -> (TenantStatus, Option<String>) {
    let p = t.platform();
    let tenant = Tenants::new(t.db.clone())
        .get(&p, ctx.tenant())
        .await
        .unwrap();
    (tenant.status, tenant.status_reason)
}

saas_test_support::both_backends! {
    migrations = sets();

    async fn a_declined_card_runs_dunning_to_suspension_and_a_webhook_payment_reactivates(t) {
        let (a, _) = t.two_tenants().await;
        let card = Arc::new(SimulatedCardProvider::new(WebhookSecret::generate()));
        let mails = Arc::new(Mails::default());
        let b = billing(&t).with_provider(card.clone()).with_outbox(mails.clone());
        t.clock.set(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        b.set_account(&a, BillingAccount { legal_name: "Acme".into(), email: Some("ap@acme.example".into()), address: None, tax_id: None, tax_rate: 0.into(), po_number: None }).await.unwrap();
        card.script([Scripted::decline("card_declined"), Scripted::decline("insufficient_funds"), Scripted::decline("card_declined"), Scripted::decline("card_declined")]);
        b.subscribe(&a, NewSubscription { plan: "basic".into(), version: Some(1), seats: None }).await.unwrap();
        drain(&t, &b).await;
        let sub = b.subscription(&a).await.unwrap().unwrap();
        assert_eq!(sub.status, SubscriptionStatus::Incomplete, "a declined first charge leaves it incomplete");
        let inv = b.invoices(&a).await.unwrap().remove(0);
        // Day 1, 3 and 7: retries (declined) and reminders; day 14: suspension.
        for day in [1, 3, 7, 14] {
            t.clock.set(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::days(day) + Duration::minutes(1));
            drain(&t, &b).await;
        }
        let reminders = mails.0.lock().unwrap().iter().filter(|(_, s)| s.starts_with("Payment reminder")).count();
        assert_eq!(reminders, 4);
        let (st, reason) = status(&t, &a).await;
        assert_eq!(st, TenantStatus::Suspended);
        assert!(reason.as_deref().unwrap().contains("INV-000001"), "{reason:?}");
        let refused = Tenants::new(t.db.clone()).current(&a).await.unwrap().ensure_usable().unwrap_err();
        assert!(refused.to_string().contains("INV-000001"), "{refused}");
        // The customer pays; the provider's webhook arrives (twice).
        let event = WebhookEvent {
            id: "evt_1".into(),
            kind: WebhookKind::PaymentSucceeded,
            tenant_id: a.tenant().as_uuid(),
            invoice_id: inv.id.as_uuid(),
            amount: saas_billing::money::Money { amount: inv.amount_due, currency: inv.currency },
            reference: "sim_ch_paid".into(),
            failure_code: None,
            occurred_at: t.db.clock().now(),
        };
        let now = t.db.clock().now();
        let (headers, body) = card.webhook_for(&event, now);
        assert_eq!(b.handle_webhook("simulated_card", &headers, &body, now).await.unwrap(), WebhookResult::Processed);
        assert_eq!(b.handle_webhook("simulated_card", &headers, &body, now).await.unwrap(), WebhookResult::Duplicate);
        assert_eq!(b.invoice(&a, inv.id).await.unwrap().status, InvoiceStatus::Paid);
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Active);
        assert_eq!(status(&t, &a).await.0, TenantStatus::Active, "payment reactivates");
        let payments = t.inspector().await.count_where("billing_payments", "tenant_id", a.tenant().as_uuid()).await;
        assert_eq!(payments, 5, "four declines and one webhook payment; the replay added nothing");
        // A tampered or stale webhook is refused.
        let mut bad = body.clone();
        bad.push(b' ');
        assert_eq!(b.handle_webhook("simulated_card", &headers, &bad, now).await.unwrap_err().code(), "invalid_webhook_signature");
        assert_eq!(b.handle_webhook("simulated_card", &headers, &body, now + Duration::minutes(10)).await.unwrap_err().code(), "invalid_webhook_signature");
        assert!(matches!(b.handle_webhook("stripe", &headers, &body, now).await, Err(BillingError::NotFound { .. })));
        let actions = audit_actions(&t, &a).await;
        for a in ["billing.payment.failed", "billing.subscription.incomplete", "billing.dunning.start", "billing.dunning.step", "billing.dunning.suspend", "billing.payment.succeeded", "billing.subscription.reactivate", "billing.dunning.reactivate"] {
            assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
        }
        assert_eq!(actions.iter().filter(|x| *x == "billing.dunning.step").count(), 5);
    }

    async fn a_manual_invoice_past_its_due_date_goes_past_due_until_marked_paid(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        b.subscribe(&a, NewSubscription { plan: "basic".into(), version: Some(1), seats: None }).await.unwrap();
        drain(&t, &b).await;
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Active, "manual: awaiting the transfer");
        let inv = b.invoices(&a).await.unwrap().remove(0);
        // Net 30: on day 31 it is overdue.
        t.clock.set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() - Duration::seconds(1));
        drain(&t, &b).await;
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Active);
        t.clock.set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap());
        let w = Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default()).register_all(b.jobs());
        w.run_once().await.unwrap();
        let listed = b.invoice(&a, inv.id).await.unwrap();
        assert!(listed.overdue);
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Incomplete, "its first invoice is overdue");
        b.mark_paid(&a, inv.id, "SEPA ref 42").await.unwrap();
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Active);
        // Later dunning steps find it paid and do nothing.
        t.clock.set(Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 0).unwrap());
        drain(&t, &b).await;
        assert_eq!(status(&t, &a).await.0, TenantStatus::Active);
        assert!(!audit_actions(&t, &a).await.iter().any(|x| x == "billing.dunning.suspend"));
    }
}

saas_test_support::both_backends! {
    migrations = sets();

    async fn webhooks_apply_partial_payments_and_refunds_and_refuse_unknown_tenants(t) {
        let (a, _) = t.two_tenants().await;
        let card = Arc::new(SimulatedCardProvider::new(WebhookSecret::generate()));
        let b = billing(&t).with_provider(card.clone());
        t.clock.set(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        b.subscribe(&a, NewSubscription { plan: "basic".into(), version: Some(1), seats: None }).await.unwrap();
        let inv = b.invoices(&a).await.unwrap().remove(0);
        assert_eq!(inv.amount_due, 1000);
        let now = t.db.clock().now();
        let send = |id: &str, kind: WebhookKind, amount: i64, tenant: uuid::Uuid| {
            let event = WebhookEvent {
                id: id.into(),
                kind,
                tenant_id: tenant,
                invoice_id: inv.id.as_uuid(),
                amount: saas_billing::money::Money { amount, currency: inv.currency },
                reference: format!("ref-{id}"),
                failure_code: None,
                occurred_at: now,
            };
            card.webhook_for(&event, now)
        };
        // 4 EUR of 10: the invoice stays open with 6 due.
        let (h, body) = send("p1", WebhookKind::PaymentSucceeded, 400, a.tenant().as_uuid());
        b.handle_webhook("simulated_card", &h, &body, now).await.unwrap();
        let open = b.invoice(&a, inv.id).await.unwrap();
        assert_eq!((open.status, open.amount_due), (InvoiceStatus::Finalized, 600));
        // Voiding it now would lose the 4 EUR paid: refused.
        assert_eq!(b.void(&a, inv.id, "mistake").await.unwrap_err().code(), "invalid_invoice_state");
        // The rest settles it; a refund is recorded and audited.
        let (h, body) = send("p2", WebhookKind::PaymentSucceeded, 600, a.tenant().as_uuid());
        b.handle_webhook("simulated_card", &h, &body, now).await.unwrap();
        assert_eq!(b.invoice(&a, inv.id).await.unwrap().status, InvoiceStatus::Paid);
        let (h, body) = send("r1", WebhookKind::RefundSucceeded, 100, a.tenant().as_uuid());
        b.handle_webhook("simulated_card", &h, &body, now).await.unwrap();
        let actions = audit_actions(&t, &a).await;
        for x in ["billing.payment.partial", "billing.payment.succeeded", "billing.payment.refunded"] {
            assert!(actions.iter().any(|y| y == x), "{x}: {actions:?}");
        }
        // A signed event for a tenant that does not exist is a clear not-found.
        let (h, body) = send("ghost", WebhookKind::PaymentSucceeded, 100, uuid::Uuid::now_v7());
        let err = b.handle_webhook("simulated_card", &h, &body, now).await.unwrap_err();
        assert_eq!(err.code(), "not_found", "{err:?}");
    }
}
