//! Retrying one HTTP call within a poller step: the decision is a pure function
//! ([`decide`]); the [`RetryBudget`] keeps retries a small share of the calls.
//!
//! What is retried, and only while attempts, time and budget are left:
//! - a connection that could not be made (the request was never sent) — always;
//! - a 429 (refused before any work) — always, after at least its `Retry-After`;
//! - a timeout, a broken connection after sending, a 5xx — only when the request is safe to
//!   repeat ([`Idempotency::Idempotent`]): a GET, a create that carries our key (create-poll's
//!   `request_id`, the operation style's `Idempotency-Key`). The offers-list create has no
//!   key: once it may have reached the insurer, it is not repeated within the step (the
//!   poller's next step creates afresh, see `offers_list`);
//! - never a 4xx, an answer we cannot read, or a call the circuit breaker rejected.
//!
//! The wait is exponential backoff with **full jitter** — uniform in
//! `[0, min(maxBackoff, initialBackoff × multiplier^(n-1)))` after the n-th attempt — and at
//! least the insurer's `Retry-After`. A retry happens only if that wait plus a whole request
//! timeout fits before the step's deadline; otherwise the step ends and the poller
//! reschedules the task (still honouring `Retry-After`).
//!
//! The budget: every first attempt deposits [`BUDGET_RATIO`] of a token, a retry takes a
//! whole one, and [`BUDGET_PER_SECOND`] tokens trickle in regardless (so a quiet insurer
//! still gets a retry now and then); at most [`BUDGET_CAP`] are kept. So over any `T`
//! seconds, retries ≤ `BUDGET_CAP` + 20 % of the first attempts + `BUDGET_PER_SECOND × T`:
//! during an outage retries add at most about a fifth to the load, instead of multiplying it
//! by `maxAttempts`. One budget per insurer and replica.

use super::CallError;
use std::time::{Duration, Instant};

/// Share of first attempts that may be retried.
pub const BUDGET_RATIO: f64 = 0.2;
/// Retries allowed per second whatever the traffic.
pub const BUDGET_PER_SECOND: f64 = 2.0;
/// Most retries saved up.
pub const BUDGET_CAP: f64 = 10.0;

/// The manifest's `retry`, plus the request timeout a retry must fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts of one call, the first included (1 = no retries).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// How long one attempt may take (`timeouts.request`).
    pub attempt_timeout: Duration,
}

impl RetryPolicy {
    pub fn from_spec(spec: &crds::InsurerIntegrationSpec) -> Self {
        RetryPolicy {
            max_attempts: spec.retry.max_attempts.max(1),
            initial_backoff: spec.retry.initial_backoff.get(),
            max_backoff: spec.retry.max_backoff.get(),
            multiplier: spec.retry.multiplier,
            attempt_timeout: spec.timeouts.request.get(),
        }
    }

    /// The backoff ceiling after the `attempt`-th attempt (1 for the first):
    /// `initialBackoff × multiplier^(attempt-1)`, at most `maxBackoff`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let seconds = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        if !seconds.is_finite() || seconds >= self.max_backoff.as_secs_f64() {
            return self.max_backoff.max(self.initial_backoff);
        }
        Duration::from_secs_f64(seconds)
    }
}

/// Whether repeating a request can do its work twice at the insurer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat: a read, or a create the insurer recognises by our key.
    Idempotent,
    /// A repeat may create a second thing: only repeated when the first never got there.
    NotIdempotent,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Try again after `wait`.
    Retry { wait: Duration },
    /// Give the error back to the poller.
    Stop(Stop),
}

/// Why no retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Asking again would get the same answer (4xx, unreadable, breaker open).
    NotRetryable,
    /// The request may have reached the insurer and repeating it is not safe.
    NotIdempotent,
    /// `maxAttempts` reached.
    Exhausted,
    /// The wait and another attempt do not fit before the step's deadline.
    NoTime,
}

/// Whether to retry after the `attempt`-th attempt (1 for the first) failed with `error`.
/// `remaining` is the time left before the step's deadline, `jitter` a uniform sample from
/// `[0, 1)` (the caller's randomness, so that this stays a pure function).
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    error: &CallError,
    idempotency: Idempotency,
    remaining: Duration,
    jitter: f64,
) -> Decision {
    let sent_maybe = match error {
        CallError::Connect(_) | CallError::RateLimited { .. } => false,
        CallError::Transport(_) | CallError::Timeout | CallError::Server { .. } => true,
        CallError::Client { .. } | CallError::Protocol(_) | CallError::CircuitOpen { .. } => {
            return Decision::Stop(Stop::NotRetryable);
        }
    };
    if sent_maybe && idempotency == Idempotency::NotIdempotent {
        return Decision::Stop(Stop::NotIdempotent);
    }
    if attempt >= policy.max_attempts {
        return Decision::Stop(Stop::Exhausted);
    }
    let backoff = policy.ceiling(attempt).mul_f64(jitter.clamp(0.0, 1.0));
    let wait = backoff.max(error.retry_after().unwrap_or_default());
    if wait + policy.attempt_timeout > remaining {
        return Decision::Stop(Stop::NoTime);
    }
    Decision::Retry { wait }
}

/// A token bucket that keeps retries a share of first attempts (see the module docs).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    tokens: f64,
    at: Instant,
}

impl RetryBudget {
    /// A budget holding one second's trickle.
    pub fn new(now: Instant) -> Self {
        RetryBudget { tokens: BUDGET_PER_SECOND.min(BUDGET_CAP), at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * BUDGET_PER_SECOND).min(BUDGET_CAP);
        self.at = self.at.max(now);
    }

    /// A first attempt was made.
    pub fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + BUDGET_RATIO).min(BUDGET_CAP);
    }

    /// Takes a token for a retry; false when there is none.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        // Fifths of a token add up to slightly less than one in floating point.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: ms(200),
            max_backoff: ms(1000),
            multiplier: 2.0,
            attempt_timeout: ms(500),
        }
    }

    #[test]
    fn backoff_ceilings_grow_to_the_cap() {
        let p = policy();
        let cases = [(0, 200), (1, 200), (2, 400), (3, 800), (4, 1000), (50, 1000)];
        for (attempt, expected) in cases {
            assert_eq!(p.ceiling(attempt), ms(expected), "attempt {attempt}");
        }
        let flat = RetryPolicy { multiplier: 0.5, ..p };
        assert_eq!(flat.ceiling(5), ms(200), "a multiplier below 1 does not shrink it");
    }

    #[test]
    fn decisions() {
        use Decision::{Retry, Stop as S};
        use Idempotency::{Idempotent as I, NotIdempotent as N};
        let p = policy();
        let five_s = Duration::from_secs(5);
        let server = |retry_after| CallError::Server { status: 503, retry_after };
        let limited = |retry_after| CallError::RateLimited { retry_after };
        type Case = (u32, CallError, Idempotency, Duration, f64, Decision);
        let cases: Vec<Case> = vec![
            // Full jitter: the jitter sample scales the ceiling.
            (1, CallError::Timeout, I, five_s, 0.5, Retry { wait: ms(100) }),
            (1, CallError::Timeout, I, five_s, 0.0, Retry { wait: ms(0) }),
            (2, server(None), I, five_s, 0.25, Retry { wait: ms(100) }),
            (2, CallError::Transport("reset".into()), I, five_s, 0.75, Retry { wait: ms(300) }),
            // Attempts.
            (3, CallError::Timeout, I, five_s, 0.5, S(Stop::Exhausted)),
            // Not idempotent: only what never reached the insurer.
            (1, CallError::Timeout, N, five_s, 0.5, S(Stop::NotIdempotent)),
            (1, server(None), N, five_s, 0.5, S(Stop::NotIdempotent)),
            (1, CallError::Transport("reset".into()), N, five_s, 0.5, S(Stop::NotIdempotent)),
            (1, CallError::Connect("refused".into()), N, five_s, 0.5, Retry { wait: ms(100) }),
            (1, limited(None), N, five_s, 0.5, Retry { wait: ms(100) }),
            // Retry-After is a floor…
            (1, limited(Some(ms(2000))), I, five_s, 0.5, Retry { wait: ms(2000) }),
            (1, server(Some(ms(1000))), I, five_s, 0.1, Retry { wait: ms(1000) }),
            // …and when it (plus an attempt) does not fit before the deadline, reschedule.
            (1, limited(Some(ms(4600))), I, five_s, 0.5, S(Stop::NoTime)),
            (1, limited(Some(ms(4500))), I, five_s, 0.5, Retry { wait: ms(4500) }),
            (1, CallError::Timeout, I, ms(550), 0.5, S(Stop::NoTime)),
            (1, CallError::Timeout, I, ms(600), 0.5, Retry { wait: ms(100) }),
            // Never.
            (1, CallError::Client { status: 400, message: "bad".into() }, I, five_s, 0.5, S(Stop::NotRetryable)),
            (1, CallError::Protocol("?".into()), I, five_s, 0.5, S(Stop::NotRetryable)),
            (1, CallError::CircuitOpen { half_open: false, retry_in: ms(100) }, I, five_s, 0.5, S(Stop::NotRetryable)),
        ];
        for (attempt, error, idempotency, remaining, jitter, expected) in cases {
            assert_eq!(
                decide(&p, attempt, &error, idempotency, remaining, jitter),
                expected,
                "attempt {attempt}, {error:?}, {idempotency:?}, {remaining:?} left, jitter {jitter}"
            );
        }
        let once = RetryPolicy { max_attempts: 1, ..p };
        assert_eq!(decide(&once, 1, &CallError::Timeout, I, five_s, 0.5), S(Stop::Exhausted), "1 = no retries");
    }

    #[test]
    fn the_budget_keeps_retries_a_fifth_of_calls_plus_a_trickle() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(t0);
        // The initial trickle: two retries.
        assert!(budget.try_withdraw(t0));
        assert!(budget.try_withdraw(t0));
        assert!(!budget.try_withdraw(t0));
        // 50 failing first attempts at once allow 10 retries, not 100.
        for _ in 0..50 {
            budget.deposit(t0);
        }
        let retries = (0..100).take_while(|_| budget.try_withdraw(t0)).count();
        assert_eq!(retries, 10);
        // Then two a second, whatever happens.
        let later = t0 + Duration::from_millis(1500);
        let retries = (0..100).take_while(|_| budget.try_withdraw(later)).count();
        assert_eq!(retries, 3);
        // A long quiet time saves up at most the cap.
        let much_later = later + Duration::from_secs(3600);
        let retries = (0..100).take_while(|_| budget.try_withdraw(much_later)).count();
        assert_eq!(retries, BUDGET_CAP as usize);
        // A clock going backwards (another task's earlier `now`) adds nothing.
        assert!(!budget.try_withdraw(t0));
    }
}
