#![doc = include_str!("../README.md")]

mod error;
pub mod metering;
pub mod money;
pub mod period;
pub mod plan;
pub mod rating;

pub use error::BillingError;
pub use metering::{
    Aggregation, BatchReceipt, EventReceipt, EventStatus, Meter, Metric, MetricCatalogue,
    MetricUsage, UsageEvent, UsageQuery, UsageReport,
};
pub use period::{Cycle, Period};

use saas_core::db::{Migration, MigrationSet};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "metering",
    postgres: include_str!("../migrations/postgres/0001_metering.sql"),
    sqlite: include_str!("../migrations/sqlite/0001_metering.sql"),
}];

/// saas-billing's migrations; run after saas-core's, saas-audit's and
/// saas-policy's.
#[must_use]
pub fn migrations() -> MigrationSet {
    MigrationSet {
        component: "saas-billing",
        migrations: MIGRATIONS,
    }
}
