//! Identity flows over HTTP, happy and unhappy paths, on both backends.

use axum::http::{Method, StatusCode};
use saas_test_support::both_backends;
use serde_json::{Value, json};

use crate::{Harness, PASSWORD, s};

both_backends! {
    migrations = saas_server::migration_sets();

    async fn registration_verification_login_refresh_and_logout(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let reg = |email: &'static str, password: &'static str| json!({"email": email, "password": password, "display_name": "Ann"});
        // Sign-up is closed until the organization opens it.
        h.call_as(None, Method::POST, "/api/auth/register", Some(&tenant), Some(reg("ann@example.com", PASSWORD))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let r = h.call(Method::PUT, "/api/auth/settings", Some(&tenant), Some(json!({"mfa_required": false, "open_signup": true}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // Password policy: too short, common, and a 100-character one accepted whole.
        h.call_as(None, Method::POST, "/api/auth/register", Some(&tenant), Some(reg("ann@example.com", "short1!"))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
        h.call_as(None, Method::POST, "/api/auth/register", Some(&tenant), Some(reg("ann@example.com", "password123"))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
        h.call_as(None, Method::POST, "/api/auth/register", Some(&tenant), Some(reg("bad-address", PASSWORD))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let long = "x".repeat(99) + "1";
        let first = h.call_as(None, Method::POST, "/api/auth/register", Some(&tenant), Some(json!({"email": "ann@example.com", "password": long, "display_name": "Ann"}))).await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
        // A second registration of the address answers the same and creates nothing.
        let again = h.call_as(None, Method::POST, "/api/auth/register", Some(&tenant), Some(reg("ann@example.com", PASSWORD))).await;
        assert_eq!((again.status, &again.body), (first.status, &first.body));
        assert_eq!(h.mail_count("ann@example.com").await, 2, "a verification mail, then a notice");
        // The 100-character password works, one character less does not: nothing truncated.
        let bad = h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "ann@example.com", "password": "x".repeat(99)}))).await;
        bad.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        let tokens = h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "ANN@example.com", "password": long}))).await;
        assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
        let access = s(&tokens.body, "access_token");
        let me = h.call_as(Some(&access), Method::GET, "/api/auth/me", Some(&tenant), None).await;
        assert_eq!(me.body["account"]["email_verified"], false, "{}", me.body);
        // Verify the address with the first mail's link (the newest mail is the notice).
        let mails = h.state.auth().outbox_to(&h.t.platform(), "ann@example.com").await.unwrap();
        let verify = mails.iter().find(|m| m.body.contains("verify-email")).unwrap();
        let at = verify.body.find("token=").unwrap() + 6;
        let token: String = verify.body[at..].chars().take_while(|c| !c.is_whitespace()).collect();
        let r = h.call_as(None, Method::POST, "/api/auth/verify-email", Some(&tenant), Some(json!({"token": token}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call_as(None, Method::POST, "/api/auth/verify-email", Some(&tenant), Some(json!({"token": token}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        let me = h.call_as(Some(&access), Method::GET, "/api/auth/me", Some(&tenant), None).await;
        assert_eq!(me.body["account"]["email_verified"], true);
        assert_eq!(me.body["memberships"].as_array().unwrap().len(), 1);
        // Refresh rotates; logout ends the session for every token of it.
        let r = h.call_as(None, Method::POST, "/api/auth/refresh", Some(&tenant), Some(json!({"refresh_token": s(&tokens.body, "refresh_token")}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_ne!(s(&r.body, "refresh_token"), s(&tokens.body, "refresh_token"));
        let access2 = s(&r.body, "access_token");
        let refresh2 = s(&r.body, "refresh_token");
        assert_eq!(h.call_as(Some(&access2), Method::POST, "/api/auth/logout", Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        for token in [&access, &access2] {
            h.call_as(Some(token), Method::GET, "/api/auth/me", Some(&tenant), None).await
                .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        }
        h.call_as(None, Method::POST, "/api/auth/refresh", Some(&tenant), Some(json!({"refresh_token": refresh2}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
    }

    async fn login_answers_alike_for_unknown_accounts_and_wrong_passwords_and_locks_after_failures(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let user = h.member(&tenant, "bob@example.com", "member").await;
        let attempt = |email: &'static str, password: &'static str| {
            let h = &h;
            let tenant = tenant.clone();
            async move {
                h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": email, "password": password}))).await
            }
        };
        let unknown = attempt("nobody@example.com", "wrong password").await;
        let wrong = attempt("bob@example.com", "wrong password").await;
        unknown.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        wrong.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        let strip = |v: &Value| { let mut v = v.clone(); v.as_object_mut().unwrap().remove("correlation_id"); v };
        assert_eq!(strip(&unknown.body), strip(&wrong.body), "identical answers");
        // An account of another organization is unknown here too.
        let other = h.tenant("other").await;
        h.member(&other, "carol@example.com", "member").await;
        let r = h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "carol@example.com", "password": PASSWORD}))).await;
        assert_eq!(strip(&r.body), strip(&wrong.body));
        // Four more failures lock the account: even the right password is refused.
        for _ in 0..4 {
            attempt("bob@example.com", "wrong password").await.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        }
        attempt("bob@example.com", PASSWORD).await.assert_problem(StatusCode::TOO_MANY_REQUESTS, "login_locked");
        // Unknown accounts lock the same way, so a lock reveals nothing.
        for _ in 0..5 {
            attempt("nobody@example.com", "wrong password").await;
        }
        attempt("nobody@example.com", "wrong password").await.assert_problem(StatusCode::TOO_MANY_REQUESTS, "login_locked");
        // An admin lifts the lock.
        let r = h.call(Method::POST, &format!("/api/users/{user}/unlock"), Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert!(attempt("bob@example.com", PASSWORD).await.body["access_token"].is_string());
        // The lock also lifts by itself after the lockout.
        for _ in 0..5 {
            attempt("bob@example.com", "wrong password").await;
        }
        attempt("bob@example.com", PASSWORD).await.assert_problem(StatusCode::TOO_MANY_REQUESTS, "login_locked");
        h.advance(16 * 60);
        assert!(attempt("bob@example.com", PASSWORD).await.body["access_token"].is_string());
        // Failures and successes are in the audit log.
        let log = h.call(Method::GET, "/api/audit-logs?action=auth.login", Some(&tenant), None).await;
        let outcomes: Vec<&str> = log.body["records"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
        assert!(outcomes.contains(&"failure") && outcomes.contains(&"success") && outcomes.contains(&"denied"), "{outcomes:?}");
    }

    async fn a_password_reset_link_works_once_expires_and_ends_every_session(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "dan@example.com", "member").await;
        let old = h.login(&tenant, "dan@example.com").await;
        // Unknown addresses get the same answer and no mail.
        let r = h.call_as(None, Method::POST, "/api/auth/password/forgot", Some(&tenant), Some(json!({"email": "ghost@example.com"}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(h.mail_count("ghost@example.com").await, 0);
        let r = h.call_as(None, Method::POST, "/api/auth/password/forgot", Some(&tenant), Some(json!({"email": "dan@example.com"}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let token = h.mailed_token("dan@example.com").await;
        h.call_as(None, Method::POST, "/api/auth/password/reset", Some(&tenant), Some(json!({"token": token, "password": "123456789"}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
        let r = h.call_as(None, Method::POST, "/api/auth/password/reset", Some(&tenant), Some(json!({"token": token, "password": "a brand new passphrase"}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call_as(None, Method::POST, "/api/auth/password/reset", Some(&tenant), Some(json!({"token": token, "password": "another new passphrase"}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        h.call_as(Some(&s(&old, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        h.call_as(None, Method::POST, "/api/auth/refresh", Some(&tenant), Some(json!({"refresh_token": s(&old, "refresh_token")}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        // A link older than an hour is refused.
        h.call_as(None, Method::POST, "/api/auth/password/forgot", Some(&tenant), Some(json!({"email": "dan@example.com"}))).await;
        let token = h.mailed_token("dan@example.com").await;
        h.advance(61 * 60);
        h.call_as(None, Method::POST, "/api/auth/password/reset", Some(&tenant), Some(json!({"token": token, "password": "yet another passphrase"}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        // Changing the password needs the current one and ends every session too.
        let now = h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "dan@example.com", "password": "a brand new passphrase"}))).await;
        let access = s(&now.body, "access_token");
        h.call_as(Some(&access), Method::POST, "/api/auth/password", Some(&tenant), Some(json!({"current_password": "wrong", "new_password": "the next passphrase"}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        let r = h.call_as(Some(&access), Method::POST, "/api/auth/password", Some(&tenant), Some(json!({"current_password": "a brand new passphrase", "new_password": "the next passphrase"}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        h.call_as(Some(&access), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        let log = h.call(Method::GET, "/api/audit-logs", Some(&tenant), None).await;
        let actions: Vec<&str> = log.body["records"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"auth.password.reset") && actions.contains(&"auth.password.change"), "{actions:?}");
    }

    async fn totp_enrolment_login_recovery_codes_replay_and_step_up(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "eve@example.com", "admin").await;
        let tokens = h.login(&tenant, "eve@example.com").await;
        let access = s(&tokens, "access_token");
        // Creating an API key needs a recent MFA, which a password session lacks.
        h.call_as(Some(&access), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "ci", "scopes": ["users.read"]}))).await
            .assert_problem(StatusCode::FORBIDDEN, "step_up_required");
        let setup = h.call_as(Some(&access), Method::POST, "/api/auth/mfa/setup", Some(&tenant), None).await;
        assert!(s(&setup.body, "otpauth_uri").starts_with("otpauth://totp/"), "{}", setup.body);
        let secret = s(&setup.body, "secret");
        h.call_as(Some(&access), Method::POST, "/api/auth/mfa/confirm", Some(&tenant), Some(json!({"code": "000000"}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
        let first = h.totp(&secret);
        let r = h.call_as(Some(&access), Method::POST, "/api/auth/mfa/confirm", Some(&tenant), Some(json!({"code": first}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let codes: Vec<String> = r.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        assert_eq!(codes.len(), 10);
        // Login now stops at the MFA step; the code used to confirm cannot be used again.
        let r = h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "eve@example.com", "password": PASSWORD}))).await;
        assert_eq!(r.body["mfa_required"], true, "{}", r.body);
        assert!(r.body.get("access_token").is_none());
        let challenge = s(&r.body, "challenge");
        h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&tenant), Some(json!({"challenge": challenge, "code": first}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
        // The challenge is not an access token.
        h.call_as(Some(&challenge), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        h.advance(30);
        let next = h.totp(&secret);
        let r = h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&tenant), Some(json!({"challenge": challenge, "code": next}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let mfa_access = s(&r.body, "access_token");
        // The same code, replayed within its window, is refused.
        h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&tenant), Some(json!({"challenge": challenge, "code": next}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
        // A recovery code works once.
        let r = h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&tenant), Some(json!({"challenge": challenge, "code": codes[3].to_uppercase()}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&tenant), Some(json!({"challenge": challenge, "code": codes[3]}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
        // With a fresh MFA the key is created; ten minutes later step-up is needed again.
        let r = h.call_as(Some(&mfa_access), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "ci", "scopes": ["users.read"]}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        h.advance(11 * 60);
        let refreshed = h.call_as(None, Method::POST, "/api/auth/refresh", Some(&tenant), Some(json!({"refresh_token": s(&tokens, "refresh_token")}))).await;
        let stale = s(&refreshed.body, "access_token");
        h.call_as(Some(&stale), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "ci2", "scopes": []}))).await
            .assert_problem(StatusCode::FORBIDDEN, "step_up_required");
        let r = h.call_as(Some(&stale), Method::POST, "/api/auth/mfa/verify", Some(&tenant), Some(json!({"code": h.totp(&secret)}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let stepped = s(&r.body, "access_token");
        let r = h.call_as(Some(&stepped), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "ci2", "scopes": []}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // Enrolling again while enabled is a conflict; disabling needs the fresh MFA.
        h.call_as(Some(&stepped), Method::POST, "/api/auth/mfa/setup", Some(&tenant), None).await
            .assert_problem(StatusCode::CONFLICT, "mfa_already_enabled");
        h.call_as(Some(&stale), Method::DELETE, "/api/auth/mfa", Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "step_up_required");
        assert_eq!(h.call_as(Some(&stepped), Method::DELETE, "/api/auth/mfa", Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        let log = h.call(Method::GET, "/api/audit-logs", Some(&tenant), None).await;
        let actions: Vec<&str> = log.body["records"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        for a in ["auth.mfa.enable", "auth.mfa.verify", "auth.mfa.disable", "auth.api_key.create"] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
    }

    async fn an_organization_that_mandates_mfa_makes_members_enrol_at_login(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "fay@example.com", "member").await;
        let r = h.call(Method::PUT, "/api/auth/settings", Some(&tenant), Some(json!({"mfa_required": true, "open_signup": false}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "fay@example.com", "password": PASSWORD}))).await;
        assert_eq!((r.body["mfa_required"].clone(), r.body["enrolment_required"].clone()), (json!(true), json!(true)), "{}", r.body);
        let challenge = s(&r.body, "challenge");
        // Without enrolment the MFA step cannot complete.
        h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&tenant), Some(json!({"challenge": challenge, "code": "123456"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "mfa_enrolment_required");
        let setup = h.call_as(None, Method::POST, "/api/auth/login/mfa/setup", Some(&tenant), Some(json!({"challenge": challenge}))).await;
        let secret = s(&setup.body, "secret");
        let r = h.call_as(None, Method::POST, "/api/auth/login/mfa/confirm", Some(&tenant), Some(json!({"challenge": challenge, "code": h.totp(&secret)}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["recovery_codes"].as_array().unwrap().len(), 10);
        let me = h.call_as(Some(&s(&r.body, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await;
        assert_eq!(me.body["account"]["mfa_enabled"], true);
        // A forged or foreign challenge does not open the step.
        h.call_as(None, Method::POST, "/api/auth/login/mfa/setup", Some(&tenant), Some(json!({"challenge": "not.a.token"}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }

    async fn invitations_are_single_use_expire_and_serve_new_and_existing_accounts(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        let b = h.tenant("globex").await;
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "eu"}))).await.body, "id");
        // A new account, into the organization and a workspace.
        let r = h.call(Method::POST, "/api/invitations", Some(&a), Some(json!({"email": "gus@example.com", "role": "admin", "workspace_id": ws, "workspace_role": "data_analyst"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let token = h.mailed_token("gus@example.com").await;
        // Another tenant's invitation link is unknown here.
        h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&b), Some(json!({"token": token, "password": PASSWORD, "display_name": "Gus"}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        let r = h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&a), Some(json!({"token": token, "password": PASSWORD, "display_name": "Gus"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let gus = s(&r.body, "user_id");
        h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&a), Some(json!({"token": token, "password": PASSWORD}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        let members = h.call(Method::GET, &format!("/api/workspaces/{ws}/members"), Some(&a), None).await;
        assert_eq!(members.body[0]["role"], "data_analyst", "{}", members.body);
        // The same account joins a second organization with another role; its password proves it.
        h.call(Method::POST, "/api/invitations", Some(&b), Some(json!({"email": "gus@example.com", "role": "member"}))).await;
        let token = h.mailed_token("gus@example.com").await;
        h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&b), Some(json!({"token": token, "password": "not the password"}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        let r = h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&b), Some(json!({"token": token, "password": PASSWORD}))).await;
        assert_eq!(s(&r.body, "user_id"), gus);
        let in_a = h.login(&a, "gus@example.com").await;
        let me = h.call_as(Some(&s(&in_a, "access_token")), Method::GET, "/api/auth/me", Some(&a), None).await;
        let mut roles: Vec<String> = me.body["memberships"].as_array().unwrap().iter().map(|m| s(m, "role")).collect();
        roles.sort();
        assert_eq!(roles, vec!["admin", "member"]);
        // An admin cannot invite an owner; an expired or revoked invitation is refused.
        let admin = s(&in_a, "access_token");
        h.call_as(Some(&admin), Method::POST, "/api/invitations", Some(&a), Some(json!({"email": "x@example.com", "role": "owner"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        h.call(Method::POST, "/api/invitations", Some(&a), Some(json!({"email": "late@example.com", "role": "member"}))).await;
        let late = h.mailed_token("late@example.com").await;
        let inv = h.call(Method::POST, "/api/invitations", Some(&a), Some(json!({"email": "gone@example.com", "role": "member"}))).await;
        let gone = h.mailed_token("gone@example.com").await;
        assert_eq!(h.call(Method::DELETE, &format!("/api/invitations/{}", s(&inv.body, "id")), Some(&a), None).await.status, StatusCode::NO_CONTENT);
        h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&a), Some(json!({"token": gone, "password": PASSWORD, "display_name": "G"}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        h.advance(8 * 24 * 3600);
        h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&a), Some(json!({"token": late, "password": PASSWORD, "display_name": "L"}))).await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid_link");
        let list = h.call(Method::GET, "/api/invitations", Some(&a), None).await;
        assert_eq!(list.body.as_array().unwrap().len(), 3);
    }

    async fn members_roles_and_sessions_are_managed_by_admins(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let (owner, _, _) = h.mfa_member(&tenant, "olga@example.com", "owner").await;
        let olga = s(&h.call_as(Some(&owner), Method::GET, "/api/auth/me", Some(&tenant), None).await.body["account"], "id");
        let (admin, _, _) = h.mfa_member(&tenant, "adam@example.com", "admin").await;
        let mia = h.member(&tenant, "mia@example.com", "member").await;
        let mia_tokens = h.login(&tenant, "mia@example.com").await;
        let mia_access = s(&mia_tokens, "access_token");
        // A member may read members but not manage them.
        assert_eq!(h.call_as(Some(&mia_access), Method::GET, "/api/users", Some(&tenant), None).await.body.as_array().unwrap().len(), 3);
        h.call_as(Some(&mia_access), Method::PATCH, &format!("/api/users/{olga}"), Some(&tenant), Some(json!({"role": "member"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // An admin cannot make anyone owner, nor demote the owner.
        h.call_as(Some(&admin), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"role": "owner"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        h.call_as(Some(&admin), Method::PATCH, &format!("/api/users/{olga}"), Some(&tenant), Some(json!({"role": "admin"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        // Nor billing admin: an admin does not hold billing, so cannot grant it; the owner can.
        h.call_as(Some(&admin), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"role": "billing_admin"}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let r = h.call_as(Some(&owner), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"role": "billing_admin"}))).await;
        assert_eq!(r.body["role"], "billing_admin", "{}", r.body);
        // The last owner stays.
        h.call_as(Some(&owner), Method::PATCH, &format!("/api/users/{olga}"), Some(&tenant), Some(json!({"role": "admin"}))).await
            .assert_problem(StatusCode::CONFLICT, "last_owner");
        // Users rename themselves; a member list shows no secret.
        let r = h.call_as(Some(&mia_access), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"display_name": "Mia M."}))).await;
        assert_eq!(r.body["display_name"], "Mia M.", "{}", r.body);
        let list = h.call_as(Some(&admin), Method::GET, "/api/users", Some(&tenant), None).await.body.to_string();
        assert!(!list.contains("argon2") && !list.contains("password"));
        // Sessions: a second device, listed, one revoked, then all others.
        let second = h.login(&tenant, "mia@example.com").await;
        let third = h.login(&tenant, "mia@example.com").await;
        let list = h.call_as(Some(&mia_access), Method::GET, "/api/auth/sessions", Some(&tenant), None).await;
        assert_eq!(list.body.as_array().unwrap().len(), 3, "{}", list.body);
        assert_eq!(list.body.as_array().unwrap().iter().filter(|s| s["current"] == true).count(), 1);
        let sid = s(&second, "session_id");
        assert_eq!(h.call_as(Some(&mia_access), Method::DELETE, &format!("/api/auth/sessions/{sid}"), Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        h.call_as(Some(&s(&second, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        // Someone else's session id is not found.
        let admin_sessions = h.call_as(Some(&admin), Method::GET, "/api/auth/sessions", Some(&tenant), None).await;
        let admin_sid = s(&admin_sessions.body[0], "id");
        h.call_as(Some(&mia_access), Method::DELETE, &format!("/api/auth/sessions/{admin_sid}"), Some(&tenant), None).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        let r = h.call_as(Some(&mia_access), Method::POST, "/api/auth/sessions/revoke-others", Some(&tenant), None).await;
        assert_eq!(r.body["revoked"], 1, "{}", r.body);
        h.call_as(Some(&s(&third, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        // An admin revokes all of a member's sessions; then the membership is disabled.
        let r = h.call_as(Some(&admin), Method::DELETE, &format!("/api/users/{mia}/sessions"), Some(&tenant), None).await;
        assert_eq!(r.body["revoked"], 1, "{}", r.body);
        h.call_as(Some(&mia_access), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        let fresh = h.login(&tenant, "mia@example.com").await;
        // Disabling needs standing for the member's role: Mia is a billing
        // admin, which the admin does not hold; the owner disables her.
        h.call_as(Some(&admin), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"disabled": true}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        let r = h.call_as(Some(&owner), Method::PATCH, &format!("/api/users/{mia}"), Some(&tenant), Some(json!({"disabled": true}))).await;
        assert_eq!(r.body["disabled"], true, "{}", r.body);
        h.call_as(Some(&s(&fresh, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        h.call_as(None, Method::POST, "/api/auth/login", Some(&tenant), Some(json!({"email": "mia@example.com", "password": PASSWORD}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        // Workspace roles.
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "eu"}))).await.body, "id");
        h.call_as(Some(&admin), Method::PUT, &format!("/api/workspaces/{ws}/members/{olga}"), Some(&tenant), Some(json!({"role": "emperor"}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let r = h.call_as(Some(&admin), Method::PUT, &format!("/api/workspaces/{ws}/members/{olga}"), Some(&tenant), Some(json!({"role": "senior_pm"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(h.call_as(Some(&admin), Method::GET, &format!("/api/workspaces/{ws}/members"), Some(&tenant), None).await.body[0]["role"], "senior_pm");
        assert_eq!(h.call_as(Some(&admin), Method::DELETE, &format!("/api/workspaces/{ws}/members/{olga}"), Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        // Removing a member needs standing for their role: Mia is a billing
        // admin, which the admin does not hold; the owner removes her.
        h.call_as(Some(&admin), Method::DELETE, &format!("/api/users/{mia}"), Some(&tenant), None).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(h.call_as(Some(&owner), Method::DELETE, &format!("/api/users/{mia}"), Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        h.call_as(Some(&admin), Method::GET, &format!("/api/users/{mia}"), Some(&tenant), None).await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
        let log = h.call(Method::GET, "/api/audit-logs", Some(&tenant), None).await;
        let actions: Vec<&str> = log.body["records"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        for a in ["auth.member.role_change", "auth.session.revoke", "auth.session.revoke_all", "auth.member.disable", "auth.member.remove", "auth.workspace_member.set_role"] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
    }

    async fn api_keys_are_shown_once_scoped_expire_and_revoke(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let other = h.tenant("other").await;
        let (admin, _, _) = h.mfa_member(&tenant, "ali@example.com", "admin").await;
        let r = h.call_as(Some(&admin), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "ci", "scopes": ["users.read", "workspaces.read", "workspaces.create"], "expires_in_days": 30}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let key = s(&r.body, "secret");
        let id = s(&r.body, "id");
        assert!(key.starts_with("sak_") && key.starts_with(&s(&r.body, "prefix")), "{}", r.body);
        h.call_as(Some(&admin), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "bad", "scopes": ["NOT VALID"]}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        // The key authenticates; the listing never shows the secret and records its use.
        let r = h.call_as(Some(&key), Method::GET, "/api/workspaces", Some(&tenant), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let list = h.call_as(Some(&admin), Method::GET, "/api/api-keys", Some(&tenant), None).await;
        assert!(!list.body.to_string().contains(&key[20..]));
        assert!(list.body[0]["last_used_at"].is_string(), "{}", list.body);
        // Wrong secret, other tenant: refused.
        let forged = format!("{}x", &key[..key.len() - 1]);
        h.call_as(Some(&forged), Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        h.call_as(Some(&key), Method::GET, "/api/workspaces", Some(&other), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        // The key's principal is the key, in the audit trail too.
        h.call_as(Some(&key), Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "by key"}))).await;
        let log = h.call(Method::GET, "/api/audit-logs?action=workspace.create", Some(&tenant), None).await;
        assert_eq!(log.body["records"][0]["actor"]["kind"], "api_key", "{}", log.body);
        // Expiry, then revocation of a second key.
        h.advance(31 * 24 * 3600);
        h.call_as(Some(&key), Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        let (admin, _, _) = h.mfa_member(&tenant, "ali2@example.com", "admin").await;
        let r = h.call_as(Some(&admin), Method::POST, "/api/api-keys", Some(&tenant), Some(json!({"name": "cd", "scopes": ["workspaces.read"]}))).await;
        let key2 = s(&r.body, "secret");
        assert_eq!(h.call_as(Some(&key2), Method::GET, "/api/workspaces", Some(&tenant), None).await.status, StatusCode::OK);
        assert_eq!(h.call_as(Some(&admin), Method::DELETE, &format!("/api/api-keys/{}", s(&r.body, "id")), Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        h.call_as(Some(&key2), Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        h.call_as(Some(&admin), Method::DELETE, &format!("/api/api-keys/{id}"), Some(&other), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }

    async fn service_identities_get_client_credential_tokens_until_disabled(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        let other = h.tenant("other").await;
        let (admin, _, _) = h.mfa_member(&tenant, "sam@example.com", "admin").await;
        h.call_as(Some(&admin), Method::POST, "/api/service-identities", Some(&tenant), Some(json!({"name": "etl", "roles": ["owner"]}))).await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let r = h.call_as(Some(&admin), Method::POST, "/api/service-identities", Some(&tenant), Some(json!({"name": "etl", "roles": ["admin"]}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let (id, secret) = (s(&r.body, "id"), s(&r.body, "secret"));
        let grant = |tenant: String, secret: String| {
            let h = &h;
            let id = id.clone();
            async move {
                h.call_as(None, Method::POST, "/api/auth/token", Some(&tenant), Some(json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}))).await
            }
        };
        grant(tenant.clone(), "ssk_wrong".into()).await.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        grant(other.clone(), secret.clone()).await.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        let r = grant(tenant.clone(), secret.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let token = s(&r.body, "access_token");
        h.call_as(Some(&token), Method::POST, "/api/workspaces", Some(&tenant), Some(json!({"name": "by service"}))).await;
        let log = h.call(Method::GET, "/api/audit-logs?action=workspace.create", Some(&tenant), None).await;
        assert_eq!(log.body["records"][0]["actor"]["kind"], "service", "{}", log.body);
        h.call_as(Some(&token), Method::GET, "/api/workspaces", Some(&other), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        let list = h.call_as(Some(&admin), Method::GET, "/api/service-identities", Some(&tenant), None).await;
        assert_eq!(list.body[0]["roles"], json!(["admin"]));
        assert_eq!(h.call_as(Some(&admin), Method::DELETE, &format!("/api/service-identities/{id}"), Some(&tenant), None).await.status, StatusCode::NO_CONTENT);
        h.call_as(Some(&token), Method::GET, "/api/workspaces", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
        grant(tenant.clone(), secret).await.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }

    async fn signing_keys_rotate_and_old_tokens_verify_until_they_expire(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "kai@example.com", "member").await;
        let jwks = h.call_as(None, Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwks.body["keys"][0]["kty"], "OKP");
        let old = h.login(&tenant, "kai@example.com").await;
        let r = h.call(Method::POST, "/api/platform/signing-keys/rotate", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let jwks = h.call_as(None, Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 2, "old key still published");
        assert_eq!(h.call_as(Some(&s(&old, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await.status, StatusCode::OK);
        let new = h.login(&tenant, "kai@example.com").await;
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        assert_ne!(kid(&s(&old, "access_token")), kid(&s(&new, "access_token")));
        assert_eq!(kid(&s(&new, "access_token")), s(&r.body, "kid"));
        // After the old key's verification window it leaves the JWKS and its tokens fail.
        h.advance(16 * 60);
        let jwks = h.call_as(None, Method::GET, "/.well-known/jwks.json", None, None).await;
        assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 1, "{}", jwks.body);
        h.call_as(Some(&s(&old, "access_token")), Method::GET, "/api/auth/me", Some(&tenant), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        let log = h.call(Method::GET, "/api/platform/audit-logs", None, None).await;
        assert!(log.body.to_string().contains("auth.signing_key.rotate"), "{}", log.body);
    }

    async fn a_password_hashed_under_old_parameters_is_rehashed_at_login(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "rex@example.com", "member").await;
        let stored = || async {
            let rows = h.t.inspector().await.row_texts("auth_users").await;
            rows.into_iter().find(|r| r.contains("rex@example.com")).unwrap()
        };
        assert!(stored().await.contains("m=256,t=1"), "{}", stored().await);
        // The operator raises the cost; the next login stores a hash at the new cost.
        let stronger = saas_server::AppState::new(h.t.db.clone(), saas_server::Config { password_memory_kib: 512, password_iterations: 2, ..crate::test_config() }).await.unwrap();
        let cid = saas_core::CorrelationId::generate();
        let meta = saas_auth::ClientMeta::default();
        let out = stronger.auth().login(tenant.parse().unwrap(), "rex@example.com", PASSWORD, &cid, &meta).await.unwrap();
        assert!(matches!(out, saas_auth::sessions::LoginOutcome::Tokens(_)));
        assert!(stored().await.contains("m=512,t=2"), "{}", stored().await);
        // Both the old and the new server still accept the password.
        assert!(h.login(&tenant, "rex@example.com").await["access_token"].is_string());
    }

    async fn only_owners_and_admins_read_the_audit_log_and_change_configuration(t) {
        let h = Harness::new(t).await;
        let tenant = h.tenant("acme").await;
        h.member(&tenant, "mem@example.com", "member").await;
        h.member(&tenant, "adm@example.com", "admin").await;
        let member = s(&h.login(&tenant, "mem@example.com").await, "access_token");
        let admin = s(&h.login(&tenant, "adm@example.com").await, "access_token");
        for path in ["/api/audit-logs", "/api/audit-logs/export", "/api/audit-logs/verify"] {
            h.call_as(Some(&member), Method::GET, path, Some(&tenant), None).await
                .assert_problem(StatusCode::FORBIDDEN, "forbidden");
            assert_eq!(h.call_as(Some(&admin), Method::GET, path, Some(&tenant), None).await.status, StatusCode::OK, "{path}");
        }
        h.call_as(Some(&member), Method::PUT, "/api/config", Some(&tenant), Some(json!({"config": {"a": 1}}))).await
            .assert_problem(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(h.call_as(Some(&admin), Method::PUT, "/api/config", Some(&tenant), Some(json!({"config": {"a": 1}}))).await.status, StatusCode::OK);
        assert_eq!(h.call_as(Some(&member), Method::GET, "/api/workspaces", Some(&tenant), None).await.status, StatusCode::OK);
    }
}
