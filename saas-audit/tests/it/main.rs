//! saas-audit integration tests. Every storage test runs on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod chain;
mod changes;
mod erasure;
mod export;
mod retention;
mod sinks;
mod tamper;

use saas_audit::{AuditEvent, AuditLog, CheckpointSigner, Target};
use saas_core::db::{Backend, MigrationSet};
use saas_test_support::TestDb;

pub(crate) fn sets() -> [MigrationSet; 2] {
    [saas_core::migrations(), saas_audit::migrations()]
}

pub(crate) fn signer() -> CheckpointSigner {
    CheckpointSigner::new("test-key", b"0123456789abcdef0123456789abcdef").unwrap()
}

pub(crate) fn log(t: &TestDb) -> AuditLog {
    AuditLog::new(t.db.clone(), signer())
}

pub(crate) fn event(i: usize) -> AuditEvent {
    AuditEvent::new(
        "workspace.update",
        Target::new("workspace", format!("w{i}")),
    )
    .details(serde_json::json!({"n": i}))
}

/// A SQL literal for a UUID in the test database's dialect.
pub(crate) fn uuid_lit(t: &TestDb, id: uuid::Uuid) -> String {
    match t.backend() {
        Backend::Postgres => format!("'{id}'::uuid"),
        Backend::Sqlite => format!("X'{}'", id.simple()),
    }
}
