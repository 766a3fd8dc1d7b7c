//! Data-subject requests: what billing holds about a person, exported and erased.

use saas_billing::{BillingAccount, BillingSubjectStore, NewSubscription, UsageEvent, UsageQuery};
use saas_core::subject::{DataSubject, DataSubjectStore};
use saas_core::{TenantContext, UserId};
use serde_json::json;

use super::*;

async fn seed(t: &TestDb, ctx: &TenantContext, user: UserId) {
    let b = billing(t);
    b.set_account(
        ctx,
        BillingAccount {
            legal_name: "Acme".into(),
            email: Some("Ann@Acme.example".into()),
            address: Some("1 Road".into()),
            tax_id: None,
            tax_rate: 0.into(),
            po_number: None,
        },
    )
    .await
    .unwrap();
    b.subscribe(
        ctx,
        NewSubscription {
            plan: "basic".into(),
            version: Some(1),
            seats: None,
        },
    )
    .await
    .unwrap();
    let m = meter(t);
    let mut e = UsageEvent::new("e1", "activity").property("user_id", json!(user.to_string()));
    e.subject = Some(user.to_string());
    m.record_batch(
        ctx,
        vec![
            e,
            UsageEvent::new("e2", "activity").property("user_id", json!("someone-else")),
        ],
    )
    .await
    .unwrap();
}

saas_test_support::both_backends! {
    migrations = sets();

    async fn an_erased_person_leaves_no_trace_in_billing_while_invoices_and_counts_stay(t) {
        let (a, b) = t.two_tenants().await;
        let ann = UserId::new();
        seed(&t, &a, ann).await;
        seed(&t, &b, ann).await;
        let store = BillingSubjectStore::new(t.db.clone());
        let subject = DataSubject { user_id: Some(ann), emails: vec!["ann@acme.example".into()] };
        let found = store.find(&a, &subject).await.unwrap();
        let kinds: Vec<&str> = found.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["billing_account.email", "invoice.buyer_contact", "usage_event.subject", "usage_event.properties", "usage_rollup.unique_value"]);
        let export = store.export(&a, &subject).await.unwrap().data.to_string();
        assert!(export.contains("ann@acme.example") && export.contains("INV-000001"), "{export}");
        let report = store.erase(&a, &subject).await.unwrap();
        assert_eq!(report.retained.len(), 1, "invoices are kept for bookkeeping: {report:?}");
        assert!(report.retained[0].reason.contains("bookkeeping"));
        // Nothing of Ann is left in tenant A's billing rows; B's are untouched.
        let inspect = t.inspector().await;
        for table in ["billing_accounts", "billing_invoices", "billing_events", "billing_usage_uniques"] {
            let rows = inspect.row_texts(table).await;
            let (in_a, in_b): (Vec<&String>, Vec<&String>) = rows.iter().partition(|r| r.contains(&a.tenant().to_string()) || r.contains(&a.tenant().as_uuid().simple().to_string()));
            for r in &in_a {
                assert!(!r.to_lowercase().contains("ann@acme.example"), "{table}: {r}");
                assert!(!r.contains(&ann.to_string()), "{table}: {r}");
            }
            if table != "billing_usage_uniques" {
                assert!(in_b.iter().any(|r| r.to_lowercase().contains("ann@acme.example") || r.contains(&ann.to_string())), "{table}: tenant B lost data");
            }
        }
        assert!(store.find(&a, &subject).await.unwrap().records.is_empty());
        // The invoice and the unique count stand.
        let bill = billing(&t);
        assert_eq!(bill.invoices(&a).await.unwrap().len(), 1);
        let q = UsageQuery { metric: Some("active_users".into()), ..UsageQuery::default() };
        assert_eq!(meter(&t).usage(&a, &q).await.unwrap().metrics[0].value, 2.into());
        assert!(!store.find(&b, &subject).await.unwrap().records.is_empty());
    }
}
