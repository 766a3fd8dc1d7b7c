//! Billing periods: a cycle of whole months counted from an anchor.
//!
//! An anniversary cycle is anchored on the subscription's start; a calendar
//! cycle on the first of a month at midnight UTC. Period `k` starts `k ×
//! months` months after the anchor, always counted from the anchor itself, so
//! a cycle anchored on 31 January runs 28/29 February, 31 March, 30 April, ...
//! and never drifts to the 28th.

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use serde::Serialize;

use crate::error::BillingError;

/// A billing period, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Period {
    /// Its first instant.
    pub start: DateTime<Utc>,
    /// The first instant of the next period.
    pub end: DateTime<Utc>,
}

impl Period {
    /// True when `t` falls inside the period.
    #[must_use]
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// A cycle of periods of `months` months from `anchor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cycle {
    /// The start of period zero.
    pub anchor: DateTime<Utc>,
    /// Months per period (1 for monthly, 12 for yearly).
    pub months: u32,
}

impl Cycle {
    /// Calendar months (UTC), the cycle of a tenant without a subscription.
    #[must_use]
    pub fn calendar_monthly() -> Self {
        Self::calendar(1)
    }

    /// A calendar cycle of `months` months: periods start on the first of a
    /// month at midnight UTC (on 1 January for yearly cycles).
    #[must_use]
    pub fn calendar(months: u32) -> Self {
        let anchor = Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        Self {
            anchor,
            months: months.max(1),
        }
    }

    /// An anniversary cycle anchored on `start`.
    #[must_use]
    pub fn anniversary(start: DateTime<Utc>, months: u32) -> Self {
        Self {
            anchor: start,
            months: months.max(1),
        }
    }

    fn start_of(&self, k: i64) -> Result<DateTime<Utc>, BillingError> {
        let overflow = || BillingError::validation("timestamp", "outside the supported range");
        let months = k.checked_mul(i64::from(self.months)).ok_or_else(overflow)?;
        let m = Months::new(u32::try_from(months.unsigned_abs()).map_err(|_| overflow())?);
        if months >= 0 {
            self.anchor.checked_add_months(m)
        } else {
            self.anchor.checked_sub_months(m)
        }
        .ok_or_else(overflow)
    }

    /// The period containing `t`.
    pub fn period_at(&self, t: DateTime<Utc>) -> Result<Period, BillingError> {
        let months_apart = (i64::from(t.year()) - i64::from(self.anchor.year())) * 12
            + i64::from(t.month())
            - i64::from(self.anchor.month());
        let mut k = months_apart.div_euclid(i64::from(self.months));
        // The estimate is off by at most one period either way (day and time
        // of month); step until the period holds `t`.
        for _ in 0..4 {
            let start = self.start_of(k)?;
            let end = self.start_of(k + 1)?;
            if t < start {
                k -= 1;
            } else if t >= end {
                k += 1;
            } else {
                return Ok(Period { start, end });
            }
        }
        Err(BillingError::validation(
            "timestamp",
            "could not be placed in a billing period",
        ))
    }

    /// The period after `p`.
    pub fn next(&self, p: Period) -> Result<Period, BillingError> {
        self.period_at(p.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn calendar_months_start_on_the_first() {
        let p = Cycle::calendar_monthly()
            .period_at(at(2026, 11, 23, 17))
            .unwrap();
        assert_eq!(p.start, at(2026, 11, 1, 0));
        assert_eq!(p.end, at(2026, 12, 1, 0));
        let y = Cycle::calendar(12).period_at(at(2026, 11, 23, 17)).unwrap();
        assert_eq!((y.start, y.end), (at(2026, 1, 1, 0), at(2027, 1, 1, 0)));
    }

    #[test]
    fn an_anniversary_on_the_31st_clamps_without_drifting() {
        let c = Cycle::anniversary(at(2026, 1, 31, 10), 1);
        let feb = c.period_at(at(2026, 2, 15, 0)).unwrap();
        assert_eq!(feb.start, at(2026, 1, 31, 10));
        assert_eq!(feb.end, at(2026, 2, 28, 10));
        let mar = c.next(feb).unwrap();
        assert_eq!(mar.start, at(2026, 2, 28, 10));
        assert_eq!(mar.end, at(2026, 3, 31, 10));
        // Before the anchor, periods run backwards the same way.
        let dec = c.period_at(at(2025, 12, 31, 9)).unwrap();
        assert_eq!(dec.end, at(2025, 12, 31, 10));
    }

    #[test]
    fn boundaries_belong_to_the_later_period() {
        let c = Cycle::anniversary(at(2026, 3, 15, 12), 1);
        let p = c.period_at(at(2026, 4, 15, 12)).unwrap();
        assert_eq!(p.start, at(2026, 4, 15, 12));
        assert!(p.contains(at(2026, 4, 15, 12)));
        assert!(!p.contains(p.end));
    }
}
