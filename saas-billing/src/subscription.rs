//! Subscriptions as an explicit state machine.
//!
//! ```text
//!              subscribe                    trial ends (run)
//!   (none) ─────────────► trialing ──────────────────────────► active
//!      │                     │                                 ▲  │  │
//!      └── no trial ─────────┼──────────────────────────────►──┘  │  │ pause
//!                            │             payment / mark paid    │  ▼
//!                            │        past_due ◄──── unpaid ──────┘ paused
//!                            │           │  (overdue or failed)      │ resume
//!                            ▼           ▼                           ▼
//!                        canceled ◄── cancel (now, or at period end) ─┘
//! ```
//!
//! `incomplete` is a subscription whose first invoice (at the start, or when
//! the trial ends) was not paid: its payment failed or it went overdue.
//! Dunning runs as for `past_due`; paying the invoice makes it active. Every transition is a
//! named method of [`crate::Billing`] that checks the current status against
//! the statuses it may leave from (one check shared by every transition), and is audited in its own
//! transaction.

use chrono::{DateTime, Utc};
use saas_core::SubscriptionId;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::period::Period;

/// Where a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Waiting for its first payment.
    Incomplete,
    /// In its free trial.
    Trialing,
    /// Paid up.
    Active,
    /// An invoice is overdue or its payment failed; dunning runs.
    PastDue,
    /// Paused: no fixed fees are billed, the plan's features stay.
    Paused,
    /// Ended.
    Canceled,
}

impl SubscriptionStatus {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Paused => "paused",
            Self::Canceled => "canceled",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, BillingError> {
        Ok(match s {
            "incomplete" => Self::Incomplete,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "paused" => Self::Paused,
            "canceled" => Self::Canceled,
            _ => {
                return Err(BillingError::Catalogue(
                    "a stored subscription has a corrupt status".into(),
                ));
            }
        })
    }
}

/// A plan and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    /// The plan's code.
    pub code: String,
    /// Its version.
    pub version: u32,
}

/// A tenant's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// Its id.
    pub id: SubscriptionId,
    /// The plan (and version) it is on.
    pub plan: PlanRef,
    /// Where it is.
    pub status: SubscriptionStatus,
    /// Seats billed by per-seat charges.
    pub seats: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its trial ends (or ended).
    pub trial_end: Option<DateTime<Utc>>,
    /// The current billing period.
    pub current_period: Period,
    /// True when it ends at the end of the current period.
    pub cancel_at_period_end: bool,
    /// A downgrade scheduled for the end of the current period.
    pub next_plan: Option<PlanRef>,
    /// The seats that downgrade brings, when they change.
    pub next_seats: Option<u64>,
    /// Since when an invoice has been overdue or unpaid.
    pub past_due_since: Option<DateTime<Utc>>,
    /// When it ended.
    pub canceled_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Refuses `action` unless `current` is one of `from`.
pub(crate) fn check(
    current: SubscriptionStatus,
    from: &[SubscriptionStatus],
    action: &str,
) -> Result<(), BillingError> {
    if from.contains(&current) {
        Ok(())
    } else {
        Err(BillingError::Conflict {
            code: "invalid_transition",
            message: format!(
                "cannot {action} a subscription that is {}",
                current.as_str()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus as S;

    #[test]
    fn statuses_round_trip_and_transitions_name_the_state() {
        for s in [
            S::Incomplete,
            S::Trialing,
            S::Active,
            S::PastDue,
            S::Paused,
            S::Canceled,
        ] {
            assert_eq!(S::parse(s.as_str()).unwrap(), s);
        }
        let err = check(S::Canceled, &[S::Active], "pause").unwrap_err();
        assert_eq!(err.code(), "invalid_transition");
        assert!(err.to_string().contains("canceled"));
        assert!(check(S::Active, &[S::Active, S::PastDue], "pause").is_ok());
    }
}
