//! Metering: idempotent ingestion, aggregations, late events, isolation.

use std::str::FromStr;

use chrono::{Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use saas_billing::{BillingError, EventStatus, UsageEvent, UsageQuery};
use saas_core::workspace::{NewWorkspace, Workspaces};
use serde_json::json;

use super::*;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn value(m: &Meter, ctx: &saas_core::TenantContext, metric: &str) -> Decimal {
    let q = UsageQuery {
        metric: Some(metric.into()),
        ..UsageQuery::default()
    };
    m.usage(ctx, &q).await.unwrap().metrics[0].value
}

saas_test_support::both_backends! {
    migrations = sets();

    async fn one_event_sent_fifty_times_concurrently_is_counted_once(t) {
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (m, a) = (m.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                m.record(&a, UsageEvent::new("req-1", "ai_requests")).await
            }));
        }
        let mut counted = 0;
        for task in tasks {
            if task.await.unwrap().unwrap().status == EventStatus::Counted {
                counted += 1;
            }
        }
        assert_eq!(counted, 1);
        assert_eq!(value(&m, &a, "ai_requests").await, Decimal::ONE);
        let inspect = t.inspector().await;
        assert_eq!(inspect.count_where("billing_events", "tenant_id", a.tenant().as_uuid()).await, 1);
    }

    async fn overlapping_batches_sent_concurrently_count_each_event_once(t) {
        // Eight batches of 100 whose keys overlap by half, sent at once:
        // every event counts once, no batch fails or deadlocks.
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (m, a) = (m.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                let batch = (i * 50..i * 50 + 100).map(|n| UsageEvent::new(format!("txn-{n}"), "ai_requests")).collect();
                m.record_batch(&a, batch).await
            }));
        }
        let mut counted = 0;
        let mut duplicates = 0;
        for task in tasks {
            let receipt = task.await.unwrap().unwrap();
            counted += receipt.counted;
            duplicates += receipt.duplicates;
        }
        assert_eq!((counted, duplicates), (450, 350));
        assert_eq!(value(&m, &a, "ai_requests").await, Decimal::from(450));
        let inspect = t.inspector().await;
        assert_eq!(inspect.count_where("billing_events", "tenant_id", a.tenant().as_uuid()).await, 450);
    }

    async fn a_purged_tenant_leaves_no_billing_row(t) {
        let (a, b) = t.two_tenants().await;
        let m = meter(&t);
        for ctx in [&a, &b] {
            m.record_batch(ctx, (0..10).map(|n| UsageEvent::new(format!("txn-{n}"), "ai_requests")).collect()).await.unwrap();
        }
        let tenants = saas_core::tenant::Tenants::new(t.db.clone());
        let p = t.platform();
        tenants.schedule_deletion(&p, a.tenant(), Duration::zero()).await.unwrap();
        tenants.purge(&p, a.tenant()).await.unwrap();
        let insp = t.inspector().await;
        let tables = insp.tenant_tables().await;
        assert!(tables.contains(&"billing_events".to_string()));
        for table in &tables {
            assert_eq!(insp.count_where(table, "tenant_id", a.tenant().as_uuid()).await, 0, "{table}");
        }
        assert_eq!(insp.count_where("billing_events", "tenant_id", b.tenant().as_uuid()).await, 10);
        // A batch for the purged tenant is refused, not stored as an orphan.
        assert!(m.record(&a, UsageEvent::new("late", "ai_requests")).await.is_err());
        assert_eq!(insp.count_where("billing_events", "tenant_id", a.tenant().as_uuid()).await, 0);
    }

    async fn a_different_event_under_a_used_key_is_refused_and_its_batch_writes_nothing(t) {
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        m.record(&a, UsageEvent::new("k1", "ai_requests")).await.unwrap();
        let err = m
            .record_batch(
                &a,
                vec![
                    UsageEvent::new("k2", "ai_requests"),
                    UsageEvent::new("k1", "ai_requests").property("tokens", json!(5)),
                ],
            )
            .await
            .unwrap_err();
        match err {
            BillingError::Conflict { code, message } => {
                assert_eq!(code, "idempotency_conflict");
                assert!(message.contains("k1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // k2 was not kept: the batch is all or nothing.
        assert_eq!(value(&m, &a, "ai_requests").await, Decimal::ONE);
        let again = m.record(&a, UsageEvent::new("k2", "ai_requests")).await.unwrap();
        assert_eq!(again.status, EventStatus::Counted);
        // Inside one batch, two different events under one key are refused too.
        let err = m
            .record_batch(&a, vec![
                UsageEvent::new("k3", "api_calls"),
                UsageEvent::new("k3", "api_calls").quantity(dec("2")),
            ])
            .await
            .unwrap_err();
        assert_eq!(err.code(), "idempotency_conflict");
    }

    async fn duplicates_in_a_batch_and_across_calls_count_once(t) {
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        let e = UsageEvent::new("d1", "ai_requests").property("tokens", json!(40));
        let r = m.record_batch(&a, vec![e.clone(), e.clone(), UsageEvent::new("d2", "ai_requests")]).await.unwrap();
        assert_eq!((r.counted, r.duplicates), (2, 1));
        assert_eq!(r.events[1].status, EventStatus::Duplicate);
        let r = m.record_batch(&a, vec![e.clone()]).await.unwrap();
        assert_eq!((r.counted, r.duplicates), (0, 1));
        assert_eq!(value(&m, &a, "ai_requests").await, dec("2"));
        assert_eq!(value(&m, &a, "ai_tokens").await, dec("40"));
    }

    async fn a_batch_mixing_stored_and_new_events_inside_a_callers_transaction_keeps_both(t) {
        // A batch that holds an event already stored (on PostgreSQL the plain
        // insert meets a unique violation and goes again from a savepoint)
        // counts only what is new, and the caller's transaction stays usable:
        // what it wrote before the batch commits with it.
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        m.record_batch(&a, (0..3).map(|n| UsageEvent::new(format!("m-{n}"), "ai_requests")).collect())
            .await
            .unwrap();
        let mut tx = t.db.begin(&a).await.unwrap();
        let first = m.record_in(&mut tx, &a, &[UsageEvent::new("m-10", "ai_requests")]).await.unwrap();
        assert_eq!(first.counted, 1);
        let mixed: Vec<UsageEvent> = (1..6).map(|n| UsageEvent::new(format!("m-{n}"), "ai_requests")).collect();
        let r = m.record_in(&mut tx, &a, &mixed).await.unwrap();
        assert_eq!((r.counted, r.duplicates), (3, 2));
        let again = m.record_in(&mut tx, &a, &mixed).await.unwrap();
        assert_eq!((again.counted, again.duplicates), (0, 5));
        tx.commit().await.unwrap();
        assert_eq!(value(&m, &a, "ai_requests").await, dec("7"));
        let inspect = t.inspector().await;
        assert_eq!(inspect.count_where("billing_events", "tenant_id", a.tenant().as_uuid()).await, 7);
    }

    async fn metrics_count_sum_max_latest_unique_and_filter(t) {
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        let ws = Workspaces::new(t.db.clone())
            .create(&a, NewWorkspace { name: "EU".into(), parent_id: None, tags: Vec::new() })
            .await
            .unwrap();
        let now = t.db.clock().now();
        let events = vec![
            UsageEvent::new("s1", "storage").quantity(dec("10.5")).at(now - Duration::seconds(30)),
            UsageEvent::new("s2", "storage").quantity(dec("7.25")).at(now - Duration::seconds(10)),
            UsageEvent::new("s3", "storage").quantity(dec("3")).at(now - Duration::seconds(20)),
            UsageEvent::new("u1", "activity").property("user_id", json!("alice")),
            UsageEvent::new("u2", "activity").property("user_id", json!("bob")).workspace(ws.id),
            UsageEvent::new("u3", "activity").property("user_id", json!("alice")).workspace(ws.id),
            UsageEvent::new("x1", "export").property("region", json!("eu")).workspace(ws.id),
            UsageEvent::new("x2", "export").property("region", json!("us")),
            UsageEvent::new("x3", "export"),
            UsageEvent::new("t1", "ai_requests").property("tokens", json!(1500)).workspace(ws.id),
            UsageEvent::new("t2", "ai_requests").property("tokens", json!("0.5")),
            UsageEvent::new("t3", "ai_requests"),
        ];
        let r = m.record_batch(&a, events).await.unwrap();
        assert_eq!(r.counted, 12);
        assert_eq!(value(&m, &a, "storage_gb").await, dec("10.5"));
        assert_eq!(value(&m, &a, "storage_gb_latest").await, dec("7.25"));
        assert_eq!(value(&m, &a, "active_users").await, dec("2"));
        assert_eq!(value(&m, &a, "eu_exports").await, dec("1"));
        assert_eq!(value(&m, &a, "ai_requests").await, dec("3"));
        assert_eq!(value(&m, &a, "ai_tokens").await, dec("1500.5"));
        // A later batch keeps the unique set across calls.
        m.record(&a, UsageEvent::new("u4", "activity").property("user_id", json!("bob"))).await.unwrap();
        m.record(&a, UsageEvent::new("u5", "activity").property("user_id", json!("carol"))).await.unwrap();
        assert_eq!(value(&m, &a, "active_users").await, dec("3"));
        // Per workspace.
        let per_ws = m
            .usage(&a, &UsageQuery { workspace_id: Some(ws.id), ..UsageQuery::default() })
            .await
            .unwrap();
        let get = |code: &str| per_ws.metrics.iter().find(|u| u.metric == code).unwrap().value;
        assert_eq!(get("active_users"), dec("2"));
        assert_eq!(get("ai_requests"), dec("1"));
        assert_eq!(get("ai_tokens"), dec("1500"));
        assert_eq!(get("storage_gb"), Decimal::ZERO);
    }

    async fn late_events_land_in_their_period_within_grace_and_later_in_the_open_one(t) {
        let (a, _) = t.two_tenants().await;
        let m = meter(&t).with_late_grace(Duration::hours(48));
        let dec1 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let nov15 = Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0).unwrap();
        // One day into December: a November event still counts in November.
        t.clock.set(dec1 + Duration::hours(24));
        let r = m.record(&a, UsageEvent::new("l1", "api_calls").at(nov15)).await.unwrap();
        assert!(!r.late);
        assert_eq!(r.period_start, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        // Three days in, past the grace: it counts in December, marked late.
        t.clock.set(dec1 + Duration::hours(72));
        let r = m.record(&a, UsageEvent::new("l2", "api_calls").at(nov15)).await.unwrap();
        assert!(r.late);
        assert_eq!(r.period_start, dec1);
        let nov = m
            .usage(&a, &UsageQuery { at: Some(nov15), metric: Some("api_calls".into()), ..UsageQuery::default() })
            .await
            .unwrap();
        assert_eq!(nov.metrics[0].value, dec("1"));
        let december = m
            .usage(&a, &UsageQuery { metric: Some("api_calls".into()), ..UsageQuery::default() })
            .await
            .unwrap();
        assert_eq!((december.metrics[0].value, december.metrics[0].late_events), (dec("1"), 1));
        // A retry of the late event reports where it was first counted.
        let again = m.record(&a, UsageEvent::new("l2", "api_calls").at(nov15)).await.unwrap();
        assert_eq!((again.status, again.late, again.period_start), (EventStatus::Duplicate, true, dec1));
    }

    async fn bad_events_are_refused_with_the_field_named(t) {
        let (a, _) = t.two_tenants().await;
        let m = meter(&t);
        let now = t.db.clock().now();
        let cases = vec![
            (UsageEvent::new("", "api_calls"), "events[0].transaction_id"),
            (UsageEvent::new("b1", "nope"), "events[0].code"),
            (UsageEvent::new("b2", "api_calls").quantity(dec("-1")), "events[0].quantity"),
            (UsageEvent::new("b3", "api_calls").at(now + Duration::hours(1)), "events[0].timestamp"),
            (UsageEvent::new("b4", "ai_requests").property("tokens", json!("many")), "events[0].properties.tokens"),
            (UsageEvent::new("b5", "api_calls").property("blob", json!("x".repeat(5000))), "events[0].properties"),
        ];
        for (e, want) in cases {
            match m.record(&a, e).await.unwrap_err() {
                BillingError::Validation { field, .. } => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(m.record_batch(&a, vec![]).await.is_err());
        let too_many = (0..saas_billing::metering::MAX_BATCH + 1)
            .map(|i| UsageEvent::new(format!("m{i}"), "api_calls"))
            .collect();
        assert!(matches!(m.record_batch(&a, too_many).await, Err(BillingError::Validation { .. })));
        let err = m
            .usage(&a, &UsageQuery { metric: Some("nope".into()), ..UsageQuery::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        let inspect = t.inspector().await;
        assert_eq!(inspect.count_where("billing_events", "tenant_id", a.tenant().as_uuid()).await, 0);
    }

    async fn tenants_share_no_keys_usage_or_workspaces(t) {
        let (a, b) = t.two_tenants().await;
        let m = meter(&t);
        let wb = Workspaces::new(t.db.clone())
            .create(&b, NewWorkspace { name: "B".into(), parent_id: None, tags: Vec::new() })
            .await
            .unwrap();
        // The same transaction id is a different event in another tenant.
        assert_eq!(m.record(&a, UsageEvent::new("same", "api_calls")).await.unwrap().status, EventStatus::Counted);
        assert_eq!(m.record(&b, UsageEvent::new("same", "api_calls")).await.unwrap().status, EventStatus::Counted);
        m.record(&b, UsageEvent::new("b-only", "api_calls").quantity(dec("5"))).await.unwrap();
        assert_eq!(value(&m, &a, "api_calls").await, dec("1"));
        assert_eq!(value(&m, &b, "api_calls").await, dec("2"));
        // A's events cannot name B's workspace, nor read its usage.
        let err = m.record(&a, UsageEvent::new("w", "api_calls").workspace(wb.id)).await.unwrap_err();
        assert!(matches!(err, BillingError::NotFound { entity: "workspace" }), "{err:?}");
        let err = m
            .usage(&a, &UsageQuery { workspace_id: Some(wb.id), ..UsageQuery::default() })
            .await
            .unwrap_err();
        assert!(matches!(err, BillingError::NotFound { .. }));
    }
}
