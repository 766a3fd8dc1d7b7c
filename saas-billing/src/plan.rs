//! Plans and their charges, as data: the catalogue a tenant subscribes from.
//!
//! A [`PlanCatalogue`] is read from TOML (the shipped default is
//! `saas-billing/plans.toml`) and checked as a whole before anyone can use
//! it: every constructor validates. Prices are exact [`Decimal`]s in *major*
//! units of the plan's currency (`0.002` EUR per request is fine); they are
//! rounded to minor units only once per invoice line, by
//! [`crate::rating`].

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use saas_core::tenant::Tier;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::money::Currency;

/// The catalogue shipped with the crate.
const DEFAULT_CATALOGUE: &str = include_str!("../plans.toml");

/// Longest plan, charge, metric or feature code.
const MAX_CODE_LEN: usize = 64;
/// Longest display name of a plan or charge.
const MAX_NAME_LEN: usize = 200;
/// Longest trial and longest payment term, in days.
const MAX_DAYS: u32 = 365;

/// A validated set of plans, each identified by its code and version.
///
/// ```
/// # use saas_billing::plan::PlanCatalogue;
/// let catalogue = PlanCatalogue::default_catalogue().unwrap();
/// let team = catalogue.get("team", None).unwrap();
/// assert_eq!(team.currency.to_string(), "EUR");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCatalogue")]
pub struct PlanCatalogue {
    plans: Vec<Plan>,
}

/// The catalogue as read, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    plans: Vec<Plan>,
}

impl TryFrom<RawCatalogue> for PlanCatalogue {
    type Error = BillingError;

    fn try_from(raw: RawCatalogue) -> Result<Self, Self::Error> {
        let catalogue = Self { plans: raw.plans };
        catalogue.validate()?;
        Ok(catalogue)
    }
}

impl PlanCatalogue {
    /// The catalogue shipped with the crate (`plans.toml`): one plan for each
    /// [`Tier`].
    ///
    /// # Errors
    ///
    /// [`BillingError::Validation`] if the shipped file is invalid, which a
    /// test rules out.
    pub fn default_catalogue() -> Result<Self, BillingError> {
        Self::from_toml(DEFAULT_CATALOGUE)
    }

    /// Parses and validates a catalogue written in TOML, as an array of
    /// tables `[[plans]]`.
    ///
    /// # Errors
    ///
    /// [`BillingError::Validation`] for TOML that does not parse, an unknown
    /// field, or a plan or charge that breaks a rule.
    pub fn from_toml(text: &str) -> Result<Self, BillingError> {
        let raw: RawCatalogue = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map_or(0, |before| before.matches('\n').count() + 1);
            BillingError::validation("catalogue", format!("{} (line {line})", e.message().trim()))
        })?;
        Self::try_from(raw)
    }

    /// Every plan, in the order they were defined.
    #[must_use]
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// The plan `code` at `version`, or its newest version when `version` is
    /// `None`.
    #[must_use]
    pub fn get(&self, code: &str, version: Option<u32>) -> Option<&Plan> {
        let mut versions = self.plans.iter().filter(|p| p.code == code);
        match version {
            Some(v) => versions.find(|p| p.version == v),
            None => versions.max_by_key(|p| p.version),
        }
    }

    /// Adds the plans of `other` (say, a tenant's custom plans) to this
    /// catalogue. Nothing is added unless all can be.
    ///
    /// # Errors
    ///
    /// [`BillingError::Validation`] if a plan code and version of `other` is
    /// already here.
    pub fn extend(&mut self, other: PlanCatalogue) -> Result<(), BillingError> {
        if let Some(dup) = other
            .plans
            .iter()
            .find(|p| self.get(&p.code, Some(p.version)).is_some())
        {
            return Err(BillingError::validation(
                "plans",
                format!(
                    "plan {} version {} is already in the catalogue",
                    dup.code, dup.version
                ),
            ));
        }
        self.plans.extend(other.plans);
        Ok(())
    }

    /// Checks every plan and that no code and version appears twice.
    pub(crate) fn validate(&self) -> Result<(), BillingError> {
        let mut seen = BTreeSet::new();
        for plan in &self.plans {
            plan.validate()?;
            if !seen.insert((plan.code.as_str(), plan.version)) {
                return Err(BillingError::validation(
                    "plans",
                    format!(
                        "plan {} version {} is defined twice",
                        plan.code, plan.version
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One version of a plan: what it costs, how often, and what it unlocks.
///
/// Plans are immutable once a tenant subscribes: a price change is a new
/// `version` of the same `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Stable identifier: lower-case `a-z`, `0-9`, `_`, `-`, 1 to 64
    /// characters.
    pub code: String,
    /// Version of the plan, from 1.
    pub version: u32,
    /// Name shown to customers.
    pub name: String,
    /// The tenant tier the plan grants.
    pub tier: Tier,
    /// Currency of every price in the plan.
    pub currency: Currency,
    /// How long a billing period is.
    pub interval: Interval,
    /// Where billing periods start.
    pub anchor: Anchor,
    /// Free days before the first period is billed.
    #[serde(default)]
    pub trial_days: u32,
    /// When a change to a cheaper plan takes effect.
    #[serde(default)]
    pub downgrade: DowngradeTiming,
    /// When a cancellation takes effect.
    #[serde(default)]
    pub cancel: CancelTiming,
    /// Days after issue an invoice is due.
    #[serde(default = "default_net_terms_days")]
    pub net_terms_days: u32,
    /// Minimum commitment per period in major units; `None` or zero means
    /// none. When the period's lines add up to less, a top-up line is added.
    #[serde(default)]
    pub minimum: Option<Decimal>,
    /// What is billed each period.
    #[serde(default)]
    pub charges: Vec<Charge>,
    /// Feature flags the plan unlocks, e.g. `api_access`, `sso`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Numeric limits the plan grants.
    #[serde(default)]
    pub limits: PlanLimits,
}

fn default_net_terms_days() -> u32 {
    30
}

impl Plan {
    /// The flat and per-seat charges of one full period for `seats` seats,
    /// in major units, before rounding. A change to a plan with a higher
    /// amount is an upgrade (immediate, with a prorated charge); to a lower
    /// one, a downgrade (see [`Plan::downgrade`]).
    ///
    /// Saturates at [`Decimal::MAX`] rather than overflowing.
    #[must_use]
    pub fn recurring_fixed(&self, seats: u64) -> Decimal {
        crate::rating::fixed_amount(self, seats, false).unwrap_or(Decimal::MAX)
    }

    /// Checks every rule of a plan and its charges.
    pub(crate) fn validate(&self) -> Result<(), BillingError> {
        check_code("plan.code", &self.code)?;
        let path = format!("plans.{}@{}", self.code, self.version);
        if self.version == 0 {
            return Err(BillingError::validation(
                format!("{path}.version"),
                "must be at least 1",
            ));
        }
        check_name(&format!("{path}.name"), &self.name)?;
        if self.trial_days > MAX_DAYS {
            return Err(BillingError::validation(
                format!("{path}.trial_days"),
                format!("must be at most {MAX_DAYS}"),
            ));
        }
        if self.net_terms_days > MAX_DAYS {
            return Err(BillingError::validation(
                format!("{path}.net_terms_days"),
                format!("must be at most {MAX_DAYS}"),
            ));
        }
        if self.minimum.is_some_and(|m| m < Decimal::ZERO) {
            return Err(BillingError::validation(
                format!("{path}.minimum"),
                "must not be negative",
            ));
        }
        let mut codes = BTreeSet::new();
        for charge in &self.charges {
            charge.validate(&format!("{path}.charges"))?;
            if !codes.insert(charge.code.as_str()) {
                return Err(BillingError::validation(
                    format!("{path}.charges.{}", charge.code),
                    "charge code is used twice",
                ));
            }
        }
        let mut features = BTreeSet::new();
        for feature in &self.features {
            check_code(&format!("{path}.features"), feature)?;
            if !features.insert(feature.as_str()) {
                return Err(BillingError::validation(
                    format!("{path}.features"),
                    format!("{feature} is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// Length of a billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One calendar month.
    Monthly,
    /// One year.
    Yearly,
}

/// Where billing periods start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anchor {
    /// On the day of the subscription (e.g. the 17th of each month).
    Anniversary,
    /// On the first day of each calendar month or year; the first period is
    /// prorated.
    Calendar,
}

/// When a change to a cheaper plan takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DowngradeTiming {
    /// At the end of the current period, without credit.
    #[default]
    AtPeriodEnd,
    /// At once, with a prorated credit for the unused part of the period.
    Immediate,
}

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelTiming {
    /// At the end of the current period, which stays usable.
    #[default]
    AtPeriodEnd,
    /// At once.
    Immediate,
}

/// Numeric limits a plan grants; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Most member accounts.
    #[serde(default)]
    pub max_users: Option<u64>,
    /// Most workspaces.
    #[serde(default)]
    pub max_workspaces: Option<u64>,
    /// Most AI/API requests per month.
    #[serde(default)]
    pub monthly_requests: Option<u64>,
}

/// One thing billed each period: a fixed fee, seats, or metered usage.
///
/// In TOML the model's fields sit beside the charge's own:
///
/// ```toml
/// [[plans.charges]]
/// code = "ai_requests"
/// name = "AI requests"
/// metric = "ai_requests"
/// model = "package"
/// size = "1000"
/// price = "1.50"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCharge")]
pub struct Charge {
    /// Identifier, unique within the plan (same rules as a plan code).
    pub code: String,
    /// Name shown on the invoice.
    pub name: String,
    /// The billable metric whose usage is charged: required for usage models
    /// (`per_unit`, `graduated`, `volume`, `package`), absent for `flat` and
    /// `per_seat`.
    pub metric: Option<String>,
    /// How the quantity becomes an amount.
    #[serde(flatten)]
    pub model: ChargeModel,
    /// Units not charged before the model applies (e.g. the first 3 seats or
    /// 10 000 requests). Must be zero for `flat`.
    pub free_units: Decimal,
    /// Whether a mid-period plan change prorates this charge (`flat` and
    /// `per_seat` only; ignored for usage, which is billed as used).
    pub prorated: bool,
}

impl Charge {
    /// Whether the charge is billed from metered usage rather than fixed.
    pub(crate) fn is_usage(&self) -> bool {
        !matches!(
            self.model,
            ChargeModel::Flat { .. } | ChargeModel::PerSeat { .. }
        )
    }

    /// Checks the charge; `path` names where it sits, for errors.
    pub(crate) fn validate(&self, path: &str) -> Result<(), BillingError> {
        check_code(&format!("{path}.code"), &self.code)?;
        let path = format!("{path}.{}", self.code);
        check_name(&format!("{path}.name"), &self.name)?;
        match (&self.metric, self.is_usage()) {
            (Some(metric), true) => check_code(&format!("{path}.metric"), metric)?,
            (None, true) => {
                return Err(BillingError::validation(
                    format!("{path}.metric"),
                    "a usage charge needs a metric",
                ));
            }
            (Some(_), false) => {
                return Err(BillingError::validation(
                    format!("{path}.metric"),
                    "a flat or per_seat charge takes no metric",
                ));
            }
            (None, false) => {}
        }
        non_negative(&format!("{path}.free_units"), self.free_units)?;
        match &self.model {
            ChargeModel::Flat { amount } => {
                non_negative(&format!("{path}.amount"), *amount)?;
                if !self.free_units.is_zero() {
                    return Err(BillingError::validation(
                        format!("{path}.free_units"),
                        "a flat charge has no units to make free",
                    ));
                }
            }
            ChargeModel::PerSeat { unit_price } | ChargeModel::PerUnit { unit_price } => {
                non_negative(&format!("{path}.unit_price"), *unit_price)?;
            }
            ChargeModel::Graduated { tiers } | ChargeModel::Volume { tiers } => {
                validate_tiers(&format!("{path}.tiers"), tiers)?;
            }
            ChargeModel::Package { size, price } => {
                if *size <= Decimal::ZERO {
                    return Err(BillingError::validation(
                        format!("{path}.size"),
                        "must be greater than zero",
                    ));
                }
                non_negative(&format!("{path}.price"), *price)?;
            }
        }
        Ok(())
    }
}

/// How a charge turns a quantity into an amount. Prices are in major units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChargeModel {
    /// A fixed amount per period.
    Flat {
        /// The amount per period.
        amount: Decimal,
    },
    /// A price per seat per period.
    PerSeat {
        /// The price of one seat.
        unit_price: Decimal,
    },
    /// A price per unit used.
    PerUnit {
        /// The price of one unit.
        unit_price: Decimal,
    },
    /// Each unit priced by the tier it falls in (the first 100 at one price,
    /// the next 900 at another, ...).
    Graduated {
        /// The tiers, ascending.
        tiers: Vec<PriceTier>,
    },
    /// Every unit priced at the tier the total falls in.
    Volume {
        /// The tiers, ascending.
        tiers: Vec<PriceTier>,
    },
    /// A price per started package of `size` units (1001 units in packages
    /// of 1000 are two packages).
    Package {
        /// Units in one package, above zero.
        size: Decimal,
        /// The price of one package.
        price: Decimal,
    },
}

/// One tier of a graduated or volume charge. A tier covers the quantities
/// above the previous tier's `up_to`, up to and including its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    /// Upper bound of the tier, inclusive; `None` (only the last tier, which
    /// must be unbounded) means no bound.
    #[serde(default)]
    pub up_to: Option<Decimal>,
    /// Price of one unit in this tier.
    pub unit_price: Decimal,
    /// Added once when the quantity reaches the tier.
    #[serde(default)]
    pub flat_fee: Decimal,
}

/// A charge as written, with every model's fields optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCharge {
    code: String,
    name: String,
    #[serde(default)]
    metric: Option<String>,
    model: ModelKind,
    #[serde(default)]
    amount: Option<Decimal>,
    #[serde(default)]
    unit_price: Option<Decimal>,
    #[serde(default)]
    tiers: Option<Vec<PriceTier>>,
    #[serde(default)]
    size: Option<Decimal>,
    #[serde(default)]
    price: Option<Decimal>,
    #[serde(default)]
    free_units: Decimal,
    #[serde(default)]
    prorated: Option<bool>,
}

/// The `model` tag of a charge.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ModelKind {
    Flat,
    PerSeat,
    PerUnit,
    Graduated,
    Volume,
    Package,
}

impl TryFrom<RawCharge> for Charge {
    type Error = BillingError;

    fn try_from(raw: RawCharge) -> Result<Self, Self::Error> {
        let (kind, allowed): (&str, &[&str]) = match raw.model {
            ModelKind::Flat => ("flat", &["amount"]),
            ModelKind::PerSeat => ("per_seat", &["unit_price"]),
            ModelKind::PerUnit => ("per_unit", &["unit_price"]),
            ModelKind::Graduated => ("graduated", &["tiers"]),
            ModelKind::Volume => ("volume", &["tiers"]),
            ModelKind::Package => ("package", &["size", "price"]),
        };
        let present = [
            ("amount", raw.amount.is_some()),
            ("unit_price", raw.unit_price.is_some()),
            ("tiers", raw.tiers.is_some()),
            ("size", raw.size.is_some()),
            ("price", raw.price.is_some()),
        ];
        for (field, is_present) in present {
            if is_present && !allowed.contains(&field) {
                return Err(BillingError::validation(
                    format!("charges.{}.{field}", raw.code),
                    format!("not used by a {kind} charge"),
                ));
            }
        }
        let code = raw.code;
        let need = |value: Option<Decimal>, field: &str| {
            value.ok_or_else(|| {
                BillingError::validation(
                    format!("charges.{code}.{field}"),
                    format!("required by a {kind} charge"),
                )
            })
        };
        let model = match raw.model {
            ModelKind::Flat => ChargeModel::Flat {
                amount: need(raw.amount, "amount")?,
            },
            ModelKind::PerSeat => ChargeModel::PerSeat {
                unit_price: need(raw.unit_price, "unit_price")?,
            },
            ModelKind::PerUnit => ChargeModel::PerUnit {
                unit_price: need(raw.unit_price, "unit_price")?,
            },
            ModelKind::Graduated => ChargeModel::Graduated {
                tiers: raw.tiers.unwrap_or_default(),
            },
            ModelKind::Volume => ChargeModel::Volume {
                tiers: raw.tiers.unwrap_or_default(),
            },
            ModelKind::Package => ChargeModel::Package {
                size: need(raw.size, "size")?,
                price: need(raw.price, "price")?,
            },
        };
        Ok(Self {
            code,
            name: raw.name,
            metric: raw.metric,
            model,
            free_units: raw.free_units,
            prorated: raw.prorated.unwrap_or(true),
        })
    }
}

/// Tiers: at least one; `up_to` above zero and strictly ascending; only the
/// last unbounded, and it must be; prices and fees not negative.
fn validate_tiers(path: &str, tiers: &[PriceTier]) -> Result<(), BillingError> {
    if tiers.is_empty() {
        return Err(BillingError::validation(path, "needs at least one tier"));
    }
    let last = tiers.len() - 1;
    let mut floor = Decimal::ZERO;
    for (i, tier) in tiers.iter().enumerate() {
        non_negative(&format!("{path}[{i}].unit_price"), tier.unit_price)?;
        non_negative(&format!("{path}[{i}].flat_fee"), tier.flat_fee)?;
        match (tier.up_to, i == last) {
            (Some(up_to), false) => {
                if up_to <= floor {
                    return Err(BillingError::validation(
                        format!("{path}[{i}].up_to"),
                        "must be above zero and above the previous tier's up_to",
                    ));
                }
                floor = up_to;
            }
            (None, true) => {}
            (None, false) => {
                return Err(BillingError::validation(
                    format!("{path}[{i}].up_to"),
                    "only the last tier may be unbounded",
                ));
            }
            (Some(_), true) => {
                return Err(BillingError::validation(
                    format!("{path}[{i}].up_to"),
                    "the last tier must be unbounded",
                ));
            }
        }
    }
    Ok(())
}

fn non_negative(field: &str, value: Decimal) -> Result<(), BillingError> {
    if value < Decimal::ZERO {
        Err(BillingError::validation(field, "must not be negative"))
    } else {
        Ok(())
    }
}

/// Codes: lower-case ASCII letters, digits, `_` and `-`, 1 to 64 long.
fn check_code(field: &str, code: &str) -> Result<(), BillingError> {
    let ok = !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BillingError::validation(
            field,
            format!("must be 1 to {MAX_CODE_LEN} characters of a-z, 0-9, _ and -"),
        ))
    }
}

fn check_name(field: &str, name: &str) -> Result<(), BillingError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN {
        Err(BillingError::validation(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters and not blank"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid one-plan catalogue; tests break one thing in it.
    const GOOD: &str = r#"
        [[plans]]
        code = "basic"
        version = 1
        name = "Basic"
        tier = "team"
        currency = "EUR"
        interval = "monthly"
        anchor = "calendar"

        [[plans.charges]]
        code = "base"
        name = "Base fee"
        model = "flat"
        amount = "10"

        [[plans.charges]]
        code = "requests"
        name = "Requests"
        metric = "requests"
        model = "graduated"
        tiers = [
            { up_to = "100", unit_price = "0" },
            { unit_price = "0.01" },
        ]
    "#;

    fn refused(text: &str) -> String {
        match PlanCatalogue::from_toml(text) {
            Ok(c) => panic!("accepted an invalid catalogue: {c:?}"),
            Err(BillingError::Validation { field, reason }) => format!("{field}: {reason}"),
            Err(other) => panic!("unexpected error kind: {other:?}"),
        }
    }

    #[test]
    fn a_valid_catalogue_loads_with_defaults_filled_in() {
        let c = PlanCatalogue::from_toml(GOOD).unwrap();
        let plan = c.get("basic", Some(1)).unwrap();
        assert_eq!(plan.trial_days, 0);
        assert_eq!(plan.net_terms_days, 30);
        assert_eq!(plan.cancel, CancelTiming::AtPeriodEnd);
        assert_eq!(plan.downgrade, DowngradeTiming::AtPeriodEnd);
        assert_eq!(plan.limits, PlanLimits::default());
        assert!(plan.charges[0].prorated);
        assert_eq!(plan.charges[1].free_units, Decimal::ZERO);
    }

    #[test]
    fn shipped_catalogue_loads_with_four_plans_mapping_the_four_tiers() {
        let c = PlanCatalogue::default_catalogue().unwrap();
        assert_eq!(c.plans().len(), 4);
        for tier in Tier::ALL {
            let plan = c.get(tier.as_str(), None).unwrap();
            assert_eq!(plan.tier, tier);
            assert_eq!(plan.version, 1);
            assert_eq!(plan.currency.as_str(), "EUR");
            assert_eq!(plan.interval, Interval::Monthly);
            let limits = tier.limits();
            assert_eq!(plan.limits.max_users, limits.max_users);
            assert_eq!(plan.limits.max_workspaces, limits.max_workspaces);
            assert_eq!(plan.limits.monthly_requests, limits.monthly_requests);
            let expected = saas_policy::entitlements(tier);
            let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            let mut got: Vec<&str> = plan.features.iter().map(String::as_str).collect();
            got.sort_unstable();
            expected.sort_unstable();
            assert_eq!(got, expected, "features of {tier:?}");
            for charge in plan.charges.iter().filter(|ch| ch.is_usage()) {
                assert_eq!(charge.metric.as_deref(), Some("ai_requests"));
            }
        }
        let enterprise = c.get("enterprise", None).unwrap();
        assert_eq!(enterprise.anchor, Anchor::Anniversary);
        assert_eq!(enterprise.net_terms_days, 45);
        assert_eq!(enterprise.minimum, Some(Decimal::from(2500)));
        assert_eq!(
            c.get("department", None).unwrap().downgrade,
            DowngradeTiming::Immediate
        );
        assert_eq!(c.get("individual", None).unwrap().trial_days, 14);
    }

    #[test]
    fn shipped_plans_are_ordered_by_recurring_fixed_price() {
        let c = PlanCatalogue::default_catalogue().unwrap();
        let price = |code: &str| c.get(code, None).unwrap().recurring_fixed(5);
        assert_eq!(price("individual"), Decimal::from(9));
        assert_eq!(price("team"), Decimal::from(60));
        assert_eq!(price("department"), Decimal::from(499 + 45));
        assert_eq!(price("enterprise"), Decimal::from(2000));
    }

    #[test]
    fn catalogue_round_trips_through_json() {
        let c = PlanCatalogue::default_catalogue().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""model":"package""#), "{json}");
        let back: PlanCatalogue = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn get_without_version_returns_the_newest() {
        let mut c = PlanCatalogue::from_toml(GOOD).unwrap();
        let v3 = GOOD.replace("version = 1", "version = 3");
        let v2 = GOOD.replace("version = 1", "version = 2");
        c.extend(PlanCatalogue::from_toml(&v3).unwrap()).unwrap();
        c.extend(PlanCatalogue::from_toml(&v2).unwrap()).unwrap();
        assert_eq!(c.get("basic", None).unwrap().version, 3);
        assert_eq!(c.get("basic", Some(2)).unwrap().version, 2);
        assert!(c.get("basic", Some(4)).is_none());
        assert!(c.get("other", None).is_none());
    }

    #[test]
    fn catalogue_refuses_duplicate_plan_version() {
        let twice = format!("{GOOD}\n{GOOD}");
        assert!(refused(&twice).contains("defined twice"));

        let mut c = PlanCatalogue::from_toml(GOOD).unwrap();
        let err = c
            .extend(PlanCatalogue::from_toml(GOOD).unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("already in the catalogue"),
            "{err}"
        );
        assert_eq!(c.plans().len(), 1, "a refused extend adds nothing");
    }

    #[test]
    fn catalogue_refuses_unsorted_tiers() {
        let text = GOOD.replace(
            r#"{ up_to = "100", unit_price = "0" },"#,
            r#"{ up_to = "100", unit_price = "0" }, { up_to = "50", unit_price = "1" },"#,
        );
        assert!(refused(&text).contains("tiers[1].up_to"));
        let bounded_last = GOOD.replace(
            r#"{ unit_price = "0.01" },"#,
            r#"{ up_to = "1000", unit_price = "0.01" },"#,
        );
        assert!(refused(&bounded_last).contains("last tier must be unbounded"));
        let empty = GOOD.replace(
            r#"tiers = [
            { up_to = "100", unit_price = "0" },
            { unit_price = "0.01" },
        ]"#,
            "tiers = []",
        );
        assert!(refused(&empty).contains("at least one tier"));
        let negative = GOOD.replace(r#"unit_price = "0.01""#, r#"unit_price = "-0.01""#);
        assert!(refused(&negative).contains("must not be negative"));
    }

    #[test]
    fn catalogue_refuses_flat_charge_with_metric() {
        let text = GOOD.replace(
            r#"name = "Base fee""#,
            "name = \"Base fee\"\nmetric = \"requests\"",
        );
        assert!(refused(&text).contains("takes no metric"));
    }

    #[test]
    fn catalogue_refuses_usage_charge_without_metric() {
        let text = GOOD.replace(r#"metric = "requests""#, "");
        assert!(refused(&text).contains("needs a metric"));
    }

    #[test]
    fn catalogue_refuses_bad_currency() {
        for bad in ["eur", "EURO", "E1R"] {
            let text = GOOD.replace(r#"currency = "EUR""#, &format!("currency = {bad:?}"));
            assert!(refused(&text).contains("iso 4217"), "{bad}");
        }
    }

    #[test]
    fn catalogue_refuses_unknown_fields_and_misplaced_model_fields() {
        let text = GOOD.replace(
            r#"anchor = "calendar""#,
            "anchor = \"calendar\"\ncolour = 1",
        );
        assert!(refused(&text).contains("colour"));
        let text = GOOD.replace(r#"amount = "10""#, "amount = \"10\"\nunit_price = \"1\"");
        assert!(refused(&text).contains("not used by a flat charge"));
        let text = GOOD.replace(r#"amount = "10""#, "");
        assert!(refused(&text).contains("required by a flat charge"));
        let text = GOOD.replace(r#"model = "flat""#, r#"model = "bespoke""#);
        assert!(refused(&text).contains("bespoke"));
    }

    #[test]
    fn catalogue_refuses_bad_codes_versions_and_amounts() {
        let bad_code = GOOD.replace(r#"code = "basic""#, r#"code = "Basic Plan""#);
        assert!(refused(&bad_code).contains("plan.code"));
        let zero_version = GOOD.replace("version = 1", "version = 0");
        assert!(refused(&zero_version).contains("at least 1"));
        let free_flat = GOOD.replace(r#"amount = "10""#, "amount = \"10\"\nfree_units = 1");
        assert!(refused(&free_flat).contains("no units to make free"));
        let min = GOOD.replace(
            r#"anchor = "calendar""#,
            "anchor = \"calendar\"\nminimum = -5",
        );
        assert!(refused(&min).contains("minimum"));
        let dup_charge = GOOD.replace(r#"code = "requests""#, r#"code = "base""#);
        assert!(refused(&dup_charge).contains("used twice"));
        let package = GOOD.replace(
            "model = \"flat\"\n        amount = \"10\"",
            "metric = \"x\"\n        model = \"package\"\n        size = 0\n        price = 1",
        );
        assert!(refused(&package).contains("greater than zero"));
    }

    #[test]
    fn toml_numbers_and_strings_both_give_exact_decimals() {
        let text = GOOD.replace(r#"unit_price = "0.01""#, "unit_price = 0.002");
        let c = PlanCatalogue::from_toml(&text).unwrap();
        let plan = c.get("basic", None).unwrap();
        let ChargeModel::Graduated { tiers } = &plan.charges[1].model else {
            panic!("not graduated");
        };
        assert_eq!(tiers[1].unit_price, Decimal::new(2, 3));
    }
}
