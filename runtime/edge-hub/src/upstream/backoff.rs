//! How long to wait before the next connection attempt.
//!
//! The wait doubles with every failure in a row, from the initial wait up to
//! the maximum, and is drawn at random from the upper half of that range
//! ("equal jitter"): a fleet of gateways that lost the same cloud at the
//! same moment does not come back at the same moment, and no device waits
//! much less than the schedule says. It never gives up.

use std::time::Duration;

/// The schedule of waits between connection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    maximum: Duration,
    /// Failures in a row since the last connection that held.
    failures: u32,
}

impl Backoff {
    /// A schedule from `initial` up to `maximum`.
    pub fn new(initial: Duration, maximum: Duration) -> Self {
        Self {
            initial: initial.max(Duration::from_millis(1)),
            maximum: maximum.max(initial),
            failures: 0,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }

    /// A connection held: the next failure waits the initial time again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before jitter for the current number of failures.
    fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.initial.saturating_mul(factor).min(self.maximum)
    }
}

/// A number in `[0, 1)`; a failure of the system's random source only makes
/// the wait the longest in its range, which is always safe.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.999;
    }
    // 53 bits: the precision of an f64 in [0, 1).
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_the_upper_half_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let expected_ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for ceiling in expected_ceilings {
            let ceiling = Duration::from_secs(ceiling);
            let wait = backoff.next_wait();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        assert_eq!(backoff.failures(), 9);
        for _ in 0..1000 {
            backoff.next_wait();
        }
        assert!(backoff.next_wait() <= Duration::from_secs(60));
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let waits: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).next_wait())
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
    }
}
