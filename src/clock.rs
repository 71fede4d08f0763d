//! The time source. Production code asks a [`Clock`]; tests hold a [`ManualClock`] and move
//! it, so nothing waits for real time to pass to see a new TempURL or an expiry.
//!
//! Pure core modules never read a clock: they take the time as a parameter. The service
//! layer holds the clock and passes `now` down.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of wall-clock time, in Unix milliseconds.
pub trait Clock: Send + Sync + Debug {
    fn now_ms(&self) -> i64;

    /// Unix seconds (rounded down).
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `unix_ms`.
    pub fn new(unix_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(unix_ms))
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now_ms())
    }

    pub fn set_ms(&self, unix_ms: i64) {
        self.0.store(unix_ms, Ordering::SeqCst);
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0
            .fetch_add(secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_700_000_000_999);
        assert_eq!(c.now(), 1_700_000_000);
        c.advance_secs(2);
        assert_eq!(c.now_ms(), 1_700_000_002_999);
        c.set_ms(-1);
        assert_eq!(c.now(), -1, "seconds round down, also before 1970");
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800);
    }
}
