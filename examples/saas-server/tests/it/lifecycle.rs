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

/// Identity routes that need no credential (they resolve the tenant only).
fn public_identity_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    let creds = Some(json!({"email": "a@example.com", "password": "correct horse battery"}));
    vec![
        (
            Method::POST,
            "/api/auth/register",
            Some(
                json!({"email": "a@example.com", "password": "correct horse battery", "display_name": "A"}),
            ),
        ),
        (Method::POST, "/api/auth/login", creds),
        (
            Method::POST,
            "/api/auth/login/mfa",
            Some(json!({"challenge": "x", "code": "123456"})),
        ),
        (
            Method::POST,
            "/api/auth/login/mfa/setup",
            Some(json!({"challenge": "x"})),
        ),
        (
            Method::POST,
            "/api/auth/login/mfa/confirm",
            Some(json!({"challenge": "x", "code": "123456"})),
        ),
        (
            Method::POST,
            "/api/auth/refresh",
            Some(json!({"refresh_token": "srt_x"})),
        ),
        (
            Method::POST,
            "/api/auth/token",
            Some(
                json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}),
            ),
        ),
        (
            Method::POST,
            "/api/auth/password/forgot",
            Some(json!({"email": "a@example.com"})),
        ),
        (
            Method::POST,
            "/api/auth/password/reset",
            Some(json!({"token": "rst_x", "password": "correct horse battery"})),
        ),
        (
            Method::POST,
            "/api/auth/verify-email",
            Some(json!({"token": "evt_x"})),
        ),
        (
            Method::POST,
            "/api/auth/invitations/accept",
            Some(json!({"token": "inv_x", "password": "correct horse battery"})),
        ),
    ]
}

/// Identity routes behind authentication (`{id}` is any id).
fn identity_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::POST, "/api/auth/logout", None),
        (Method::GET, "/api/auth/me", None),
        (
            Method::POST,
            "/api/auth/password",
            Some(json!({"current_password": "a", "new_password": "b"})),
        ),
        (Method::DELETE, "/api/auth/mfa", None),
        (Method::POST, "/api/auth/mfa/setup", None),
        (
            Method::POST,
            "/api/auth/mfa/confirm",
            Some(json!({"code": "123456"})),
        ),
        (
            Method::POST,
            "/api/auth/mfa/verify",
            Some(json!({"code": "123456"})),
        ),
        (Method::POST, "/api/auth/mfa/recovery-codes", None),
        (Method::GET, "/api/auth/sessions", None),
        (Method::DELETE, "/api/auth/sessions/{id}", None),
        (Method::POST, "/api/auth/sessions/revoke-others", None),
        (Method::GET, "/api/auth/settings", None),
        (
            Method::PUT,
            "/api/auth/settings",
            Some(json!({"mfa_required": false, "open_signup": false})),
        ),
        (Method::GET, "/api/users", None),
        (
            Method::POST,
            "/api/users",
            Some(json!({"email": "a@example.com", "display_name": "A", "role": "member"})),
        ),
        (Method::GET, "/api/users/{id}", None),
        (
            Method::PATCH,
            "/api/users/{id}",
            Some(json!({"display_name": "B"})),
        ),
        (Method::DELETE, "/api/users/{id}", None),
        (Method::POST, "/api/users/{id}/unlock", None),
        (Method::DELETE, "/api/users/{id}/sessions", None),
        (Method::GET, "/api/invitations", None),
        (
            Method::POST,
            "/api/invitations",
            Some(json!({"email": "a@example.com", "role": "member"})),
        ),
        (Method::DELETE, "/api/invitations/{id}", None),
        (Method::GET, "/api/workspaces/{id}/members", None),
        (
            Method::PUT,
            "/api/workspaces/{id}/members/{id}",
            Some(json!({"role": "admin"})),
        ),
        (Method::DELETE, "/api/workspaces/{id}/members/{id}", None),
        (Method::GET, "/api/api-keys", None),
        (
            Method::POST,
            "/api/api-keys",
            Some(json!({"name": "k", "scopes": []})),
        ),
        (Method::DELETE, "/api/api-keys/{id}", None),
        (Method::GET, "/api/service-identities", None),
        (
            Method::POST,
            "/api/service-identities",
            Some(json!({"name": "s", "roles": ["member"]})),
        ),
        (Method::DELETE, "/api/service-identities/{id}", None),
    ]
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn a_suspended_tenant_refuses_every_identity_route_public_or_not(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.call(Method::POST, &format!("/api/tenants/{tenant}/suspend"), None, Some(json!({"reason": "unpaid"}))).await;
        let id = uuid::Uuid::now_v7().to_string();
        for (m, path, body) in public_identity_routes() {
            h.call_as(None, m, path, Some(&tenant), body).await
                .assert_problem(StatusCode::FORBIDDEN, "tenant_suspended");
        }
        for (m, path, body) in identity_routes() {
            let path = path.replace("{id}", &id);
            h.call(m.clone(), &path, Some(&tenant), body.clone()).await
                .assert_problem(StatusCode::FORBIDDEN, "tenant_suspended");
            // Without a credential the answer is 401 before the tenant is even looked up.
            h.call_as(None, m, &path, Some(&tenant), body).await
                .assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
        }
    }
}
