use chrono::Duration;
use saas_audit::{AuditQuery, ChainProblem, verify_export};
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
        for i in 0..10 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        let old = t.clock.now();
        t.clock.advance(Duration::days(10));
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
}
