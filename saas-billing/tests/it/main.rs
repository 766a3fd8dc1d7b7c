//! saas-billing integration tests. Every storage test runs on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod cross_tenant;
mod dunning;
mod lifecycle;
mod metering;
mod subject;

use saas_audit::{AuditLog, CheckpointSigner};
use saas_billing::plan::PlanCatalogue;
use saas_billing::{Billing, Meter, MetricCatalogue, Party};
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

/// Plans for the tests: small numbers that are easy to check by hand.
pub(crate) const TEST_PLANS: &str = r#"
[[plans]]
code = "basic"
version = 1
name = "Basic"
tier = "team"
currency = "EUR"
interval = "monthly"
anchor = "calendar"
net_terms_days = 30
[[plans.charges]]
code = "base"
name = "Basic fee"
model = "flat"
amount = "10"
[[plans.charges]]
code = "calls"
name = "API calls"
metric = "api_calls"
model = "per_unit"
unit_price = "0.50"
free_units = "2"

[[plans]]
code = "basic"
version = 2
name = "Basic"
tier = "team"
currency = "EUR"
interval = "monthly"
anchor = "calendar"
[[plans.charges]]
code = "base"
name = "Basic fee"
model = "flat"
amount = "12"

[[plans]]
code = "pro"
version = 1
name = "Pro"
tier = "department"
currency = "EUR"
interval = "monthly"
anchor = "calendar"
downgrade = "at_period_end"
[[plans.charges]]
code = "base"
name = "Pro fee"
model = "flat"
amount = "30"
[[plans.charges]]
code = "seats"
name = "Pro seats"
model = "per_seat"
unit_price = "5"

[[plans]]
code = "trial"
version = 1
name = "Trial plan"
tier = "team"
currency = "EUR"
interval = "monthly"
anchor = "anniversary"
trial_days = 14
[[plans.charges]]
code = "base"
name = "Trial plan fee"
model = "flat"
amount = "20"
"#;

pub(crate) fn billing(t: &TestDb) -> Billing {
    let audit = AuditLog::new(t.db.clone(), CheckpointSigner::random("test"));
    Billing::new(
        t.db.clone(),
        audit,
        PlanCatalogue::from_toml(TEST_PLANS).unwrap(),
        meter(t),
        Party {
            name: "Seller GmbH".into(),
            address: Some("1 Main St\nBerlin".into()),
            tax_id: Some("DE123".into()),
            email: Some("billing@seller.example".into()),
        },
    )
}

/// The actions in `ctx`'s audit chain, oldest first.
pub(crate) async fn audit_actions(t: &TestDb, ctx: &saas_core::TenantContext) -> Vec<String> {
    let log = AuditLog::new(t.db.clone(), CheckpointSigner::random("read"));
    let q = saas_audit::AuditQuery {
        limit: Some(500),
        ..saas_audit::AuditQuery::default()
    };
    let mut actions: Vec<String> = log
        .query(ctx, &q)
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.event.action)
        .collect();
    actions.reverse();
    actions
}
