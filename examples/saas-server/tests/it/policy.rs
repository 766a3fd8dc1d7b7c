//! Authorization over HTTP: custom roles and their assignment with the
//! no-escalation rule, tenant policies (line-numbered errors, versions,
//! rollback, explain), entitlements and quotas (429 naming the quota and its
//! reset), and break-glass (reason, operator MFA, time box, audit, owners' view).

use axum::http::{Method, StatusCode};
use saas_server::Config;
use saas_test_support::both_backends;
use serde_json::json;

use crate::{Harness, s};

both_backends! {
    migrations = saas_server::migration_sets();

    async fn roles_are_granted_only_by_those_who_hold_them(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let (admin, _, _) = h.mfa_member(&tenant, "ali@example.com", "admin").await;
        let mia = h.member(&tenant, "mia@example.com", "member").await;
        let mia_token = s(&h.login(&tenant, "mia@example.com").await, "access_token");
        let perms = h.call_as(Some(&admin), Method::GET, "/api/permissions", Some(&tenant), None).await;
        assert!(perms.body.as_array().unwrap().iter().any(|p| p["name"] == "audit.read"));
        // The admin cannot define a role carrying billing, the owner can.
        h.call_as(Some(&admin), Method::POST, "/api/roles", Some(&tenant), Some(json!({"name": "finance", "level": "org", "permissions": ["billing.read"]}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let r = h.call_as(Some(&owner), Method::POST, "/api/roles", Some(&tenant), Some(json!({"name": "auditor", "level": "org", "permissions": ["audit.read", "org.read"]}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        h.call_as(Some(&owner), Method::POST, "/api/roles", Some(&tenant), Some(json!({"name": "x", "level": "org", "permissions": ["launch.missiles"]}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        // Mia cannot read the audit log until she holds the role.
        h.call_as(Some(&mia_token), Method::GET, "/api/audit-logs", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let grant = json!({"assignee": {"type": "user", "id": mia}, "role": "auditor"});
        // A member cannot assign roles at all; an admin can assign this one.
        h.call_as(Some(&mia_token), Method::POST, "/api/user-roles", Some(&tenant), Some(grant.clone())).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let r = h.call_as(Some(&admin), Method::POST, "/api/user-roles", Some(&tenant), Some(grant.clone())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = h.call_as(Some(&mia_token), Method::GET, "/api/audit-logs", Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // The admin cannot make Mia owner through either path.
        h.call_as(Some(&admin), Method::POST, "/api/user-roles", Some(&tenant), Some(json!({"assignee": {"type": "user", "id": mia}, "role": "owner"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        h.call_as(Some(&admin), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"role": "owner"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // Role changes are audited; removal takes effect at once.
        let r = h.call_as(Some(&admin), Method::DELETE, "/api/user-roles", Some(&tenant), Some(grant)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call_as(Some(&mia_token), Method::GET, "/api/audit-logs", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // A membership role change through identity reaches the cached decision at once.
        let r = h.call_as(Some(&owner), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"role": "admin"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = h.call_as(Some(&mia_token), Method::GET, "/api/audit-logs", Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let log = h.call_as(Some(&owner), Method::GET, "/api/audit-logs", Some(&tenant), None).await.body.to_string();
        for a in ["policy.role.create", "policy.role.assign", "policy.role.unassign", "policy.deny"] {
            assert!(log.contains(a), "{a} missing");
        }
    }

    async fn tenant_policies_are_validated_versioned_explained_and_walled(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let other = h.tenant("other").await;
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "eu"}))).await.body, "id");
        let foreign = s(&h.call(Method::POST, "/api/workspaces", Some(&other), Some(json!({"name": "theirs"}))).await.body, "id");
        // A syntax error on line 2 comes back with its line.
        let r = h.call_as(Some(&owner), Method::PUT, "/api/policies/office", Some(&tenant), Some(json!({"source": "forbid(principal, action, resource)\nwhen { context.hour <<< 8 };"}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy");
        assert_eq!(r.body["errors"][0]["line"], 2, "{}", r.body);
        // Naming another tenant's workspace is refused.
        let r = h.call_as(Some(&owner), Method::PUT, "/api/policies/reach", Some(&tenant), Some(json!({"source": format!("permit(principal, action, resource in Workspace::\"{foreign}\");")}))).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy");
        // v1 forbids exports from the workspace; explain names it.
        let v1 = format!("forbid(principal, action == Action::\"export_data\", resource in Workspace::\"{ws}\");");
        let r = h.call_as(Some(&owner), Method::PUT, "/api/policies/no_export", Some(&tenant), Some(json!({"source": v1}))).await;
        assert_eq!((r.status, &r.body["version"]), (StatusCode::OK, &json!(1)), "{}", r.body);
        let why = h.call_as(Some(&owner), Method::POST, "/api/authz/explain", Some(&tenant), Some(json!({"action": "export_data", "workspace_id": ws}))).await;
        assert_eq!(why.body["decision"], "deny", "{}", why.body);
        assert_eq!(why.body["policies"], json!(["policy:no_export#1"]), "{}", why.body);
        // v2 permits everything; the other tenant stays out of reach, and rollback restores v1.
        h.call_as(Some(&owner), Method::PUT, "/api/policies/no_export", Some(&tenant), Some(json!({"source": "permit(principal, action, resource);"}))).await;
        h.call_as(Some(&owner), Method::GET, &format!("/api/workspaces/{foreign}"), Some(&tenant), None).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        let r = h.call_as(Some(&owner), Method::POST, "/api/policies/no_export/rollback", Some(&tenant), Some(json!({"version": 1}))).await;
        assert_eq!(r.body["version"], 3, "{}", r.body);
        let versions = h.call_as(Some(&owner), Method::GET, "/api/policies/no_export", Some(&tenant), None).await;
        assert_eq!(versions.body.as_array().unwrap().len(), 3);
        let why = h.call_as(Some(&owner), Method::POST, "/api/authz/explain", Some(&tenant), Some(json!({"action": "export_data", "workspace_id": ws}))).await;
        assert_eq!(why.body["decision"], "deny", "{}", why.body);
        // The schema is published.
        let schema = h.call_as(Some(&owner), Method::GET, "/api/policy-schema", Some(&tenant), None).await;
        assert_eq!(schema.status, StatusCode::OK);
    }

    async fn an_exhausted_quota_is_a_429_naming_it_and_its_reset(t) {
        let h = Harness::new(t).await;
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "solo", "name": "Solo", "tier": "individual", "activate": true}))).await;
        let tenant = s(&r.body, "id");
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "w"}))).await.body, "id");
        let ent = h.call(Method::GET, "/api/entitlements", Some(&tenant), None).await;
        assert_eq!(ent.body["tier"], "individual", "{}", ent.body);
        // Fill the month (1,000 requests on the individual tier) straight in the table, then ask once more.
        let (owner, _, _) = h.mfa_member(&tenant, "solo@example.com", "owner").await;
        h.call_as(Some(&owner), Method::POST, "/api/user-roles", Some(&tenant), Some(json!({"assignee": {"type": "user", "id": h.call_as(Some(&owner), Method::GET, "/api/auth/me", Some(&tenant), None).await.body["account"]["id"].clone()}, "role": "senior_pm", "workspace": ws}))).await;
        let r = h.call_as(Some(&owner), Method::POST, &format!("/api/workspaces/{ws}/ai/requests"), Some(&tenant), None).await;
        assert_eq!((r.status, &r.body["requests_used_this_month"]), (StatusCode::OK, &json!(1)), "{}", r.body);
        let period = h.call_as(Some(&owner), Method::GET, "/api/quotas", Some(&tenant), None).await;
        assert_eq!(period.body[0]["used"], 1);
        assert_eq!(h.t.inspector().await.execute("UPDATE policy_quota_usage SET used = 1000").await, 1);
        let r = h.call_as(Some(&owner), Method::POST, &format!("/api/workspaces/{ws}/ai/requests"), Some(&tenant), None).await;
        r.assert_problem(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
        assert_eq!(r.body["quota"], "monthly_requests");
        assert_eq!(r.body["limit"], 1000);
        assert!(r.body["resets_at"].is_string(), "{}", r.body);
        assert!(r.body["correlation_id"].is_string());
    }

    async fn break_glass_needs_a_reason_mfa_and_a_time_box_and_owners_see_it(t) {
        let h = Harness::with_config(t, Config { require_break_glass: true, ..crate::test_config() }).await;
        let tenant = h.tenant("acme").await;
        // Without a grant the operator reaches nothing inside the tenant...
        h.call(Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // ... but may still provision its first owner (a platform action).
        let r = h.call(Method::POST, &format!("/api/tenants/{tenant}/owners"), None, Some(json!({"email": "first@example.com", "display_name": "First"}))).await;
        assert_eq!((r.status, &r.body["role"]), (StatusCode::CREATED, &json!("owner")), "{}", r.body);
        h.call(Method::GET, "/api/users", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // MFA is required: first without enrolment, then with a wrong code.
        let body = |code: &str| json!({"reason": "incident 42: customer cannot log in", "minutes": 30, "code": code});
        h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass"), None, Some(body("000000"))).await
            .assert_problem(StatusCode::FORBIDDEN, "mfa_enrolment_required");
        let setup = h.call(Method::POST, "/api/platform/mfa/setup", None, None).await;
        let secret = s(&setup.body, "secret");
        let r = h.call(Method::POST, "/api/platform/mfa/confirm", None, Some(json!({"code": h.totp(&secret)}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.advance(30);
        h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass"), None, Some(body("000000"))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
        // A reason is required, and a time box of at most four hours.
        h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass"), None, Some(json!({"reason": "x", "minutes": 30, "code": h.totp(&secret)}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        h.advance(30);
        h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass"), None, Some(json!({"reason": "incident 42: customer cannot log in", "minutes": 600, "code": h.totp(&secret)}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        h.advance(30);
        let r = h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass"), None, Some(body(&h.totp(&secret)))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let grant = s(&r.body, "id");
        // Inside the box every action works and is audited under the grant.
        let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "fixed"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let seen = h.call_as(Some(&owner), Method::GET, "/api/break-glass", Some(&tenant), None).await;
        assert_eq!(seen.body[0]["reason"], "incident 42: customer cannot log in", "{}", seen.body);
        let log = h.call_as(Some(&owner), Method::GET, "/api/audit-logs?action=policy.break_glass.action", Some(&tenant), None).await;
        let records = log.body["records"].as_array().unwrap();
        let grant_of = |r: &serde_json::Value| serde_json::from_str::<serde_json::Value>(r["details"].as_str().unwrap()).unwrap()["break_glass"].clone();
        assert!(!records.is_empty() && records.iter().all(|r| grant_of(r) == grant.as_str()), "{}", log.body);
        let entry = h.call_as(Some(&owner), Method::GET, "/api/audit-logs?action=policy.break_glass.start", Some(&tenant), None).await;
        assert_eq!(entry.body["records"].as_array().unwrap().len(), 1, "{}", entry.body);
        let platform = h.call(Method::GET, "/api/platform/audit-logs", None, None).await.body.to_string();
        assert!(platform.contains("policy.break_glass.start"));
        // Past the box the operator is out again.
        h.advance(31 * 60);
        h.call(Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // A second grant, closed early.
        let r = h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass"), None, Some(body(&h.totp(&secret)))).await;
        let second = s(&r.body, "id");
        assert_eq!(h.call(Method::GET, "/api/workspaces", Some(&tenant), None).await.status, StatusCode::OK);
        let r = h.call(Method::POST, &format!("/api/tenants/{tenant}/break-glass/{second}/end"), None, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call(Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
    }
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn seats_are_a_stock_quota_on_every_way_into_an_organization(t) {
        let h = Harness::new(t).await;
        // Team: 10 seats. Fill them, then every way in is refused with 402.
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "crew", "name": "Crew", "tier": "team", "activate": true}))).await;
        let tenant = s(&r.body, "id");
        for i in 0..10 {
            let r = h.call(Method::POST, "/api/users", Some(&tenant), Some(json!({"email": format!("m{i}@example.com"), "display_name": "M", "role": "member"}))).await;
            assert_eq!(r.status, StatusCode::CREATED, "{i}: {}", r.body);
        }
        let r = h.call(Method::POST, "/api/users", Some(&tenant), Some(json!({"email": "eleven@example.com", "display_name": "E", "role": "member"}))).await;
        r.assert_problem(StatusCode::PAYMENT_REQUIRED, "tier_limit_exceeded");
        assert!(r.body["detail"].as_str().unwrap().contains("max_users"), "{}", r.body);
        // An invitation can be sent, but not accepted while the seats are taken.
        let r = h.call(Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "late@example.com", "role": "member"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let token = h.mailed_token("late@example.com").await;
        let r = h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&tenant), Some(json!({"token": token, "password": crate::PASSWORD, "display_name": "Late"}))).await;
        r.assert_problem(StatusCode::PAYMENT_REQUIRED, "tier_limit_exceeded");
        // Disabling a member frees a seat.
        let users = h.call(Method::GET, "/api/users", Some(&tenant), None).await.body;
        let first = users.as_array().unwrap().iter().find(|u| u["email"] == "m0@example.com").unwrap()["id"].as_str().unwrap().to_owned();
        let r = h.call(Method::PATCH, &format!("/api/users/{first}"), Some(&tenant), Some(json!({"disabled": true}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&tenant), Some(json!({"token": token, "password": crate::PASSWORD, "display_name": "Late"}))).await;
        assert!(r.status.is_success(), "{}", r.body);
    }
}

/// The ids of a JSON array of workspaces, in the order given.
fn ids(body: &serde_json::Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|w| s(w, "id"))
        .collect()
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn the_workspace_list_holds_only_what_the_caller_may_read(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let other = h.tenant("other").await;
        let mk = |name: &'static str, parent: Option<String>| json!({"name": name, "parent_id": parent});
        let root = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(mk("root", None))).await.body, "id");
        let child = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(mk("child", Some(root.clone())))).await.body, "id");
        let grandchild = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(mk("grandchild", Some(child.clone())))).await.body, "id");
        let sibling = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(mk("sibling", None))).await.body, "id");
        let theirs = s(&h.call(Method::POST, "/api/workspaces", Some(&other), Some(mk("theirs", None))).await.body, "id");
        let mut all = vec![root.clone(), child.clone(), grandchild.clone(), sibling.clone()];
        all.sort();
        // An organization admin sees every workspace.
        let (admin, _, _) = h.mfa_member(&tenant, "ada@example.com", "admin").await;
        let r = h.call_as(Some(&admin), Method::GET, "/api/workspaces", Some(&tenant), None).await;
        assert_eq!((r.status, ids(&r.body)), (StatusCode::OK, all.clone()), "{}", r.body);
        // A billing admin holds no workspaces.read in the organization, only
        // a data-analyst role on the child: the child and what is nested under it.
        let bea = h.member(&tenant, "bea@example.com", "billing_admin").await;
        let r = h.call_as(Some(&admin), Method::PUT, &format!("/api/workspaces/{child}/members/{bea}"), Some(&tenant), Some(json!({"role": "data_analyst"}))).await;
        assert!(r.status.is_success(), "{}", r.body);
        let bea_token = s(&h.login(&tenant, "bea@example.com").await, "access_token");
        let mut subtree = vec![child.clone(), grandchild.clone()];
        subtree.sort();
        let r = h.call_as(Some(&bea_token), Method::GET, "/api/workspaces", Some(&tenant), None).await;
        assert_eq!((r.status, ids(&r.body)), (StatusCode::OK, subtree.clone()), "{}", r.body);
        // Keyset pages are cut from what she may see: one at a time, then none.
        let first = h.call_as(Some(&bea_token), Method::GET, "/api/workspaces?limit=1", Some(&tenant), None).await;
        assert_eq!(ids(&first.body), subtree[..1]);
        let second = h.call_as(Some(&bea_token), Method::GET, &format!("/api/workspaces?limit=1&after={}", subtree[0]), Some(&tenant), None).await;
        assert_eq!(ids(&second.body), subtree[1..]);
        let done = h.call_as(Some(&bea_token), Method::GET, &format!("/api/workspaces?limit=1&after={}", subtree[1]), Some(&tenant), None).await;
        assert!(ids(&done.body).is_empty(), "{}", done.body);
        // The admin's pages cover everything, in the same order.
        let page = h.call_as(Some(&admin), Method::GET, &format!("/api/workspaces?limit=2&after={}", all[1]), Some(&tenant), None).await;
        assert_eq!(ids(&page.body), all[2..]);
        // The single reads agree with the list.
        for w in &all {
            let r = h.call_as(Some(&bea_token), Method::GET, &format!("/api/workspaces/{w}"), Some(&tenant), None).await;
            assert_eq!(r.status == StatusCode::OK, subtree.contains(w), "{w}: {}", r.body);
        }
        // Losing the role empties the list at once, and then the route refuses.
        let r = h.call_as(Some(&admin), Method::DELETE, &format!("/api/workspaces/{child}/members/{bea}"), Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call_as(Some(&bea_token), Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // A member of another organization sees nothing of this one, and only
        // their own organization's workspaces there.
        h.member(&other, "zed@example.com", "admin").await;
        let zed = s(&h.login(&other, "zed@example.com").await, "access_token");
        let r = h.call_as(Some(&zed), Method::GET, "/api/workspaces", Some(&tenant), None).await;
        assert!(r.status.is_client_error(), "{}: {}", r.status, r.body);
        assert!(all.iter().all(|w| !r.body.to_string().contains(w.as_str())), "{}", r.body);
        let r = h.call_as(Some(&zed), Method::GET, "/api/workspaces", Some(&other), None).await;
        assert_eq!((r.status, ids(&r.body)), (StatusCode::OK, vec![theirs]), "{}", r.body);
    }

    async fn workspace_tags_round_trip_feed_policies_and_bad_tags_are_a_422(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        // Tags are sorted and deduplicated on the way in, and read back everywhere.
        let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "eu", "tags": ["region:eu-west", "eu", "eu"]}))).await;
        assert_eq!((r.status, &r.body["tags"]), (StatusCode::CREATED, &json!(["eu", "region:eu-west"])), "{}", r.body);
        let eu = s(&r.body, "id");
        let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "plain"}))).await;
        assert_eq!((r.status, &r.body["tags"]), (StatusCode::CREATED, &json!([])), "{}", r.body);
        let plain = s(&r.body, "id");
        assert_eq!(h.call(Method::GET, &format!("/api/workspaces/{eu}"), Some(&tenant), None).await.body["tags"], json!(["eu", "region:eu-west"]));
        let listed = h.call(Method::GET, "/api/workspaces", Some(&tenant), None).await.body;
        assert!(listed.as_array().unwrap().iter().any(|w| w["id"] == eu.as_str() && w["tags"] == json!(["eu", "region:eu-west"])), "{listed}");
        // PATCH replaces them; a rename leaves them alone; an empty list clears them.
        let path = format!("/api/workspaces/{plain}");
        let r = h.call(Method::PATCH, &path, Some(&tenant), Some(json!({"tags": ["us", "eu"]}))).await;
        assert_eq!((r.status, &r.body["tags"]), (StatusCode::OK, &json!(["eu", "us"])), "{}", r.body);
        let r = h.call(Method::PATCH, &path, Some(&tenant), Some(json!({"name": "renamed"}))).await;
        assert_eq!(r.body["tags"], json!(["eu", "us"]), "{}", r.body);
        let r = h.call(Method::PATCH, &path, Some(&tenant), Some(json!({"tags": []}))).await;
        assert_eq!(r.body["tags"], json!([]), "{}", r.body);
        // Bad tags are a 422 naming the field, on create and on update, and change nothing.
        let too_many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        for bad in [json!(["EU"]), json!(["eu west"]), json!([""]), json!(["x".repeat(65)]), json!(too_many)] {
            let r = h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "bad", "tags": bad}))).await;
            r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(r.body["field"], "tags", "{}", r.body);
            let r = h.call(Method::PATCH, &path, Some(&tenant), Some(json!({"name": "worse", "tags": bad}))).await;
            r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(r.body["field"], "tags", "{}", r.body);
        }
        h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "bad", "tags": "eu"}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        let r = h.call(Method::GET, &path, Some(&tenant), None).await;
        assert_eq!((&r.body["name"], &r.body["tags"]), (&json!("renamed"), &json!([])), "{}", r.body);
        assert_eq!(h.call(Method::GET, "/api/workspaces", Some(&tenant), None).await.body.as_array().unwrap().len(), 2);
        // "Data analysts export only from workspaces tagged eu", and a re-tag
        // over PATCH changes the decision at once.
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let ana = h.member(&tenant, "ana@example.com", "member").await;
        for w in [&eu, &plain] {
            let r = h.call_as(Some(&owner), Method::PUT, &format!("/api/workspaces/{w}/members/{ana}"), Some(&tenant), Some(json!({"role": "data_analyst"}))).await;
            assert!(r.status.is_success(), "{}", r.body);
        }
        let policy = "forbid (principal, action == Action::\"export_data\", resource is Workspace)\nunless { resource.tags.contains(\"eu\") };";
        let r = h.call_as(Some(&owner), Method::PUT, "/api/policies/eu_only", Some(&tenant), Some(json!({"source": policy}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let decide = |w: String| {
            let (h, owner, ana) = (&h, owner.clone(), ana.clone());
            let tenant = tenant.clone();
            async move {
                let why = h.call_as(Some(&owner), Method::POST, "/api/authz/explain", Some(&tenant), Some(json!({"action": "export_data", "workspace_id": w, "user_id": ana}))).await;
                assert_eq!(why.status, StatusCode::OK, "{}", why.body);
                why.body
            }
        };
        assert_eq!(decide(eu.clone()).await["decision"], "allow");
        let denied = decide(plain.clone()).await;
        assert_eq!((&denied["decision"], &denied["policies"]), (&json!("deny"), &json!(["policy:eu_only#1"])), "{denied}");
        let r = h.call_as(Some(&owner), Method::PATCH, &path, Some(&tenant), Some(json!({"tags": ["eu"]}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = h.call_as(Some(&owner), Method::PATCH, &format!("/api/workspaces/{eu}"), Some(&tenant), Some(json!({"tags": []}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(decide(plain.clone()).await["decision"], "allow");
        assert_eq!(decide(eu.clone()).await["decision"], "deny");
    }
}

/// The built-in `member` role's permissions (catalogue.toml), which the
/// custom roles below add to.
const MEMBER: [&str; 6] = [
    "org.read",
    "self.manage",
    "users.read",
    "workspaces.read",
    "entitlements.read",
    "roles.read",
];

/// The owner defines an organization role of `extra` plus everything a
/// member holds; returns its JSON name.
async fn custom_role(h: &Harness, tenant: &str, owner: &str, name: &str, extra: &[&str]) {
    let permissions: Vec<&str> = extra.iter().chain(MEMBER.iter()).copied().collect();
    let r = h
        .call_as(
            Some(owner),
            Method::POST,
            "/api/roles",
            Some(tenant),
            Some(json!({"name": name, "level": "org", "permissions": permissions})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// The owner gives `user` the organization role `role`.
async fn give(h: &Harness, tenant: &str, owner: &str, user: &str, role: &str) {
    let r = h
        .call_as(
            Some(owner),
            Method::POST,
            "/api/user-roles",
            Some(tenant),
            Some(json!({"assignee": {"type": "user", "id": user}, "role": role})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn a_custom_role_holding_users_invite_invites_and_provisions_only_what_it_holds(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "eu"}))).await.body, "id");
        let mia = h.member(&tenant, "mia@example.com", "member").await;
        let rita = h.member(&tenant, "rita@example.com", "member").await;
        let token = s(&h.login(&tenant, "rita@example.com").await, "access_token");
        let invite = |email: &str, role: &str| json!({"email": email, "role": role});
        let provision = |email: &str, role: &str| json!({"email": email, "display_name": "New", "role": role});
        // As a plain member she may not invite.
        h.call_as(Some(&token), Method::POST, "/api/invitations", Some(&tenant), Some(invite("early@example.com", "member"))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        custom_role(&h, &tenant, &owner, "recruiter", &["users.invite"]).await;
        give(&h, &tenant, &owner, &rita, "recruiter").await;
        // With the custom role she invites and provisions members: the
        // server's guard and identity agree.
        let r = h.call_as(Some(&token), Method::POST, "/api/invitations", Some(&tenant), Some(invite("new@example.com", "member"))).await;
        assert_eq!((r.status, &r.body["role"]), (StatusCode::CREATED, &json!("member")), "{}", r.body);
        let r = h.call_as(Some(&token), Method::POST, "/api/users", Some(&tenant), Some(provision("prov@example.com", "member"))).await;
        assert_eq!((r.status, &r.body["role"]), (StatusCode::CREATED, &json!("member")), "{}", r.body);
        let listed = h.call_as(Some(&token), Method::GET, "/api/invitations", Some(&tenant), None).await;
        assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{}", listed.body);
        // Never into a role, or a workspace role, whose permissions she lacks.
        for (path, body) in [("/api/invitations", invite("boss@example.com", "admin")), ("/api/users", provision("boss@example.com", "admin"))] {
            let r = h.call_as(Some(&token), Method::POST, path, Some(&tenant), Some(body)).await;
            r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
            assert!(r.body["detail"].as_str().unwrap().contains("you cannot grant role admin"), "{}", r.body);
        }
        h.call_as(Some(&token), Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "ws@example.com", "role": "member", "workspace_id": ws, "workspace_role": "owner"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(h.mail_count("boss@example.com").await + h.mail_count("ws@example.com").await, 0);
        // And nothing the role does not hold: keys, removals, role changes.
        let r = h.call_as(Some(&token), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "ci", "scopes": []}))).await;
        r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(r.body["action"], "api_keys.create", "{}", r.body);
        let r = h.call_as(Some(&token), Method::DELETE, &format!("/api/users/{mia}"), Some(&tenant), None).await;
        r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(r.body["action"], "users.remove", "{}", r.body);
        let r = h.call_as(Some(&token), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"disabled": true}))).await;
        r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(r.body["action"], "users.update", "{}", r.body);
        // Losing the role takes the invitations away at once.
        let r = h.call_as(Some(&owner), Method::DELETE, "/api/user-roles", Some(&tenant), Some(json!({"assignee": {"type": "user", "id": rita}, "role": "recruiter"}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call_as(Some(&token), Method::POST, "/api/invitations", Some(&tenant), Some(invite("late@example.com", "member"))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
    }

    async fn a_custom_role_holding_api_keys_create_mints_keys_no_wider_than_itself(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let (token, _, _) = h.mfa_member(&tenant, "ivan@example.com", "member").await;
        let ivan = s(&h.call_as(Some(&token), Method::GET, "/api/auth/me", Some(&tenant), None).await.body["account"], "id");
        custom_role(&h, &tenant, &owner, "integrator", &["api_keys.create", "api_keys.read"]).await;
        give(&h, &tenant, &owner, &ivan, "integrator").await;
        let key = |scopes: serde_json::Value| json!({"name": "ci", "scopes": scopes});
        // A key carrying what he holds works...
        let r = h.call_as(Some(&token), Method::POST, "/api/api-keys", Some(&tenant), Some(key(json!(["users.read", "workspaces.read"])))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let secret = s(&r.body, "secret");
        let id = s(&r.body, "id");
        assert_eq!(h.call_as(Some(&secret), Method::GET, "/api/workspaces", Some(&tenant), None).await.status, StatusCode::OK);
        let listed = h.call_as(Some(&token), Method::GET, "/api/api-keys", Some(&tenant), None).await;
        assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{}", listed.body);
        // ... one carrying more is refused, and nothing is created.
        for scopes in [json!(["users.invite"]), json!(["workspaces.read", "api_keys.revoke"]), json!(["billing.manage"])] {
            h.call_as(Some(&token), Method::POST, "/api/api-keys", Some(&tenant), Some(key(scopes))).await
                .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        }
        let listed = h.call(Method::GET, "/api/api-keys", Some(&tenant), None).await;
        assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{}", listed.body);
        // Revoking, and service identities, are not his.
        let r = h.call_as(Some(&token), Method::DELETE, &format!("/api/api-keys/{id}"), Some(&tenant), None).await;
        r.assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(r.body["action"], "api_keys.revoke", "{}", r.body);
        h.call_as(Some(&token), Method::POST, "/api/service-identities", Some(&tenant), Some(json!({"name": "etl", "roles": ["member"]}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
    }

    async fn on_a_smaller_tier_owners_still_grant_admin_though_nobody_holds_the_features_it_lacks(t) {
        let h = Harness::new(t).await;
        // The team tier lacks advanced analytics and custom frameworks, which
        // the admin role names: nobody there holds them, so they do not stand
        // in the way of a grant.
        let r = h.call(Method::POST, "/api/tenants", None, Some(json!({"slug": "crew", "name": "Crew", "tier": "team", "activate": true}))).await;
        let tenant = s(&r.body, "id");
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let r = h.call_as(Some(&owner), Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "ada@example.com", "role": "admin"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = h.call_as(Some(&owner), Method::POST, "/api/users", Some(&tenant), Some(json!({"email": "abe@example.com", "display_name": "Abe", "role": "admin"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let mia = h.member(&tenant, "mia@example.com", "member").await;
        let r = h.call_as(Some(&owner), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"role": "admin"}))).await;
        assert_eq!((r.status, &r.body["role"]), (StatusCode::OK, &json!("admin")), "{}", r.body);
        // What the tier does entitle still counts: an admin lacks billing.
        let admin = s(&h.login(&tenant, "mia@example.com").await, "access_token");
        h.call_as(Some(&admin), Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "boss@example.com", "role": "owner"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        h.call_as(Some(&admin), Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "cash@example.com", "role": "billing_admin"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
    }
}
