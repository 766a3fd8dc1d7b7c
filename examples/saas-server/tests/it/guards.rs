//! Every route of the server is guarded by a declared action. The test walks
//! the server's own route list (`saas_server::route_specs`, the list the
//! router is built from) and probes each route as a caller that holds no
//! permission at all: a tenant route must answer 403 naming exactly its
//! declared action (so the guard ran, with that action, before the handler);
//! a platform route without an operator credential 401; a public route must
//! be one this test knows and says why it is public. A second check reads the
//! server's source: routes can only be added through `guard::Api`.

use axum::http::{Method, StatusCode};
use saas_server::guard::Guard;
use saas_test_support::both_backends;
use serde_json::json;

use crate::{Harness, s};

/// Public routes and why; a new public route must be added here on purpose.
const PUBLIC: &[&str] = &[
    "/api/health",
    "/api/ready",
    "/api/metrics",
    "/.well-known/jwks.json",
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/login/mfa",
    "/api/auth/login/mfa/setup",
    "/api/auth/login/mfa/confirm",
    "/api/auth/refresh",
    "/api/auth/token",
    "/api/auth/password/forgot",
    "/api/auth/password/reset",
    "/api/auth/verify-email",
    "/api/auth/invitations/accept",
    "/api/billing/webhooks/{provider}",
];

both_backends! {
    migrations = saas_server::migration_sets();

    async fn every_route_is_guarded_by_its_declared_action(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "w"}))).await.body, "id");
        // A caller with no permission: an API key without scopes.
        let (admin, _, _) = h.mfa_member(&tenant, "ada@example.com", "owner").await;
        let r = h.call_as(Some(&admin), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "nothing", "scopes": []}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let nobody = s(&r.body, "secret");

        let specs = saas_server::route_specs(h.state.clone());
        let (mut tenant_routes, mut platform_routes, mut public_routes) = (0, 0, 0);
        for spec in &specs {
            let path = spec.path
                .replace("{id}", &ws)
                .replace("{user_id}", &uuid::Uuid::now_v7().to_string())
                .replace("{level}", "org")
                .replace("{name}", "x")
                .replace("{grant}", &uuid::Uuid::now_v7().to_string())
                .replace("{tenant}", &tenant)
                .replace("{provider}", "manual");
            assert!(!path.contains('{'), "unfilled parameter in {}", spec.path);
            let body = matches!(spec.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE).then(|| json!({}));
            match spec.guard {
                Guard::Tenant(action) | Guard::Workspace(action) | Guard::Anywhere(action) => {
                    assert!(h.state.policy().engine().catalogue().permission(action).is_some(), "{} {} declares {action}, which is not in the catalogue", spec.method, spec.path);
                    let r = h.call_as(Some(&nobody), spec.method.clone(), &path, Some(&tenant), body).await;
                    assert_eq!((r.status, r.body["code"].as_str(), r.body["action"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden"), Some(action)),
                        "{} {} should be refused for want of {action}: {}", spec.method, spec.path, r.body);
                    tenant_routes += 1;
                }
                Guard::Platform(action) => {
                    assert!(action.starts_with("platform."), "{action}");
                    let r = h.call_as(None, spec.method.clone(), &path, None, body).await;
                    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{} {} without a credential: {}", spec.method, spec.path, r.body);
                    platform_routes += 1;
                }
                Guard::Public(why) => {
                    assert!(!why.is_empty());
                    assert!(PUBLIC.contains(&spec.path), "{} {} is public but not acknowledged in this test", spec.method, spec.path);
                    public_routes += 1;
                }
            }
        }
        println!("routes walked: {} ({tenant_routes} tenant, {platform_routes} platform, {public_routes} public)", specs.len());
        assert!(tenant_routes > 50 && platform_routes > 10, "the walk saw too few routes");
    }
}

/// Routes can be added only through `guard::Api`: no other file of the
/// server calls axum's `route`, `nest` or builds a `Router` of its own.
#[test]
fn routes_are_added_only_through_the_guarded_builder() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() != "guard.rs" {
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in [
                    ".route(",
                    ".nest(",
                    ".nest_service(",
                    ".route_service(",
                    "Router::new(",
                ] {
                    if text.contains(needle) {
                        offenders.push(format!("{} uses {needle}", path.display()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
