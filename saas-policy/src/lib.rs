#![doc = include_str!("../README.md")]

mod admin;
mod authorizer;
mod breakglass;
pub mod catalogue;
mod engine;
mod error;
pub mod quota;
mod remember;
mod store;

pub use admin::{Assignee, NewRole, RoleGrant};
pub use authorizer::{
    Authorizer, DEFAULT_STATE_TTL, Facts, GrantSource, Grants, Resource, Visible, entitlements,
};
pub use breakglass::{BreakGlass, BreakGlassRequest, MAX_MINUTES};
pub use catalogue::{Catalogue, Level, Permission, Role};
pub use engine::{Decision, Engine, Explanation, TENANT_ISOLATION};
pub use error::{PolicyDiagnostic, PolicyError, QuotaExceeded};
pub use quota::QuotaPeriods;
pub use store::{Assignment, StoredPolicy};

use saas_core::db::{Migration, MigrationSet};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "policy",
    postgres: include_str!("../migrations/postgres/0001_policy.sql"),
    sqlite: include_str!("../migrations/sqlite/0001_policy.sql"),
}];

/// saas-policy's migrations; run after saas-core's and saas-audit's.
#[must_use]
pub fn migrations() -> MigrationSet {
    MigrationSet {
        component: "saas-policy",
        migrations: MIGRATIONS,
    }
}
