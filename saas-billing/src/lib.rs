#![doc = include_str!("../README.md")]

mod billing;
pub mod dunning;
mod error;
pub mod invoice;
pub mod metering;
pub mod money;
pub mod payment;
pub mod period;
pub mod plan;
pub mod rating;
pub mod render;
mod subject;
pub mod subscription;

pub use billing::{
    ADVANCE_JOB, Advanced, Billing, BillingAccount, BillingJobs, MAX_CREDIT, MAX_SEATS,
    NewCreditNote, NewSubscription, Outbox, PlanChange, PlanChangeResult, RunReport, SYNC_TIER_JOB,
};
pub use dunning::{DunningPolicy, DunningStep, WebhookResult};
pub use error::BillingError;
pub use invoice::{DocumentKind, Invoice, InvoiceStatus, Party};
pub use metering::{
    Aggregation, BatchReceipt, EventReceipt, EventStatus, Meter, Metric, MetricCatalogue,
    MetricUsage, UsageEvent, UsageQuery, UsageReport,
};
pub use period::{Cycle, Period};
pub use subject::BillingSubjectStore;
pub use subscription::{PlanRef, Subscription, SubscriptionStatus};

use saas_core::db::{Migration, MigrationSet};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "metering",
        postgres: include_str!("../migrations/postgres/0001_metering.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_metering.sql"),
    },
    Migration {
        version: 2,
        name: "billing",
        postgres: include_str!("../migrations/postgres/0002_billing.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_billing.sql"),
    },
    Migration {
        version: 3,
        name: "next_seats",
        postgres: include_str!("../migrations/postgres/0003_next_seats.sql"),
        sqlite: include_str!("../migrations/sqlite/0003_next_seats.sql"),
    },
    Migration {
        version: 4,
        name: "ingest_without_row_fk",
        postgres: include_str!("../migrations/postgres/0004_ingest_without_row_fk.sql"),
        sqlite: include_str!("../migrations/sqlite/0004_ingest_without_row_fk.sql"),
    },
];

/// saas-billing's migrations; run after saas-core's, saas-audit's and
/// saas-policy's.
#[must_use]
pub fn migrations() -> MigrationSet {
    MigrationSet {
        component: "saas-billing",
        migrations: MIGRATIONS,
    }
}
