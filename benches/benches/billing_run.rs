//! Closing a billing period and rating the invoices for 1,000 tenants on
//! PostgreSQL, and the pure rating engine for the same 1,000 tenants.
//!
//! Each tenant has a Department subscription (platform fee, 5 seats, volume
//! priced AI requests) and usage in the period. One measured iteration moves
//! the clock to the next period end and closes every tenant's period through
//! `Billing::advance` with two concurrent workers: the period close, rating,
//! the invoice with its lines and gapless number, the audit events and the
//! queued collection, each tenant in its own transaction.
//!
//! Run: `cargo bench -p saas-benches --bench billing_run`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Months, TimeZone, Utc};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;
use saas_audit::{AuditLog, CheckpointSigner};
use saas_billing::plan::PlanCatalogue;
use saas_billing::{Billing, Meter, MetricCatalogue, NewSubscription, Party, UsageEvent};
use saas_core::tenant::Tier;
use saas_core::{SubscriptionId, TenantContext};
use saas_test_support::TestDb;

const TENANTS: usize = 1_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sets = [
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_policy::migrations(),
        saas_billing::migrations(),
    ];
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let (t, billing, subs) = rt.block_on(async {
        let t = TestDb::postgres_with(&sets)
            .await
            .expect("PostgreSQL is required for this bench");
        t.clock.set(start);
        let meter = Meter::new(t.db.clone(), MetricCatalogue::default_catalogue().unwrap());
        let billing = Billing::new(
            t.db.clone(),
            AuditLog::new(
                t.db.clone(),
                CheckpointSigner::new("bench", &[7u8; 32]).unwrap(),
            ),
            PlanCatalogue::default_catalogue().unwrap(),
            meter.clone(),
            Party {
                name: "Bench Seller".into(),
                ..Party::default()
            },
        );
        let set_up = Instant::now();
        let mut subs: Vec<(TenantContext, SubscriptionId)> = Vec::new();
        for i in 0..TENANTS {
            let ctx = t.tenant(&format!("bill-{i:04}"), Tier::Department).await;
            let s = billing
                .subscribe(
                    &ctx,
                    NewSubscription {
                        plan: "department".into(),
                        version: None,
                        seats: Some(5),
                    },
                )
                .await
                .unwrap();
            let events = (0..20)
                .map(|n| UsageEvent::new(format!("e{n}"), "ai_requests"))
                .collect();
            meter.record_batch(&ctx, events).await.unwrap();
            subs.push((ctx, s.id));
        }
        println!(
            "set-up: {TENANTS} tenants subscribed with usage in {:.1} s",
            set_up.elapsed().as_secs_f64()
        );
        (t, billing, subs)
    });
    let subs = Arc::new(subs);

    let mut group = c.benchmark_group("billing_run_postgres");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements(TENANTS as u64));
    let months = std::sync::atomic::AtomicU32::new(0);
    group.bench_function("close_period_and_rate_1000_tenants", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = months.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                t.clock.set(
                    start.checked_add_months(Months::new(m)).unwrap()
                        + chrono::Duration::seconds(1),
                );
                let began = Instant::now();
                rt.block_on(async {
                    let mut workers = Vec::new();
                    for w in 0..2 {
                        let (billing, subs) = (billing.clone(), subs.clone());
                        workers.push(tokio::spawn(async move {
                            let mut docs = 0;
                            for (ctx, id) in subs.iter().skip(w).step_by(2) {
                                docs += billing.advance(ctx, *id).await.unwrap().documents.len();
                            }
                            docs
                        }));
                    }
                    let mut docs = 0;
                    for w in workers {
                        docs += w.await.unwrap();
                    }
                    assert_eq!(docs, TENANTS, "one invoice per tenant and period");
                });
                total += began.elapsed();
            }
            total
        });
    });
    group.finish();

    // The pure engine for the same 1,000 tenants: rating only, no I/O.
    let plans = PlanCatalogue::default_catalogue().unwrap();
    let plan = plans.get("department", None).unwrap().clone();
    let period = (start, start.checked_add_months(Months::new(1)).unwrap());
    let usage: Vec<BTreeMap<String, Decimal>> = (0..TENANTS)
        .map(|i| BTreeMap::from([("ai_requests".to_owned(), Decimal::from(i * 397))]))
        .collect();
    let mut group = c.benchmark_group("billing_rating");
    group.throughput(Throughput::Elements(TENANTS as u64));
    group.bench_function("rate_period_and_totals_1000_tenants", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for u in &usage {
                let lines = saas_billing::rating::rate_period(&plan, period, 5, u).unwrap();
                let t = saas_billing::rating::totals(&lines, Decimal::from(19), 0, plan.currency)
                    .unwrap();
                sum += t.total;
            }
            sum
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
