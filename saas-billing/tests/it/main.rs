//! saas-billing integration tests. Every storage test runs on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod metering;

use saas_billing::{Meter, MetricCatalogue};
use saas_core::db::MigrationSet;
use saas_test_support::TestDb;

pub(crate) fn sets() -> [MigrationSet; 4] {
    [
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_policy::migrations(),
        saas_billing::migrations(),
    ]
}

pub(crate) fn meter(t: &TestDb) -> Meter {
    Meter::new(t.db.clone(), MetricCatalogue::default_catalogue().unwrap())
}
