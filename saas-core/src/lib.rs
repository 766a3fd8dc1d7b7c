#![doc = include_str!("../README.md")]

pub mod change;
pub mod clock;
pub mod config;
pub mod context;
pub mod db;
mod error;
pub mod id;
pub mod jobs;
pub mod operator;
pub mod subject;
pub mod tenant;
pub mod workspace;

pub use context::{CorrelationId, PlatformActor, PlatformContext, Principal, TenantContext};
pub use error::CoreError;
pub use id::{
    ApiKeyId, InvoiceId, JobId, OperatorId, OrgId, ServiceId, SubscriptionId, TenantId, UserId,
    WorkspaceId,
};

use db::{Migration, MigrationSet};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        postgres: include_str!("../migrations/postgres/0001_core.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "workspace_tags",
        postgres: include_str!("../migrations/postgres/0002_workspace_tags.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_workspace_tags.sql"),
    },
];

/// saas-core's migrations. Run them (with those of the other crates you use)
/// through [`db::migrate`] at start-up.
#[must_use]
pub fn migrations() -> MigrationSet {
    MigrationSet {
        component: "saas-core",
        migrations: MIGRATIONS,
    }
}
