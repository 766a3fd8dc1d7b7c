use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use saas_server::Config;
use saas_test_support::both_backends;
use serde_json::json;

use crate::Harness;

both_backends! {
    migrations = saas_server::migration_sets();

    async fn a_caller_in_tenant_a_reaches_nothing_of_tenant_b(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("alpha").await;
        let b = h.tenant("bravo").await;
        let b_ws = h.call(Method::POST, "/api/workspaces", Some(&b), Some(json!({"name": "secret"}))).await.body["id"].as_str().unwrap().to_string();
        h.call(Method::PUT, "/api/config", Some(&b), Some(json!({"config": {"secret": true}}))).await;
        h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "mine"}))).await;

        let path = format!("/api/workspaces/{b_ws}");
        h.call(Method::GET, &path, Some(&a), None).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::PATCH, &path, Some(&a), Some(json!({"name": "pwned"}))).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::DELETE, &path, Some(&a), None).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "child", "parent_id": b_ws}))).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        let listed = h.call(Method::GET, "/api/workspaces", Some(&a), None).await;
        assert_eq!(listed.body.as_array().unwrap().len(), 1);
        assert!(listed.body.as_array().unwrap().iter().all(|w| w["tenant_id"] == a.as_str()));
        assert_eq!(h.call(Method::GET, "/api/config", Some(&a), None).await.body["version"], 0);
        assert_eq!(h.call(Method::GET, "/api/tenant", Some(&a), None).await.body["id"], a.as_str());
        // B is intact.
        let r = h.call(Method::GET, &path, Some(&b), None).await;
        assert_eq!(r.body["name"], "secret");
        assert_eq!(h.call(Method::GET, "/api/config", Some(&b), None).await.body["config"], json!({"secret": true}));
    }

    async fn tenants_resolve_from_a_subdomain_of_the_base_domain(t) {
        let h = Harness::with_config(t, Config { base_domain: Some("example.test".into()), ..crate::test_config() }).await;
        let a = h.tenant("alpha").await;
        let get = |host: &'static str| {
            Request::get("/api/tenant").header("host", host).header("authorization", format!("Bearer {}", h.token)).body(Body::empty()).unwrap()
        };
        let r = h.send(get("alpha.example.test:8080")).await;
        assert_eq!((r.status, r.body["id"].as_str()), (StatusCode::OK, Some(a.as_str())));
        h.send(get("nobody.example.test")).await.assert_problem(StatusCode::NOT_FOUND, "tenant_not_found");
        h.send(get("example.test")).await.assert_problem(StatusCode::BAD_REQUEST, "tenant_required");
        h.send(get("alpha.other.test")).await.assert_problem(StatusCode::BAD_REQUEST, "tenant_required");
        h.send(get("x.alpha.example.test")).await.assert_problem(StatusCode::BAD_REQUEST, "tenant_required");
    }

    async fn health_ready_and_metrics_answer(t) {
        let h = Harness::new(t).await;
        let r = h.call(Method::GET, "/api/health", None, None).await;
        assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("ok")));
        let r = h.call(Method::GET, "/api/ready", None, None).await;
        assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("ready")));
        let res = tower::ServiceExt::oneshot(h.app.clone(), Request::get("/api/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = String::from_utf8(http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes().to_vec()).unwrap();
        for needle in ["http_requests_total{", "route=\"/api/ready\"", "http_request_duration_seconds_bucket{", "db_pool_connections{state=\"open\"}", "job_queue_depth{state=\"queued\"}"] {
            assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
        }
    }

    async fn dead_jobs_can_be_inspected_and_replayed_by_the_operator(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("alpha").await;
        let ctx = saas_core::PlatformContext::system("test").act_in(a.parse().unwrap());
        let mut tx = h.t.db.begin(&ctx).await.unwrap();
        saas_core::jobs::JobQueue::enqueue(&mut tx, saas_core::jobs::NewJob::new("nobody_handles_this", json!({})).max_attempts(1)).await.unwrap();
        tx.commit().await.unwrap();
        h.worker().run_once().await.unwrap();
        let dead = h.call(Method::GET, "/api/jobs/dead", None, None).await;
        assert_eq!(dead.body.as_array().unwrap().len(), 1, "{}", dead.body);
        let id = dead.body[0]["id"].as_str().unwrap();
        assert_eq!(h.call(Method::POST, &format!("/api/jobs/dead/{id}/replay"), None, None).await.status, StatusCode::ACCEPTED);
        assert!(h.call(Method::GET, "/api/jobs/dead", None, None).await.body.as_array().unwrap().is_empty());
        h.call(Method::POST, &format!("/api/jobs/dead/{id}/replay"), None, None).await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    }
}
