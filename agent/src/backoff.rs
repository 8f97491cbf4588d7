//! Retry with capped exponential backoff, as a value: the n-th failure's
//! delay, and (for bounded policies) when to give up. No I/O, so every
//! policy the agent uses is unit-tested by its numbers.

use std::time::Duration;

/// A retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Attempts in all (the first try included) before giving up; `None`
    /// retries for as long as the caller lives.
    pub attempts: Option<u32>,
}

impl Backoff {
    /// The delay before the next attempt after `failures` consecutive
    /// failures (1: the first failed), or `None` when the policy gives up.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures == 0 {
            return Some(Duration::ZERO);
        }
        if self.attempts.is_some_and(|a| failures >= a) {
            return None;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }
}

/// Counts consecutive failures against a [`Backoff`].
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Backoff,
    failures: u32,
}

impl Retry {
    pub fn new(policy: Backoff) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// Records a failure; returns the delay before the next attempt, or
    /// `None` when the policy gives up.
    pub fn failed(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures)
    }

    /// Records a success: the next failure starts from the base again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn doubles_up_to_the_cap_and_gives_up_when_bounded() {
        let b = Backoff {
            base: ms(100),
            max: ms(1000),
            attempts: Some(5),
        };
        let delays: Vec<Option<Duration>> = (1..=6).map(|n| b.delay(n)).collect();
        assert_eq!(
            delays,
            vec![
                Some(ms(100)),
                Some(ms(200)),
                Some(ms(400)),
                Some(ms(800)),
                None,
                None
            ]
        );
        let forever = Backoff {
            attempts: None,
            ..b
        };
        assert_eq!(forever.delay(5), Some(ms(1000)));
        assert_eq!(forever.delay(u32::MAX), Some(ms(1000)), "no overflow");
    }

    #[test]
    fn a_success_starts_again_from_the_base() {
        let mut r = Retry::new(Backoff {
            base: ms(10),
            max: ms(80),
            attempts: None,
        });
        assert_eq!(r.failed(), Some(ms(10)));
        assert_eq!(r.failed(), Some(ms(20)));
        r.succeeded();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.failed(), Some(ms(10)));
    }
}
