use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use saas_server::Config;
use saas_test_support::both_backends;
use serde_json::json;
use tower::ServiceExt;

use crate::{Harness, s};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

async fn raw_get(h: &Harness, path: &str, tenant: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get(path).header("authorization", format!("Bearer {}", h.token));
    if let Some(t) = tenant {
        req = req.header("x-tenant-id", t);
    }
    let res = h
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    (
        status,
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    )
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn every_change_is_in_the_audit_log_and_the_export_verifies_with_platformctl(t) {
        let h = Harness::with_config(t, Config { audit_key: Some(KEY.into()), ..crate::test_config() }).await;
        let a = h.tenant("alpha").await;
        let b = h.tenant("bravo").await;
        let ws = h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "Product"}))).await.body["id"].as_str().unwrap().to_string();
        h.call(Method::PATCH, &format!("/api/workspaces/{ws}"), Some(&a), Some(json!({"name": "Product 2"}))).await;
        h.call(Method::POST, "/api/workspaces", Some(&b), Some(json!({"name": "B's"}))).await;
        h.call(Method::POST, &format!("/api/tenants/{b}/suspend"), None, Some(json!({"reason": "test"}))).await;

        let logs = h.call(Method::GET, "/api/audit-logs", Some(&a), None).await;
        let records = logs.body["records"].as_array().unwrap();
        let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
        // An operator acting in a tenant is audited on every action as well.
        assert_eq!(
            actions,
            ["policy.break_glass.action", "workspace.update", "policy.break_glass.action", "workspace.create", "policy.break_glass.action"],
            "A sees only its own events"
        );
        let changes: Vec<&serde_json::Value> = records.iter().filter(|r| !r["action"].as_str().unwrap().starts_with("policy.")).collect();
        assert_eq!(changes[0]["actor"]["kind"], "operator");
        assert_eq!(changes[0]["target"]["id"], ws.as_str());
        let filtered = h.call(Method::GET, "/api/audit-logs?action=workspace.create&limit=5", Some(&a), None).await;
        assert_eq!(filtered.body["records"].as_array().unwrap().len(), 1);
        h.call(Method::GET, "/api/audit-logs?outcome=exploded", Some(&a), None).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_query");

        let platform = h.call(Method::GET, "/api/platform/audit-logs", None, None).await;
        let p_actions: Vec<&str> = platform.body["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
        assert!(p_actions.contains(&"tenant.create") && p_actions.contains(&"tenant.suspend"), "{p_actions:?}");
        let verify = h.call(Method::GET, "/api/audit-logs/verify", Some(&a), None).await;
        assert_eq!(verify.body["problem"], serde_json::Value::Null, "{}", verify.body);
        assert_eq!(h.call(Method::GET, "/api/platform/audit-logs/verify", None, None).await.body["problem"], serde_json::Value::Null);
        assert_eq!(h.call(Method::POST, "/api/platform/audit-logs/checkpoint", None, None).await.status, StatusCode::OK);

        let (status, export) = raw_get(&h, "/api/audit-logs/export", Some(&a)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!export.contains(&b), "the export of A names nothing of B");
        assert!(export.lines().last().unwrap().contains("\"checkpoint\""));
        let dir = std::env::temp_dir().join(format!("saas-export-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.jsonl");
        std::fs::write(&good, &export).unwrap();
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, export.replacen("Product", "Pwned", 1).replacen("workspace.update", "workspace.delete", 1)).unwrap();
        let run = |file: &std::path::Path, key: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_platformctl"))
                .args(["audit", "verify", file.to_str().unwrap(), "--key-hex", key])
                .env_remove("SAAS_AUDIT_KEY")
                .output()
                .unwrap()
        };
        let ok = run(&good, KEY);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
        assert!(String::from_utf8_lossy(&ok.stdout).contains("\"problem\": null"));
        assert_eq!(run(&bad, KEY).status.code(), Some(1));
        let wrong_key = run(&good, &"11".repeat(32));
        assert_eq!(wrong_key.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&wrong_key.stdout).contains("bad_checkpoint_signature"));
        let usage = std::process::Command::new(env!("CARGO_BIN_EXE_platformctl")).arg("nonsense").output().unwrap();
        assert_eq!(usage.status.code(), Some(2));
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn an_operator_prunes_a_tenants_old_audit_events_into_an_archive(t) {
        let dir = std::env::temp_dir().join(format!("saas-prune-{}", uuid::Uuid::now_v7()));
        let h = Harness::with_config(t, Config { audit_key: Some(KEY.into()), data_dir: dir.clone(), ..crate::test_config() }).await;
        let a = h.tenant("alpha").await;
        for i in 0..3 {
            h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": format!("w{i}")}))).await;
        }
        let r = h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({"retention_days": 1}))).await;
        assert_eq!(r.body["pruned"], false, "nothing is a day old yet");
        h.t.clock.advance(chrono::Duration::days(2));
        h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "fresh"}))).await;
        let r = h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({"retention_days": 1}))).await;
        // Three workspace creations, each with the operator's per-action audit event.
        assert_eq!((r.status, &r.body["report"]["events"]), (StatusCode::OK, &json!(6)), "{}", r.body);
        let archive = std::fs::read(r.body["archive"].as_str().unwrap()).unwrap();
        let signer = saas_audit::CheckpointSigner::new("server", &hex::decode(KEY).unwrap()).unwrap();
        assert!(saas_audit::verify_export(&archive[..], Some(&signer)).unwrap().is_valid());
        let verify = h.call(Method::GET, "/api/audit-logs/verify", Some(&a), None).await;
        assert_eq!(verify.body["problem"], serde_json::Value::Null, "{}", verify.body);
        let actions: Vec<String> = h.call(Method::GET, "/api/audit-logs", Some(&a), None).await.body["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).filter(|a| a != "policy.break_glass.action").collect();
        assert_eq!(actions, ["audit.pruned", "workspace.create"]);
        h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({"retention_days": 0}))).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn an_owner_reads_and_sets_the_audit_retention_and_a_plain_member_may_not(t) {
        let h = Harness::with_config(t, Config { audit_key: Some(KEY.into()), ..crate::test_config() }).await;
        let a = h.tenant("alpha").await;
        let b = h.tenant("bravo").await;
        let (owner, _, _) = h.mfa_member(&a, "olga@example.com", "owner").await;
        h.member(&a, "mia@example.com", "member").await;
        let mia = s(&h.login(&a, "mia@example.com").await, "access_token");

        let r = h.call_as(Some(&owner), Method::GET, "/api/audit-logs/retention", Some(&a), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body, json!({"retention_days": 2557, "default_days": 2557, "min_days": 30, "max_days": 36525}));
        let r = h.call_as(Some(&owner), Method::PUT, "/api/audit-logs/retention", Some(&a), Some(json!({"retention_days": 365}))).await;
        assert_eq!((r.status, &r.body["retention_days"]), (StatusCode::OK, &json!(365)), "{}", r.body);
        let r = h.call_as(Some(&owner), Method::GET, "/api/audit-logs/retention", Some(&a), None).await;
        assert_eq!(r.body["retention_days"], 365);
        // The change is in A's chain, by the owner, and the chain verifies.
        let logs = h.call_as(Some(&owner), Method::GET, "/api/audit-logs?action=audit.retention_changed", Some(&a), None).await;
        let records = logs.body["records"].as_array().unwrap();
        assert_eq!(records.len(), 1, "{}", logs.body);
        let details: serde_json::Value = serde_json::from_str(records[0]["details"].as_str().unwrap()).unwrap();
        assert_eq!(details, json!({"old_days": 2557, "new_days": 365}));
        assert_eq!(records[0]["actor"]["kind"], "user");
        let verify = h.call_as(Some(&owner), Method::GET, "/api/audit-logs/verify", Some(&a), None).await;
        assert_eq!(verify.body["problem"], serde_json::Value::Null, "{}", verify.body);
        // B keeps the default.
        assert_eq!(h.call(Method::GET, "/api/audit-logs/retention", Some(&b), None).await.body["retention_days"], 2557);

        // A plain member can neither read nor change it.
        let r = h.call_as(Some(&mia), Method::GET, "/api/audit-logs/retention", Some(&a), None).await;
        r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(r.body["action"], "audit.read");
        let r = h.call_as(Some(&mia), Method::PUT, "/api/audit-logs/retention", Some(&a), Some(json!({"retention_days": 30}))).await;
        r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(r.body["action"], "audit.manage");
        assert_eq!(h.call_as(Some(&owner), Method::GET, "/api/audit-logs/retention", Some(&a), None).await.body["retention_days"], 365);
    }

    async fn an_audit_retention_out_of_range_is_refused_with_a_validation_problem(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("alpha").await;
        for days in [0, 29, 36526] {
            let r = h.call(Method::PUT, "/api/audit-logs/retention", Some(&a), Some(json!({"retention_days": days}))).await;
            r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(r.body["field"], "retention_days", "{}", r.body);
            assert!(r.body["detail"].as_str().unwrap().contains("between 30 and 36525 days"), "{}", r.body);
        }
        for body in [json!({"retention_days": -1}), json!({"retention_days": "long"}), json!({}), json!({"retention_days": 90, "extra": 1})] {
            h.call(Method::PUT, "/api/audit-logs/retention", Some(&a), Some(body)).await
                .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        }
        assert_eq!(h.call(Method::GET, "/api/audit-logs/retention", Some(&a), None).await.body["retention_days"], 2557);
        let logs = h.call(Method::GET, "/api/audit-logs?action=audit.retention_changed", Some(&a), None).await;
        assert_eq!(logs.body["records"], json!([]), "a refused change records nothing");
    }

    async fn an_operator_prune_without_retention_days_keeps_to_the_tenants_own_setting(t) {
        let dir = std::env::temp_dir().join(format!("saas-prune-{}", uuid::Uuid::now_v7()));
        let h = Harness::with_config(t, Config { audit_key: Some(KEY.into()), data_dir: dir.clone(), ..crate::test_config() }).await;
        let a = h.tenant("alpha").await;
        let b = h.tenant("bravo").await;
        let r = h.call(Method::PUT, "/api/audit-logs/retention", Some(&a), Some(json!({"retention_days": 30}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        for tenant in [&a, &b] {
            for i in 0..3 {
                h.call(Method::POST, "/api/workspaces", Some(tenant), Some(json!({"name": format!("w{i}")}))).await;
            }
        }
        h.t.clock.advance(chrono::Duration::days(29));
        let r = h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({}))).await;
        assert_eq!((r.status, &r.body["pruned"]), (StatusCode::OK, &json!(false)), "29 days old: kept");
        h.t.clock.advance(chrono::Duration::days(2));
        h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "fresh"}))).await;
        let r = h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({}))).await;
        assert_eq!((r.status, &r.body["pruned"]), (StatusCode::OK, &json!(true)), "{}", r.body);
        let path = std::path::PathBuf::from(r.body["archive"].as_str().unwrap());
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("{a}-{}.jsonl", r.body["report"]["up_to_seq"]));
        let archive = std::fs::read(&path).unwrap();
        let signer = saas_audit::CheckpointSigner::new("server", &hex::decode(KEY).unwrap()).unwrap();
        let offline = saas_audit::verify_export(&archive[..], Some(&signer)).unwrap();
        assert!(offline.is_valid() && offline.checked == r.body["report"]["events"].as_u64().unwrap(), "{offline:?}");
        let actions: Vec<String> = h.call(Method::GET, "/api/audit-logs", Some(&a), None).await.body["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).filter(|a| a != "policy.break_glass.action").collect();
        assert_eq!(actions, ["audit.pruned", "workspace.create"], "the setting's change and the old creations are archived");
        assert_eq!(h.call(Method::GET, "/api/audit-logs/verify", Some(&a), None).await.body["problem"], serde_json::Value::Null);
        // B keeps the default seven years: nothing of it is pruned.
        let r = h.call(Method::POST, &format!("/api/tenants/{b}/audit/prune"), None, Some(json!({}))).await;
        assert_eq!(r.body["pruned"], false, "{}", r.body);
        let b_creations = h.call(Method::GET, "/api/audit-logs?action=workspace.create", Some(&b), None).await;
        assert_eq!(b_creations.body["records"].as_array().unwrap().len(), 3);
        // Only finished archives are left in the folder.
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, [path.file_name().unwrap().to_str().unwrap()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn a_prune_whose_archive_cannot_be_created_deletes_nothing(t) {
        let dir = std::env::temp_dir().join(format!("saas-prune-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        // A file stands where the archive folder should be.
        std::fs::write(dir.join("audit-archive"), b"in the way").unwrap();
        let h = Harness::with_config(t, Config { audit_key: Some(KEY.into()), data_dir: dir.clone(), ..crate::test_config() }).await;
        let a = h.tenant("alpha").await;
        for i in 0..3 {
            h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": format!("w{i}")}))).await;
        }
        h.t.clock.advance(chrono::Duration::days(2));
        let r = h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({"retention_days": 1}))).await;
        r.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "archive_write_failed");
        let creations = h.call(Method::GET, "/api/audit-logs?action=workspace.create", Some(&a), None).await;
        assert_eq!(creations.body["records"].as_array().unwrap().len(), 3, "nothing was pruned");
        let pruned = h.call(Method::GET, "/api/audit-logs?action=audit.pruned", Some(&a), None).await;
        assert_eq!(pruned.body["records"], json!([]));
        // A retention reaching before the calendar is refused, not a panic.
        h.call(Method::POST, &format!("/api/tenants/{a}/audit/prune"), None, Some(json!({"retention_days": u32::MAX}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
