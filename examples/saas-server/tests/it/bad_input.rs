use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use saas_server::Config;
use saas_test_support::both_backends;
use serde_json::json;

use crate::Harness;

async fn workspace_count(h: &Harness, tenant: &str) -> usize {
    h.call(Method::GET, "/api/workspaces", Some(tenant), None)
        .await
        .body
        .as_array()
        .unwrap()
        .len()
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn malformed_json_is_a_400_problem_and_writes_nothing(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let req = Request::post("/api/workspaces")
            .header("authorization", format!("Bearer {}", h.token))
            .header("x-tenant-id", &tenant)
            .header("content-type", "application/json")
            .body(Body::from("{\"name\": \"unterminated"))
            .unwrap();
        h.send(req).await.assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
        assert_eq!(workspace_count(&h, &tenant).await, 0);
    }

    async fn unknown_fields_are_a_422_problem(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "x", "tenant_id": "someone-else"}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        assert!(r.body["detail"].as_str().unwrap().contains("unknown field"));
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "abc", "name": "x", "tier": "galactic"}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        assert_eq!(workspace_count(&h, &tenant).await, 0);
    }

    async fn oversized_bodies_are_a_413_problem(t) {
        let h = Harness::with_config(t, Config { body_limit: 1024, ..crate::test_config() }).await;
        let tenant = h.tenant("acme").await;
        let big = json!({"name": "x".repeat(4096)});
        h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(big.clone())).await
            .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
        // The same without a Content-Length, streamed.
        let stream = futures_stream(big.to_string());
        let req = Request::post("/api/workspaces")
            .header("authorization", format!("Bearer {}", h.token))
            .header("x-tenant-id", &tenant)
            .header("content-type", "application/json")
            .body(stream)
            .unwrap();
        h.send(req).await.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
        assert_eq!(workspace_count(&h, &tenant).await, 0);
    }

    async fn invalid_ids_are_a_400_problem(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.call(Method::GET, "/api/workspaces/not-a-uuid", Some(&tenant), None).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
        h.call(Method::GET, "/api/tenants/123", None, None).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
        h.call(Method::PATCH, "/api/workspaces/%00", Some(&tenant), Some(json!({}))).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
        h.call(Method::GET, "/api/workspaces?after=zzz", Some(&tenant), None).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_query");
        let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "x", "parent_id": "nope"}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        // A well-formed id that does not exist is a 404, not a 500.
        let missing = uuid::Uuid::now_v7();
        h.call(Method::GET, &format!("/api/workspaces/{missing}"), Some(&tenant), None).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::GET, &format!("/api/tenants/{missing}"), None, None).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    }

    async fn unknown_or_unnamed_tenants_are_a_4xx_problem(t) {
        let h = Harness::new(t).await;
        h.call(Method::GET, "/api/workspaces", Some("no-such-tenant"), None).await.assert_problem(StatusCode::NOT_FOUND, "tenant_not_found");
        h.call(Method::GET, "/api/workspaces", Some(&uuid::Uuid::now_v7().to_string()), None).await.assert_problem(StatusCode::NOT_FOUND, "tenant_not_found");
        h.call(Method::GET, "/api/workspaces", Some("Bad Tenant!"), None).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_tenant");
        h.call(Method::GET, "/api/workspaces", None, None).await.assert_problem(StatusCode::BAD_REQUEST, "tenant_required");
    }

    async fn missing_or_wrong_credentials_are_a_401_problem(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        for auth in [None, Some("Bearer sop_nope_nope"), Some("Basic abc"), Some("Bearer ")] {
            let mut req = Request::get("/api/workspaces").header("x-tenant-id", &tenant);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = h.send(req.body(Body::empty()).unwrap()).await;
            r.assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
            assert_eq!(r.headers["www-authenticate"], "Bearer");
        }
        let req = Request::get("/api/tenants").body(Body::empty()).unwrap();
        h.send(req).await.assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }

    async fn wrong_media_type_method_and_route_are_problems(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let req = Request::post("/api/workspaces")
            .header("authorization", format!("Bearer {}", h.token))
            .header("x-tenant-id", &tenant)
            .header("content-type", "text/plain")
            .body(Body::from("{\"name\":\"x\"}"))
            .unwrap();
        h.send(req).await.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        h.call(Method::PUT, "/api/workspaces", Some(&tenant), None).await.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        h.call(Method::GET, "/api/nothing-here", None, None).await.assert_problem(StatusCode::NOT_FOUND, "route_not_found");
        assert_eq!(workspace_count(&h, &tenant).await, 0);
    }

    async fn domain_errors_map_to_clear_4xx_problems(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": ""}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], "name");
        h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "acme", "name": "dup", "tier": "team"}))).await
            .assert_problem(StatusCode::CONFLICT, "slug_taken");
        h.call(Method::POST, &format!("/api/tenants/{tenant}/activate"), None, None).await
            .assert_problem(StatusCode::CONFLICT, "invalid_lifecycle_transition");
        h.call(Method::PUT, "/api/config", Some(&tenant), Some(json!({"config": {"a": 1}, "expected_version": 7}))).await
            .assert_problem(StatusCode::CONFLICT, "config_version_conflict");
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "solo", "name": "Solo", "tier": "individual", "activate": true}))).await;
        let solo = r.body["id"].as_str().unwrap().to_string();
        for i in 0..3 {
            assert_eq!(h.call(Method::POST, "/api/workspaces", Some(&solo), Some(json!({"name": format!("w{i}")}))).await.status, StatusCode::CREATED);
        }
        h.call(Method::POST, "/api/workspaces", Some(&solo), Some(json!({"name": "w4"}))).await
            .assert_problem(StatusCode::PAYMENT_REQUIRED, "tier_limit_exceeded");
    }

    async fn a_caller_supplied_correlation_id_is_echoed_and_a_forged_one_replaced(t) {
        let h = Harness::new(t).await;
        let req = Request::get("/api/nope").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
        let r = h.send(req).await;
        assert_eq!(r.body["correlation_id"], "abc-123");
        let req = Request::get("/api/health").header("x-request-id", "x".repeat(500)).body(Body::empty()).unwrap();
        let r = h.send(req).await;
        assert_ne!(r.headers["x-request-id"].to_str().unwrap().len(), 500);
    }
}

fn futures_stream(s: String) -> Body {
    let chunks: Vec<Result<String, std::io::Error>> = s
        .as_bytes()
        .chunks(256)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    Body::from_stream(tokio_stream_iter(chunks))
}

fn tokio_stream_iter(
    items: Vec<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> {
    struct Iter(std::vec::IntoIter<Result<String, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}
