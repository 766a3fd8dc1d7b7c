use chrono::Duration;
use saas_audit::{
    AuditError, AuditLog, AuditQuery, ChainProblem, DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS, verify_export,
};
use saas_core::TenantContext;
use saas_core::clock::Clock;
use saas_core::db::Backend;
use saas_core::tenant::Tier;
use saas_test_support::both_backends;

use crate::{event, log, sets, uuid_lit};

both_backends! {
    migrations = sets();

    async fn pruning_archives_records_itself_in_the_chain_and_keeps_it_verifiable(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let old = ten_events_then_ten_days(&t, &log, &ctx).await;
        for i in 10..15 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        let mut archive = Vec::new();
        assert!(log.prune(&ctx, old - Duration::days(1), &mut archive).await.unwrap().is_none(), "nothing that old");
        let report = log.prune(&ctx, old + Duration::days(5), &mut archive).await.unwrap().unwrap();
        assert_eq!((report.up_to_seq, report.events), (10, 10));

        // The archive verifies offline, signature included.
        let offline = verify_export(&archive[..], Some(log.signer())).unwrap();
        assert!(offline.is_valid() && offline.checked == 10 && offline.checkpoint_seq == Some(10), "{offline:?}");
        // The pruned rows are gone; the chain verifies from the prune's anchor.
        let insp = t.inspector().await;
        assert_eq!(insp.count_where("audit_events", "tenant_id", ctx.tenant().as_uuid()).await, 6);
        let v = log.verify(&ctx, 1).await.unwrap();
        assert!(v.is_valid() && v.checked == 6, "{v:?}");
        // The prune is in the chain, naming the archive.
        let page = log.query(&ctx, &AuditQuery { action: Some("audit.pruned".into()), ..Default::default() }).await.unwrap();
        let details: serde_json::Value = serde_json::from_str(&page.records[0].event.details).unwrap();
        assert_eq!(details["archive_sha256"], report.archive_sha256);
        assert_eq!(report.archive_sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive)), "the hash is of the bytes written");
        assert_eq!(details["up_to_seq"], 10);
        // Exports after the prune start at its anchor and verify.
        let mut rest = Vec::new();
        log.export(&ctx, 1, None, &mut rest).await.unwrap();
        assert!(verify_export(&rest[..], None).unwrap().is_valid());

        // A second prune later on continues from the first.
        t.clock.advance(Duration::days(10));
        let second = log.prune(&ctx, t.clock.now(), &mut Vec::new()).await.unwrap().unwrap();
        assert_eq!((second.up_to_seq, second.events), (16, 6));
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
    }

    async fn a_chain_that_does_not_verify_is_not_pruned_and_keeps_every_row(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let old = ten_events_then_ten_days(&t, &log, &ctx).await;
        log.record(&ctx, event(10)).await.unwrap();
        // A superuser edits event 4 behind the triggers' back, dropping the
        // bytes stored as hashed (which PostgreSQL's guard would otherwise
        // hold the columns to): the event is then checked column by column.
        let insp = t.inspector().await;
        let tenant = uuid_lit(&t, ctx.tenant().as_uuid());
        let edit = format!("UPDATE audit_events SET action = 'tenant.forged', canonical = NULL WHERE tenant_id = {tenant} AND seq = 4");
        match t.backend() {
            Backend::Postgres => {
                insp.execute(&format!("SET session_replication_role = replica; {edit}; SET session_replication_role = origin;")).await;
            }
            Backend::Sqlite => {
                insp.execute("DROP TRIGGER audit_events_no_update").await;
                insp.execute(&edit).await;
            }
        }
        let mut archive = Vec::new();
        let err = log.prune(&ctx, old + Duration::days(5), &mut archive).await.unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        assert_eq!(insp.count_where("audit_events", "tenant_id", ctx.tenant().as_uuid()).await, 11, "nothing deleted");
        let page = log.query(&ctx, &AuditQuery { action: Some("audit.pruned".into()), ..Default::default() }).await.unwrap();
        assert!(page.records.is_empty(), "no prune recorded");
        assert_eq!(verify_export(&archive[..], None).unwrap().problem, Some(ChainProblem::HashMismatch { seq: 4 }), "what was written is the evidence");
    }

    async fn a_prune_record_planted_outside_the_chain_is_detected(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        for i in 0..12 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        let insp = t.inspector().await;
        let k = uuid_lit(&t, ctx.tenant().as_uuid());
        // A superuser hides events 1..=5 behind a forged prune record.
        let now = match t.backend() { Backend::Postgres => "now()".to_string(), Backend::Sqlite => "'2026-01-01T00:00:00+00:00'".to_string() };
        let sql = format!(
            "INSERT INTO audit_prunes SELECT tenant_id, 5, hash, hash, {now} FROM audit_events WHERE tenant_id = {k} AND seq = 5; \
             DELETE FROM audit_events WHERE tenant_id = {k} AND seq <= 5"
        );
        insp.execute(&sql).await;
        let report = log.verify(&ctx, 1).await.unwrap();
        assert_eq!(report.problem, Some(ChainProblem::UnrecordedPrune { up_to_seq: 5 }), "{report:?}");
    }

    async fn a_tenant_without_a_setting_keeps_its_events_seven_years(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        assert_eq!(DEFAULT_RETENTION_DAYS, 7 * 365 + 2);
        assert_eq!(log.retention(&ctx).await.unwrap(), DEFAULT_RETENTION_DAYS);
        for i in 0..3 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        t.clock.advance(Duration::days(i64::from(DEFAULT_RETENTION_DAYS) - 1));
        assert!(log.prune_expired(&ctx, &mut Vec::new()).await.unwrap().is_none(), "a day short of seven years");
        t.clock.advance(Duration::days(2));
        let report = log.prune_expired(&ctx, &mut Vec::new()).await.unwrap().unwrap();
        assert_eq!((report.up_to_seq, report.events), (3, 3));
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
    }

    async fn a_retention_setting_is_kept_and_belongs_to_its_tenant_only(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        log.set_retention(&a, 90).await.unwrap().unwrap();
        assert_eq!(log.retention(&a).await.unwrap(), 90);
        assert_eq!(log.retention(&b).await.unwrap(), DEFAULT_RETENTION_DAYS, "A's setting is not B's");
        log.set_retention(&b, 400).await.unwrap().unwrap();
        assert_eq!((log.retention(&a).await.unwrap(), log.retention(&b).await.unwrap()), (90, 400));
        // The setting is stored, not held by this AuditLog value.
        let again = AuditLog::new(t.db.clone(), crate::signer());
        assert_eq!(again.retention(&a).await.unwrap(), 90);
        // Setting the stored value again writes nothing.
        assert!(log.set_retention(&a, 90).await.unwrap().is_none());
        assert_eq!(changes(&log, &a).await.len(), 1);
        assert_eq!(changes(&log, &b).await.len(), 1);
        let insp = t.inspector().await;
        assert_eq!(insp.count_where("audit_settings", "tenant_id", a.tenant().as_uuid()).await, 1);
        assert_eq!(insp.count_where("audit_settings", "tenant_id", b.tenant().as_uuid()).await, 1);
    }

    async fn one_tenants_retention_does_not_change_what_another_tenant_prunes(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        log.set_retention(&a, 30).await.unwrap().unwrap();
        for ctx in [&a, &b] {
            for i in 0..4 {
                log.record(ctx, event(i)).await.unwrap();
            }
        }
        t.clock.advance(Duration::days(31));
        let pruned = log.prune_expired(&a, &mut Vec::new()).await.unwrap().unwrap();
        assert_eq!((pruned.up_to_seq, pruned.events), (5, 5), "A's change and four events are past 30 days");
        assert!(log.prune_expired(&b, &mut Vec::new()).await.unwrap().is_none(), "B keeps seven years");
        let insp = t.inspector().await;
        assert_eq!(insp.count_where("audit_events", "tenant_id", b.tenant().as_uuid()).await, 4);
        assert_eq!(insp.count_where("audit_events", "tenant_id", a.tenant().as_uuid()).await, 1, "only A's audit.pruned is left");
        assert!(log.verify(&a, 1).await.unwrap().is_valid());
        assert!(log.verify(&b, 1).await.unwrap().is_valid());
    }

    async fn prune_expired_removes_only_what_is_older_than_the_tenants_period(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        log.set_retention(&ctx, 60).await.unwrap().unwrap();
        for i in 0..5 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        t.clock.advance(Duration::days(30));
        for i in 5..8 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        t.clock.advance(Duration::days(29));
        assert!(log.prune_expired(&ctx, &mut Vec::new()).await.unwrap().is_none(), "59 days old: kept");
        t.clock.advance(Duration::days(2));
        let mut archive = Vec::new();
        let first = log.prune_expired(&ctx, &mut archive).await.unwrap().unwrap();
        assert_eq!((first.up_to_seq, first.events), (6, 6), "the change and the five events 61 days old");
        let offline = verify_export(&archive[..], Some(log.signer())).unwrap();
        assert!(offline.is_valid() && offline.checkpoint_seq == Some(6), "{offline:?}");
        // The three younger events (31 days old) stay until they pass 60 days.
        assert!(log.prune_expired(&ctx, &mut Vec::new()).await.unwrap().is_none());
        t.clock.advance(Duration::days(30));
        let second = log.prune_expired(&ctx, &mut Vec::new()).await.unwrap().unwrap();
        assert_eq!((second.up_to_seq, second.events), (9, 3));
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
    }

    async fn a_retention_outside_thirty_days_to_a_hundred_years_is_refused(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        assert_eq!((MIN_RETENTION_DAYS, MAX_RETENTION_DAYS), (30, 100 * 365 + 25));
        for days in [0, 1, MIN_RETENTION_DAYS - 1, MAX_RETENTION_DAYS + 1, u32::MAX] {
            match log.set_retention(&ctx, days).await {
                Err(AuditError::Invalid(m)) => assert!(m.contains("between 30 and 36525 days"), "{m}"),
                other => panic!("{days} days: {other:?}"),
            }
        }
        assert_eq!(log.retention(&ctx).await.unwrap(), DEFAULT_RETENTION_DAYS);
        assert!(changes(&log, &ctx).await.is_empty(), "a refused change records nothing");
        for days in [MIN_RETENTION_DAYS, MAX_RETENTION_DAYS] {
            log.set_retention(&ctx, days).await.unwrap().unwrap();
            assert_eq!(log.retention(&ctx).await.unwrap(), days);
        }
    }

    async fn a_retention_change_is_recorded_in_the_tenants_chain_which_still_verifies(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        log.record(&a, event(1)).await.unwrap();
        let first = log.set_retention(&a, 365).await.unwrap().unwrap();
        assert_eq!(first.seq, 2);
        log.record(&a, event(2)).await.unwrap();
        log.set_retention(&a, 3650).await.unwrap().unwrap();
        let records = changes(&log, &a).await;
        let details: Vec<serde_json::Value> = records.iter().map(|r| serde_json::from_str(&r.event.details).unwrap()).collect();
        assert_eq!(details, [
            serde_json::json!({"old_days": 365, "new_days": 3650}),
            serde_json::json!({"old_days": DEFAULT_RETENTION_DAYS, "new_days": 365}),
        ]);
        let who = a.principal().user_id().unwrap().to_string();
        assert!(records.iter().all(|r| r.event.actor.id.as_deref() == Some(who.as_str()) && r.event.target.kind == "audit_log"));
        assert!(changes(&log, &b).await.is_empty(), "nothing lands in B's chain");
        log.checkpoint(&a).await.unwrap().unwrap();
        let v = log.verify(&a, 1).await.unwrap();
        assert!(v.is_valid() && v.checked == 4, "{v:?}");
        let mut export = Vec::new();
        log.export(&a, 1, None, &mut export).await.unwrap();
        assert!(verify_export(&export[..], Some(log.signer())).unwrap().is_valid());
    }
}

/// Records events 0 to 9 for `ctx`, then moves the clock ten days on;
/// gives the time they were recorded at.
async fn ten_events_then_ten_days(
    t: &saas_test_support::TestDb,
    log: &AuditLog,
    ctx: &TenantContext,
) -> chrono::DateTime<chrono::Utc> {
    for i in 0..10 {
        log.record(ctx, event(i)).await.unwrap();
    }
    let at = t.clock.now();
    t.clock.advance(Duration::days(10));
    at
}

/// The tenant's `audit.retention_changed` events, newest first.
async fn changes(log: &AuditLog, ctx: &TenantContext) -> Vec<saas_audit::AuditRecord> {
    let q = AuditQuery {
        action: Some(saas_audit::RETENTION_CHANGED_ACTION.into()),
        ..Default::default()
    };
    log.query(ctx, &q).await.unwrap().records
}
