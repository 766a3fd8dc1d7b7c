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
mod e2e;
mod lifecycle;
mod tenancy;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
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

/// The default configuration with cheap argon2 parameters (tests only) and
/// mail written under a temporary folder.
pub(crate) fn test_config() -> Config {
    Config {
        password_memory_kib: 256,
        password_iterations: 1,
        mail_dir: Some(std::env::temp_dir().join(format!("saas-mail-{}", uuid::Uuid::now_v7()))),
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

    /// Sends a request; `tenant` goes into X-Tenant-Id, `body` is sent as JSON.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token));
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
