//! Tampering as a superuser would: with the append-only triggers out of the
//! way (and, on PostgreSQL, the guard that holds each row's columns to the
//! bytes that were hashed), change, delete, reorder and insert single rows,
//! and truncate the tail. Every case must be flagged by `verify`. What the
//! guard itself refuses, and what gets past it, is tested in
//! `saas-audit/src/pgwalk.rs`.

use saas_audit::{AuditLog, AuditQuery, ChainProblem};
use saas_core::TenantContext;
use saas_core::db::Backend;
use saas_core::tenant::Tier;
use saas_test_support::{Inspector, TestDb, both_backends};

use crate::{event, log, sets, uuid_lit};

const EVENTS: usize = 12;
/// The events table's columns, named: their order differs between the backends.
const COLUMNS: &str = "(tenant_id, seq, id, occurred_at, actor_kind, actor_id, actor_reason, action, target_kind, target_id, outcome, correlation_id, details, subject_id, personal, prev_hash, hash, canonical)";

/// Builds the attacker's statements for a chain key literal.
type Tamper = Box<dyn Fn(&str) -> Vec<String>>;

/// Runs `sql` as a superuser with the append-only triggers disabled.
async fn as_attacker(t: &TestDb, insp: &Inspector, sql: &str) {
    match t.backend() {
        Backend::Postgres => {
            insp.execute(&format!("SET session_replication_role = replica; {sql}; SET session_replication_role = origin;")).await;
        }
        Backend::Sqlite => {
            insp.execute(sql).await;
        }
    }
}

async fn chain(t: &TestDb, slug: &str, log: &AuditLog) -> TenantContext {
    let ctx = t.tenant(slug, Tier::Team).await;
    for i in 0..EVENTS {
        log.record(&ctx, event(i)).await.unwrap();
    }
    log.checkpoint(&ctx).await.unwrap().unwrap();
    assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
    ctx
}

both_backends! {
    migrations = sets();

    async fn every_kind_of_tampering_is_detected(t) {
        let log = log(&t);
        let insp = t.inspector().await;
        if t.backend() == Backend::Sqlite {
            // An attacker with the database file drops the triggers first.
            for trig in ["audit_events_no_update", "audit_events_no_delete", "audit_checkpoints_no_update", "audit_checkpoints_no_delete"] {
                insp.execute(&format!("DROP TRIGGER {trig}")).await;
            }
        } else {
            // A superuser drops the guard, which would refuse most of what
            // follows; the walk then reads every column.
            insp.execute("ALTER TABLE audit_events DROP CONSTRAINT audit_events_canonical").await;
        }
        let hex_lit = |bytes: &str| match t.backend() {
            Backend::Postgres => format!("'\\x{bytes}'::bytea"),
            Backend::Sqlite => format!("X'{bytes}'"),
        };
        let mut cases: Vec<(&str, String)> = Vec::new();
        let mut detected = 0;

        // Each case gets its own tenant chain.
        let scenarios: Vec<(&str, Tamper)> = vec![
            ("change a field", Box::new(|k: &str| vec![format!("UPDATE audit_events SET action = 'tenant.delete' WHERE tenant_id = {k} AND seq = 5")])),
            ("change details", Box::new(|k: &str| vec![format!("UPDATE audit_events SET details = '{{\"n\":999}}' WHERE tenant_id = {k} AND seq = 7")])),
            ("change the outcome of the last event", Box::new(|k: &str| vec![format!("UPDATE audit_events SET outcome = 'denied' WHERE tenant_id = {k} AND seq = 12")])),
            ("delete one row", Box::new(|k: &str| vec![format!("DELETE FROM audit_events WHERE tenant_id = {k} AND seq = 5")])),
            ("delete the first row", Box::new(|k: &str| vec![format!("DELETE FROM audit_events WHERE tenant_id = {k} AND seq = 1")])),
            ("reorder two rows", Box::new(|k: &str| vec![
                format!("UPDATE audit_events SET seq = -4 WHERE tenant_id = {k} AND seq = 4"),
                format!("UPDATE audit_events SET seq = 4 WHERE tenant_id = {k} AND seq = 5"),
                format!("UPDATE audit_events SET seq = 5 WHERE tenant_id = {k} AND seq = -4"),
            ])),
            ("insert a row in the middle", Box::new(|k: &str| vec![
                format!("UPDATE audit_events SET seq = -seq - 1000 WHERE tenant_id = {k} AND seq >= 6"),
                format!("UPDATE audit_events SET seq = -seq - 1000 + 1 WHERE tenant_id = {k} AND seq < 0"),
                format!("INSERT INTO audit_events {COLUMNS} SELECT tenant_id, 6, id, occurred_at, actor_kind, actor_id, actor_reason, 'forged.action', target_kind, target_id, outcome, correlation_id, details, subject_id, personal, prev_hash, hash, NULL FROM audit_events WHERE tenant_id = {k} AND seq = 5"),
            ])),
            ("append a forged row", Box::new(|k: &str| vec![
                format!("INSERT INTO audit_events {COLUMNS} SELECT tenant_id, 13, id, occurred_at, actor_kind, actor_id, actor_reason, 'forged.action', target_kind, target_id, outcome, correlation_id, details, subject_id, personal, hash, hash, canonical FROM audit_events WHERE tenant_id = {k} AND seq = 12"),
            ])),
            ("truncate the tail", Box::new(|k: &str| vec![format!("DELETE FROM audit_events WHERE tenant_id = {k} AND seq > 9")])),
            ("truncate the tail and rewind the head", Box::new(|k: &str| vec![
                format!("DELETE FROM audit_events WHERE tenant_id = {k} AND seq > 9"),
                format!("UPDATE audit_heads SET seq = 9 WHERE tenant_id = {k}"),
            ])),
        ];
        for (i, (name, sqls)) in scenarios.iter().enumerate() {
            let ctx = chain(&t, &format!("victim-{i}"), &log).await;
            let k = uuid_lit(&t, ctx.tenant().as_uuid());
            for sql in sqls(&k) {
                as_attacker(&t, &insp, &sql).await;
            }
            let report = log.verify(&ctx, 1).await.unwrap();
            if report.problem.is_some() {
                detected += 1;
            }
            cases.push((name, format!("{:?}", report.problem)));
        }

        // Smart attacker: rewrite an event and recompute its hash; the next link breaks.
        let ctx = chain(&t, "victim-smart", &log).await;
        let k = uuid_lit(&t, ctx.tenant().as_uuid());
        let mut ev = log.query(&ctx, &AuditQuery { target_id: Some("w4".into()), ..Default::default() }).await.unwrap().records.remove(0).event;
        ev.action = "tenant.delete".into();
        let forged = ev.compute_hash();
        as_attacker(&t, &insp, &format!("UPDATE audit_events SET action = 'tenant.delete', hash = {}, canonical = {} WHERE tenant_id = {k} AND seq = {}", hex_lit(&forged), hex_lit(&hex::encode(ev.canonical())), ev.seq)).await;
        let report = log.verify(&ctx, 1).await.unwrap();
        assert_eq!(report.problem, Some(ChainProblem::BrokenLink { seq: ev.seq + 1 }));
        detected += 1;
        cases.push(("rewrite an event with a recomputed hash", format!("{:?}", report.problem)));

        // The bytes stored as hashed changed, and nothing else: they are no
        // longer the event the columns show.
        let ctx = chain(&t, "victim-bytes", &log).await;
        let k = uuid_lit(&t, ctx.tenant().as_uuid());
        let mut ev = log.query(&ctx, &AuditQuery { target_id: Some("w2".into()), ..Default::default() }).await.unwrap().records.remove(0).event;
        ev.action = "tenant.delete".into();
        as_attacker(&t, &insp, &format!("UPDATE audit_events SET canonical = {} WHERE tenant_id = {k} AND seq = {}", hex_lit(&hex::encode(ev.canonical())), ev.seq)).await;
        let report = log.verify(&ctx, 1).await.unwrap();
        assert_eq!(report.problem, Some(ChainProblem::HashMismatch { seq: ev.seq }));
        detected += 1;
        cases.push(("change the stored bytes only", format!("{:?}", report.problem)));

        // Smart attacker: truncate, drop the checkpoints and forge one for the new head.
        let ctx = chain(&t, "victim-forger", &log).await;
        let k = uuid_lit(&t, ctx.tenant().as_uuid());
        as_attacker(&t, &insp, &format!("DELETE FROM audit_events WHERE tenant_id = {k} AND seq > 9")).await;
        as_attacker(&t, &insp, &format!("DELETE FROM audit_checkpoints WHERE tenant_id = {k}")).await;
        as_attacker(&t, &insp, &format!("UPDATE audit_heads SET seq = 9 WHERE tenant_id = {k}")).await;
        as_attacker(
            &t,
            &insp,
            &format!(
                "INSERT INTO audit_checkpoints SELECT tenant_id, 9, hash, occurred_at, 'test-key', {} FROM audit_events WHERE tenant_id = {k} AND seq = 9",
                hex_lit(&"ab".repeat(32))
            ),
        )
        .await;
        let report = log.verify(&ctx, 1).await.unwrap();
        assert_eq!(report.problem, Some(ChainProblem::BadCheckpointSignature { seq: 9 }));
        detected += 1;
        cases.push(("truncate and forge a checkpoint", format!("{:?}", report.problem)));

        for (name, found) in &cases {
            println!("tamper case {name:45} -> {found}");
        }
        let total = cases.len();
        println!("tamper detection ({:?}): {detected}/{total} cases detected = {}%", t.backend(), detected * 100 / total);
        assert_eq!(detected, total, "undetected tampering: {cases:?}");
    }
}
