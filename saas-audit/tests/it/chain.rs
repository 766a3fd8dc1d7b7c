use saas_audit::{AuditError, AuditEvent, AuditQuery, Outcome, Target};
use saas_core::db::Backend;
use saas_core::tenant::Tier;
use saas_test_support::both_backends;

use crate::{event, log, sets, uuid_lit};

both_backends! {
    migrations = sets();

    async fn appended_events_form_one_valid_chain_and_read_back_filtered(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        for i in 0..7 {
            let e = if i == 3 { event(i).outcome(Outcome::Denied) } else { event(i) };
            let r = log.record(&ctx, e).await.unwrap();
            assert_eq!(r.seq, i as i64 + 1);
        }
        let report = log.verify(&ctx, 1).await.unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.checked, report.last_seq), (7, Some(7)));
        let page = log.query(&ctx, &AuditQuery { limit: Some(3), ..Default::default() }).await.unwrap();
        assert_eq!(page.records.iter().map(|r| r.event.seq).collect::<Vec<_>>(), vec![7, 6, 5]);
        let next = log.query(&ctx, &AuditQuery { limit: Some(3), before_seq: page.next_before_seq, ..Default::default() }).await.unwrap();
        assert_eq!(next.records.iter().map(|r| r.event.seq).collect::<Vec<_>>(), vec![4, 3, 2]);
        let denied = log.query(&ctx, &AuditQuery { outcome: Some(Outcome::Denied), ..Default::default() }).await.unwrap();
        assert_eq!(denied.records.len(), 1);
        assert_eq!(denied.records[0].event.target.id.as_deref(), Some("w3"));
        let by_target = log.query(&ctx, &AuditQuery { target_id: Some("w5".into()), ..Default::default() }).await.unwrap();
        assert_eq!(by_target.records.len(), 1);
        let by_actor = log.query(&ctx, &AuditQuery { actor_id: Some(ctx.principal().user_id().unwrap().to_string()), ..Default::default() }).await.unwrap();
        assert_eq!(by_actor.records.len(), 7);
        assert_eq!(by_actor.records[0].event.actor.kind, "user");
        assert_eq!(by_actor.records[0].event.correlation_id, ctx.correlation_id().as_str());
        let later = log.query(&ctx, &AuditQuery { from: Some(saas_core::clock::Clock::now(&t.clock) + chrono::Duration::seconds(1)), ..Default::default() }).await.unwrap();
        assert!(later.records.is_empty());
    }

    async fn the_application_role_cannot_update_or_delete_audit_rows(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        log.record(&ctx, event(1)).await.unwrap();
        log.checkpoint(&ctx).await.unwrap().unwrap();
        let tenant = uuid_lit(&t, ctx.tenant().as_uuid());
        for table in ["audit_events", "audit_checkpoints"] {
            let update = format!("UPDATE {table} SET seq = 99 WHERE tenant_id = {tenant}");
            let delete = format!("DELETE FROM {table} WHERE tenant_id = {tenant}");
            for sql in [update, delete] {
                let err = match t.backend() {
                    Backend::Postgres => {
                        // As the application runs: the saas_app role, in the tenant's transaction.
                        let mut tx = t.db.postgres_pool().unwrap().begin().await.unwrap();
                        sqlx::query("SELECT set_config('saas.tenant_id', $1, true)").bind(ctx.tenant().to_string()).execute(&mut *tx).await.unwrap();
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut *tx).await.unwrap_err()
                    }
                    Backend::Sqlite => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(t.db.sqlite_pool().unwrap()).await.unwrap_err(),
                };
                let msg = err.to_string();
                assert!(msg.contains("permission denied") || msg.contains("append-only"), "{sql}: {msg}");
            }
        }
        if t.backend() == Backend::Postgres {
            // Even a superuser is stopped by the trigger (short of disabling it).
            let insp = t.inspector().await;
            let saas_test_support::Inspector::Postgres(pool) = &insp else { unreachable!() };
            let err = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("UPDATE audit_events SET action = 'x' WHERE tenant_id = {tenant}"))).execute(pool).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
    }

    async fn an_event_appended_in_a_rolled_back_transaction_is_gone_with_it(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let mut tx = t.db.begin(&ctx).await.unwrap();
        log.append(&mut tx, &ctx, event(1)).await.unwrap();
        tx.rollback().await.unwrap();
        let mut tx = t.db.begin(&ctx).await.unwrap();
        log.append(&mut tx, &ctx, event(2)).await.unwrap();
        drop(tx); // a failed request: dropped without commit
        assert!(log.query(&ctx, &AuditQuery::default()).await.unwrap().records.is_empty());
        let r = log.record(&ctx, event(3)).await.unwrap();
        assert_eq!(r.seq, 1, "the chain has no gap where the rolled-back events were");
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
    }

    async fn concurrent_appends_to_one_tenant_give_one_valid_chain(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let tasks = 8;
        let each = 25;
        let mut set = tokio::task::JoinSet::new();
        for task in 0..tasks {
            let (log, ctx, db) = (log.clone(), ctx.clone(), t.db.clone());
            set.spawn(async move {
                for i in 0..each {
                    if i % 5 == 4 {
                        log.record(&ctx, event(task * 1000 + i)).await.unwrap();
                    } else {
                        // Batched appends interleave with single ones.
                        let mut tx = db.begin(&ctx).await.unwrap();
                        log.append_batch(&mut tx, &ctx, vec![event(task * 1000 + i)]).await.unwrap();
                        tx.commit().await.unwrap();
                    }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let report = log.verify(&ctx, 1).await.unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.checked, (tasks * each) as u64);
        println!("{} concurrent appends from {tasks} tasks: one valid chain of {} events", tasks * each, report.checked);
    }

    async fn batches_append_in_order_under_one_head_lock(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let mut tx = t.db.begin(&ctx).await.unwrap();
        let receipts = log.append_batch(&mut tx, &ctx, (0..1200).map(event).collect()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(receipts.first().unwrap().seq, 1);
        assert_eq!(receipts.last().unwrap().seq, 1200);
        let report = log.verify(&ctx, 1).await.unwrap();
        assert!(report.is_valid() && report.checked == 1200, "{report:?}");
        assert!(log.verify(&ctx, 600).await.unwrap().is_valid());
    }

    async fn invalid_events_and_mismatched_transactions_are_refused(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        let err = log.record(&a, AuditEvent::new("Bad Action!", Target::kind("x"))).await.unwrap_err();
        assert!(matches!(err, AuditError::Invalid(_)));
        let mut tx = t.db.begin(&b).await.unwrap();
        let err = log.append(&mut tx, &a, event(1)).await.unwrap_err();
        assert!(matches!(err, AuditError::ScopeMismatch(_)), "{err}");
        drop(tx);
        let p = t.platform();
        let err = log.record(&p, event(1).personal(None, saas_audit::PersonalData { ip: Some("198.51.100.1".into()), ..Default::default() })).await.unwrap_err();
        assert!(matches!(err, AuditError::Invalid(_)));
        assert!(log.query(&a, &AuditQuery::default()).await.unwrap().records.is_empty());
    }

    async fn the_database_walk_hashes_awkward_text_and_every_optional_field_as_an_export_does(t) {
        // PostgreSQL's walk hashes rows straight out of a binary COPY; SQLite's
        // reads them as events. Both must hash what the offline check hashes.
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let awkward = "quote \" backslash \\ newline \n tab \t control \u{1} é 日本 🦀";
        let details = serde_json::json!({"from": awkward, "to": {"nested": [awkward, 1.5, null, true]}});
        log.record(&ctx, AuditEvent::new("tenant_config.update", Target::kind("tenant_config")).details(details)).await.unwrap();
        let pd = saas_audit::PersonalData { ip: Some("203.0.113.7".into()), user_agent: Some(awkward.into()), fields: [("name".to_string(), awkward.to_string())].into() };
        log.record(&ctx, event(2).personal(Some(uuid::Uuid::now_v7()), pd.clone())).await.unwrap();
        log.record(&ctx, event(3).outcome(Outcome::Failure).personal(None, pd)).await.unwrap();
        log.record(&ctx, AuditEvent::new("workspace.delete", Target::new("workspace", awkward)).outcome(Outcome::Denied)).await.unwrap();
        log.checkpoint(&ctx).await.unwrap().unwrap();

        let walked = log.verify(&ctx, 1).await.unwrap();
        assert!(walked.is_valid(), "{walked:?}");
        assert_eq!((walked.checked, walked.last_seq, walked.checkpoint_seq), (4, Some(4), Some(4)));
        let from_middle = log.verify(&ctx, 3).await.unwrap();
        assert!(from_middle.is_valid(), "{from_middle:?}");
        assert_eq!((from_middle.checked, from_middle.last_seq), (2, Some(4)));

        let mut file = Vec::new();
        log.export(&ctx, 1, None, &mut file).await.unwrap();
        let offline = saas_audit::verify_export(&file[..], Some(log.signer())).unwrap();
        assert!(offline.is_valid(), "{offline:?}");
        assert_eq!(offline.checked, 4);
        let events: Vec<saas_audit::StoredEvent> = std::str::from_utf8(&file).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[3].target.id.as_deref(), Some(awkward));
        assert!(events.iter().all(|e| e.compute_hash() == e.hash));
    }

    async fn the_platform_chain_is_its_own(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let p = t.platform();
        log.record(&p, AuditEvent::new("tenant.suspend", Target::new("tenant", ctx.tenant()))).await.unwrap();
        log.record(&p, AuditEvent::new("tenant.reactivate", Target::new("tenant", ctx.tenant()))).await.unwrap();
        log.record(&ctx, event(1)).await.unwrap();
        let platform = log.query(&p, &AuditQuery::default()).await.unwrap();
        assert_eq!(platform.records.len(), 2);
        assert!(platform.records.iter().all(|r| r.event.chain == "platform" && r.event.actor.kind == "system"));
        assert_eq!(log.query(&ctx, &AuditQuery::default()).await.unwrap().records.len(), 1);
        log.checkpoint(&p).await.unwrap().unwrap();
        assert!(log.verify(&p, 1).await.unwrap().is_valid());
    }

    async fn no_query_or_export_of_tenant_a_returns_tenant_b_events(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        for i in 0..5 {
            log.record(&a, event(i)).await.unwrap();
            log.record(&b, event(100 + i).personal(None, saas_audit::PersonalData { ip: Some("203.0.113.77".into()), ..Default::default() })).await.unwrap();
        }
        let page = log.query(&a, &AuditQuery { limit: Some(500), ..Default::default() }).await.unwrap();
        assert_eq!(page.records.len(), 5);
        assert!(page.records.iter().all(|r| r.event.chain == format!("tenant:{}", a.tenant())));
        // Filters naming B's actor or targets still see nothing of B from A.
        let b_actor = b.principal().user_id().unwrap().to_string();
        assert!(log.query(&a, &AuditQuery { actor_id: Some(b_actor), ..Default::default() }).await.unwrap().records.is_empty());
        assert!(log.query(&a, &AuditQuery { target_id: Some("w100".into()), ..Default::default() }).await.unwrap().records.is_empty());
        let mut out = Vec::new();
        let summary = log.export(&a, 1, None, &mut out).await.unwrap();
        assert_eq!(summary.events, 5);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(&b.tenant().to_string()));
        assert!(!text.contains("w100"));
        // The walk (a COPY stream on PostgreSQL) reads A's chain alone, with
        // B's events written between A's.
        let walked = log.verify(&a, 1).await.unwrap();
        assert!(walked.is_valid(), "{walked:?}");
        assert_eq!((walked.chain, walked.checked, walked.last_seq), (format!("tenant:{}", a.tenant()), 5, Some(5)));
        assert!(log.subject_events(&a, b.principal().user_id().unwrap().as_uuid()).await.unwrap().is_empty());
        assert_eq!(log.erase_subject(&a, b.principal().user_id().unwrap().as_uuid()).await.unwrap(), 0);
        let b_page = log.query(&b, &AuditQuery::default()).await.unwrap();
        assert!(b_page.records.iter().all(|r| r.personal_data.as_ref().and_then(|p| p.ip.as_deref()) == Some("203.0.113.77")));
    }

    async fn a_purged_tenant_leaves_no_audit_row(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        for ctx in [&a, &b] {
            log.record(ctx, event(1).personal(None, saas_audit::PersonalData { ip: Some("192.0.2.1".into()), ..Default::default() })).await.unwrap();
            log.set_retention(ctx, 365).await.unwrap();
            log.checkpoint(ctx).await.unwrap();
        }
        let tenants = saas_core::tenant::Tenants::new(t.db.clone());
        let p = t.platform();
        tenants.schedule_deletion(&p, a.tenant(), chrono::Duration::zero()).await.unwrap();
        tenants.purge(&p, a.tenant()).await.unwrap();
        let insp = t.inspector().await;
        let tables = insp.tenant_tables().await;
        assert!(tables.contains(&"audit_events".to_string()) && tables.contains(&"audit_settings".to_string()));
        for table in &tables {
            assert_eq!(insp.count_where(table, "tenant_id", a.tenant().as_uuid()).await, 0, "{table}");
        }
        assert!(log.verify(&b, 1).await.unwrap().is_valid());
    }

    async fn events_stored_before_their_hashed_bytes_were_kept_verify_column_by_column(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        for i in 0..10 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        log.checkpoint(&ctx).await.unwrap().unwrap();
        // As a database migrated from before saas-audit's migration 5 holds
        // them: positions 3 to 7 without their bytes.
        let insp = t.inspector().await;
        let k = uuid_lit(&t, ctx.tenant().as_uuid());
        let as_superuser = |sql: String| match t.backend() {
            Backend::Postgres => format!("SET session_replication_role = replica; {sql}; SET session_replication_role = origin"),
            Backend::Sqlite => format!("DROP TRIGGER IF EXISTS audit_events_no_update; {sql}"),
        };
        insp.execute(&as_superuser(format!("UPDATE audit_events SET canonical = NULL WHERE tenant_id = {k} AND seq BETWEEN 3 AND 7"))).await;
        let report = log.verify(&ctx, 1).await.unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.checked, 10);
        assert!(log.verify(&ctx, 5).await.unwrap().is_valid());
        let mut export = Vec::new();
        log.export(&ctx, 1, None, &mut export).await.unwrap();
        assert!(saas_audit::verify_export(&export[..], None).unwrap().is_valid());
        // Such an event is still held to its hash by its columns.
        insp.execute(&as_superuser(format!("UPDATE audit_events SET action = 'tenant.delete' WHERE tenant_id = {k} AND seq = 5"))).await;
        let report = log.verify(&ctx, 1).await.unwrap();
        assert_eq!(report.problem, Some(saas_audit::ChainProblem::HashMismatch { seq: 5 }));
    }
}
