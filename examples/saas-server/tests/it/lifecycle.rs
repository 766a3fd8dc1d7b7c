use axum::http::{Method, StatusCode};
use saas_test_support::both_backends;
use serde_json::{Value, json};

use crate::Harness;

/// Every tenant-scoped route of the server (`{ws}` is an existing workspace).
/// They all sit under one `route_layer(tenant_scope)` in `routes::tenant`.
fn tenant_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/tenant", None),
        (Method::GET, "/api/workspaces", None),
        (
            Method::POST,
            "/api/workspaces",
            Some(json!({"name": "new"})),
        ),
        (Method::GET, "/api/workspaces/{ws}", None),
        (
            Method::PATCH,
            "/api/workspaces/{ws}",
            Some(json!({"name": "renamed"})),
        ),
        (Method::DELETE, "/api/workspaces/{ws}", None),
        (Method::GET, "/api/config", None),
        (
            Method::PUT,
            "/api/config",
            Some(json!({"config": {"a": 1}})),
        ),
        (Method::GET, "/api/config/history", None),
        (Method::GET, "/api/audit-logs", None),
        (Method::GET, "/api/audit-logs/export", None),
        (Method::GET, "/api/audit-logs/verify", None),
    ]
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn a_suspended_tenant_is_refused_on_every_tenant_route_and_keeps_its_data(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let ws = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "kept"}))).await.body["id"].as_str().unwrap().to_string();
        // Every route works while active (proves the list is live routes).
        for (m, path, body) in tenant_routes() {
            if m == Method::DELETE { continue; }
            let r = h.call(m.clone(), &path.replace("{ws}", &ws), Some(&tenant), body).await;
            assert!(r.status.is_success(), "{m} {path} -> {} {}", r.status, r.body);
        }
        let r = h.call(Method::POST, &format!("/api/tenants/{tenant}/suspend"), None, Some(json!({"reason": "invoice INV-7 unpaid"}))).await;
        assert_eq!(r.body["status"], "suspended");
        for (m, path, body) in tenant_routes() {
            let r = h.call(m.clone(), &path.replace("{ws}", &ws), Some(&tenant), body.clone()).await;
            r.assert_problem(StatusCode::FORBIDDEN, "tenant_suspended");
            assert!(r.body["detail"].as_str().unwrap().contains("INV-7"), "{}", r.body);
            // By slug too.
            h.call(m.clone(), &path.replace("{ws}", &ws), Some("acme"), body).await.assert_problem(StatusCode::FORBIDDEN, "tenant_suspended");
        }
        // Data kept: the operator still sees the tenant; after reactivation the workspace is there.
        assert_eq!(h.call(Method::GET, &format!("/api/tenants/{tenant}"), None, None).await.body["status"], "suspended");
        h.call(Method::POST, &format!("/api/tenants/{tenant}/reactivate"), None, None).await;
        let r = h.call(Method::GET, &format!("/api/workspaces/{ws}"), Some(&tenant), None).await;
        assert_eq!(r.body["name"], "renamed");
    }

    async fn provisioning_and_pending_deletion_tenants_are_refused_too(t) {
        let h = Harness::new(t).await;
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "fresh", "name": "Fresh", "tier": "team"}))).await;
        assert_eq!(r.body["status"], "provisioning");
        let fresh = r.body["id"].as_str().unwrap().to_string();
        for (m, path, body) in tenant_routes() {
            h.call(m, &path.replace("{ws}", &uuid::Uuid::now_v7().to_string()), Some(&fresh), body).await
                .assert_problem(StatusCode::FORBIDDEN, "tenant_not_active");
        }
        let gone = h.tenant("gone").await;
        let r = h.call(Method::POST, &format!("/api/tenants/{gone}/schedule-deletion"), None, Some(json!({"grace_days": 7}))).await;
        assert_eq!(r.body["status"], "pending_deletion", "{}", r.body);
        for (m, path, body) in tenant_routes() {
            h.call(m, &path.replace("{ws}", &uuid::Uuid::now_v7().to_string()), Some(&gone), body).await
                .assert_problem(StatusCode::FORBIDDEN, "tenant_pending_deletion");
        }
    }

    async fn the_operator_drives_the_whole_lifecycle_over_http(t) {
        let h = Harness::new(t).await;
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "life", "name": "Life", "tier": "department"}))).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body["limits"]["max_workspaces"], 50);
        assert_eq!(r.body["features"]["advanced_analytics"], true);
        assert_eq!(r.body["features"]["sso"], false);
        let id = r.body["id"].as_str().unwrap().to_string();
        let step = |path: &'static str, body: Option<Value>| {
            let id = id.clone();
            let h = &h;
            async move { h.call(Method::POST, &format!("/api/tenants/{id}/{path}"), None, body).await }
        };
        assert_eq!(step("activate", None).await.body["status"], "active");
        assert_eq!(step("suspend", Some(json!({"reason": "abuse report"}))).await.body["status"], "suspended");
        assert_eq!(step("reactivate", None).await.body["status"], "active");
        let r = h.call(Method::PATCH, &format!("/api/tenants/{id}"), None, Some(json!({"tier": "enterprise"}))).await;
        assert_eq!(r.body["features"]["sso"], true);
        h.call(Method::DELETE, &format!("/api/tenants/{id}"), None, None).await
            .assert_problem(StatusCode::CONFLICT, "invalid_lifecycle_transition");
        assert_eq!(step("schedule-deletion", Some(json!({}))).await.body["status"], "pending_deletion");
        assert_eq!(step("cancel-deletion", None).await.body["status"], "suspended");
        step("schedule-deletion", Some(json!({"grace_days": 400}))).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(step("schedule-deletion", Some(json!({"grace_days": 0}))).await.status, StatusCode::OK);
        assert_eq!(h.call(Method::DELETE, &format!("/api/tenants/{id}"), None, None).await.status, StatusCode::NO_CONTENT);
        h.call(Method::GET, &format!("/api/tenants/{id}"), None, None).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
        let listed = h.call(Method::GET, "/api/tenants?limit=50", None, None).await;
        assert!(listed.body.as_array().unwrap().iter().all(|t| t["id"] != id.as_str()));
    }
}
