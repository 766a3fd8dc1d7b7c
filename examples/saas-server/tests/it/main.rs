//! Reference-server tests: the router through `oneshot` on both backends, and
//! one end-to-end run over a real socket.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod audit;
mod bad_input;
mod billing;
mod e2e;
mod guards;
mod identity;
mod lifecycle;
mod mail;
mod policy;
mod tenancy;
mod tokens;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use saas_core::clock::Clock as _;
use saas_core::operator::Operators;
use saas_server::{AppState, Config};
use saas_test_support::TestDb;
use serde_json::Value;
use tower::ServiceExt;

/// A router over a test database with one operator token.
pub(crate) struct Harness {
    pub(crate) t: TestDb,
    pub(crate) app: Router,
    pub(crate) state: AppState,
    pub(crate) token: String,
}

/// The auth master key of test servers (so tests can sign forged tokens with the real key).
pub(crate) const AUTH_KEY: &str =
    "1111111111111111111111111111111111111111111111111111111111111111";

/// The default configuration with cheap argon2 parameters (tests only) and
/// mail written under a temporary folder.
pub(crate) fn test_config() -> Config {
    Config {
        password_memory_kib: 256,
        password_iterations: 1,
        mail_dir: Some(std::env::temp_dir().join(format!("saas-mail-{}", uuid::Uuid::now_v7()))),
        auth_key: Some(AUTH_KEY.into()),
        // The harness acts in tenants with its operator token for set-up;
        // `policy::break_glass_*` turns the requirement back on.
        require_break_glass: false,
        ..Config::default()
    }
}

impl Harness {
    pub(crate) async fn new(t: TestDb) -> Self {
        Self::with_config(t, test_config()).await
    }

    pub(crate) async fn with_config(t: TestDb, config: Config) -> Self {
        let (_, token) = Operators::new(t.db.clone())
            .create(&t.platform(), "test operator")
            .await
            .unwrap();
        let state = AppState::new(t.db.clone(), config).await.unwrap();
        let app = saas_server::router(state.clone());
        Self {
            t,
            app,
            state,
            token: token.expose().to_string(),
        }
    }

    /// The server's job worker (mail into a temporary folder).
    pub(crate) fn worker(&self) -> saas_core::jobs::Worker {
        saas_server::worker(&self.state).unwrap()
    }

    /// Sends a request as the operator; `tenant` goes into X-Tenant-Id,
    /// `body` is sent as JSON.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_as(Some(&self.token), method, path, tenant, body)
            .await
    }

    /// Sends a request with `bearer` (or none) instead of the operator token.
    pub(crate) async fn call_as(
        &self,
        bearer: Option<&str>,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    /// The token in the newest mail to `email` (`token=<...>` in a link).
    pub(crate) async fn mailed_token(&self, email: &str) -> String {
        let mails = self
            .state
            .auth()
            .outbox_to(&self.t.platform(), email)
            .await
            .unwrap();
        let body = &mails.first().expect("a mail was sent").body;
        let at = body.find("token=").expect("the mail carries a link") + 6;
        body[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    }

    /// How many mails went to `email`.
    pub(crate) async fn mail_count(&self, email: &str) -> usize {
        self.state
            .auth()
            .outbox_to(&self.t.platform(), email)
            .await
            .unwrap()
            .len()
    }

    /// The current TOTP code for a base32 secret, at the test clock's time.
    pub(crate) fn totp(&self, secret: &str) -> String {
        let seed = totp_rs::Secret::Encoded(secret.to_owned())
            .to_bytes()
            .unwrap();
        let t = totp_rs::TOTP::new(
            totp_rs::Algorithm::SHA1,
            6,
            1,
            30,
            seed,
            None,
            String::new(),
        )
        .unwrap();
        t.generate(u64::try_from(self.t.clock.now().timestamp()).unwrap())
    }

    /// Moves the test clock on.
    pub(crate) fn advance(&self, secs: i64) {
        self.t.clock.advance(chrono::Duration::seconds(secs));
    }

    /// Provisions a member through the operator and sets their password
    /// through the mailed link; returns the user id.
    pub(crate) async fn member(&self, tenant: &str, email: &str, role: &str) -> String {
        let body = serde_json::json!({"email": email, "display_name": email, "role": role});
        self.follow_mailed_link(
            tenant,
            "/api/users",
            body,
            email,
            "/api/auth/password/reset",
        )
        .await;
        self.call(Method::GET, "/api/users", Some(tenant), None)
            .await
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == email)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Adds an existing account to another organization through an
    /// invitation it accepts with its password; returns the user id.
    pub(crate) async fn join(&self, tenant: &str, email: &str, role: &str) -> String {
        let body = serde_json::json!({"email": email, "role": role});
        let r = self
            .follow_mailed_link(
                tenant,
                "/api/invitations",
                body,
                email,
                "/api/auth/invitations/accept",
            )
            .await;
        r.body["user_id"].as_str().unwrap().to_owned()
    }

    /// The operator POSTs `body` to `create` (which mails `email` a link);
    /// the link's token is then sent to `follow` with [`PASSWORD`].
    async fn follow_mailed_link(
        &self,
        tenant: &str,
        create: &str,
        body: Value,
        email: &str,
        follow: &str,
    ) -> Reply {
        let r = self
            .call(Method::POST, create, Some(tenant), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let token = self.mailed_token(email).await;
        let r = self
            .call_as(
                None,
                Method::POST,
                follow,
                Some(tenant),
                Some(serde_json::json!({"token": token, "password": PASSWORD})),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        r
    }

    /// Logs in with [`PASSWORD`]; returns the token reply.
    pub(crate) async fn login(&self, tenant: &str, email: &str) -> Value {
        let r = self
            .call_as(
                None,
                Method::POST,
                "/api/auth/login",
                Some(tenant),
                Some(serde_json::json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// A member with confirmed TOTP, signed in with a fresh MFA; returns
    /// (access token, refresh token, TOTP secret).
    pub(crate) async fn mfa_member(
        &self,
        tenant: &str,
        email: &str,
        role: &str,
    ) -> (String, String, String) {
        self.member(tenant, email, role).await;
        let tokens = self.login(tenant, email).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let setup = self
            .call_as(
                Some(&access),
                Method::POST,
                "/api/auth/mfa/setup",
                Some(tenant),
                None,
            )
            .await;
        assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
        let secret = setup.body["secret"].as_str().unwrap().to_owned();
        let code = self.totp(&secret);
        let r = self
            .call_as(
                Some(&access),
                Method::POST,
                "/api/auth/mfa/confirm",
                Some(tenant),
                Some(serde_json::json!({"code": code})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        self.advance(30);
        let challenge = self.login(tenant, email).await["challenge"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = self
            .call_as(
                None,
                Method::POST,
                "/api/auth/login/mfa",
                Some(tenant),
                Some(serde_json::json!({"challenge": challenge, "code": self.totp(&secret)})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (
            r.body["access_token"].as_str().unwrap().to_owned(),
            r.body["refresh_token"].as_str().unwrap().to_owned(),
            secret,
        )
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Creates an active tenant over HTTP; returns its id.
    pub(crate) async fn tenant(&self, slug: &str) -> String {
        let r = self
            .call(Method::POST, "/api/tenants", None, Some(serde_json::json!({"slug": slug, "name": slug, "tier": "enterprise", "activate": true})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }
}

/// A string member of a JSON body.
pub(crate) fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_owned()
}

/// The password test members get.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    /// Asserts an RFC 9457 problem with `status` and `code`, carrying the
    /// same correlation id as the response header.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{}",
            self.body
        );
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["type"].as_str().unwrap().starts_with("https://"));
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        let cid = self.headers["x-request-id"].to_str().unwrap();
        assert_eq!(self.body["correlation_id"], cid);
    }
}
