//! What one call's result does to a task: the pure core of a poller step.
//!
//! Terminal: an offer, a decline, the insurer's calculation error, a 4xx from the
//! insurer, a body we do not understand, and a *create* the circuit breaker rejected while
//! open (`failed` with reason `circuit_open`: the insurer is failing, so the customer hears
//! it now rather than at the deadline). Transient (transport, timeout, 429, 5xx): try
//! again later. A poll the breaker rejected (the calculation exists at the insurer) waits
//! for the breaker — until half-open, or the deadline. The deadline is applied by the store
//! (a wait never reaches past it), at claim time (a task claimed after its deadline
//! expires without a call) and by the step itself (a call still running at the deadline is
//! cut off and the task expires).
//!
//! `attempts` is every HTTP call made for the task so far, this step's included (retries
//! within the step too; calls the breaker rejected were never made and do not count).

use super::schedule::Schedule;
use crate::clients::{CallError, Created, Polled};
use domain::events::InsurerOutcome;
use std::time::Duration;

/// The reason of a task failed because the insurer's circuit breaker is open.
pub const CIRCUIT_OPEN: &str = "circuit_open";

/// The new state of a task after one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Still pending: store the progress and call again after `wait`.
    Reschedule {
        /// Set when this step created the calculation.
        insurer_ref: Option<String>,
        attempts: u32,
        wait: Duration,
        /// Why the wait, for logs: what the insurer said.
        cause: Cause,
    },
    /// Done: store the outcome and its event.
    Finish { insurer_ref: Option<String>, attempts: u32, outcome: InsurerOutcome },
}

impl Transition {
    /// This transition, naming `known` as the reference when it names none of its own.
    pub fn with_reference(self, known: Option<&str>) -> Transition {
        match self {
            Transition::Reschedule { insurer_ref: None, attempts, wait, cause } => {
                Transition::Reschedule { insurer_ref: known.map(str::to_string), attempts, wait, cause }
            }
            Transition::Finish { insurer_ref: None, attempts, outcome } => {
                Transition::Finish { insurer_ref: known.map(str::to_string), attempts, outcome }
            }
            named => named,
        }
    }
}

/// Why a task is rescheduled.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    Pending,
    /// A transient failure, as `CallError`'s (safe) `Display`.
    Failure(String),
    /// The circuit breaker did not let the call through; nothing was sent.
    BreakerOpen,
}

/// After a create.
pub fn after_create(schedule: &Schedule, attempts: u32, result: Result<Created, CallError>) -> Transition {
    match result {
        Ok(Created { reference, status: Polled::Pending { retry_after } }) => Transition::Reschedule {
            insurer_ref: Some(reference),
            attempts,
            wait: schedule.after_create(retry_after),
            cause: Cause::Pending,
        },
        Ok(Created { reference, status }) => finished(Some(reference), attempts, status),
        Err(CallError::CircuitOpen { half_open: false, .. }) => Transition::Finish {
            insurer_ref: None,
            attempts,
            outcome: InsurerOutcome::Failed { reason: CIRCUIT_OPEN.into() },
        },
        Err(error) => after_error(schedule, attempts, error),
    }
}

/// After a poll.
pub fn after_poll(schedule: &Schedule, attempts: u32, result: Result<Polled, CallError>) -> Transition {
    match result {
        Ok(Polled::Pending { retry_after }) => Transition::Reschedule {
            insurer_ref: None,
            // The create was the first call, so this was poll number attempts - 1.
            wait: schedule.after_poll(attempts.saturating_sub(1), retry_after),
            attempts,
            cause: Cause::Pending,
        },
        Ok(status) => finished(None, attempts, status),
        Err(error) => after_error(schedule, attempts, error),
    }
}

/// After a call that failed, never finished, or was not let through.
pub fn after_error(schedule: &Schedule, attempts: u32, error: CallError) -> Transition {
    match error {
        CallError::CircuitOpen { retry_in, .. } => {
            Transition::Reschedule { insurer_ref: None, attempts, wait: retry_in, cause: Cause::BreakerOpen }
        }
        error if error.is_transient() => Transition::Reschedule {
            insurer_ref: None,
            attempts,
            wait: schedule.after_failure(attempts, error.retry_after()),
            cause: Cause::Failure(error.to_string()),
        },
        error => Transition::Finish {
            insurer_ref: None,
            attempts,
            outcome: InsurerOutcome::Failed { reason: error.failure_reason() },
        },
    }
}

/// The task's deadline passed before a final answer.
pub fn expired(attempts: u32) -> Transition {
    Transition::Finish { insurer_ref: None, attempts, outcome: InsurerOutcome::Expired }
}

/// No call made, nothing new: the progress so far, with the next call `wait` away (a held
/// task's lease renewal, or giving it back).
pub fn unchanged(attempts: u32, wait: Duration) -> Transition {
    Transition::Reschedule { insurer_ref: None, attempts, wait, cause: Cause::Pending }
}

/// The stored application cannot be read back (never expected: intake validated it).
pub fn unreadable_request(attempts: u32) -> Transition {
    Transition::Finish {
        insurer_ref: None,
        attempts,
        outcome: InsurerOutcome::Failed { reason: "invalid_request: the stored application cannot be read".into() },
    }
}

fn finished(insurer_ref: Option<String>, attempts: u32, status: Polled) -> Transition {
    let outcome = match status {
        Polled::Offer(offer) => InsurerOutcome::Offer { offer },
        Polled::Declined(reason) => InsurerOutcome::Declined { reason },
        Polled::Failed(message) => InsurerOutcome::Failed { reason: format!("calculation_error: {message}") },
        Polled::Pending { .. } => unreachable!("pending is not final"),
    };
    Transition::Finish { insurer_ref, attempts, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::events::Offer;
    use domain::money::Money;
    use rust_decimal::Decimal;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn schedule() -> Schedule {
        Schedule {
            initial_delay: ms(500),
            interval: ms(1000),
            max_interval: ms(5000),
            initial_backoff: ms(200),
            max_backoff: ms(5000),
            multiplier: 2.0,
        }
    }

    fn offer() -> Offer {
        Offer {
            premium: Money::rub(Decimal::new(1331879, 2)),
            insurer_reference: "ALFA-1".into(),
            valid_until: "2026-12-01T10:00:00Z".parse().unwrap(),
            breakdown: serde_json::from_str(
                r#"{"tb":"8665.00","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}"#,
            )
            .unwrap(),
        }
    }

    fn reschedule(insurer_ref: Option<&str>, attempts: u32, wait: Duration, cause: Cause) -> Transition {
        Transition::Reschedule { insurer_ref: insurer_ref.map(str::to_string), attempts, wait, cause }
    }

    fn finish(insurer_ref: Option<&str>, attempts: u32, outcome: InsurerOutcome) -> Transition {
        Transition::Finish { insurer_ref: insurer_ref.map(str::to_string), attempts, outcome }
    }

    #[test]
    fn creates() {
        let s = schedule();
        let created = |status| Ok(Created { reference: "R".into(), status });
        let open = |half_open| CallError::CircuitOpen { half_open, retry_in: ms(700) };
        let cases: Vec<(u32, Result<Created, CallError>, Transition)> = vec![
            (1, created(Polled::PENDING), reschedule(Some("R"), 1, ms(500), Cause::Pending)),
            (
                1,
                created(Polled::Pending { retry_after: Some(ms(3000)) }),
                reschedule(Some("R"), 1, ms(3000), Cause::Pending),
            ),
            (1, created(Polled::Offer(offer())), finish(Some("R"), 1, InsurerOutcome::Offer { offer: offer() })),
            (
                3,
                created(Polled::Declined("taxis are not insured".into())),
                finish(Some("R"), 3, InsurerOutcome::Declined { reason: "taxis are not insured".into() }),
            ),
            (
                1,
                Err(CallError::Server { status: 503, retry_after: None }),
                reschedule(None, 1, ms(1000), Cause::Failure("insurer server error HTTP 503".into())),
            ),
            (5, Err(CallError::Timeout), reschedule(None, 5, ms(3200), Cause::Failure("timed out".into()))),
            // In-step retries count: three calls made, the next step backs off accordingly.
            (
                3,
                Err(CallError::Connect("refused".into())),
                reschedule(None, 3, ms(1000), Cause::Failure("could not connect: refused".into())),
            ),
            // The breaker is open: a new task fails at once; half-open, it waits for the trials.
            (0, Err(open(false)), finish(None, 0, InsurerOutcome::Failed { reason: CIRCUIT_OPEN.into() })),
            (2, Err(open(false)), finish(None, 2, InsurerOutcome::Failed { reason: CIRCUIT_OPEN.into() })),
            (0, Err(open(true)), reschedule(None, 0, ms(700), Cause::BreakerOpen)),
            (
                1,
                Err(CallError::Client { status: 400, message: "policy.start_date: in the past".into() }),
                finish(
                    None,
                    1,
                    InsurerOutcome::Failed { reason: "rejected: HTTP 400: policy.start_date: in the past".into() },
                ),
            ),
        ];
        for (attempts, result, expected) in cases {
            assert_eq!(after_create(&s, attempts, result), expected);
        }
    }

    #[test]
    fn polls() {
        let s = schedule();
        let cases: Vec<(u32, Result<Polled, CallError>, Transition)> = vec![
            (2, Ok(Polled::PENDING), reschedule(None, 2, ms(1000), Cause::Pending)),
            (3, Ok(Polled::PENDING), reschedule(None, 3, ms(1500), Cause::Pending)),
            (4, Ok(Polled::PENDING), reschedule(None, 4, ms(2250), Cause::Pending)),
            (10, Ok(Polled::PENDING), reschedule(None, 10, ms(5000), Cause::Pending)),
            (2, Ok(Polled::Pending { retry_after: Some(ms(2500)) }), reschedule(None, 2, ms(2500), Cause::Pending)),
            (5, Ok(Polled::Offer(offer())), finish(None, 5, InsurerOutcome::Offer { offer: offer() })),
            // A calculation that exists waits for the breaker, open or half-open, until the deadline.
            (
                4,
                Err(CallError::CircuitOpen { half_open: false, retry_in: ms(1200) }),
                reschedule(None, 4, ms(1200), Cause::BreakerOpen),
            ),
            (
                4,
                Err(CallError::CircuitOpen { half_open: true, retry_in: ms(500) }),
                reschedule(None, 4, ms(500), Cause::BreakerOpen),
            ),
            (
                2,
                Ok(Polled::Failed("calculation service unavailable".into())),
                finish(
                    None,
                    2,
                    InsurerOutcome::Failed { reason: "calculation_error: calculation service unavailable".into() },
                ),
            ),
            (
                2,
                Err(CallError::RateLimited { retry_after: Some(ms(4000)) }),
                reschedule(None, 2, ms(4000), Cause::Failure("rate limited by the insurer, retry after 4000ms".into())),
            ),
            (
                2,
                Err(CallError::Transport("connection reset".into())),
                reschedule(None, 2, ms(1000), Cause::Failure("transport error: connection reset".into())),
            ),
            (
                4,
                Err(CallError::Protocol("unknown calculation status \"X\"".into())),
                finish(
                    None,
                    4,
                    InsurerOutcome::Failed { reason: "protocol_error: unknown calculation status \"X\"".into() },
                ),
            ),
        ];
        for (attempts, result, expected) in cases {
            assert_eq!(after_poll(&s, attempts, result), expected);
        }
    }

    #[test]
    fn expiry_and_unreadable_requests_are_final() {
        assert_eq!(expired(7), finish(None, 7, InsurerOutcome::Expired));
        assert!(matches!(unreadable_request(0), Transition::Finish { outcome: InsurerOutcome::Failed { .. }, .. }));
    }

    #[test]
    fn a_known_reference_fills_in_only_where_none_is_named() {
        let pending = Transition::Reschedule {
            insurer_ref: None,
            attempts: 3,
            wait: Duration::from_secs(1),
            cause: Cause::Pending,
        };
        let offer = |r: Option<&str>| Transition::Finish {
            insurer_ref: r.map(str::to_string),
            attempts: 3,
            outcome: InsurerOutcome::Failed { reason: "x".into() },
        };
        assert_eq!(
            pending.clone().with_reference(Some("R")),
            Transition::Reschedule {
                insurer_ref: Some("R".into()),
                attempts: 3,
                wait: Duration::from_secs(1),
                cause: Cause::Pending
            }
        );
        assert_eq!(pending.clone().with_reference(None), pending);
        assert_eq!(offer(None).with_reference(Some("R")), offer(Some("R")));
        assert_eq!(offer(Some("NEW")).with_reference(Some("R")), offer(Some("NEW")), "a reference of its own wins");
    }
}
