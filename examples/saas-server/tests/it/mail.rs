//! Mail leaves through the durable outbox: written with the action, delivered
//! by the job worker to `.eml` files (development) or to a real SMTP server on
//! loopback (Python's standard-library `smtpd` debugging server, an
//! independent SMTP implementation).

use std::time::{Duration, Instant};

use axum::http::Method;
use saas_test_support::both_backends;
use serde_json::json;

use crate::Harness;

both_backends! {
    migrations = saas_server::migration_sets();

    async fn the_worker_delivers_outbox_mail_once_as_eml_files(t) {
        let dir = std::env::temp_dir().join(format!("saas-mail-{}", uuid::Uuid::now_v7()));
        let h = Harness::with_config(t, saas_server::Config { mail_dir: Some(dir.clone()), ..crate::test_config() }).await;
        let tenant = h.tenant("acme").await;
        h.call(Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "ivy@example.com", "role": "member"}))).await;
        assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().count() == 0, "nothing is sent before the worker runs");
        h.worker().run_once().await.unwrap();
        h.worker().run_once().await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let eml = std::fs::read_to_string(&files[0]).unwrap();
        assert!(eml.contains("To: ivy@example.com") && eml.contains("Subject: You are invited"), "{eml}");
        assert!(eml.contains("accept-invitation?tenant="), "{eml}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn the_worker_delivers_outbox_mail_over_smtp(t) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = std::env::temp_dir().join(format!("smtpd-{}.log", uuid::Uuid::now_v7()));
        let mut smtpd = std::process::Command::new("python3")
            .args(["-u", "-W", "ignore", "-m", "smtpd", "-n", "-c", "DebuggingServer", &format!("127.0.0.1:{port}")])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the SMTP peer");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let h = Harness::with_config(t, saas_server::Config { smtp_url: Some(format!("smtp://127.0.0.1:{port}")), ..crate::test_config() }).await;
        let tenant = h.tenant("acme").await;
        h.call(Method::POST, "/api/auth/password/forgot", Some(&tenant), Some(json!({"email": "nobody@example.com"}))).await;
        h.call(Method::POST, "/api/invitations", Some(&tenant), Some(json!({"email": "smtp@example.com", "role": "member"}))).await;
        h.worker().run_once().await.unwrap();
        let mut received = String::new();
        while !received.contains("END MESSAGE") {
            assert!(Instant::now() < deadline, "no message reached the SMTP server: {received}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            received = std::fs::read_to_string(&out).unwrap_or_default();
        }
        let _ = smtpd.kill();
        let _ = smtpd.wait();
        let _ = std::fs::remove_file(&out);
        assert!(received.contains("Subject: You are invited"), "{received}");
        assert!(received.contains("smtp@example.com"), "{received}");
        assert_eq!(received.matches("MESSAGE FOLLOWS").count(), 1, "one message: {received}");
    }
}
