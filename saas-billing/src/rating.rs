//! The pure rating engine: turns a plan, a billing period, seats and metered
//! usage into invoice lines, prorates plan changes, and totals an invoice
//! with tax and prepaid credit. No database, no clock, no I/O: every input is
//! an argument.
//!
//! Prices stay exact [`Decimal`]s in major units until a line is complete;
//! each line is then rounded once to minor units with
//! [`to_minor`] (half away from zero). Every sum is
//! checked: an overflow is an error, never a panic or a wrap.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::money::{Currency, overflow, to_minor};
use crate::plan::{Charge, ChargeModel, Plan, PriceTier};

/// What an invoice line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A flat or per-seat charge for a whole period.
    Fixed,
    /// Metered usage.
    Usage,
    /// The top-up to a plan's minimum commitment.
    Minimum,
    /// The prorated charge for the rest of a period after a plan change.
    Proration,
    /// The prorated credit (negative) for the unused part of a period.
    Credit,
}

/// One line of an invoice, in minor units of the plan's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceLine {
    /// The charge (or, for plan-change lines, the plan) the line is for.
    pub charge_code: String,
    /// Text shown on the invoice.
    pub description: String,
    /// Units billed: 1 for a flat fee, seats, or metered units.
    pub quantity: Decimal,
    /// Amount in minor units, rounded once; negative for a credit.
    pub amount: i64,
    /// Start of the time the line covers.
    pub period_start: DateTime<Utc>,
    /// End (exclusive) of the time the line covers.
    pub period_end: DateTime<Utc>,
    /// What the line is for.
    pub kind: LineKind,
}

/// The sums at the foot of an invoice, in minor units.
///
/// Always `total == subtotal + tax - credits_applied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Sum of the line amounts.
    pub subtotal: i64,
    /// Tax on the subtotal; negative on an invoice that is all credit.
    pub tax: i64,
    /// Prepaid credit used, from zero to `subtotal + tax`.
    pub credits_applied: i64,
    /// What is due.
    pub total: i64,
}

/// The undiscounted amount, in major units and not yet rounded, that
/// `charge` costs for `quantity` units: 1 for a flat charge (the number of
/// periods), seats for a per-seat charge, metered units otherwise. The
/// charge's `free_units` are taken off first.
///
/// Graduated tiers price each unit at its own tier and add each reached
/// tier's flat fee; volume tiers price every unit at the tier the quantity
/// falls in and add that tier's flat fee; a package charge bills every
/// started package. A quantity of zero (after free units) costs nothing.
///
/// ```
/// # use saas_billing::plan::PlanCatalogue;
/// # use saas_billing::rating::rate_charge;
/// # use rust_decimal::Decimal;
/// let catalogue = PlanCatalogue::default_catalogue().unwrap();
/// let enterprise = catalogue.get("enterprise", None).unwrap();
/// let requests = enterprise.charges.iter().find(|c| c.code == "ai_requests").unwrap();
/// // 1001 requests are two started packages of 1000, at 1.50 each.
/// assert_eq!(rate_charge(requests, Decimal::from(1001)).unwrap(), Decimal::new(300, 2));
/// ```
///
/// # Errors
///
/// [`BillingError::Validation`] for a negative quantity or an invalid
/// charge; [`BillingError::Money`] on overflow.
pub fn rate_charge(charge: &Charge, quantity: Decimal) -> Result<Decimal, BillingError> {
    if quantity < Decimal::ZERO {
        return Err(BillingError::validation("quantity", "must not be negative"));
    }
    charge.validate("charge")?;
    let billable = quantity
        .checked_sub(charge.free_units)
        .ok_or_else(|| overflow("quantity"))?
        .max(Decimal::ZERO);
    match &charge.model {
        ChargeModel::Flat { amount } => mul(*amount, billable),
        ChargeModel::PerSeat { unit_price } | ChargeModel::PerUnit { unit_price } => {
            mul(*unit_price, billable)
        }
        ChargeModel::Graduated { tiers } => graduated(tiers, billable),
        ChargeModel::Volume { tiers } => volume(tiers, billable),
        ChargeModel::Package { size, price } => package(*size, *price, billable),
    }
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, BillingError> {
    a.checked_mul(b).ok_or_else(|| overflow("charge amount"))
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, BillingError> {
    a.checked_add(b).ok_or_else(|| overflow("charge amount"))
}

/// Each unit at the price of the tier it falls in, plus the flat fee of
/// every tier reached.
fn graduated(tiers: &[PriceTier], billable: Decimal) -> Result<Decimal, BillingError> {
    let mut total = Decimal::ZERO;
    let mut floor = Decimal::ZERO;
    for tier in tiers {
        if billable <= floor {
            break;
        }
        let ceiling = match tier.up_to {
            Some(up_to) if up_to < billable => up_to,
            _ => billable,
        };
        let units = ceiling
            .checked_sub(floor)
            .ok_or_else(|| overflow("tier units"))?;
        total = add(total, add(mul(units, tier.unit_price)?, tier.flat_fee)?)?;
        match tier.up_to {
            Some(up_to) => floor = up_to,
            None => break,
        }
    }
    Ok(total)
}

/// Every unit at the price of the tier the quantity falls in, plus that
/// tier's flat fee.
fn volume(tiers: &[PriceTier], billable: Decimal) -> Result<Decimal, BillingError> {
    if billable.is_zero() {
        return Ok(Decimal::ZERO);
    }
    let tier = tiers
        .iter()
        .find(|t| t.up_to.is_none_or(|up_to| billable <= up_to))
        .ok_or_else(|| BillingError::validation("tiers", "quantity is above the last tier"))?;
    add(mul(billable, tier.unit_price)?, tier.flat_fee)
}

/// The price of every started package of `size` units.
fn package(size: Decimal, price: Decimal, billable: Decimal) -> Result<Decimal, BillingError> {
    let rest = billable
        .checked_rem(size)
        .ok_or_else(|| BillingError::validation("size", "must be greater than zero"))?;
    let whole = billable
        .checked_sub(rest)
        .and_then(|full| full.checked_div(size))
        .ok_or_else(|| overflow("package count"))?
        .round();
    let started = if rest.is_zero() {
        whole
    } else {
        add(whole, Decimal::ONE)?
    };
    mul(started, price)
}

/// The quantity a charge bills in a period, and the kind of line it makes.
fn quantity_of(
    charge: &Charge,
    seats: u64,
    usage: &BTreeMap<String, Decimal>,
) -> Result<(Decimal, LineKind), BillingError> {
    match (&charge.model, &charge.metric) {
        (ChargeModel::Flat { .. }, _) => Ok((Decimal::ONE, LineKind::Fixed)),
        (ChargeModel::PerSeat { .. }, _) => Ok((Decimal::from(seats), LineKind::Fixed)),
        (_, Some(metric)) => Ok((
            usage.get(metric).copied().unwrap_or(Decimal::ZERO),
            LineKind::Usage,
        )),
        (_, None) => Err(BillingError::validation(
            format!("charges.{}.metric", charge.code),
            "a usage charge needs a metric",
        )),
    }
}

/// The flat and per-seat charges of `plan` for one full period, as exact
/// amounts in major units; with `prorated_only`, only those a plan change
/// prorates.
fn fixed_charges(
    plan: &Plan,
    seats: u64,
    prorated_only: bool,
) -> impl Iterator<Item = Result<Decimal, BillingError>> {
    plan.charges
        .iter()
        .filter(move |c| !c.is_usage() && (c.prorated || !prorated_only))
        .map(move |c| {
            let (quantity, _) = quantity_of(c, seats, &BTreeMap::new())?;
            rate_charge(c, quantity)
        })
}

/// The sum of the fixed charges of `plan` for one full period, exact, in
/// major units.
pub(crate) fn fixed_amount(
    plan: &Plan,
    seats: u64,
    prorated_only: bool,
) -> Result<Decimal, BillingError> {
    fixed_charges(plan, seats, prorated_only)
        .try_fold(Decimal::ZERO, |sum, amount| add(sum, amount?))
}

/// The sum of the fixed charges of `plan` as [`rate_period`] bills them:
/// each rounded to minor units, then added.
fn fixed_billed(plan: &Plan, seats: u64, prorated_only: bool) -> Result<i64, BillingError> {
    fixed_charges(plan, seats, prorated_only).try_fold(0_i64, |sum, amount| {
        sum.checked_add(to_minor(amount?, plan.currency)?)
            .ok_or_else(|| overflow("fixed charges"))
    })
}

/// Rates one billing period of `plan`: a line per charge (fixed charges for
/// the whole period, usage charges from `usage[metric]`, a missing metric
/// counting as zero), then a [`LineKind::Minimum`] top-up line when the
/// plan's minimum commitment exceeds the sum of those lines. Each line is
/// rounded to minor units once.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use chrono::{TimeZone, Utc};
/// # use rust_decimal::Decimal;
/// # use saas_billing::plan::PlanCatalogue;
/// # use saas_billing::rating::rate_period;
/// let catalogue = PlanCatalogue::default_catalogue().unwrap();
/// let team = catalogue.get("team", None).unwrap();
/// let period = (
///     Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap(),
///     Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap(),
/// );
/// let usage = BTreeMap::from([("ai_requests".to_owned(), Decimal::from(12_500))]);
/// let lines = rate_period(team, period, 5, &usage).unwrap();
/// // 5 seats at 12 EUR; 2500 requests above the free 10 000 at 0.002 EUR.
/// let amounts: Vec<i64> = lines.iter().map(|l| l.amount).collect();
/// assert_eq!(amounts, [6000, 500]);
/// ```
///
/// # Errors
///
/// [`BillingError::Validation`] for an invalid plan, an empty or inverted
/// period, or negative usage; [`BillingError::Money`] on overflow.
pub fn rate_period(
    plan: &Plan,
    period: (DateTime<Utc>, DateTime<Utc>),
    seats: u64,
    usage: &BTreeMap<String, Decimal>,
) -> Result<Vec<InvoiceLine>, BillingError> {
    plan.validate()?;
    period_seconds(period)?;
    let (period_start, period_end) = period;
    let mut lines = Vec::with_capacity(plan.charges.len().saturating_add(1));
    let mut sum = 0_i64;
    for charge in &plan.charges {
        let (quantity, kind) = quantity_of(charge, seats, usage)?;
        let amount = to_minor(rate_charge(charge, quantity)?, plan.currency)?;
        sum = sum
            .checked_add(amount)
            .ok_or_else(|| overflow("period amount"))?;
        lines.push(InvoiceLine {
            charge_code: charge.code.clone(),
            description: charge.name.clone(),
            quantity,
            amount,
            period_start,
            period_end,
            kind,
        });
    }
    if let Some(minimum) = plan.minimum.filter(|m| *m > Decimal::ZERO) {
        let minimum_minor = to_minor(minimum, plan.currency)?;
        if minimum_minor > sum {
            let amount = minimum_minor
                .checked_sub(sum)
                .ok_or_else(|| overflow("minimum top-up"))?;
            lines.push(InvoiceLine {
                charge_code: "minimum".to_owned(),
                description: format!(
                    "minimum commitment of {} {}",
                    minimum.normalize(),
                    plan.currency
                ),
                quantity: Decimal::ONE,
                amount,
                period_start,
                period_end,
                kind: LineKind::Minimum,
            });
        }
    }
    Ok(lines)
}

/// Sums an invoice: the subtotal of `lines`; tax at `tax_rate` percent
/// (`19`, `7.5`; from 0 to 100) of the subtotal, rounded half away from zero
/// to a minor unit and negative when the subtotal is; then up to
/// `available_credit` minor units of prepaid credit, applied only to what is
/// positive. `currency` is the currency of the lines, named in errors.
///
/// ```
/// # use saas_billing::rating::totals;
/// # use rust_decimal::Decimal;
/// let eur = "EUR".parse().unwrap();
/// let t = totals(&[], Decimal::from(19), 500, eur).unwrap();
/// assert_eq!((t.subtotal, t.tax, t.credits_applied, t.total), (0, 0, 0, 0));
/// ```
///
/// # Errors
///
/// [`BillingError::Validation`] for a tax rate outside 0 to 100 or a
/// negative credit; [`BillingError::Money`] on overflow.
pub fn totals(
    lines: &[InvoiceLine],
    tax_rate: Decimal,
    available_credit: i64,
    currency: Currency,
) -> Result<Totals, BillingError> {
    if tax_rate < Decimal::ZERO || tax_rate > Decimal::ONE_HUNDRED {
        return Err(BillingError::validation(
            "tax_rate",
            "must be a percentage from 0 to 100",
        ));
    }
    if available_credit < 0 {
        return Err(BillingError::validation(
            "available_credit",
            "must not be negative",
        ));
    }
    let subtotal = lines
        .iter()
        .try_fold(0_i64, |sum, line| sum.checked_add(line.amount))
        .ok_or_else(|| overflow(&format!("invoice subtotal in {currency}")))?;
    let tax = Decimal::from(subtotal)
        .checked_mul(tax_rate)
        .and_then(|t| t.checked_div(Decimal::ONE_HUNDRED))
        .map(|t| t.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
        .and_then(|t| t.to_i64())
        .ok_or_else(|| overflow(&format!("invoice tax in {currency}")))?;
    let gross = subtotal
        .checked_add(tax)
        .ok_or_else(|| overflow(&format!("invoice total in {currency}")))?;
    let credits_applied = if gross > 0 {
        available_credit.min(gross)
    } else {
        0
    };
    let total = gross
        .checked_sub(credits_applied)
        .ok_or_else(|| overflow(&format!("invoice total in {currency}")))?;
    Ok(Totals {
        subtotal,
        tax,
        credits_applied,
        total,
    })
}

/// An instant as exact seconds since the Unix epoch.
fn seconds(t: DateTime<Utc>) -> Decimal {
    // |timestamp| < 2^63 s, so timestamp * 10^9 + nanos stays below 2^96,
    // the most a `Decimal` mantissa holds.
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    Decimal::from_i128_with_scale(nanos, 9)
}

/// The length of `period` in seconds, if it is not empty or inverted.
fn period_seconds(period: (DateTime<Utc>, DateTime<Utc>)) -> Result<Decimal, BillingError> {
    let (start, end) = period;
    if end <= start {
        return Err(BillingError::validation(
            "period",
            "must end after it starts",
        ));
    }
    seconds(end)
        .checked_sub(seconds(start))
        .ok_or_else(|| overflow("period length"))
}

/// The share of `amount` for the time `[from, to)` spends inside `period`:
/// `amount × seconds([from, to) ∩ period) / seconds(period)`, in exact
/// decimal arithmetic (to the 28 significant digits of a [`Decimal`]), not
/// rounded.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use rust_decimal::Decimal;
/// # use saas_billing::rating::prorate;
/// let day = |d| Utc.with_ymd_and_hms(2025, 4, d, 0, 0, 0).unwrap();
/// let april = (day(1), Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap());
/// // 10 of April's 30 days.
/// assert_eq!(prorate(Decimal::from(30), april, day(21), day(30) + chrono::Duration::days(5)).unwrap(), Decimal::from(10));
/// ```
///
/// # Errors
///
/// [`BillingError::Validation`] for an empty or inverted period, or `to`
/// before `from`; [`BillingError::Money`] on overflow.
pub fn prorate(
    amount: Decimal,
    period: (DateTime<Utc>, DateTime<Utc>),
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Decimal, BillingError> {
    let length = period_seconds(period)?;
    if to < from {
        return Err(BillingError::validation(
            "interval",
            "must not end before it starts",
        ));
    }
    let (start, end) = period;
    let (lo, hi) = (from.max(start), to.min(end));
    if hi <= lo {
        return Ok(Decimal::ZERO);
    }
    seconds(hi)
        .checked_sub(seconds(lo))
        .and_then(|inside| amount.checked_mul(inside))
        .and_then(|share| share.checked_div(length))
        .ok_or_else(|| overflow("prorated amount"))
}

/// Prices an immediate change from `old` to `new` at instant `at` of
/// `period`, for `seats` seats: a [`LineKind::Credit`] line (zero or
/// negative) giving back the unused part of the old plan's prorated fixed
/// charges, and a [`LineKind::Proration`] line (zero or positive) for the
/// rest of the period on the new plan. Both cover `[at, period end)`.
///
/// Whether a change applies now is the caller's decision: upgrades (a
/// higher [`Plan::recurring_fixed`]) always do; downgrades only when the old
/// plan's `downgrade` is `immediate`. Usage is not part of the change: it is
/// rated at the end of the period. Charges with `prorated = false` are
/// neither credited nor charged here; the new plan's apply from the next
/// period.
///
/// Rounding is complementary, so that nothing is rounded twice in the
/// customer's disfavour. With `f` the elapsed fraction of the period,
/// `old_full` what [`rate_period`] billed for the old plan's prorated fixed
/// charges, and `owed` the exact amount `old × f + new × (1 − f)` rounded
/// once: the credit is `round(old × f) − old_full` and the proration is
/// `owed` less what the customer keeps paying for the old plan after the
/// credit. So `old_full + credit + proration` is `owed`, within half a
/// minor unit of the exact amount (each line clamped to its sign, which can
/// only matter for sub-minor-unit fixed prices, keeps it within half a
/// minor unit too).
///
/// # Errors
///
/// [`BillingError::Validation`] for an invalid plan, an empty or inverted
/// period, or `at` outside it; [`BillingError::Money`] when the plans'
/// currencies differ or on overflow.
pub fn plan_change(
    old: &Plan,
    new: &Plan,
    seats: u64,
    period: (DateTime<Utc>, DateTime<Utc>),
    at: DateTime<Utc>,
) -> Result<Vec<InvoiceLine>, BillingError> {
    old.validate()?;
    new.validate()?;
    if old.currency != new.currency {
        return Err(BillingError::Money(format!(
            "currency mismatch: {} and {}",
            old.currency, new.currency
        )));
    }
    period_seconds(period)?;
    let (start, end) = period;
    if at < start || at > end {
        return Err(BillingError::validation("at", "must be inside the period"));
    }
    let currency = old.currency;
    let old_exact = fixed_amount(old, seats, true)?;
    let new_exact = fixed_amount(new, seats, true)?;
    let old_full = fixed_billed(old, seats, true)?;
    let used_exact = prorate(old_exact, period, start, at)?;
    let rest_exact = prorate(new_exact, period, at, end)?;
    let used = to_minor(used_exact, currency)?;
    let owed = to_minor(
        used_exact
            .checked_add(rest_exact)
            .ok_or_else(|| overflow("plan change"))?,
        currency,
    )?;
    let credit = used
        .checked_sub(old_full)
        .ok_or_else(|| overflow("plan change credit"))?
        .min(0);
    let kept = old_full
        .checked_add(credit)
        .ok_or_else(|| overflow("plan change credit"))?;
    let charge = owed
        .checked_sub(kept)
        .ok_or_else(|| overflow("plan change charge"))?
        .max(0);
    Ok(vec![
        InvoiceLine {
            charge_code: old.code.clone(),
            description: format!("unused time on {}", old.name),
            quantity: Decimal::ONE,
            amount: credit,
            period_start: at,
            period_end: end,
            kind: LineKind::Credit,
        },
        InvoiceLine {
            charge_code: new.code.clone(),
            description: format!("remaining time on {}", new.name),
            quantity: Decimal::ONE,
            amount: charge,
            period_start: at,
            period_end: end,
            kind: LineKind::Proration,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Anchor, CancelTiming, DowngradeTiming, Interval, PlanCatalogue, PlanLimits};
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;
    use saas_core::tenant::Tier;

    fn cur(code: &str) -> Currency {
        code.parse().unwrap()
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn april() -> (DateTime<Utc>, DateTime<Utc>) {
        (
            Utc.with_ymd_and_hms(2025, 4, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap(),
        )
    }

    fn charge(code: &str, metric: Option<&str>, model: ChargeModel) -> Charge {
        Charge {
            code: code.to_owned(),
            name: code.to_owned(),
            metric: metric.map(str::to_owned),
            model,
            free_units: Decimal::ZERO,
            prorated: true,
        }
    }

    fn flat(amount: Decimal) -> Charge {
        charge("base", None, ChargeModel::Flat { amount })
    }

    fn per_seat(unit_price: Decimal) -> Charge {
        charge("seats", None, ChargeModel::PerSeat { unit_price })
    }

    fn usage_charge(model: ChargeModel) -> Charge {
        charge("requests", Some("requests"), model)
    }

    fn plan(code: &str, currency: &str, charges: Vec<Charge>) -> Plan {
        Plan {
            code: code.to_owned(),
            version: 1,
            name: code.to_owned(),
            tier: Tier::Team,
            currency: cur(currency),
            interval: Interval::Monthly,
            anchor: Anchor::Calendar,
            trial_days: 0,
            downgrade: DowngradeTiming::AtPeriodEnd,
            cancel: CancelTiming::AtPeriodEnd,
            net_terms_days: 30,
            minimum: None,
            charges,
            features: Vec::new(),
            limits: PlanLimits::default(),
        }
    }

    fn line(amount: i64) -> InvoiceLine {
        InvoiceLine {
            charge_code: "x".to_owned(),
            description: "x".to_owned(),
            quantity: Decimal::ONE,
            amount,
            period_start: at(0),
            period_end: at(86_400),
            kind: LineKind::Fixed,
        }
    }

    /// Tiers 0–100 at 1.00; 100–1000 at 0.50 plus a flat fee of 10 when
    /// reached; above 1000 at 0.10.
    fn table_tiers() -> Vec<PriceTier> {
        vec![
            PriceTier {
                up_to: Some(d("100")),
                unit_price: d("1.00"),
                flat_fee: Decimal::ZERO,
            },
            PriceTier {
                up_to: Some(d("1000")),
                unit_price: d("0.50"),
                flat_fee: d("10"),
            },
            PriceTier {
                up_to: None,
                unit_price: d("0.10"),
                flat_fee: Decimal::ZERO,
            },
        ]
    }

    #[test]
    fn graduated_and_volume_tiers_match_a_table_worked_by_hand() {
        let graduated = usage_charge(ChargeModel::Graduated {
            tiers: table_tiers(),
        });
        let volume = usage_charge(ChargeModel::Volume {
            tiers: table_tiers(),
        });
        // (quantity, graduated, volume)
        let table = [
            // Nothing used, nothing billed (no tier reached, no flat fee).
            ("0", "0", "0"),
            // g: 1 × 1.00 | v: 1 × 1.00
            ("1", "1.00", "1.00"),
            // g: 100 × 1.00 | v: 100 × 1.00 (100 is inside the first tier)
            ("100", "100.00", "100.00"),
            // g: 100 × 1.00 + 1 × 0.50 + 10 = 110.50 | v: 101 × 0.50 + 10 = 60.50
            ("101", "110.50", "60.50"),
            // g: 100 + 900 × 0.50 + 10 = 560.00 | v: 1000 × 0.50 + 10 = 510.00
            ("1000", "560.00", "510.00"),
            // g: 560 + 1 × 0.10 = 560.10 | v: 1001 × 0.10 = 100.10
            ("1001", "560.10", "100.10"),
            // g: 560 + 4000 × 0.10 = 960.00 | v: 5000 × 0.10 = 500.00
            ("5000", "960.00", "500.00"),
        ];
        for (quantity, g, v) in table {
            assert_eq!(
                rate_charge(&graduated, d(quantity)).unwrap(),
                d(g),
                "graduated {quantity}"
            );
            assert_eq!(
                rate_charge(&volume, d(quantity)).unwrap(),
                d(v),
                "volume {quantity}"
            );
        }
    }

    #[test]
    fn package_charges_every_started_package() {
        let pack = usage_charge(ChargeModel::Package {
            size: d("1000"),
            price: d("1.50"),
        });
        for (quantity, expected) in [
            ("0", "0"),
            ("1", "1.50"),
            ("999.5", "1.50"),
            ("1000", "1.50"),
            ("1001", "3.00"),
            ("2500", "4.50"),
            ("3000", "4.50"),
        ] {
            assert_eq!(
                rate_charge(&pack, d(quantity)).unwrap(),
                d(expected),
                "{quantity}"
            );
        }
        let halves = usage_charge(ChargeModel::Package {
            size: d("0.5"),
            price: d("2"),
        });
        // 1.2 units are three started half-units.
        assert_eq!(rate_charge(&halves, d("1.2")).unwrap(), d("6"));
    }

    #[test]
    fn free_units_are_taken_off_before_the_model_applies() {
        let mut requests = usage_charge(ChargeModel::PerUnit {
            unit_price: d("0.10"),
        });
        requests.free_units = d("100");
        assert_eq!(rate_charge(&requests, d("50")).unwrap(), Decimal::ZERO);
        assert_eq!(rate_charge(&requests, d("100")).unwrap(), Decimal::ZERO);
        assert_eq!(rate_charge(&requests, d("250")).unwrap(), d("15.00"));

        let mut seats = per_seat(d("12"));
        seats.free_units = d("3");
        assert_eq!(rate_charge(&seats, d("10")).unwrap(), d("84"));

        let mut pack = usage_charge(ChargeModel::Package {
            size: d("1000"),
            price: d("1.50"),
        });
        pack.free_units = d("1000");
        assert_eq!(rate_charge(&pack, d("1000")).unwrap(), Decimal::ZERO);
        assert_eq!(rate_charge(&pack, d("1001")).unwrap(), d("1.50"));

        let mut graduated = usage_charge(ChargeModel::Graduated {
            tiers: table_tiers(),
        });
        graduated.free_units = d("100");
        // 101 units less 100 free is 1 unit, in the first tier.
        assert_eq!(rate_charge(&graduated, d("101")).unwrap(), d("1.00"));
    }

    #[test]
    fn negative_quantity_is_refused() {
        let requests = usage_charge(ChargeModel::PerUnit {
            unit_price: d("0.10"),
        });
        let err = rate_charge(&requests, d("-1")).unwrap_err();
        assert!(
            matches!(err, BillingError::Validation { ref field, .. } if field == "quantity"),
            "{err:?}"
        );
        let p = plan("p", "EUR", vec![requests]);
        let usage = BTreeMap::from([("requests".to_owned(), d("-0.5"))]);
        assert!(matches!(
            rate_period(&p, april(), 1, &usage),
            Err(BillingError::Validation { .. })
        ));
    }

    #[test]
    fn invalid_charges_are_refused_rather_than_rated() {
        let unsorted = usage_charge(ChargeModel::Graduated {
            tiers: table_tiers().into_iter().rev().collect(),
        });
        assert!(rate_charge(&unsorted, d("5")).is_err());
        let empty = usage_charge(ChargeModel::Volume { tiers: Vec::new() });
        assert!(rate_charge(&empty, d("5")).is_err());
        let zero_pack = usage_charge(ChargeModel::Package {
            size: Decimal::ZERO,
            price: d("1"),
        });
        assert!(rate_charge(&zero_pack, d("5")).is_err());
    }

    #[test]
    fn huge_quantities_overflow_into_an_error() {
        let requests = usage_charge(ChargeModel::PerUnit {
            unit_price: d("1000"),
        });
        let err = rate_charge(&requests, Decimal::MAX).unwrap_err();
        assert!(matches!(err, BillingError::Money(_)), "{err:?}");
        let p = plan("p", "EUR", vec![requests]);
        let usage = BTreeMap::from([("requests".to_owned(), d("1e20"))]);
        assert!(matches!(
            rate_period(&p, april(), 1, &usage),
            Err(BillingError::Money(_))
        ));
    }

    #[test]
    fn rate_period_bills_the_shipped_plans() {
        let catalogue = PlanCatalogue::default_catalogue().unwrap();
        let usage = BTreeMap::from([("ai_requests".to_owned(), d("250000"))]);
        let department = catalogue.get("department", None).unwrap();
        let lines = rate_period(department, april(), 20, &usage).unwrap();
        let got: Vec<(&str, i64, LineKind)> = lines
            .iter()
            .map(|l| (l.charge_code.as_str(), l.amount, l.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("platform", 49_900, LineKind::Fixed),
                // 20 seats × 9
                ("seats", 18_000, LineKind::Fixed),
                // 250 000 requests fall in the second volume tier: × 0.0012
                ("ai_requests", 30_000, LineKind::Usage),
            ]
        );
        assert_eq!(lines[1].quantity, d("20"));
        assert!(
            lines
                .iter()
                .all(|l| (l.period_start, l.period_end) == april())
        );

        let individual = catalogue.get("individual", None).unwrap();
        let lines = rate_period(individual, april(), 1, &BTreeMap::new()).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].amount, 900);
    }

    #[test]
    fn minimum_top_up_line_fills_the_commitment() {
        let catalogue = PlanCatalogue::default_catalogue().unwrap();
        let enterprise = catalogue.get("enterprise", None).unwrap();
        // 1001 requests: 2 packages, 3.00; with the 2000 fee, 2003.00 < 2500.
        let light = BTreeMap::from([("ai_requests".to_owned(), d("1001"))]);
        let lines = rate_period(enterprise, april(), 40, &light).unwrap();
        let top_up = lines.last().unwrap();
        assert_eq!(top_up.kind, LineKind::Minimum);
        assert_eq!(top_up.amount, 49_700);
        assert_eq!(lines.iter().map(|l| l.amount).sum::<i64>(), 250_000);
        // No usage at all still bills the minimum.
        let lines = rate_period(enterprise, april(), 40, &BTreeMap::new()).unwrap();
        assert_eq!(lines.iter().map(|l| l.amount).sum::<i64>(), 250_000);
        // 400 000 requests: 400 packages, 600.00; 2600.00 is above the minimum.
        let heavy = BTreeMap::from([("ai_requests".to_owned(), d("400000"))]);
        let lines = rate_period(enterprise, april(), 40, &heavy).unwrap();
        assert!(lines.iter().all(|l| l.kind != LineKind::Minimum));
        assert_eq!(lines.iter().map(|l| l.amount).sum::<i64>(), 260_000);
        // A zero minimum is no minimum.
        let mut zero = enterprise.clone();
        zero.minimum = Some(Decimal::ZERO);
        let lines = rate_period(&zero, april(), 40, &BTreeMap::new()).unwrap();
        assert!(lines.iter().all(|l| l.kind != LineKind::Minimum));
    }

    #[test]
    fn lines_are_rounded_to_the_currency_minor_units() {
        // JPY has no decimals: 999.5 yen is 1000 yen.
        let yen = plan("yen", "JPY", vec![flat(d("999.5"))]);
        let lines = rate_period(&yen, april(), 1, &BTreeMap::new()).unwrap();
        assert_eq!(lines[0].amount, 1000);
        // KWD has three: 1.2345 dinar is 1.235, 1235 fils.
        let dinar = plan("dinar", "KWD", vec![flat(d("1.2345"))]);
        let lines = rate_period(&dinar, april(), 1, &BTreeMap::new()).unwrap();
        assert_eq!(lines[0].amount, 1235);
        // Usage is rounded once per line, not per unit: 3 × 0.004 EUR = 0.012.
        let tiny = plan(
            "tiny",
            "EUR",
            vec![usage_charge(ChargeModel::PerUnit {
                unit_price: d("0.004"),
            })],
        );
        let usage = BTreeMap::from([("requests".to_owned(), d("3"))]);
        let lines = rate_period(&tiny, april(), 1, &usage).unwrap();
        assert_eq!(lines[0].amount, 1);
    }

    #[test]
    fn rate_period_refuses_an_empty_or_inverted_period() {
        let p = plan("p", "EUR", vec![flat(d("9"))]);
        let (start, end) = april();
        assert!(rate_period(&p, (start, start), 1, &BTreeMap::new()).is_err());
        assert!(rate_period(&p, (end, start), 1, &BTreeMap::new()).is_err());
    }

    #[test]
    fn invoice_lines_serialise_with_snake_case_kinds() {
        let mut l = line(1234);
        l.kind = LineKind::Proration;
        l.quantity = d("2.5");
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["kind"], "proration");
        assert_eq!(json["amount"], 1234);
        assert_eq!(json["quantity"], "2.5");
        let back: InvoiceLine = serde_json::from_value(json).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn totals_apply_tax_then_credit() {
        let eur = cur("EUR");
        let lines = [line(10_000), line(2_345)];
        // 123.45 × 19 % = 23.4555 → 23.46
        let t = totals(&lines, d("19"), 5_000, eur).unwrap();
        assert_eq!(
            t,
            Totals {
                subtotal: 12_345,
                tax: 2_346,
                credits_applied: 5_000,
                total: 9_691,
            }
        );
        // More credit than owed: the total is zero and the rest is kept.
        let t = totals(&lines, d("7.5"), 1_000_000, eur).unwrap();
        // 123.45 × 7.5 % = 9.25875 → 9.26
        assert_eq!((t.tax, t.credits_applied, t.total), (926, 13_271, 0));
    }

    #[test]
    fn credit_only_invoice_has_negative_tax_and_applies_no_credit() {
        let t = totals(&[line(-1_000)], d("19"), 5_000, cur("EUR")).unwrap();
        assert_eq!(
            t,
            Totals {
                subtotal: -1_000,
                tax: -190,
                credits_applied: 0,
                total: -1_190,
            }
        );
        // −0.05 × 10 % = −0.005 → −0.01 (half away from zero)
        let t = totals(&[line(-5)], d("10"), 0, cur("EUR")).unwrap();
        assert_eq!(t.tax, -1);
    }

    #[test]
    fn totals_refuse_bad_tax_rates_negative_credit_and_overflow() {
        let eur = cur("EUR");
        for rate in ["-1", "100.01", "150"] {
            assert!(
                matches!(
                    totals(&[], d(rate), 0, eur),
                    Err(BillingError::Validation { .. })
                ),
                "{rate}"
            );
        }
        assert!(totals(&[], d("100"), 0, eur).is_ok());
        assert!(matches!(
            totals(&[], d("19"), -1, eur),
            Err(BillingError::Validation { .. })
        ));
        assert!(matches!(
            totals(&[line(i64::MAX), line(1)], d("0"), 0, eur),
            Err(BillingError::Money(_))
        ));
        assert!(matches!(
            totals(&[line(i64::MAX)], d("19"), 0, eur),
            Err(BillingError::Money(_))
        ));
    }

    #[test]
    fn prorate_refuses_an_empty_or_inverted_period() {
        let (start, end) = april();
        for period in [(start, start), (end, start)] {
            let err = prorate(d("10"), period, start, end).unwrap_err();
            assert!(
                matches!(err, BillingError::Validation { ref field, .. } if field == "period"),
                "{err:?}"
            );
        }
        assert!(prorate(d("10"), april(), end, start).is_err());
    }

    #[test]
    fn prorate_counts_only_time_inside_the_period() {
        let (start, end) = april();
        let day = Duration::days(1);
        assert_eq!(prorate(d("30"), april(), start, end).unwrap(), d("30"));
        assert_eq!(
            prorate(d("30"), april(), start - day * 40, end + day * 40).unwrap(),
            d("30")
        );
        assert_eq!(
            prorate(d("30"), april(), start - day * 5, start + day * 3).unwrap(),
            d("3")
        );
        assert_eq!(prorate(d("30"), april(), end, end + day).unwrap(), d("0"));
        assert_eq!(
            prorate(d("30"), april(), start + day, start + day).unwrap(),
            d("0")
        );
    }

    #[test]
    fn upgrade_mid_period_credits_the_old_plan_and_charges_the_new() {
        let (start, end) = april();
        let old = plan("individual", "EUR", vec![flat(d("9"))]);
        let new = plan("team", "EUR", vec![per_seat(d("12"))]);
        // 10 of April's 30 days used: keep 3.00 of the 9.00 paid, pay 2/3 of
        // 3 seats × 12 = 24.00 for the rest.
        let lines = plan_change(&old, &new, 3, april(), start + Duration::days(10)).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (
                lines[0].kind,
                lines[0].amount,
                lines[0].charge_code.as_str()
            ),
            (LineKind::Credit, -600, "individual")
        );
        assert_eq!(
            (
                lines[1].kind,
                lines[1].amount,
                lines[1].charge_code.as_str()
            ),
            (LineKind::Proration, 2400, "team")
        );
        assert_eq!(
            (lines[1].period_start, lines[1].period_end),
            (start + Duration::days(10), end)
        );
        // At the start: everything back, all of the new plan; at the end: nothing.
        let lines = plan_change(&old, &new, 3, april(), start).unwrap();
        assert_eq!((lines[0].amount, lines[1].amount), (-900, 3600));
        let lines = plan_change(&old, &new, 3, april(), end).unwrap();
        assert_eq!((lines[0].amount, lines[1].amount), (0, 0));
    }

    #[test]
    fn plan_change_skips_charges_that_are_not_prorated_and_usage() {
        let (start, _) = april();
        let mut setup = flat(d("50"));
        setup.code = "support".to_owned();
        setup.prorated = false;
        let old = plan("old", "EUR", vec![flat(d("30")), setup.clone()]);
        let new = plan(
            "new",
            "EUR",
            vec![
                flat(d("60")),
                setup,
                usage_charge(ChargeModel::PerUnit { unit_price: d("1") }),
            ],
        );
        let lines = plan_change(&old, &new, 1, april(), start + Duration::days(15)).unwrap();
        // Half of 30 back, half of 60 charged; the 50 and usage untouched.
        assert_eq!((lines[0].amount, lines[1].amount), (-1500, 3000));
    }

    #[test]
    fn plan_change_refuses_mixed_currencies_and_instants_outside_the_period() {
        let (start, end) = april();
        let eur = plan("a", "EUR", vec![flat(d("9"))]);
        let usd = plan("b", "USD", vec![flat(d("9"))]);
        assert!(matches!(
            plan_change(&eur, &usd, 1, april(), start),
            Err(BillingError::Money(_))
        ));
        for instant in [start - Duration::seconds(1), end + Duration::seconds(1)] {
            assert!(matches!(
                plan_change(&eur, &eur, 1, april(), instant),
                Err(BillingError::Validation { .. })
            ));
        }
        assert!(plan_change(&eur, &eur, 1, (end, start), start).is_err());
    }

    /// Amounts in thousandths of a major unit, so that sub-cent prices and
    /// rounding are exercised.
    fn milli() -> impl Strategy<Value = Decimal> {
        (0_i64..=5_000_000).prop_map(|m| Decimal::new(m, 3))
    }

    proptest! {
        #[test]
        fn invoice_total_equals_sum_of_items_plus_tax_minus_credits(
            amounts in prop::collection::vec(-1_000_000_000_000_i64..=1_000_000_000_000, 0..20),
            tax_hundredths in 0_i64..=10_000,
            credit in 0_i64..=100_000_000_000_000,
            code in prop::sample::select(vec!["EUR", "JPY", "KWD"]),
        ) {
            let lines: Vec<InvoiceLine> = amounts.iter().copied().map(line).collect();
            let rate = Decimal::new(tax_hundredths, 2);
            let t = totals(&lines, rate, credit, cur(code)).unwrap();
            let sum: i64 = amounts.iter().sum();
            prop_assert_eq!(t.subtotal, sum);
            prop_assert_eq!(t.total, sum + t.tax - t.credits_applied);
            let exact_tax = Decimal::from(sum) * rate / Decimal::ONE_HUNDRED;
            prop_assert!((Decimal::from(t.tax) - exact_tax).abs() <= d("0.5"));
            prop_assert!(t.credits_applied >= 0 && t.credits_applied <= credit);
            prop_assert!(t.credits_applied <= (sum + t.tax).max(0));
            if sum + t.tax >= 0 {
                prop_assert!(t.total >= 0);
            }
        }

        #[test]
        fn plan_change_is_within_one_minor_unit_of_the_exact_owed_amount(
            (days, elapsed) in (28_i64..=366).prop_flat_map(|days| (Just(days), 0..=days * 86_400)),
            start_secs in 1_600_000_000_i64..1_900_000_000,
            old_flat in milli(),
            old_seat in milli(),
            new_flat in milli(),
            new_seat in milli(),
            seats in 0_u64..=500,
            code in prop::sample::select(vec!["EUR", "JPY", "KWD"]),
        ) {
            let length = days * 86_400;
            let period = (at(start_secs), at(start_secs + length));
            let instant = at(start_secs + elapsed);
            let old = plan("old", code, vec![flat(old_flat), per_seat(old_seat)]);
            let new = plan("new", code, vec![flat(new_flat), per_seat(new_seat)]);

            // What the customer was billed for the old plan's period.
            let old_full: i64 = rate_period(&old, period, seats, &BTreeMap::new())
                .unwrap()
                .iter()
                .map(|l| l.amount)
                .sum();
            let lines = plan_change(&old, &new, seats, period, instant).unwrap();
            let credit = lines.iter().find(|l| l.kind == LineKind::Credit).unwrap().amount;
            let proration = lines.iter().find(|l| l.kind == LineKind::Proration).unwrap().amount;
            prop_assert!(credit <= 0);
            prop_assert!(proration >= 0);

            let seats_dec = Decimal::from(seats);
            let old_exact = old_flat + old_seat * seats_dec;
            let new_exact = new_flat + new_seat * seats_dec;
            let f = Decimal::from(elapsed) / Decimal::from(length);
            let exact = old_exact * f + new_exact * (Decimal::ONE - f);
            let scale = Decimal::from(10_i64.pow(cur(code).minor_units()));
            let paid = Decimal::from(old_full + credit + proration);
            let gap = (paid - exact * scale).abs();
            prop_assert!(gap <= Decimal::ONE, "paid {} exact {} gap {}", paid, exact * scale, gap);
            // Complementary rounding keeps it within half a unit (plus the
            // last digit of the test's own division).
            prop_assert!(gap <= d("0.500000000001"), "gap {}", gap);
        }

        #[test]
        fn prorate_over_complementary_intervals_adds_up_to_the_whole(
            mantissa in 0_i64..=1_000_000_000_000,
            scale in 0_u32..=4,
            (length, split) in (1_i64..=400 * 86_400)
                .prop_flat_map(|len| (Just(len), -86_400..=len + 86_400)),
            start_secs in 1_600_000_000_i64..1_900_000_000,
        ) {
            let amount = Decimal::new(mantissa, scale);
            let period = (at(start_secs), at(start_secs + length));
            let before = at(start_secs - 86_400);
            let middle = at(start_secs + split);
            let after = at(start_secs + length + 86_400);
            let first = prorate(amount, period, before, middle).unwrap();
            let second = prorate(amount, period, middle, after).unwrap();
            prop_assert!(first >= Decimal::ZERO && second >= Decimal::ZERO);
            prop_assert!(
                (first + second - amount).abs() <= d("0.000000000001"),
                "{} + {} != {}", first, second, amount
            );
        }

        #[test]
        fn graduated_never_charges_less_than_volume_when_prices_fall(
            quantity in 0_i64..=10_000,
        ) {
            // With falling unit prices and no fees, pricing every unit at the
            // final tier (volume) is never dearer than graduated.
            let tiers = vec![
                PriceTier { up_to: Some(d("100")), unit_price: d("1.00"), flat_fee: Decimal::ZERO },
                PriceTier { up_to: Some(d("1000")), unit_price: d("0.50"), flat_fee: Decimal::ZERO },
                PriceTier { up_to: None, unit_price: d("0.10"), flat_fee: Decimal::ZERO },
            ];
            let g = rate_charge(&usage_charge(ChargeModel::Graduated { tiers: tiers.clone() }), Decimal::from(quantity)).unwrap();
            let v = rate_charge(&usage_charge(ChargeModel::Volume { tiers }), Decimal::from(quantity)).unwrap();
            prop_assert!(g >= v);
        }
    }
}
