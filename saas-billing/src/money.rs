//! Money: ISO 4217 currencies, amounts held as whole minor units (`i64`), and
//! the single rounding rule that turns an exact [`Decimal`] amount in major
//! units into minor units. No floating point is ever used for money.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::BillingError;

/// Currencies whose minor unit is the major unit (no decimals).
const ZERO_DECIMAL: [&str; 8] = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"];

/// Currencies with three decimals (a thousandth of the major unit).
const THREE_DECIMAL: [&str; 7] = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// An ISO 4217 alphabetic currency code such as `EUR`: three ASCII upper-case
/// letters, checked when parsed and when deserialised.
///
/// Serialises as the code string.
///
/// ```
/// # use saas_billing::money::Currency;
/// let eur: Currency = "EUR".parse().unwrap();
/// assert_eq!(eur.to_string(), "EUR");
/// assert_eq!(eur.minor_units(), 2);
/// assert!("eur".parse::<Currency>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The code, e.g. `"EUR"`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// How many decimal digits the minor unit has: 2 by default, 0 for
    /// currencies such as JPY and KRW, 3 for BHD, IQD, JOD, KWD, LYD, OMR and
    /// TND.
    #[must_use]
    pub fn minor_units(&self) -> u32 {
        let code = self.as_str();
        if ZERO_DECIMAL.contains(&code) {
            0
        } else if THREE_DECIMAL.contains(&code) {
            3
        } else {
            2
        }
    }

    /// How many minor units make one major unit (`10^minor_units`).
    fn scale_factor(self) -> i64 {
        10_i64.pow(self.minor_units())
    }
}

impl FromStr for Currency {
    type Err = BillingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(BillingError::validation(
                "currency",
                "must be an iso 4217 code of three upper-case letters",
            )),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount of money in whole minor units (cents for EUR, yen for JPY,
/// fils for KWD) of one currency.
///
/// Serialises as `{"amount": 1234, "currency": "EUR"}` and displays as
/// `12.34 EUR`.
///
/// ```
/// # use saas_billing::money::Money;
/// let eur = "EUR".parse().unwrap();
/// let a = Money { amount: 1234, currency: eur };
/// let b = Money { amount: -1300, currency: eur };
/// assert_eq!(a.checked_add(b).unwrap().to_string(), "-0.66 EUR");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// The amount in minor units; negative for credits.
    pub amount: i64,
    /// The currency of `amount`.
    pub currency: Currency,
}

impl Money {
    /// Nothing, in `currency`.
    #[must_use]
    pub fn zero(currency: Currency) -> Self {
        Self {
            amount: 0,
            currency,
        }
    }

    /// `self + other`.
    ///
    /// # Errors
    ///
    /// [`BillingError::Money`] if the currencies differ or the sum overflows.
    pub fn checked_add(self, other: Money) -> Result<Money, BillingError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or_else(|| overflow("sum"))?;
        Ok(Self { amount, ..self })
    }

    /// `self - other`.
    ///
    /// # Errors
    ///
    /// [`BillingError::Money`] if the currencies differ or the difference
    /// overflows.
    pub fn checked_sub(self, other: Money) -> Result<Money, BillingError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or_else(|| overflow("difference"))?;
        Ok(Self { amount, ..self })
    }

    /// `-self`.
    ///
    /// # Errors
    ///
    /// [`BillingError::Money`] for the one amount that has no negation,
    /// `i64::MIN`.
    pub fn checked_neg(self) -> Result<Money, BillingError> {
        let amount = self
            .amount
            .checked_neg()
            .ok_or_else(|| overflow("negation"))?;
        Ok(Self { amount, ..self })
    }

    fn same_currency(self, other: Money) -> Result<(), BillingError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(BillingError::Money(format!(
                "currency mismatch: {} and {}",
                self.currency, other.currency
            )))
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            minor_to_decimal(self.amount, self.currency),
            self.currency
        )
    }
}

/// The error for an amount that does not fit.
pub(crate) fn overflow(what: &str) -> BillingError {
    BillingError::Money(format!("{what} overflows"))
}

/// Rounds an exact amount in major units (e.g. `12.345` EUR) to whole minor
/// units of `currency` (e.g. `1235` cents).
///
/// The rule is *round half away from zero* at the currency's minor unit:
/// `12.345 EUR` becomes `1235`, `-12.345 EUR` becomes `-1235`, `12.344 EUR`
/// becomes `1234`, `0.5 JPY` becomes `1`. It is the only place where billing
/// rounds an amount of money.
///
/// ```
/// # use saas_billing::money::to_minor;
/// # use rust_decimal::Decimal;
/// let eur = "EUR".parse().unwrap();
/// assert_eq!(to_minor(Decimal::new(12_345, 3), eur).unwrap(), 1235);
/// assert_eq!(to_minor(Decimal::new(-12_345, 3), eur).unwrap(), -1235);
/// ```
///
/// # Errors
///
/// [`BillingError::Money`] if the result does not fit in an `i64`.
pub fn to_minor(value: Decimal, currency: Currency) -> Result<i64, BillingError> {
    let rounded = value.round_dp_with_strategy(
        currency.minor_units(),
        RoundingStrategy::MidpointAwayFromZero,
    );
    rounded
        .checked_mul(Decimal::from(currency.scale_factor()))
        .and_then(|minor| minor.trunc().to_i64())
        .ok_or_else(|| overflow("amount in minor units"))
}

/// The amount in major units of `amount` minor units, e.g. `1234` EUR cents
/// is `12.34`, for display. Exact: no rounding happens.
#[must_use]
pub fn minor_to_decimal(amount: i64, currency: Currency) -> Decimal {
    // The scale is at most 3, far below the 28 that `Decimal::new` accepts.
    Decimal::new(amount, currency.minor_units())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        code.parse().unwrap()
    }

    #[test]
    fn currency_parses_iso_codes_and_refuses_others() {
        assert_eq!(cur("EUR").as_str(), "EUR");
        for bad in ["", "EU", "EURO", "eur", "E1R", "ÉUR", "EU "] {
            let err = bad.parse::<Currency>().unwrap_err();
            assert!(
                matches!(err, BillingError::Validation { ref field, .. } if field == "currency"),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn currency_minor_units_follow_the_table() {
        assert_eq!(cur("EUR").minor_units(), 2);
        assert_eq!(cur("USD").minor_units(), 2);
        assert_eq!(cur("JPY").minor_units(), 0);
        assert_eq!(cur("KRW").minor_units(), 0);
        assert_eq!(cur("KWD").minor_units(), 3);
        assert_eq!(cur("TND").minor_units(), 3);
    }

    #[test]
    fn currency_deserialisation_validates_the_code() {
        assert_eq!(
            serde_json::from_str::<Currency>("\"JPY\"").unwrap(),
            cur("JPY")
        );
        assert!(serde_json::from_str::<Currency>("\"jpy\"").is_err());
        assert!(serde_json::from_str::<Currency>("\"YENS\"").is_err());
        assert_eq!(serde_json::to_string(&cur("KWD")).unwrap(), "\"KWD\"");
    }

    #[test]
    fn to_minor_rounds_half_away_from_zero_per_currency() {
        let eur = cur("EUR");
        assert_eq!(to_minor(Decimal::new(12_345, 3), eur).unwrap(), 1235);
        assert_eq!(to_minor(Decimal::new(12_344, 3), eur).unwrap(), 1234);
        assert_eq!(to_minor(Decimal::new(-12_345, 3), eur).unwrap(), -1235);
        assert_eq!(to_minor(Decimal::new(5, 3), eur).unwrap(), 1);
        assert_eq!(to_minor(Decimal::new(-5, 3), eur).unwrap(), -1);
        // JPY has no decimals.
        let jpy = cur("JPY");
        assert_eq!(to_minor(Decimal::new(12_005, 1), jpy).unwrap(), 1201);
        assert_eq!(to_minor(Decimal::new(12_004, 1), jpy).unwrap(), 1200);
        // KWD has three.
        let kwd = cur("KWD");
        assert_eq!(to_minor(Decimal::new(12_3455, 4), kwd).unwrap(), 12_346);
        assert_eq!(to_minor(Decimal::new(1, 0), kwd).unwrap(), 1000);
    }

    #[test]
    fn to_minor_refuses_amounts_beyond_i64() {
        let err = to_minor(Decimal::from(i64::MAX), cur("EUR")).unwrap_err();
        assert!(matches!(err, BillingError::Money(_)), "{err:?}");
        assert!(to_minor(Decimal::MAX, cur("JPY")).is_err());
        assert!(to_minor(Decimal::MIN, cur("KWD")).is_err());
    }

    #[test]
    fn money_displays_in_major_units_with_the_code() {
        let show = |amount, code| {
            Money {
                amount,
                currency: cur(code),
            }
            .to_string()
        };
        assert_eq!(show(1234, "EUR"), "12.34 EUR");
        assert_eq!(show(-5, "USD"), "-0.05 USD");
        assert_eq!(show(1000, "EUR"), "10.00 EUR");
        assert_eq!(show(1200, "JPY"), "1200 JPY");
        assert_eq!(show(1, "KWD"), "0.001 KWD");
        assert_eq!(show(0, "EUR"), "0.00 EUR");
    }

    #[test]
    fn money_arithmetic_refuses_currency_mismatch_and_overflow() {
        let eur = Money {
            amount: 100,
            currency: cur("EUR"),
        };
        let usd = Money {
            amount: 100,
            currency: cur("USD"),
        };
        assert!(matches!(eur.checked_add(usd), Err(BillingError::Money(_))));
        assert!(matches!(eur.checked_sub(usd), Err(BillingError::Money(_))));
        let max = Money {
            amount: i64::MAX,
            currency: cur("EUR"),
        };
        assert!(max.checked_add(eur).is_err());
        let min = Money {
            amount: i64::MIN,
            currency: cur("EUR"),
        };
        assert!(min.checked_sub(eur).is_err());
        assert!(min.checked_neg().is_err());
        assert_eq!(eur.checked_sub(eur).unwrap(), Money::zero(cur("EUR")));
        assert_eq!(eur.checked_neg().unwrap().amount, -100);
    }

    #[test]
    fn money_serialises_as_amount_and_currency() {
        let m = Money {
            amount: 1234,
            currency: cur("EUR"),
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":1234,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"EUR","x":1}"#).is_err());
    }

    proptest! {
        #[test]
        fn to_minor_is_within_half_a_minor_unit_of_the_exact_amount(
            mantissa in -1_000_000_000_000_i64..1_000_000_000_000,
            scale in 0_u32..8,
            code in prop::sample::select(vec!["EUR", "JPY", "KWD"]),
        ) {
            let currency = cur(code);
            let exact = Decimal::new(mantissa, scale);
            let minor = to_minor(exact, currency).unwrap();
            let back = minor_to_decimal(minor, currency);
            let half = Decimal::new(5, currency.minor_units() + 1);
            prop_assert!((back - exact).abs() <= half);
            // Half away from zero: the rounded amount never moves toward zero
            // on a tie, so its magnitude is never below a tie's.
            prop_assert_eq!(to_minor(-exact, currency).unwrap(), -minor);
        }

        #[test]
        fn minor_to_decimal_round_trips_through_to_minor(
            amount in any::<i64>(),
            code in prop::sample::select(vec!["EUR", "JPY", "KWD"]),
        ) {
            let currency = cur(code);
            prop_assert_eq!(to_minor(minor_to_decimal(amount, currency), currency).unwrap(), amount);
        }
    }
}
