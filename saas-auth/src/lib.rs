#![doc = include_str!("../README.md")]

mod accounts;
pub mod api_keys;
mod authority;
mod cache;
mod error;
pub mod invitations;
pub mod keys;
pub mod mail;
pub mod mfa;
pub mod password;
pub mod roles;
mod secret;
mod service;
pub mod services;
pub mod sessions;
mod subject;
mod throttle;
mod tokens;

pub use accounts::{
    Me, Member, MemberPatch, Membership, NewMember, OrgSettings, RoleGrants, WorkspaceMember,
};
pub use authority::{MemberAuthority, Scope};
pub use error::AuthError;
pub use secret::{MasterKey, Secret};
pub use service::{Auth, AuthConfig, Authenticated, ClientMeta, ThrottlePolicy};
pub use subject::AuthSubjectStore;

use saas_core::db::{Migration, MigrationSet};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "auth",
        postgres: include_str!("../migrations/postgres/0001_auth.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_auth.sql"),
    },
    Migration {
        version: 2,
        name: "operator_mfa",
        postgres: include_str!("../migrations/postgres/0002_operator_mfa.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_operator_mfa.sql"),
    },
];

/// saas-auth's migrations; run after saas-core's (and saas-audit's).
#[must_use]
pub fn migrations() -> MigrationSet {
    MigrationSet {
        component: "saas-auth",
        migrations: MIGRATIONS,
    }
}
