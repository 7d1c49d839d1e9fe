//! When to call an insurer again for one task: a pure function of the manifest, the
//! number of calls made so far and the insurer's `Retry-After`.
//!
//! - after a create that left the calculation pending: `polling.initialDelay`;
//! - after the n-th poll still pending: `polling.interval × 1.5^(n-1)`, at most
//!   `polling.maxInterval`;
//! - after a transient failure (transport, timeout, 429, 5xx) as the n-th call:
//!   `retry.initialBackoff × retry.multiplier^(n-1)`, at most `retry.maxBackoff`;
//! - never less than the insurer's `Retry-After`, and — except create → first poll — never
//!   less than [`MIN_GAP`] between two calls of one task.
//!
//! "n" is the task's `attempts` (every call made for it, failed ones included), so a task
//! whose insurer struggled is polled more patiently afterwards.

use crds::InsurerIntegrationSpec;
use std::time::Duration;

/// No two calls for one task closer than this (measured from the end of the first call).
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// How much the polling interval grows with each poll that is still pending.
pub const GROWTH: f64 = 1.5;

/// The manifest's polling and retry settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub initial_delay: Duration,
    pub interval: Duration,
    pub max_interval: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl Schedule {
    /// The schedule the manifest asks for.
    pub fn from_spec(spec: &InsurerIntegrationSpec) -> Self {
        Schedule {
            initial_delay: spec.polling.initial_delay.get(),
            interval: spec.polling.interval.get(),
            max_interval: spec.polling.max_interval.get(),
            initial_backoff: spec.retry.initial_backoff.get(),
            max_backoff: spec.retry.max_backoff.get(),
            multiplier: spec.retry.multiplier,
        }
    }

    /// Wait after a create whose calculation is pending.
    pub fn after_create(&self, retry_after: Option<Duration>) -> Duration {
        self.initial_delay.max(retry_after.unwrap_or_default())
    }

    /// Wait after the `polls`-th poll (1 for the first) answered "still pending".
    pub fn after_poll(&self, polls: u32, retry_after: Option<Duration>) -> Duration {
        let grown = grow(self.interval, GROWTH, polls, self.max_interval);
        grown.max(MIN_GAP).max(retry_after.unwrap_or_default())
    }

    /// Wait after a transient failure of the `attempt`-th call (1 for the first).
    pub fn after_failure(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = grow(self.initial_backoff, self.multiplier, attempt, self.max_backoff);
        backoff.max(MIN_GAP).max(retry_after.unwrap_or_default())
    }
}

/// `base × factor^(n-1)`, capped (a factor below 1 counts as 1; n = 0 counts as 1).
fn grow(base: Duration, factor: f64, n: u32, cap: Duration) -> Duration {
    let exponent = n.saturating_sub(1).min(64) as i32;
    let seconds = base.as_secs_f64() * factor.max(1.0).powi(exponent);
    if !seconds.is_finite() || seconds >= cap.as_secs_f64() {
        return cap.max(base);
    }
    Duration::from_secs_f64(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The crds defaults: initialDelay 500ms, interval 1s, maxInterval 5s; backoff 200ms ×2 up to 5s.
    fn defaults() -> Schedule {
        Schedule {
            initial_delay: ms(500),
            interval: ms(1000),
            max_interval: ms(5000),
            initial_backoff: ms(200),
            max_backoff: ms(5000),
            multiplier: 2.0,
        }
    }

    #[test]
    fn first_poll_follows_the_initial_delay_or_retry_after() {
        let s = defaults();
        let cases = [(None, ms(500)), (Some(ms(200)), ms(500)), (Some(ms(3000)), ms(3000))];
        for (retry_after, expected) in cases {
            assert_eq!(s.after_create(retry_after), expected, "{retry_after:?}");
        }
        let short = Schedule { initial_delay: ms(100), ..s };
        assert_eq!(short.after_create(None), ms(100), "create → first poll may be closer than MIN_GAP");
    }

    #[test]
    fn polling_interval_grows_to_its_cap() {
        let s = defaults();
        let cases = [
            (1, None, ms(1000)),
            (2, None, ms(1500)),
            (3, None, ms(2250)),
            (4, None, ms(3375)),
            (5, None, ms(5000)),
            (6, None, ms(5000)),
            (1000, None, ms(5000)),
            (0, None, ms(1000)),
            (1, Some(ms(4000)), ms(4000)),
            (6, Some(Duration::from_secs(30)), Duration::from_secs(30)),
            (6, Some(ms(10)), ms(5000)),
        ];
        for (polls, retry_after, expected) in cases {
            assert_eq!(s.after_poll(polls, retry_after), expected, "poll {polls}, {retry_after:?}");
        }
    }

    #[test]
    fn polls_are_never_closer_than_a_second() {
        let fast = Schedule { interval: ms(100), max_interval: ms(300), ..defaults() };
        for polls in 0..20 {
            assert_eq!(fast.after_poll(polls, None), MIN_GAP, "poll {polls}");
            assert_eq!(fast.after_poll(polls, Some(ms(1))), MIN_GAP, "poll {polls}");
        }
    }

    #[test]
    fn failures_back_off_exponentially_honouring_retry_after() {
        let s = defaults();
        let cases = [
            (1, None, MIN_GAP),
            (3, None, MIN_GAP),
            (4, None, ms(1600)),
            (5, None, ms(3200)),
            (6, None, ms(5000)),
            (60, None, ms(5000)),
            (1, Some(ms(2000)), ms(2000)),
            (6, Some(ms(7000)), ms(7000)),
        ];
        for (attempt, retry_after, expected) in cases {
            assert_eq!(s.after_failure(attempt, retry_after), expected, "attempt {attempt}, {retry_after:?}");
        }
        let flat = Schedule { multiplier: 0.5, initial_backoff: ms(1500), ..s };
        assert_eq!(flat.after_failure(9, None), ms(1500), "a multiplier below 1 does not shrink the backoff");
    }
}
