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

fn at(y: i32, m: u32, d: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn a_subscription_lives_through_invoices_payments_and_cancellation_over_http(t) {
        let h = Harness::new(t).await;
        h.t.clock.set(at(2026, 11, 16));
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "bill@example.com", "billing_admin").await;
        let bill = s(&h.login(&tenant, "bill@example.com").await, "access_token");
        let call = |bill: &String, m: Method, p: String, b: Option<serde_json::Value>| {
            let (h, bill, tenant) = (&h, bill.clone(), &tenant);
            async move { h.call_as(Some(&bill), m, &p, Some(tenant), b).await }
        };
        let r = call(&bill, Method::PUT, "/api/billing/account".to_owned(), Some(json!({"legal_name": "Acme GmbH", "email": "ap@acme.example", "address": "2 Side St\nHamburg", "tax_rate": "19", "po_number": "PO-7"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let plans = call(&bill, Method::GET, "/api/plans".to_owned(), None).await;
        assert!(plans.body.as_array().unwrap().iter().any(|p| p["code"] == "department"));
        // Department: 499 + 3 seats x 9, calendar months; half of November is billed.
        let r = call(&bill, Method::POST, "/api/subscriptions".to_owned(), Some(json!({"plan": "department", "seats": 3}))).await;
        assert_eq!((r.status, &r.body["status"]), (StatusCode::CREATED, &json!("active")), "{}", r.body);
        let sub = s(&r.body, "id");
        let ent = h.call(Method::GET, "/api/entitlements", Some(&tenant), None).await;
        assert_eq!(ent.body["tier"], "department", "the Authorizer sees the plan at once: {}", ent.body);
        let list = call(&bill, Method::GET, "/api/invoices".to_owned(), None).await;
        let first = &list.body[0];
        assert_eq!((first["number"].as_str(), first["subtotal"].as_i64(), first["tax"].as_i64(), first["total"].as_i64()), (Some("INV-000001"), Some(26300), Some(4997), Some(31297)), "{}", list.body);
        assert_eq!(first["buyer"]["name"], "Acme GmbH");
        assert_eq!(first["po_number"], "PO-7");
        assert_eq!(h.mail_count("ap@acme.example").await, 1, "the invoice is mailed through the outbox");
        // Two more seats at once: a prorated invoice.
        let r = call(&bill, Method::POST, format!("/api/subscriptions/{sub}/plan"), Some(json!({"plan": "department", "seats": 5}))).await;
        assert_eq!((r.status, &r.body["effective"]), (StatusCode::OK, &json!("now")), "{}", r.body);
        assert_eq!(r.body["document"]["reason"], "plan_change");
        // Another anchor is a clear refusal.
        call(&bill, Method::POST, format!("/api/subscriptions/{sub}/plan"), Some(json!({"plan": "enterprise"}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        // Usage in November, then the period closes through the run and the worker.
        for i in 0..10 {
            h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!({"transaction_id": format!("ai-{i}"), "code": "ai_requests"}))).await;
        }
        h.t.clock.set(at(2026, 12, 1) + chrono::Duration::seconds(1));
        let r = h.call(Method::POST, "/api/platform/billing/run", None, None).await;
        assert_eq!((r.status, &r.body["enqueued"]), (StatusCode::OK, &json!(1)), "{}", r.body);
        h.worker().run_once().await.unwrap();
        // Access tokens are short-lived: sign in again after the clock moved.
        let bill = s(&h.login(&tenant, "bill@example.com").await, "access_token");
        let list = call(&bill, Method::GET, "/api/invoices".to_owned(), None).await;
        let period = list.body.as_array().unwrap().iter().find(|i| i["reason"] == "period").expect("the period was invoiced");
        assert_eq!(period["number"], "INV-000003");
        let id = s(period, "id");
        let full = call(&bill, Method::GET, format!("/api/invoices/{id}"), None).await;
        assert_eq!(full.status, StatusCode::OK, "{}", full.body);
        let codes: Vec<&str> = full.body["lines"].as_array().unwrap().iter().map(|l| l["charge_code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["ai_requests", "platform", "seats"], "{}", full.body);
        // The operator records the bank transfer; a second time is refused.
        let paid = h.call(Method::POST, &format!("/api/tenants/{tenant}/invoices/{id}/mark-paid"), None, Some(json!({"reference": "SEPA 2026-12-04"}))).await;
        assert_eq!((paid.status, &paid.body["status"]), (StatusCode::OK, &json!("paid")), "{}", paid.body);
        h.call(Method::POST, &format!("/api/tenants/{tenant}/invoices/{id}/mark-paid"), None, Some(json!({"reference": "again"}))).await
            .assert_problem(StatusCode::CONFLICT, "invalid_invoice_state");
        // A credit note on the paid invoice becomes prepaid credit.
        let note = h.call(Method::POST, &format!("/api/tenants/{tenant}/invoices/{id}/credit-notes"), None, Some(json!({"amount": 1000, "reason": "outage"}))).await;
        assert_eq!((note.status, &note.body["number"]), (StatusCode::CREATED, &json!("CN-000001")), "{}", note.body);
        // Void the first invoice; cancel at the period end.
        let first_id = list.body.as_array().unwrap().iter().find(|i| i["number"] == "INV-000001").unwrap()["id"].as_str().unwrap().to_owned();
        let r = h.call(Method::POST, &format!("/api/tenants/{tenant}/invoices/{first_id}/void"), None, Some(json!({"reason": "wrong buyer"}))).await;
        assert_eq!(r.body["status"], "void", "{}", r.body);
        let r = call(&bill, Method::POST, format!("/api/subscriptions/{sub}/cancel"), None).await;
        assert_eq!((r.status, &r.body["cancel_at_period_end"]), (StatusCode::OK, &json!(true)), "{}", r.body);
        call(&bill, Method::POST, format!("/api/subscriptions/{sub}/resume"), None).await
            .assert_problem(StatusCode::CONFLICT, "invalid_transition");
        // The trail shows each step.
        let log = h.call(Method::GET, "/api/audit-logs?limit=500", Some(&tenant), None).await.body.to_string();
        for a in ["billing.account.update", "billing.subscription.create", "billing.invoice.issue", "billing.subscription.change_plan", "billing.period.close", "billing.invoice.mark_paid", "billing.credit_note.issue", "billing.invoice.void", "billing.subscription.cancel"] {
            assert!(log.contains(a), "{a} missing");
        }
    }

    async fn only_owners_and_billing_admins_see_or_manage_billing(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        for (email, role) in [("o@example.com", "owner"), ("a@example.com", "admin"), ("m@example.com", "member"), ("b@example.com", "billing_admin")] {
            h.member(&tenant, email, role).await;
        }
        let mut tokens = Vec::new();
        for e in ["o@example.com", "a@example.com", "m@example.com", "b@example.com"] {
            tokens.push(s(&h.login(&tenant, e).await, "access_token"));
        }
        let [owner, admin, member, bill] = <[String; 4]>::try_from(tokens).unwrap();
        for who in [&admin, &member] {
            for path in ["/api/invoices", "/api/subscriptions", "/api/billing/account"] {
                h.call_as(Some(who), Method::GET, path, Some(&tenant), None).await
                    .assert_problem(StatusCode::FORBIDDEN, "forbidden");
            }
            h.call_as(Some(who), Method::POST, "/api/subscriptions", Some(&tenant), Some(json!({"plan": "team"}))).await
                .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        }
        for who in [&owner, &bill] {
            let r = h.call_as(Some(who), Method::GET, "/api/invoices", Some(&tenant), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        // Everyone in the organization may see the plans.
        let r = h.call_as(Some(&member), Method::GET, "/api/plans", Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::OK);
        // Bad input is a clear problem.
        let r = h.call_as(Some(&owner), Method::POST, "/api/subscriptions", Some(&tenant), Some(json!({"plan": "nope"}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(r.body["field"], "plan");
        let r = h.call_as(Some(&owner), Method::POST, "/api/subscriptions", Some(&tenant), Some(json!({"plan": "team", "seats": 11}))).await;
        assert_eq!(r.body["field"], "seats", "{}", r.body);
        let r = h.call_as(Some(&owner), Method::PUT, "/api/billing/account", Some(&tenant), Some(json!({"legal_name": "Acme", "tax_rate": "150"}))).await;
        assert_eq!(r.body["field"], "tax_rate", "{}", r.body);
        h.call_as(Some(&owner), Method::GET, "/api/invoices/not-an-id", Some(&tenant), None).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
        h.call_as(Some(&owner), Method::POST, &format!("/api/subscriptions/{}/cancel", uuid::Uuid::now_v7()), Some(&tenant), Some(json!({"immediately": "yes"}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }

    async fn tenants_reach_no_other_tenants_subscriptions_or_invoices(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        let b = h.tenant("bravo").await;
        let r = h.call(Method::POST, "/api/subscriptions", Some(&a), Some(json!({"plan": "department"}))).await;
        let sub = s(&r.body, "id");
        let inv = s(&h.call(Method::GET, "/api/invoices", Some(&a), None).await.body[0], "id");
        h.member(&b, "bo@example.com", "owner").await;
        let bo = s(&h.login(&b, "bo@example.com").await, "access_token");
        for (m, path, body) in [
            (Method::GET, format!("/api/invoices/{inv}"), None),
            (Method::POST, format!("/api/subscriptions/{sub}/cancel"), None),
            (Method::POST, format!("/api/subscriptions/{sub}/pause"), None),
            (Method::POST, format!("/api/subscriptions/{sub}/plan"), Some(json!({"plan": "team"}))),
        ] {
            h.call_as(Some(&bo), m, &path, Some(&b), body).await
                .assert_problem(StatusCode::NOT_FOUND, "not_found");
        }
        assert_eq!(h.call_as(Some(&bo), Method::GET, "/api/invoices", Some(&b), None).await.body, json!([]));
        assert_eq!(h.call_as(Some(&bo), Method::GET, "/api/subscriptions", Some(&b), None).await.body, json!([]));
        // An operator naming the wrong tenant reaches nothing either.
        h.call(Method::POST, &format!("/api/tenants/{b}/invoices/{inv}/mark-paid"), None, Some(json!({"reference": "x"}))).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        h.call(Method::POST, &format!("/api/tenants/{b}/invoices/{inv}/void"), None, Some(json!({"reason": "x"}))).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        let still = h.call(Method::GET, &format!("/api/invoices/{inv}"), Some(&a), None).await;
        assert_eq!(still.body["status"], "finalized");
    }
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn a_declined_card_suspends_the_tenant_naming_the_invoice_and_a_signed_webhook_reactivates_it(t) {
        use saas_billing::payment::{Scripted, SimulatedCardProvider, WebhookEvent, WebhookKind, WebhookSecret};
        let card = std::sync::Arc::new(SimulatedCardProvider::new(WebhookSecret::generate()));
        card.script((0..4).map(|_| Scripted::decline("card_declined")));
        let h = Harness::with_config(t, saas_server::Config { payment_provider: Some(card.clone()), ..crate::test_config() }).await;
        h.t.clock.set(at(2026, 11, 1));
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "bill@example.com", "billing_admin").await;
        let r = h.call(Method::POST, "/api/subscriptions", Some(&tenant), Some(json!({"plan": "individual"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // The trial ends on day 14; the first charge is declined, dunning runs 14 more days.
        for day in [15, 16, 18, 22, 29] {
            h.t.clock.set(at(2026, 11, 1) + chrono::Duration::days(day));
            h.call(Method::POST, "/api/platform/billing/run", None, None).await;
            let w = h.worker();
            while w.run_once().await.unwrap() > 0 {}
        }
        let r = h.call(Method::GET, "/api/invoices", Some(&tenant), None).await;
        r.assert_problem(StatusCode::FORBIDDEN, "tenant_suspended");
        assert!(r.body["detail"].as_str().unwrap().contains("INV-000001"), "{}", r.body);
        // The operator sees it; the card payment arrives as a signed webhook.
        let inv = h.t.inspector().await.row_texts("billing_invoices").await;
        assert_eq!(inv.len(), 1);
        let p = h.t.platform();
        let tid: saas_core::TenantId = tenant.parse().unwrap();
        let ctx = p.act_in(tid);
        let invoice = h.state.billing().invoices(&ctx).await.unwrap().remove(0);
        let event = WebhookEvent {
            id: "evt_42".into(),
            kind: WebhookKind::PaymentSucceeded,
            tenant_id: tid.as_uuid(),
            invoice_id: invoice.id.as_uuid(),
            amount: saas_billing::money::Money { amount: invoice.amount_due, currency: invoice.currency },
            reference: "sim_ch_ok".into(),
            failure_code: None,
            occurred_at: saas_core::clock::Clock::now(&h.t.clock),
        };
        let (headers, body) = card.webhook_for(&event, saas_core::clock::Clock::now(&h.t.clock));
        let send = |body: Vec<u8>| {
            let mut req = Request::builder().method(Method::POST).uri("/api/billing/webhooks/simulated_card").header("content-type", "application/json");
            for (k, v) in headers.iter() {
                req = req.header(k, v);
            }
            req.body(Body::from(body)).unwrap()
        };
        let r = h.send(send(body.clone())).await;
        assert_eq!((r.status, &r.body["result"]), (StatusCode::OK, &json!("processed")), "{}", r.body);
        let r = h.send(send(body.clone())).await;
        assert_eq!(r.body["result"], "duplicate", "a replay has no second effect");
        let mut forged = body.clone();
        forged.extend_from_slice(b"  ");
        h.send(send(forged)).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_webhook_signature");
        // Reactivated: the billing admin reads the paid invoice.
        let bill = s(&h.login(&tenant, "bill@example.com").await, "access_token");
        let r = h.call_as(Some(&bill), Method::GET, "/api/invoices", Some(&tenant), None).await;
        assert_eq!((r.status, &r.body[0]["status"]), (StatusCode::OK, &json!("paid")), "{}", r.body);
        let log = h.call(Method::GET, "/api/audit-logs?limit=500", Some(&tenant), None).await.body.to_string();
        for a in ["billing.subscription.trial_end", "billing.payment.failed", "billing.subscription.incomplete", "billing.dunning.step", "billing.dunning.suspend", "billing.payment.succeeded", "billing.dunning.reactivate"] {
            assert!(log.contains(a), "{a} missing");
        }
    }
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn an_invoice_renders_as_json_html_and_pdf_by_suffix_or_accept(t) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.call(Method::PUT, "/api/billing/account", Some(&tenant), Some(json!({"legal_name": "<b>Acme</b> & Co", "tax_rate": "7.5"}))).await;
        h.call(Method::POST, "/api/subscriptions", Some(&tenant), Some(json!({"plan": "department"}))).await;
        let id = s(&h.call(Method::GET, "/api/invoices", Some(&tenant), None).await.body[0], "id");
        let get = |path: String, accept: Option<&'static str>| {
            let mut req = Request::builder().uri(path).header("authorization", format!("Bearer {}", h.token)).header("x-tenant-id", &tenant);
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let app = h.app.clone();
            async move {
                let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
                let status = res.status();
                let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                (status, ct, res.into_body().collect().await.unwrap().to_bytes().to_vec())
            }
        };
        let (st, ct, body) = get(format!("/api/invoices/{id}.pdf"), None).await;
        assert_eq!((st, ct.as_str()), (StatusCode::OK, "application/pdf"));
        assert!(body.starts_with(b"%PDF-"));
        let (st, ct, body) = get(format!("/api/invoices/{id}"), Some("text/html")).await;
        assert_eq!(st, StatusCode::OK);
        assert!(ct.starts_with("text/html"), "{ct}");
        let html = String::from_utf8(body).unwrap();
        assert!(html.contains("INV-000001") && html.contains("&lt;b&gt;Acme&lt;/b&gt; &amp; Co"), "the buyer is escaped");
        let (st, ct, _) = get(format!("/api/invoices/{id}"), Some("application/pdf")).await;
        assert_eq!((st, ct.as_str()), (StatusCode::OK, "application/pdf"));
        let (st, ct, body) = get(format!("/api/invoices/{id}.json"), None).await;
        assert_eq!((st, ct.as_str()), (StatusCode::OK, "application/json"));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["number"], "INV-000001");
        let (st, _, _) = get(format!("/api/invoices/{id}"), Some("image/png")).await;
        assert_eq!(st, StatusCode::NOT_ACCEPTABLE);
        let (st, _, _) = get(format!("/api/invoices/{id}.docx"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn the_whole_subscription_lifecycle_runs_on_the_fake_clock_with_its_audit_trail(t) {
        use saas_billing::payment::{Scripted, SimulatedCardProvider, WebhookEvent, WebhookKind, WebhookSecret};
        let card = std::sync::Arc::new(SimulatedCardProvider::new(WebhookSecret::generate()));
        let h = Harness::with_config(t, saas_server::Config { payment_provider: Some(card.clone()), ..crate::test_config() }).await;
        h.t.clock.set(at(2026, 11, 1));
        let tenant = h.tenant("acme").await;
        let go = |day: chrono::DateTime<chrono::Utc>| {
            h.t.clock.set(day);
            async {
                let r = h.call(Method::POST, "/api/platform/billing/run", None, None).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                let w = h.worker();
                while w.run_once().await.unwrap() > 0 {}
            }
        };
        let trail = || async { h.call(Method::GET, "/api/audit-logs?limit=500", Some(&tenant), None).await.body.to_string() };
        let has = |log: &str, actions: &[&str]| {
            for a in actions {
                assert!(log.contains(&format!("\"{a}\"")), "{a} missing at this step");
            }
        };
        h.call(Method::PUT, "/api/billing/account", Some(&tenant), Some(json!({"legal_name": "Acme", "email": "ap@acme.example"}))).await;
        // 1. Trial.
        let r = h.call(Method::POST, "/api/subscriptions", Some(&tenant), Some(json!({"plan": "team", "seats": 3}))).await;
        assert_eq!(r.body["status"], "trialing", "{}", r.body);
        let sub = s(&r.body, "id");
        has(&trail().await, &["billing.account.update", "billing.subscription.create"]);
        // 2. The trial ends on 15 November: 16 of November's 30 days for 3 seats at 12, paid by card.
        card.script([Scripted::Succeed, Scripted::Succeed]);
        go(at(2026, 11, 16)).await;
        let inv = h.call(Method::GET, "/api/invoices", Some(&tenant), None).await.body;
        assert_eq!((&inv[0]["number"], &inv[0]["total"], &inv[0]["status"]), (&json!("INV-000001"), &json!(1920), &json!("paid")), "{inv}");
        has(&trail().await, &["billing.subscription.trial_end", "billing.invoice.issue", "billing.payment.succeeded"]);
        // 3. Upgrade mid-period to Department: prorated at once, the tier follows.
        h.t.clock.set(at(2026, 11, 21));
        let r = h.call(Method::POST, &format!("/api/subscriptions/{sub}/plan"), Some(&tenant), Some(json!({"plan": "department"}))).await;
        assert_eq!((r.status, &r.body["effective"]), (StatusCode::OK, &json!("now")), "{}", r.body);
        assert_eq!(h.call(Method::GET, "/api/entitlements", Some(&tenant), None).await.body["tier"], "department");
        let w = h.worker();
        while w.run_once().await.unwrap() > 0 {}
        let inv = h.call(Method::GET, "/api/invoices", Some(&tenant), None).await.body;
        assert_eq!((&inv[0]["number"], &inv[0]["reason"], &inv[0]["status"]), (&json!("INV-000002"), &json!("plan_change"), &json!("paid")), "{inv}");
        has(&trail().await, &["billing.subscription.change_plan"]);
        // 4. Usage.
        let events: Vec<_> = (0..10).map(|i| json!({"transaction_id": format!("ai-{i}"), "code": "ai_requests"})).collect();
        h.call(Method::POST, "/api/usage", Some(&tenant), Some(json!({"events": events}))).await;
        // 5. The period closes; the card is declined: past due, dunning starts with a reminder.
        card.script((0..4).map(|_| Scripted::decline("card_declined")));
        go(at(2026, 12, 1) + chrono::Duration::minutes(1)).await;
        let subs = h.call(Method::GET, "/api/subscriptions", Some(&tenant), None).await.body;
        assert_eq!(subs[0]["status"], "past_due", "{subs}");
        has(&trail().await, &["billing.period.close", "billing.payment.failed", "billing.subscription.past_due", "billing.dunning.start", "billing.dunning.step"]);
        // 6. Retries and reminder mails on days 1, 3 and 7.
        for d in [2, 4, 8] {
            go(at(2026, 12, d) + chrono::Duration::minutes(2)).await;
        }
        let mails = h.state.auth().outbox_to(&h.t.platform(), "ap@acme.example").await.unwrap();
        let reminders = mails.iter().filter(|m| m.subject.starts_with("Payment reminder")).count();
        assert_eq!(reminders, 4, "{:?}", mails.iter().map(|m| &m.subject).collect::<Vec<_>>());
        // 7. Day 14: suspended, and requests say which invoice is unpaid.
        go(at(2026, 12, 15) + chrono::Duration::minutes(2)).await;
        let r = h.call(Method::GET, "/api/invoices", Some(&tenant), None).await;
        r.assert_problem(StatusCode::FORBIDDEN, "tenant_suspended");
        let unpaid = r.body["detail"].as_str().unwrap().to_owned();
        assert!(unpaid.contains("INV-000003"), "{unpaid}");
        // 8. The payment arrives by webhook: reactivated.
        let tid: saas_core::TenantId = tenant.parse().unwrap();
        let ctx = h.t.platform().act_in(tid);
        let open = h.state.billing().invoices(&ctx).await.unwrap().into_iter().find(|i| i.number.as_deref() == Some("INV-000003")).unwrap();
        let now = saas_core::clock::Clock::now(&h.t.clock);
        let event = WebhookEvent { id: "evt_paid".into(), kind: WebhookKind::PaymentSucceeded, tenant_id: tid.as_uuid(), invoice_id: open.id.as_uuid(), amount: saas_billing::money::Money { amount: open.amount_due, currency: open.currency }, reference: "sim_ch_late".into(), failure_code: None, occurred_at: now };
        let (headers, body) = card.webhook_for(&event, now);
        let mut req = Request::builder().method(Method::POST).uri("/api/billing/webhooks/simulated_card");
        for (k, v) in headers.iter() {
            req = req.header(k, v);
        }
        let r = h.send(req.body(Body::from(body)).unwrap()).await;
        assert_eq!(r.body["result"], "processed", "{}", r.body);
        let subs = h.call(Method::GET, "/api/subscriptions", Some(&tenant), None).await;
        assert_eq!((subs.status, &subs.body[0]["status"]), (StatusCode::OK, &json!("active")), "{}", subs.body);
        has(&trail().await, &["billing.dunning.suspend", "billing.payment.succeeded", "billing.subscription.reactivate", "billing.dunning.reactivate"]);
        // Billing admins follow every step without the audit permission.
        h.member(&tenant, "bill@example.com", "billing_admin").await;
        let bill = s(&h.login(&tenant, "bill@example.com").await, "access_token");
        h.call_as(Some(&bill), Method::GET, "/api/audit-logs", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let activity = h.call_as(Some(&bill), Method::GET, "/api/billing/activity?limit=500", Some(&tenant), None).await;
        assert_eq!(activity.status, StatusCode::OK, "{}", activity.body);
        let actions: Vec<&str> = activity.body["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
        assert!(actions.iter().all(|a| a.starts_with("billing.")), "{actions:?}");
        for a in ["billing.dunning.step", "billing.dunning.suspend", "billing.payment.failed", "billing.dunning.reactivate"] {
            assert!(actions.contains(&a), "{a}: {actions:?}");
        }
        // 9. Cancellation at the period end.
        let r = h.call(Method::POST, &format!("/api/subscriptions/{sub}/cancel"), Some(&tenant), Some(json!({"immediately": false}))).await;
        assert_eq!(r.body["cancel_at_period_end"], true, "{}", r.body);
        go(at(2027, 1, 1) + chrono::Duration::minutes(1)).await;
        assert_eq!(h.call(Method::GET, "/api/subscriptions", Some(&tenant), None).await.body, json!([]));
        has(&trail().await, &["billing.subscription.cancel"]);
        let r = h.call(Method::GET, "/api/entitlements", Some(&tenant), None).await;
        assert_eq!(r.body["tier"], "individual", "{}", r.body);
    }
}
