//! Time as an injected dependency.
//!
//! Expiry, backoff, lease recovery and scheduled deletion read the time from a
//! [`Clock`], so tests drive them with a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant, truncated to whole microseconds (the precision
    /// both storage backends keep).
    fn now(&self) -> DateTime<Utc>;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_micros(Utc::now())
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
///
/// ```
/// use saas_core::clock::{Clock, ManualClock};
/// let clock = ManualClock::starting_now();
/// let before = clock.now();
/// clock.advance(chrono::Duration::minutes(5));
/// assert_eq!(clock.now() - before, chrono::Duration::minutes(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A manual clock set to the given instant.
    #[must_use]
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(to_micros(at))),
        }
    }

    /// A manual clock set to the system time at creation.
    #[must_use]
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    /// Moves the clock forward (or backward, with a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to an instant.
    pub fn set(&self, at: DateTime<Utc>) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = to_micros(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
