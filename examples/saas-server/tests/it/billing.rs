//! Billing over HTTP: usage ingestion (idempotent, single or batch, clear
//! refusals), usage reads from the rollups, who may do either, isolation
//! between tenants, and the metered AI action whose quota and usage agree.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use saas_test_support::both_backends;
use serde_json::json;

use crate::{Harness, s};

both_backends! {
    migrations = saas_server::migration_sets();

    async fn usage_is_recorded_once_and_bad_events_get_clear_problems(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let one = json!({"transaction_id": "evt-1", "code": "api_calls"});
        let r = h.call(Method::POST, "/api/usage", Some(&tenant), Some(one.clone())).await;
        assert_eq!((r.status, &r.body["counted"]), (StatusCode::OK, &json!(1)), "{}", r.body);
        let r = h.call(Method::POST, "/api/usage", Some(&tenant), Some(one.clone())).await;
        assert_eq!((&r.body["counted"], &r.body["duplicates"]), (&json!(0), &json!(1)), "{}", r.body);
        assert_eq!(r.body["events"][0]["status"], "duplicate");
        let batch = json!({"events": [
            {"transaction_id": "evt-2", "code": "api_calls", "quantity": 4},
            {"transaction_id": "evt-3", "code": "ai_requests", "properties": {"tokens": 120}},
            one,
        ]});
        let r = h.call(Method::POST, "/api/usage", Some(&tenant), Some(batch)).await;
        assert_eq!((&r.body["counted"], &r.body["duplicates"]), (&json!(2), &json!(1)), "{}", r.body);
        // A different event under a used id: 409, and nothing of its batch is kept.
        let clash = json!({"events": [
            {"transaction_id": "evt-4", "code": "api_calls"},
            {"transaction_id": "evt-1", "code": "api_calls", "quantity": 9},
        ]});
        h.call(Method::POST, "/api/usage", Some(&tenant), Some(clash)).await
            .assert_problem(StatusCode::CONFLICT, "idempotency_conflict");
        let usage = h.call(Method::GET, "/api/usage?metric=api_calls", Some(&tenant), None).await;
        assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
        // api_calls counts events (the quantity of 4 is for sum metrics).
        assert_eq!(usage.body["metrics"][0]["value"], "2", "{}", usage.body);
        assert_eq!(usage.body["metrics"][0]["events"], 2);
        let all = h.call(Method::GET, "/api/usage", Some(&tenant), None).await;
        let tokens = all.body["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "ai_tokens").unwrap();
        assert_eq!(tokens["value"], "120");
        // Refusals name the field.
        let r = h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!({"transaction_id": "b1", "code": "nope"}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], "events[0].code");
        let r = h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!({"events": [{"transaction_id": "b2", "code": "api_calls"}, {"transaction_id": "b3", "code": "api_calls", "quantity": -2}]}))).await;
        assert_eq!(r.body["field"], "events[1].quantity", "{}", r.body);
        h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!({"transaction_id": "b4", "code": "api_calls", "colour": "red"}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!([1, 2]))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        let many: Vec<_> = (0..1001).map(|i| json!({"transaction_id": format!("m{i}"), "code": "api_calls"})).collect();
        let r = h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!({"events": many}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["max_events"], 1000);
        h.call(Method::GET, "/api/usage?metric=nope", Some(&tenant), None).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        h.call(Method::GET, "/api/usage?at=yesterday", Some(&tenant), None).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_query");
        let metrics = h.call(Method::GET, "/api/usage/metrics", Some(&tenant), None).await;
        assert!(metrics.body.as_array().unwrap().iter().any(|m| m["code"] == "active_users"));
        // Nothing refused was kept.
        let usage = h.call(Method::GET, "/api/usage?metric=api_calls", Some(&tenant), None).await;
        assert_eq!(usage.body["metrics"][0]["value"], "2", "{}", usage.body);
    }

    async fn members_neither_send_nor_read_usage_and_billing_admins_read_it(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "mia@example.com", "member").await;
        h.member(&tenant, "bill@example.com", "billing_admin").await;
        let mia = s(&h.login(&tenant, "mia@example.com").await, "access_token");
        let bill = s(&h.login(&tenant, "bill@example.com").await, "access_token");
        let event = json!({"transaction_id": "x", "code": "api_calls"});
        h.call_as(Some(&mia), Method::POST, "/api/usage", Some(&tenant), Some(event.clone())).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        h.call_as(Some(&mia), Method::GET, "/api/usage", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        h.call_as(Some(&bill), Method::POST, "/api/usage", Some(&tenant), Some(event)).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let r = h.call_as(Some(&bill), Method::GET, "/api/usage", Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    async fn tenants_see_only_their_own_usage_and_workspaces(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        let b = h.tenant("bravo").await;
        let wb = s(&h.call(Method::POST, "/api/workspaces", Some(&b), Some(json!({"name": "B"}))).await.body, "id");
        for tenant in [&a, &b] {
            let r = h.call(Method::POST, "/api/usage", Some(tenant), Some(json!({"transaction_id": "same-id", "code": "api_calls"}))).await;
            assert_eq!(r.body["counted"], 1, "the same id is a new event in another tenant: {}", r.body);
        }
        h.call(Method::POST, "/api/usage", Some(&b), Some(json!({"transaction_id": "b2", "code": "api_calls", "quantity": 10}))).await;
        let ua = h.call(Method::GET, "/api/usage?metric=api_calls", Some(&a), None).await;
        assert_eq!(ua.body["metrics"][0]["value"], "1");
        // A cannot send usage for B's workspace, nor read it.
        h.call(Method::POST, "/api/usage", Some(&a), Some(json!({"transaction_id": "w", "code": "api_calls", "workspace_id": wb}))).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::GET, &format!("/api/usage?workspace_id={wb}"), Some(&a), None).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        // B's owner, signed in to B, cannot read A's usage by naming A.
        h.member(&b, "bo@example.com", "owner").await;
        let bo = s(&h.login(&b, "bo@example.com").await, "access_token");
        let r = h.call_as(Some(&bo), Method::GET, "/api/usage", Some(&a), None).await;
        assert!(r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN, "{}", r.status);
        let ub = h.call_as(Some(&bo), Method::GET, "/api/usage?metric=api_calls", Some(&b), None).await;
        assert_eq!(ub.body["metrics"][0]["value"], "2", "{}", ub.body);
    }

    async fn a_metered_ai_request_counts_once_in_the_quota_and_in_usage(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "Product"}))).await.body, "id");
        let ask = |cid: &str| {
            Request::builder()
                .method(Method::POST)
                .uri(format!("/api/workspaces/{ws}/ai/requests"))
                .header("authorization", format!("Bearer {}", h.token))
                .header("x-tenant-id", &tenant)
                .header("x-request-id", cid)
                .body(Body::empty())
                .unwrap()
        };
        for cid in ["req-a", "req-b", "req-a"] {
            let r = h.send(ask(cid)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        let quota = h.call(Method::GET, "/api/quotas", Some(&tenant), None).await;
        assert_eq!(quota.body[0]["used"], 2, "{}", quota.body);
        let usage = h.call(Method::GET, "/api/usage?metric=ai_requests", Some(&tenant), None).await;
        assert_eq!(usage.body["metrics"][0]["value"], "2", "{}", usage.body);
        assert_eq!(quota.body[0]["resets_at"], usage.body["period"]["end"]);
        let per_ws = h.call(Method::GET, &format!("/api/usage?metric=ai_requests&workspace_id={ws}"), Some(&tenant), None).await;
        assert_eq!(per_ws.body["metrics"][0]["value"], "2");
    }
}
