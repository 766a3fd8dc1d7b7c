//! Subscriptions, the billing run and invoices, driven by the fake clock.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use saas_audit::{AuditLog, CheckpointSigner};
use saas_billing::plan::PlanCatalogue;
use saas_billing::{
    Billing, BillingError, DocumentKind, InvoiceStatus, NewCreditNote, NewSubscription, Party,
    PlanChange, SubscriptionStatus, UsageEvent,
};
use saas_core::TenantContext;
use saas_core::jobs::{JobStore, Worker, WorkerConfig};
use saas_core::tenant::{Tenants, Tier};

use super::*;

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

fn sub(plan: &str, version: Option<u32>, seats: u64) -> NewSubscription {
    NewSubscription {
        plan: plan.into(),
        version,
        seats: Some(seats),
    }
}

async fn tier(t: &TestDb, ctx: &TenantContext) -> Tier {
    Tenants::new(t.db.clone()).current(ctx).await.unwrap().tier
}

saas_test_support::both_backends! {
    migrations = sets();

    async fn periods_close_into_gapless_invoices_at_the_subscribers_plan_version(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        let m = meter(&t);
        t.clock.set(at(2026, 11, 16));
        let s = b.subscribe(&a, sub("basic", Some(1), 1)).await.unwrap();
        assert_eq!(s.status, SubscriptionStatus::Active);
        assert_eq!((s.current_period.start, s.current_period.end), (at(2026, 11, 1), at(2026, 12, 1)));
        assert_eq!(tier(&t, &a).await, Tier::Team, "the plan sets the tier at once");
        // The first half-month is billed prorated: 10 EUR x 15/30.
        let first = b.invoices(&a).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].number.as_deref(), first[0].total, first[0].status), (Some("INV-000001"), 500, InvoiceStatus::Finalized));
        assert_eq!(first[0].due_at, Some(at(2026, 12, 16)));
        for i in 0..5 {
            m.record(&a, UsageEvent::new(format!("c{i}"), "api_calls")).await.unwrap();
        }
        // Closing November: 3 billable calls (2 free) at 0.50, and December's fee in advance.
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let done = b.advance(&a, s.id).await.unwrap();
        assert_eq!((done.periods_closed, done.documents.len()), (1, 1));
        let inv = b.invoice(&a, done.documents[0]).await.unwrap();
        assert_eq!(inv.number.as_deref(), Some("INV-000002"));
        let amounts: Vec<(String, i64)> = inv.lines.iter().map(|l| (l.charge_code.clone(), l.amount)).collect();
        assert_eq!(amounts, [("calls".to_owned(), 150), ("base".to_owned(), 1000)]);
        assert_eq!((inv.subtotal, inv.total), (1150, 1150));
        assert_eq!(inv.seller.name, "Seller GmbH");
        // Running again changes nothing.
        assert_eq!(b.advance(&a, s.id).await.unwrap().periods_closed, 0);
        // A run that was down catches up period by period, still at version 1's price.
        t.clock.set(at(2027, 2, 1) + Duration::hours(1));
        let done = b.advance(&a, s.id).await.unwrap();
        assert_eq!(done.periods_closed, 2);
        let all = b.invoices(&a).await.unwrap();
        let mut numbers: Vec<String> = all.iter().filter_map(|i| i.number.clone()).collect();
        numbers.sort();
        assert_eq!(numbers, ["INV-000001", "INV-000002", "INV-000003", "INV-000004"]);
        assert!(all.iter().all(|i| i.total == 1000 || i.number.as_deref() < Some("INV-000003")));
        let now = b.subscription(&a).await.unwrap().unwrap();
        assert_eq!(now.current_period.start, at(2027, 2, 1));
        // Every step is in the audit trail.
        let trail = audit_actions(&t, &a).await;
        for (action, n) in [("billing.subscription.create", 1), ("billing.invoice.issue", 4), ("billing.period.close", 3)] {
            assert_eq!(trail.iter().filter(|x| *x == action).count(), n, "{action}: {trail:?}");
        }
    }

    async fn two_concurrent_runs_for_a_period_produce_one_invoice(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 1));
        let s = b.subscribe(&a, sub("basic", Some(1), 1)).await.unwrap();
        t.clock.set(at(2026, 12, 1) + Duration::minutes(5));
        // Two runs enqueue one job; two workers and two direct calls race on it.
        let p = t.platform();
        let (r1, r2) = tokio::join!(b.run_due(&p), b.run_due(&p));
        assert_eq!(r1.unwrap().enqueued + r2.unwrap().enqueued, 1);
        let worker = || Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default())
            .register(Arc::new(b.advance_job()));
        let (w1, w2) = (worker(), worker());
        let (x, y, c1, c2) = tokio::join!(w1.run_once(), w2.run_once(), b.advance(&a, s.id), b.advance(&a, s.id));
        x.unwrap();
        y.unwrap();
        c1.unwrap();
        c2.unwrap();
        let invoices = b.invoices(&a).await.unwrap();
        let period: Vec<_> = invoices.iter().filter(|i| i.reason == "period").collect();
        assert_eq!(period.len(), 1, "{invoices:?}");
        assert_eq!(invoices.len(), 2);
    }

    async fn a_trial_ends_into_a_prorated_invoice_on_the_anniversary_cycle(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 10) + Duration::hours(9));
        let s = b.subscribe(&a, sub("trial", None, 1)).await.unwrap();
        assert_eq!(s.status, SubscriptionStatus::Trialing);
        assert_eq!(s.trial_end, Some(at(2026, 11, 24) + Duration::hours(9)));
        assert_eq!(s.current_period.end, at(2026, 12, 10) + Duration::hours(9));
        assert!(b.invoices(&a).await.unwrap().is_empty(), "nothing is billed during a trial");
        t.clock.set(at(2026, 11, 25));
        let done = b.advance(&a, s.id).await.unwrap();
        assert!(done.trial_ended);
        let inv = b.invoice(&a, done.documents[0]).await.unwrap();
        // 16 of the period's 30 days at 20 EUR.
        assert_eq!(inv.total, 1067);
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Active);
        // Invalid transitions are refused with the state named.
        let err = b.resume(&a, s.id).await.unwrap_err();
        assert_eq!(err.code(), "invalid_transition");
        b.pause(&a, s.id).await.unwrap();
        assert_eq!(b.pause(&a, s.id).await.unwrap_err().code(), "invalid_transition");
        // Paused through the period end: nothing is billed for the next period.
        t.clock.set(at(2026, 12, 11));
        let done = b.advance(&a, s.id).await.unwrap();
        assert_eq!((done.periods_closed, done.documents.len()), (1, 0));
        b.resume(&a, s.id).await.unwrap();
        let trail = audit_actions(&t, &a).await;
        for action in ["billing.subscription.trial_end", "billing.subscription.pause", "billing.subscription.resume"] {
            assert!(trail.iter().any(|x| x == action), "{action}: {trail:?}");
        }
    }

    async fn an_upgrade_is_prorated_at_once_and_a_downgrade_waits_for_the_period_end(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 1));
        let s = b.subscribe(&a, sub("basic", Some(1), 2)).await.unwrap();
        // Halfway through November: basic (10) -> pro (30 + 2 x 5 = 40).
        t.clock.set(at(2026, 11, 16));
        let up = b.change_plan(&a, s.id, PlanChange { plan: "pro".into(), version: None, seats: None }).await.unwrap();
        assert_eq!(up.effective, "now");
        let doc = up.document.unwrap();
        let lines: Vec<i64> = doc.lines.iter().map(|l| l.amount).collect();
        assert_eq!(lines, [-500, 2000], "credit the unused half of 10, charge half of 40");
        assert_eq!(doc.total, 1500);
        assert_eq!(tier(&t, &a).await, Tier::Department);
        // Back down: waits for the period end.
        let down = b.change_plan(&a, s.id, PlanChange { plan: "basic".into(), version: Some(1), seats: None }).await.unwrap();
        assert_eq!(down.effective, "period_end");
        assert!(down.document.is_none());
        assert_eq!(tier(&t, &a).await, Tier::Department);
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let done = b.advance(&a, s.id).await.unwrap();
        let inv = b.invoice(&a, done.documents[0]).await.unwrap();
        assert_eq!(inv.total, 1000, "December is billed at basic");
        let now = b.subscription(&a).await.unwrap().unwrap();
        assert_eq!((now.plan.code.as_str(), now.next_plan.is_none()), ("basic", true));
        assert_eq!(tier(&t, &a).await, Tier::Team);
        // Unknown plans and seat limits are clear errors.
        let err = b.change_plan(&a, s.id, PlanChange { plan: "platinum".into(), version: None, seats: None }).await.unwrap_err();
        assert!(matches!(err, BillingError::Validation { ref field, .. } if field == "plan"), "{err:?}");
        assert_eq!(b.subscribe(&a, sub("basic", None, 1)).await.unwrap_err().code(), "subscription_exists");
    }

    async fn cancellation_at_period_end_and_immediately_with_a_credit(t) {
        let (a, bt) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 1));
        let s = b.subscribe(&a, sub("basic", Some(1), 1)).await.unwrap();
        let c = b.cancel(&a, s.id, Some(false)).await.unwrap();
        assert!(c.cancel_at_period_end);
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let done = b.advance(&a, s.id).await.unwrap();
        assert!(done.documents.is_empty(), "no usage and no next period: nothing to bill");
        assert!(b.subscription(&a).await.unwrap().is_none());
        assert_eq!(tier(&t, &a).await, Tier::Individual);
        // Immediately, mid-period: the unused fee comes back as a credit note and prepaid credit.
        t.clock.set(at(2026, 11, 1));
        let s = b.subscribe(&bt, sub("basic", Some(1), 1)).await.unwrap();
        t.clock.set(at(2026, 11, 16));
        b.cancel(&bt, s.id, Some(true)).await.unwrap();
        let docs = b.invoices(&bt).await.unwrap();
        let note = docs.iter().find(|d| d.kind == DocumentKind::CreditNote).unwrap();
        assert_eq!((note.number.as_deref(), note.total), (Some("CN-000001"), -500));
        assert_eq!(b.credit_balance(&bt, "EUR".parse().unwrap()).await.unwrap(), 500);
        assert_eq!(b.cancel(&bt, s.id, None).await.unwrap_err().code(), "invalid_transition");
    }

    async fn operators_mark_paid_void_and_credit_and_finalized_invoices_are_immutable(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 1));
        b.grant_credit(&a, 300, "EUR".parse().unwrap(), "goodwill").await.unwrap();
        let s = b.subscribe(&a, sub("basic", Some(1), 1)).await.unwrap();
        let inv = b.invoices(&a).await.unwrap().remove(0);
        assert_eq!((inv.subtotal, inv.credits_applied, inv.total), (1000, 300, 700));
        // Void gives the credit back; the number stays taken.
        let void = b.void(&a, inv.id, "issued in error").await.unwrap();
        assert_eq!((void.status, void.amount_due), (InvoiceStatus::Void, 0));
        assert_eq!(b.credit_balance(&a, "EUR".parse().unwrap()).await.unwrap(), 300);
        assert_eq!(b.void(&a, inv.id, "again").await.unwrap_err().code(), "invalid_invoice_state");
        assert_eq!(b.mark_paid(&a, inv.id, "x").await.unwrap_err().code(), "invalid_invoice_state");
        // The next invoice: a credit note lowers what is due, a payment settles it.
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let next = b.advance(&a, s.id).await.unwrap().documents[0];
        let next_inv = b.invoice(&a, next).await.unwrap();
        assert_eq!(next_inv.number.as_deref(), Some("INV-000002"));
        assert_eq!(next_inv.total, 700);
        let note = b.credit_note(&a, next, NewCreditNote { amount: 200, reason: "outage on 3 December".into() }).await.unwrap();
        assert_eq!((note.kind, note.number.as_deref(), note.total), (DocumentKind::CreditNote, Some("CN-000001"), -200));
        assert_eq!(b.invoice(&a, next).await.unwrap().amount_due, 500);
        let err = b.credit_note(&a, next, NewCreditNote { amount: 900, reason: "too much".into() }).await.unwrap_err();
        assert!(matches!(err, BillingError::Validation { .. }), "{err:?}");
        let paid = b.mark_paid(&a, next, "bank transfer 2026-12-05 ref 991").await.unwrap();
        assert_eq!((paid.status, paid.payment_reference.as_deref()), (InvoiceStatus::Paid, Some("bank transfer 2026-12-05 ref 991")));
        // The database itself refuses to change a finalized invoice.
        let inspect = t.inspector().await;
        let changed = inspect.try_execute("UPDATE billing_invoices SET total = 1 WHERE status = 'paid'").await;
        assert!(changed.is_err(), "a finalized invoice was changed");
        let trail = audit_actions(&t, &a).await;
        for action in ["billing.credit.grant", "billing.invoice.void", "billing.credit_note.issue", "billing.invoice.mark_paid"] {
            assert!(trail.iter().any(|x| x == action), "{action}: {trail:?}");
        }
    }

    async fn credit_note_numbers_stay_gapless_under_concurrent_issuing(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 1));
        b.subscribe(&a, sub("basic", Some(1), 1)).await.unwrap();
        let inv = b.invoices(&a).await.unwrap().remove(0);
        // 12 concurrent notes of 1 EUR against a 10 EUR invoice: 10 succeed.
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (b, a) = (b.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                b.credit_note(&a, inv.id, NewCreditNote { amount: 100, reason: format!("note {i}") }).await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 10);
        let mut numbers: Vec<String> = b
            .invoices(&a)
            .await
            .unwrap()
            .into_iter()
            .filter(|d| d.kind == DocumentKind::CreditNote)
            .filter_map(|d| d.number)
            .collect();
        numbers.sort();
        let want: Vec<String> = (1..=10).map(|n| format!("CN-{n:06}")).collect();
        assert_eq!(numbers, want);
        let settled = b.invoice(&a, inv.id).await.unwrap();
        assert_eq!((settled.status, settled.amount_due), (InvoiceStatus::Paid, 0));
    }

    async fn tenants_reach_only_their_own_subscriptions_and_invoices(t) {
        let (a, bt) = t.two_tenants().await;
        let b = billing(&t);
        let s = b.subscribe(&a, sub("basic", Some(1), 1)).await.unwrap();
        let inv = b.invoices(&a).await.unwrap().remove(0);
        assert!(b.invoices(&bt).await.unwrap().is_empty());
        assert!(b.subscription(&bt).await.unwrap().is_none());
        for err in [
            b.invoice(&bt, inv.id).await.unwrap_err(),
            b.mark_paid(&bt, inv.id, "x").await.unwrap_err(),
            b.void(&bt, inv.id, "x").await.unwrap_err(),
            b.credit_note(&bt, inv.id, NewCreditNote { amount: 1, reason: "x".into() }).await.unwrap_err(),
            b.cancel(&bt, s.id, None).await.unwrap_err(),
            b.pause(&bt, s.id).await.unwrap_err(),
            b.change_plan(&bt, s.id, PlanChange { plan: "pro".into(), version: None, seats: None }).await.unwrap_err(),
            b.advance(&bt, s.id).await.unwrap_err(),
        ] {
            assert!(matches!(err, BillingError::NotFound { .. }), "{err:?}");
        }
        assert_eq!(b.invoice(&a, inv.id).await.unwrap().status, InvoiceStatus::Finalized);
    }

    async fn an_immediate_downgrade_credits_the_unused_time_and_subscribers_migrate_versions(t) {
        let (a, bt) = t.two_tenants().await;
        let b = Billing::new(
            t.db.clone(),
            AuditLog::new(t.db.clone(), CheckpointSigner::random("test")),
            PlanCatalogue::default_catalogue().unwrap(),
            meter(&t),
            Party { name: "Seller".into(), ..Party::default() },
        );
        t.clock.set(at(2026, 11, 1));
        let s = b.subscribe(&a, sub("department", None, 3)).await.unwrap();
        // Department (499 + 3 x 9 = 526) downgrades at once (its plan says so) to
        // Team (3 x 12 = 36) halfway: credit 263, charge 18, a credit note of 245.
        t.clock.set(at(2026, 11, 16));
        let r = b.change_plan(&a, s.id, PlanChange { plan: "team".into(), version: None, seats: None }).await.unwrap();
        assert_eq!(r.effective, "now");
        let doc = r.document.unwrap();
        assert_eq!((doc.kind, doc.number.as_deref(), doc.total), (DocumentKind::CreditNote, Some("CN-000001"), -24500));
        assert_eq!(b.credit_balance(&a, "EUR".parse().unwrap()).await.unwrap(), 24500);
        assert_eq!(tier(&t, &a).await, Tier::Team);
        // The credit pays the next invoice first.
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let next = b.advance(&a, s.id).await.unwrap().documents[0];
        let inv = b.invoice(&a, next).await.unwrap();
        assert_eq!((inv.subtotal, inv.credits_applied, inv.total), (3600, 3600, 0));
        assert_eq!(inv.status, InvoiceStatus::Paid);
        assert_eq!(b.credit_balance(&a, "EUR".parse().unwrap()).await.unwrap(), 20900);
        // Another tenant on basic v1 keeps v1 until migrated to v2.
        let billing_v = billing(&t);
        t.clock.set(at(2026, 11, 1));
        let s = billing_v.subscribe(&bt, sub("basic", Some(1), 1)).await.unwrap();
        assert_eq!(s.plan.version, 1);
        let r = billing_v.change_plan(&bt, s.id, PlanChange { plan: "basic".into(), version: Some(2), seats: None }).await.unwrap();
        assert_eq!((r.subscription.plan.version, r.effective), (2, "now"));
    }

    async fn a_trial_across_a_period_boundary_is_billed_from_its_end(t) {
        let (a, _) = t.two_tenants().await;
        let b = Billing::new(
            t.db.clone(),
            AuditLog::new(t.db.clone(), CheckpointSigner::random("test")),
            PlanCatalogue::default_catalogue().unwrap(),
            meter(&t),
            Party { name: "Seller".into(), ..Party::default() },
        );
        // Individual: 9 EUR a calendar month, 14 days of trial from 25 November.
        t.clock.set(at(2026, 11, 25));
        let s = b.subscribe(&a, sub("individual", None, 1)).await.unwrap();
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let done = b.advance(&a, s.id).await.unwrap();
        assert_eq!((done.periods_closed, done.documents.len(), done.trial_ended), (1, 0, false));
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Trialing);
        // The trial ends on 9 December: 23 of December's 31 days are billed.
        t.clock.set(at(2026, 12, 10));
        let done = b.advance(&a, s.id).await.unwrap();
        assert!(done.trial_ended);
        assert_eq!(b.invoice(&a, done.documents[0]).await.unwrap().total, 668);
        assert_eq!(b.subscription(&a).await.unwrap().unwrap().status, SubscriptionStatus::Active);
    }

    async fn fewer_seats_wait_for_the_period_end_when_the_plan_says_so(t) {
        let (a, _) = t.two_tenants().await;
        let b = billing(&t);
        t.clock.set(at(2026, 11, 1));
        let s = b.subscribe(&a, sub("pro", None, 4)).await.unwrap();
        t.clock.set(at(2026, 11, 10));
        // Pro defers downgrades: 4 seats -> 2 seats applies on 1 December.
        let r = b.change_plan(&a, s.id, PlanChange { plan: "pro".into(), version: None, seats: Some(2) }).await.unwrap();
        assert_eq!((r.effective, r.subscription.seats, r.subscription.next_seats), ("period_end", 4, Some(2)));
        t.clock.set(at(2026, 12, 1) + Duration::seconds(1));
        let doc = b.advance(&a, s.id).await.unwrap().documents[0];
        assert_eq!(b.invoice(&a, doc).await.unwrap().total, 4000, "30 + 2 seats x 5");
        let now = b.subscription(&a).await.unwrap().unwrap();
        assert_eq!((now.seats, now.next_seats), (2, None));
    }
}
