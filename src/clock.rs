//! Time: wall-clock microseconds for event timestamps and token expiry (`now_micros`), and
//! connection timestamps in four bytes (`Stamp`).
//!
//! A `Stamp` is milliseconds since the process first read the clock,
//! wrapping every 49 days. Every connection carries a few of them, so their size counts; and
//! they only ever measure spans far shorter than the wrap (heartbeat intervals, poll timeouts
//! of at most 300 s), which wrapping arithmetic gets right.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 on a clock set before it).
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(u32);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp::at(Instant::now())
    }

    pub fn at(t: Instant) -> Stamp {
        // Truncation is the wrap.
        Stamp(t.saturating_duration_since(epoch()).as_millis() as u32)
    }

    /// `d` from now.
    pub fn after(d: Duration) -> Stamp {
        Stamp(Stamp::now().0.wrapping_add(d.as_millis().min(u128::from(u32::MAX / 2)) as u32))
    }

    /// The time from `earlier` to this stamp; zero when `earlier` is in fact later.
    pub fn since(self, earlier: Stamp) -> Duration {
        let d = self.0.wrapping_sub(earlier.0);
        if d > u32::MAX / 2 { Duration::ZERO } else { Duration::from_millis(u64::from(d)) }
    }

    /// Whether this stamp is at or past `deadline`.
    pub fn reached(self, deadline: Stamp) -> bool {
        self.0.wrapping_sub(deadline.0) <= u32::MAX / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_deadlines_survive_the_wrap() {
        let before = Stamp(u32::MAX - 500);
        let after = Stamp(499);
        assert_eq!(after.since(before), Duration::from_millis(1000));
        assert_eq!(before.since(after), Duration::ZERO);
        assert!(after.reached(before));
        assert!(!before.reached(after));
        assert!(before.reached(before));
    }

    #[test]
    fn now_moves_forward() {
        let a = Stamp::now();
        let deadline = Stamp::after(Duration::from_secs(300));
        assert!(!a.reached(deadline));
        assert!(a.since(a) == Duration::ZERO);
        assert!(Stamp::at(Instant::now() + Duration::from_secs(301)).reached(deadline));
    }
}
