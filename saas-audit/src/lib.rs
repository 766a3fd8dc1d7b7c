#![doc = include_str!("../README.md")]

pub mod crypto;
mod error;
pub mod event;
mod offline;
mod pgwalk;
mod recorder;
mod retention;
pub mod sink;
mod store;
mod subject;
mod verify;

pub use crypto::CheckpointSigner;
pub use error::AuditError;
pub use event::{Actor, AuditEvent, Outcome, PersonalData, StoredEvent, Target};
pub use offline::verify_export;
pub use recorder::ChangeAuditor;
pub use retention::{
    DEFAULT_RETENTION_DAYS, DurableFile, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
    RETENTION_CHANGED_ACTION,
};
pub use sink::{AuditForwarder, AuditSink, FanOut, JsonLinesSink, TracingSink};
pub use store::{
    AuditLog, AuditPage, AuditQuery, AuditRecord, ExportSummary, PruneReport, Receipt, Scope,
};
pub use verify::{ChainProblem, Checkpoint, VerifyReport, verify_events};

use saas_core::db::{Migration, MigrationSet};

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "audit",
        postgres: include_str!("../migrations/postgres/0001_audit.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_audit.sql"),
    },
    Migration {
        version: 2,
        name: "sink_cursors",
        postgres: include_str!("../migrations/postgres/0002_sink_cursors.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_sink_cursors.sql"),
    },
    Migration {
        version: 3,
        name: "retention",
        postgres: include_str!("../migrations/postgres/0003_retention.sql"),
        sqlite: include_str!("../migrations/sqlite/0003_retention.sql"),
    },
    Migration {
        version: 4,
        name: "retention_settings",
        postgres: include_str!("../migrations/postgres/0004_retention_settings.sql"),
        sqlite: include_str!("../migrations/sqlite/0004_retention_settings.sql"),
    },
    Migration {
        version: 5,
        name: "canonical",
        postgres: include_str!("../migrations/postgres/0005_canonical.sql"),
        sqlite: include_str!("../migrations/sqlite/0005_canonical.sql"),
    },
];

/// saas-audit's migrations; run them after saas-core's.
#[must_use]
pub fn migrations() -> MigrationSet {
    MigrationSet {
        component: "saas-audit",
        migrations: MIGRATIONS,
    }
}
