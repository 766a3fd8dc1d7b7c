use std::time::Duration;

use saas_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: std::net::SocketAddr, request: String) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// First start on an empty embedded database: bootstrap writes a private
/// credentials file, the token works over a real socket, and a shutdown
/// waits for the request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_bootstraps_serves_over_a_socket_and_shuts_down_gracefully() {
    let dir = std::env::temp_dir().join(format!("saas-e2e-{}", uuid::Uuid::now_v7()));
    let cfg = Config {
        data_dir: dir.clone(),
        ..crate::test_config()
    };
    let state = saas_server::prepare(&cfg).await.unwrap();
    let boot = saas_server::bootstrap::bootstrap_if_empty(&state, &cfg.data_dir, "default")
        .await
        .unwrap()
        .unwrap();
    assert!(
        saas_server::bootstrap::bootstrap_if_empty(&state, &cfg.data_dir, "default")
            .await
            .unwrap()
            .is_none(),
        "bootstrap runs once"
    );
    let text = std::fs::read_to_string(&boot.credentials).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&boot.credentials)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("operator_token="))
        .unwrap()
        .to_string();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(saas_server::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));

    let reply = http(addr, format!("GET /api/workspaces HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nx-tenant-id: default\r\nconnection: close\r\n\r\n")).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // A slow request is in flight (its body arrives late) when shutdown begins.
    let body = r#"{"name":"late"}"#;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        format!("POST /api/workspaces HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nx-tenant-id: default\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes(),
    )
    .await
    .unwrap();
    // The request is parsed and waiting for its body before shutdown begins.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_tx.send(()).unwrap();
    // Shutdown has begun once the listener refuses new connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slow.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    slow.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 201"),
        "in-flight request was cut: {out}"
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn post(path: &str, tenant: &str, bearer: Option<&str>, body: &serde_json::Value) -> String {
    let body = body.to_string();
    let auth = bearer.map_or(String::new(), |b| format!("authorization: Bearer {b}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nuser-agent: e2e-agent/1.0\r\nx-tenant-id: {tenant}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn json_of(reply: &str) -> serde_json::Value {
    serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Over a real socket, a session records the client's address and device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_a_socket_records_the_address_and_device_of_the_session() {
    let dir = std::env::temp_dir().join(format!("saas-e2e-{}", uuid::Uuid::now_v7()));
    let cfg = Config {
        data_dir: dir.clone(),
        ..crate::test_config()
    };
    let state = saas_server::prepare(&cfg).await.unwrap();
    let boot = saas_server::bootstrap::bootstrap_if_empty(&state, &cfg.data_dir, "default")
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&boot.credentials).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("operator_token="))
        .unwrap()
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(saas_server::serve(listener, state.clone(), async move {
        let _ = stop_rx.await;
    }));
    let email = "owner@example.com";
    let r = http(
        addr,
        post(
            "/api/users",
            "default",
            Some(&token),
            &serde_json::json!({"email": email, "display_name": "Owner", "role": "owner"}),
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let mails = state
        .auth()
        .outbox_to(&saas_core::PlatformContext::system("test"), email)
        .await
        .unwrap();
    let at = mails[0].body.find("token=").unwrap() + 6;
    let link: String = mails[0].body[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let r = http(
        addr,
        post(
            "/api/auth/password/reset",
            "default",
            None,
            &serde_json::json!({"token": link, "password": crate::PASSWORD}),
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    let r = http(
        addr,
        post(
            "/api/auth/login",
            "default",
            None,
            &serde_json::json!({"email": email, "password": crate::PASSWORD}),
        ),
    )
    .await;
    let access = json_of(&r)["access_token"].as_str().unwrap().to_owned();
    let r = http(addr, format!("GET /api/auth/sessions HTTP/1.1\r\nhost: x\r\nx-tenant-id: default\r\nauthorization: Bearer {access}\r\nconnection: close\r\n\r\n")).await;
    let sessions = json_of(&r);
    assert_eq!(sessions[0]["ip"], "127.0.0.1", "{sessions}");
    assert_eq!(sessions[0]["device"], "e2e-agent/1.0", "{sessions}");
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
