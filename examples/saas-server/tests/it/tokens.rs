//! The token attack battery, cross-tenant probes of every identity route, and
//! erasure of a person from every saas-auth table.

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use saas_auth::keys::{Claims, KeyRing};
use saas_auth::{AuthSubjectStore, MasterKey};
use saas_core::clock::Clock as _;
use saas_core::subject::{DataSubject, DataSubjectStore};
use saas_core::{CorrelationId, Principal, TenantContext, TenantId, UserId};
use saas_test_support::both_backends;
use serde_json::{Value, json};

use crate::{AUTH_KEY, Harness, PASSWORD, s};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The claims of a real access token (signature unchecked; the test reads its own token).
fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The same token with its header replaced (the signature no longer matches it).
fn with_header(token: &str, header: &Value) -> String {
    let mut parts = token.split('.');
    let _ = parts.next();
    format!(
        "{}.{}.{}",
        b64(header),
        parts.next().unwrap(),
        parts.next().unwrap()
    )
}

both_backends! {
    migrations = saas_server::migration_sets();

    async fn every_forged_stale_or_misplaced_token_is_refused(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        let b = h.tenant("globex").await;
        h.member(&a, "tom@example.com", "admin").await;
        h.join(&b, "tom@example.com", "member").await;
        let tokens = h.login(&a, "tom@example.com").await;
        let access = s(&tokens, "access_token");
        let good = claims_of(&access);
        let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
        let me = |token: String, tenant: String| {
            let h = &h;
            async move { h.call_as(Some(&token), Method::GET, "/api/auth/me", Some(&tenant), None).await }
        };
        assert_eq!(me(access.clone(), a.clone()).await.status, StatusCode::OK);
        let mut refused: Vec<(&str, StatusCode)> = Vec::new();
        let mut check = |name: &'static str, r: crate::Reply| {
            assert!(r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN, "{name}: {} {}", r.status, r.body);
            assert_eq!(r.headers["content-type"], "application/problem+json", "{name}");
            assert!(r.body["code"].is_string() && r.body["correlation_id"].is_string(), "{name}: {}", r.body);
            refused.push((name, r.status));
        };
        // alg=none.
        let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})), b64(&serde_json::to_value(&good).unwrap()));
        check("alg=none", me(none, a.clone()).await);
        // HS256 signed with the public key as the HMAC secret.
        let jwks = h.call_as(None, Method::GET, "/.well-known/jwks.json", None, None).await;
        let public = URL_SAFE_NO_PAD.decode(s(&jwks.body["keys"][0], "x")).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        let hs = jsonwebtoken::encode(&header, &good, &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap();
        check("HS256 with the public key", me(hs, a.clone()).await);
        // Unknown kid; then, after a rotation, a real token relabelled with the other key's kid.
        check("unknown kid", me(with_header(&access, &json!({"alg": "EdDSA", "typ": "JWT", "kid": "nope"})), a.clone()).await);
        check("no kid", me(with_header(&access, &json!({"alg": "EdDSA", "typ": "JWT"})), a.clone()).await);
        let rotated = h.call(Method::POST, "/api/platform/signing-keys/rotate", None, None).await;
        let new_kid = s(&rotated.body, "kid");
        check("wrong kid", me(with_header(&access, &json!({"alg": "EdDSA", "typ": "JWT", "kid": new_kid})), a.clone()).await);
        // Tampered payload under a genuine signature.
        let mut elevated = good.clone();
        elevated.tid = b.parse::<uuid::Uuid>().unwrap();
        let parts: Vec<&str> = access.split('.').collect();
        check("tampered payload", me(format!("{}.{}.{}", parts[0], b64(&serde_json::to_value(&elevated).unwrap()), parts[2]), b.clone()).await);
        // Correctly signed with the real key, but wrong issuer, audience, times, tenant or type.
        let real = h.state.auth().keys().clone();
        let now = h.t.clock.now().timestamp();
        let signed = |ring: &KeyRing, f: &dyn Fn(&mut Claims)| { let mut c = good.clone(); f(&mut c); ring.sign(&c).unwrap() };
        // A second ring over the same stored keys, as another replica would load it.
        let replica = KeyRing::load(h.t.db.clone(), MasterKey::from_hex(AUTH_KEY).unwrap(), "saas", "saas-api").await.unwrap();
        assert_eq!(me(signed(&replica, &|_| {}), a.clone()).await.status, StatusCode::OK, "the real key signs valid tokens");
        check("wrong issuer", me(signed(&replica, &|c| { c.iss = "evil".into(); }), a.clone()).await);
        check("wrong audience", me(signed(&replica, &|c| { c.aud = "other-api".into(); }), a.clone()).await);
        check("expired", me(signed(&real, &|c| { c.exp = now - 120; }), a.clone()).await);
        check("not yet valid", me(signed(&real, &|c| { c.nbf = now + 600; c.exp = now + 900; }), a.clone()).await);
        check("MFA challenge as access token", me(signed(&real, &|c| { c.typ = "mfa_challenge".into(); }), a.clone()).await);
        check("tenant A token against tenant B", me(access.clone(), b.clone()).await);
        check("tenant A token relabelled for B", me(signed(&real, &|c| { c.tid = b.parse().unwrap(); }), b.clone()).await);
        check("garbage", me("a.b.c".into(), a.clone()).await);
        // Structure: a critical header nobody understands, a fourth segment,
        // a truncated signature, a signature that is not base64url.
        check("crit header", me(with_header(&access, &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "crit": ["exp"]})), a.clone()).await);
        check("four segments", me(format!("{access}.{}", parts[2]), a.clone()).await);
        check("short signature", me(format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]), a.clone()).await);
        check("signature not base64url", me(format!("{}.{}.{}!", parts[0], parts[1], &parts[2][..parts[2].len() - 1]), a.clone()).await);
        // Expired by the clock.
        let later = h.login(&a, "tom@example.com").await;
        h.advance(11 * 60);
        check("expired by time", me(s(&later, "access_token"), a.clone()).await);
        // Refresh replayed after rotation: the whole session is revoked.
        let fresh = h.login(&a, "tom@example.com").await;
        let r1 = s(&fresh, "refresh_token");
        let rotated = h.call_as(None, Method::POST, "/api/auth/refresh", Some(&a), Some(json!({"refresh_token": r1}))).await;
        assert_eq!(rotated.status, StatusCode::OK);
        let replay = h.call_as(None, Method::POST, "/api/auth/refresh", Some(&a), Some(json!({"refresh_token": r1}))).await;
        replay.assert_problem(StatusCode::UNAUTHORIZED, "refresh_token_reused");
        check("replayed refresh token", replay);
        check("refresh token of the revoked family", h.call_as(None, Method::POST, "/api/auth/refresh", Some(&a), Some(json!({"refresh_token": s(&rotated.body, "refresh_token")}))).await);
        check("access token of the revoked family", me(s(&rotated.body, "access_token"), a.clone()).await);
        check("refresh token of A at B", h.call_as(None, Method::POST, "/api/auth/refresh", Some(&b), Some(json!({"refresh_token": s(&later, "refresh_token")}))).await);
        // Revoked session, logout, password change, membership disabled.
        let x = h.login(&a, "tom@example.com").await;
        h.call_as(Some(&s(&x, "access_token")), Method::POST, "/api/auth/logout", Some(&a), None).await;
        check("after logout", me(s(&x, "access_token"), a.clone()).await);
        let y = h.login(&a, "tom@example.com").await;
        let z = h.login(&a, "tom@example.com").await;
        let in_b = h.login(&b, "tom@example.com").await;
        let r = h.call_as(Some(&s(&y, "access_token")), Method::POST, "/api/auth/password", Some(&a), Some(json!({"current_password": PASSWORD, "new_password": "a fresh passphrase"}))).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        check("after password change", me(s(&z, "access_token"), a.clone()).await);
        check("after password change, other organization", me(s(&in_b, "access_token"), b.clone()).await);
        let w = h.call_as(None, Method::POST, "/api/auth/login", Some(&b), Some(json!({"email": "tom@example.com", "password": "a fresh passphrase"}))).await;
        let tom_b = s(&h.call_as(Some(&s(&w.body, "access_token")), Method::GET, "/api/auth/me", Some(&b), None).await.body["account"], "id");
        h.call(Method::PATCH, &format!("/api/users/{tom_b}"), Some(&b), Some(json!({"disabled": true}))).await;
        check("after the account is disabled", me(s(&w.body, "access_token"), b.clone()).await);
        // A TOTP code replayed within its window (the helper's login just spent it).
        let (_, _, secret) = h.mfa_member(&a, "tia@example.com", "member").await;
        let r = h.call_as(None, Method::POST, "/api/auth/login", Some(&a), Some(json!({"email": "tia@example.com", "password": PASSWORD}))).await;
        let replayed = h.call_as(None, Method::POST, "/api/auth/login/mfa", Some(&a), Some(json!({"challenge": s(&r.body, "challenge"), "code": h.totp(&secret)}))).await;
        replayed.assert_problem(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
        check("replayed TOTP code", replayed);
        let names: Vec<&str> = refused.iter().map(|(n, _)| *n).collect();
        println!("token attack battery: {} of {} refused: {names:?}", refused.len(), names.len());
        assert_eq!(refused.len(), 28);
    }

    async fn of_fifty_parallel_uses_of_one_refresh_token_exactly_one_succeeds(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        h.member(&a, "par@example.com", "member").await;
        let tokens = h.login(&a, "par@example.com").await;
        let refresh = s(&tokens, "refresh_token");
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let app = h.app.clone();
            let body = json!({"refresh_token": refresh}).to_string();
            let tenant = a.clone();
            tasks.push(tokio::spawn(async move {
                use tower::ServiceExt;
                let req = axum::http::Request::post("/api/auth/refresh")
                    .header("x-tenant-id", tenant)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap();
                app.oneshot(req).await.unwrap().status()
            }));
        }
        let mut ok = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => ok += 1,
                StatusCode::UNAUTHORIZED => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        println!("fifty parallel refreshes: {ok} succeeded, {refused} refused");
        assert_eq!((ok, refused), (1, 49));
        // The reuse revoked the family, so even the winner's session is gone.
        h.call_as(Some(&s(&tokens, "access_token")), Method::GET, "/api/auth/me", Some(&a), None).await
            .assert_problem(StatusCode::UNAUTHORIZED, "session_revoked");
    }

    async fn a_member_of_a_reaches_nothing_of_b_through_any_identity_route(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        let b = h.tenant("globex").await;
        // Uma belongs to both: admin in A, member in B. Ben is only in B.
        let (uma_a, _, _) = h.mfa_member(&a, "uma@example.com", "admin").await;
        let ben = h.member(&b, "ben@example.com", "admin").await;
        let ben_tokens = h.login(&b, "ben@example.com").await;
        let r = h.call(Method::POST, "/api/invitations", Some(&b), Some(json!({"email": "uma@example.com", "role": "member"}))).await;
        let b_invitation = s(&r.body, "id");
        let token = h.mailed_token("uma@example.com").await;
        h.call_as(None, Method::POST, "/api/auth/invitations/accept", Some(&b), Some(json!({"token": token, "password": PASSWORD}))).await;
        let b_ws = s(&h.call(Method::POST, "/api/workspaces", Some(&b), Some(json!({"name": "b-ws"}))).await.body, "id");
        let b_key = h.call(Method::POST, "/api/api-keys", Some(&b), Some(json!({"name": "b", "scopes": []}))).await.body;
        let b_svc = h.call(Method::POST, "/api/service-identities", Some(&b), Some(json!({"name": "b", "roles": ["member"]}))).await.body;
        let ben_sid = s(&ben_tokens, "session_id");
        // Every identity route, with Uma's A token, naming B: refused outright.
        let routes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, "/api/auth/me".into(), None),
            (Method::POST, "/api/auth/logout".into(), None),
            (Method::POST, "/api/auth/password".into(), Some(json!({"current_password": PASSWORD, "new_password": "whatever passphrase"}))),
            (Method::POST, "/api/auth/mfa/setup".into(), None),
            (Method::POST, "/api/auth/mfa/confirm".into(), Some(json!({"code": "123456"}))),
            (Method::POST, "/api/auth/mfa/verify".into(), Some(json!({"code": "123456"}))),
            (Method::DELETE, "/api/auth/mfa".into(), None),
            (Method::POST, "/api/auth/mfa/recovery-codes".into(), None),
            (Method::GET, "/api/auth/sessions".into(), None),
            (Method::DELETE, format!("/api/auth/sessions/{ben_sid}"), None),
            (Method::POST, "/api/auth/sessions/revoke-others".into(), None),
            (Method::GET, "/api/auth/settings".into(), None),
            (Method::PUT, "/api/auth/settings".into(), Some(json!({"mfa_required": true, "open_signup": true}))),
            (Method::GET, "/api/users".into(), None),
            (Method::POST, "/api/users".into(), Some(json!({"email": "new@example.com", "display_name": "N", "role": "member"}))),
            (Method::GET, format!("/api/users/{ben}"), None),
            (Method::PATCH, format!("/api/users/{ben}"), Some(json!({"role": "member"}))),
            (Method::DELETE, format!("/api/users/{ben}"), None),
            (Method::POST, format!("/api/users/{ben}/unlock"), None),
            (Method::DELETE, format!("/api/users/{ben}/sessions"), None),
            (Method::GET, "/api/invitations".into(), None),
            (Method::POST, "/api/invitations".into(), Some(json!({"email": "x@example.com", "role": "member"}))),
            (Method::DELETE, format!("/api/invitations/{b_invitation}"), None),
            (Method::GET, format!("/api/workspaces/{b_ws}/members"), None),
            (Method::PUT, format!("/api/workspaces/{b_ws}/members/{ben}"), Some(json!({"role": "admin"}))),
            (Method::DELETE, format!("/api/workspaces/{b_ws}/members/{ben}"), None),
            (Method::GET, "/api/api-keys".into(), None),
            (Method::POST, "/api/api-keys".into(), Some(json!({"name": "x", "scopes": []}))),
            (Method::DELETE, format!("/api/api-keys/{}", s(&b_key, "id")), None),
            (Method::GET, "/api/service-identities".into(), None),
            (Method::POST, "/api/service-identities".into(), Some(json!({"name": "x", "roles": ["member"]}))),
            (Method::DELETE, format!("/api/service-identities/{}", s(&b_svc, "id")), None),
        ];
        for (m, path, body) in &routes {
            h.call_as(Some(&uma_a), m.clone(), path, Some(&b), body.clone()).await
                .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        }
        // Acting in A, B's objects do not exist, even for a user who belongs to both.
        let mut probed = 0;
        for (m, path, body) in &routes {
            let names_b = path.contains(&ben) || path.contains(&b_ws) || path.contains(&b_invitation)
                || path.contains(&s(&b_key, "id")) || path.contains(&s(&b_svc, "id")) || path.contains(&ben_sid);
            let read_only = *m == Method::GET;
            if !names_b && !read_only {
                continue;
            }
            probed += 1;
            let r = h.call_as(Some(&uma_a), m.clone(), path, Some(&a), body.clone()).await;
            if names_b {
                let empty_list = r.status == StatusCode::OK && r.body.as_array().is_some_and(Vec::is_empty);
                assert!(r.status == StatusCode::NOT_FOUND || empty_list, "{m} {path} in A -> {} {}", r.status, r.body);
            }
            let text = r.body.to_string();
            assert!(!text.contains("ben@example.com") && !text.contains(&ben), "{m} {path} leaked B's member: {text}");
        }
        assert!(probed >= 15, "{probed}");
        // B's own data is untouched.
        let ben_access = s(&ben_tokens, "access_token");
        assert_eq!(h.call_as(Some(&ben_access), Method::GET, "/api/auth/me", Some(&b), None).await.status, StatusCode::OK);
        let users = h.call(Method::GET, "/api/users", Some(&b), None).await;
        assert_eq!(users.body.as_array().unwrap().len(), 2, "{}", users.body);
        assert_eq!(h.call(Method::GET, "/api/api-keys", Some(&b), None).await.body[0]["revoked_at"], Value::Null);
        assert_eq!(h.call(Method::GET, "/api/service-identities", Some(&b), None).await.body[0]["disabled_at"], Value::Null);
        assert_eq!(h.call(Method::GET, "/api/invitations", Some(&b), None).await.body[0]["revoked_at"], Value::Null);
    }

    async fn an_erased_person_leaves_no_personal_data_in_any_saas_auth_table(t) {
        let h = Harness::new(t).await;
        let a = h.tenant("acme").await;
        let b = h.tenant("globex").await;
        let ws = s(&h.call(Method::POST, "/api/workspaces", Some(&a), Some(json!({"name": "eu"}))).await.body, "id");
        // Zoe: MFA, sessions, a key and a service she created, an invitation she sent, workspace role.
        let (zoe_access, _, _) = h.mfa_member(&a, "zoe@example.com", "admin").await;
        let zoe: UserId = s(&h.call_as(Some(&zoe_access), Method::GET, "/api/auth/me", Some(&a), None).await.body["account"], "id").parse().unwrap();
        h.call_as(Some(&zoe_access), Method::POST, "/api/api-keys", Some(&a), Some(json!({"name": "zoe's", "scopes": []}))).await;
        h.call_as(Some(&zoe_access), Method::POST, "/api/service-identities", Some(&a), Some(json!({"name": "zoe's", "roles": ["member"]}))).await;
        h.call_as(Some(&zoe_access), Method::POST, "/api/invitations", Some(&a), Some(json!({"email": "friend@example.com", "role": "member"}))).await;
        h.call_as(Some(&zoe_access), Method::PUT, &format!("/api/workspaces/{ws}/members/{zoe}"), Some(&a), Some(json!({"role": "pm_coach"}))).await;
        h.call_as(None, Method::POST, "/api/auth/password/forgot", Some(&a), Some(json!({"email": "zoe@example.com"}))).await;
        h.call_as(None, Method::POST, "/api/auth/login", Some(&a), Some(json!({"email": "zoe@example.com", "password": "wrong one"}))).await;
        // Another member and the organization's data, which must stay.
        h.member(&a, "yan@example.com", "member").await;
        // Wes belongs to A and B: erasure in A keeps his account for B.
        h.member(&a, "wes@example.com", "member").await;
        let wes: UserId = h.join(&b, "wes@example.com", "member").await.parse().unwrap();

        let store = AuthSubjectStore::new(h.state.auth().clone());
        let ctx = TenantContext::for_test(a.parse::<TenantId>().unwrap(), Principal::System { reason: "dsar".into() });
        let found = store.find(&ctx, &DataSubject::user(zoe)).await.unwrap();
        assert!(found.records.iter().any(|r| r.kind == "session"), "{found:?}");
        let export = store.export(&ctx, &DataSubject::user(zoe)).await.unwrap();
        assert_eq!(export.data["account"]["email"], "zoe@example.com");
        let report = store.erase(&ctx, &DataSubject::user(zoe)).await.unwrap();
        assert!(report.erased.iter().any(|r| r.kind == "account"), "{report:?}");

        let inspector = h.t.inspector().await;
        let tables: Vec<String> = inspector.all_tables().await.into_iter().filter(|t| t.starts_with("auth_")).collect();
        assert!(tables.len() >= 14, "{tables:?}");
        let (hyphen, simple) = (zoe.to_string(), zoe.as_uuid().simple().to_string());
        for table in &tables {
            for row in inspector.row_texts(table).await {
                let row = row.to_lowercase();
                assert!(!row.contains("zoe@example.com") && !row.contains(&hyphen) && !row.contains(&simple), "{table} still holds Zoe: {row}");
            }
        }
        // The organization's other data stays: members, key, service, invitation, workspace.
        let users = h.call(Method::GET, "/api/users", Some(&a), None).await;
        assert_eq!(users.body.as_array().unwrap().len(), 2, "{}", users.body);
        assert_eq!(h.call(Method::GET, "/api/api-keys", Some(&a), None).await.body.as_array().unwrap().len(), 1);
        assert_eq!(h.call(Method::GET, "/api/service-identities", Some(&a), None).await.body.as_array().unwrap().len(), 1);
        assert_eq!(h.call(Method::GET, "/api/invitations", Some(&a), None).await.body.as_array().unwrap().len(), 1);
        assert_eq!(h.call(Method::GET, &format!("/api/workspaces/{ws}"), Some(&a), None).await.status, StatusCode::OK);
        assert_eq!(h.login(&a, "yan@example.com").await["token_type"], "Bearer");
        // Wes, erased in A, keeps his account and membership in B, with the reason stated.
        let report = store.erase(&ctx, &DataSubject::user(wes)).await.unwrap();
        assert!(report.retained.iter().any(|r| r.kind == "account"), "{report:?}");
        assert_eq!(h.login(&b, "wes@example.com").await["token_type"], "Bearer");
        h.call_as(None, Method::POST, "/api/auth/login", Some(&a), Some(json!({"email": "wes@example.com", "password": PASSWORD}))).await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
}

/// Two replicas on one PostgreSQL database: replica B has the session cached
/// as live; replica A ends it; B's invalidation listener drops the entry, so
/// B refuses the token on its next request. (SQLite is a single process:
/// there is no other replica to tell.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_takes_effect_on_another() {
    let Some(t) = saas_test_support::TestDb::postgres_with(&saas_server::migration_sets()).await
    else {
        return;
    };
    let h = Harness::new(t).await;
    let a = h.tenant("acme").await;
    h.member(&a, "rep@example.com", "member").await;
    let tokens = h.login(&a, "rep@example.com").await;
    let access = s(&tokens, "access_token");
    let replica = saas_server::AppState::new(h.t.db.clone(), crate::test_config())
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn({
        let auth = replica.auth().clone();
        async move { auth.listen(rx).await }
    });
    let tenant: TenantId = a.parse().unwrap();
    let cid = CorrelationId::generate();
    // The listener is subscribed once a revocation of a throw-away session reaches B.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let probe = h.login(&a, "rep@example.com").await;
        let probe_access = s(&probe, "access_token");
        replica
            .auth()
            .authenticate(tenant, &probe_access, &cid)
            .await
            .unwrap();
        h.call_as(
            Some(&probe_access),
            Method::POST,
            "/api/auth/logout",
            Some(&a),
            None,
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if replica
            .auth()
            .authenticate(tenant, &probe_access, &cid)
            .await
            .is_err()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B never subscribed"
        );
    }
    // B caches the real session as live, A revokes it, B refuses it.
    replica
        .auth()
        .authenticate(tenant, &access, &cid)
        .await
        .unwrap();
    assert_eq!(
        h.call_as(
            Some(&access),
            Method::POST,
            "/api/auth/logout",
            Some(&a),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match replica.auth().authenticate(tenant, &access, &cid).await {
            Err(saas_auth::AuthError::SessionRevoked) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "replica B still accepts the revoked session: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    listener.await.unwrap();
}
