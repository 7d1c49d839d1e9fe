//! The insurer side of the circuit breaker (`platform::breaker`): which results count as the
//! insurer's failures, and the settings from an `InsurerIntegration`'s `circuitBreaker`.

use super::CallError;
pub use platform::breaker::{Breaker, BreakerSettings, BreakerState, Rejected, Verdict};

/// A breaker over `insurer`, as its manifest sets it (metrics `insurer_breaker_*`).
pub fn for_insurer(insurer: &str, spec: &crds::CircuitBreaker) -> std::sync::Arc<Breaker> {
    Breaker::new("insurer", insurer, settings(spec))
}

/// `circuitBreaker` of a manifest: the threshold percentage as a rate, the rest as is.
pub fn settings(spec: &crds::CircuitBreaker) -> BreakerSettings {
    BreakerSettings {
        failure_rate: (f32::from(spec.failure_rate_threshold) / 100.0).clamp(0.01, 1.0),
        window: usize::try_from(spec.window_size.max(1)).unwrap_or(usize::MAX),
        half_open_calls: spec.half_open_calls.max(1),
        open_duration: spec.open_duration.get(),
        slow_call: spec.slow_call_duration.get(),
    }
}

/// How a call's result counts (the breaker adds slowness). Transport errors, timeouts, 5xx
/// and answers we cannot read are the insurer's fault. A 4xx (other than 429) is the
/// caller's — a bad application, a wrong key — and counts as a success: the insurer
/// answered, coherently. A 429 counts as neither: the insurer is healthy and protecting
/// itself (our rate limiter and its `Retry-After` deal with that).
pub fn verdict<T>(result: &Result<T, CallError>) -> Verdict {
    match result {
        Ok(_) | Err(CallError::Client { .. }) => Verdict::Success,
        Err(CallError::RateLimited { .. } | CallError::CircuitOpen { .. }) => Verdict::Ignored,
        Err(
            CallError::Connect(_)
            | CallError::Transport(_)
            | CallError::Timeout
            | CallError::Server { .. }
            | CallError::Protocol(_),
        ) => Verdict::Failure,
    }
}

impl From<Rejected> for CallError {
    fn from(r: Rejected) -> Self {
        CallError::CircuitOpen { half_open: r.state == BreakerState::HalfOpen, retry_in: r.retry_in }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn verdicts() {
        let client = || CallError::Client { status: 400, message: String::new() };
        let cases: Vec<(Result<(), CallError>, Verdict)> = vec![
            (Ok(()), Verdict::Success),
            (Err(client()), Verdict::Success),
            (Err(CallError::Timeout), Verdict::Failure),
            (Err(CallError::Connect("refused".into())), Verdict::Failure),
            (Err(CallError::Transport("reset".into())), Verdict::Failure),
            (Err(CallError::Server { status: 503, retry_after: None }), Verdict::Failure),
            (Err(CallError::Protocol("?".into())), Verdict::Failure),
            (Err(CallError::RateLimited { retry_after: None }), Verdict::Ignored),
            (Err(CallError::CircuitOpen { half_open: false, retry_in: Duration::ZERO }), Verdict::Ignored),
        ];
        for (result, expected) in cases {
            assert_eq!(verdict(&result), expected, "{result:?}");
        }
    }

    #[test]
    fn a_slow_client_error_opens_like_a_slow_success() {
        let spec = crds::CircuitBreaker {
            failure_rate_threshold: 50,
            window_size: 1,
            half_open_calls: 1,
            open_duration: crds::Duration::secs(60),
            slow_call_duration: crds::Duration::millis(0),
        };
        let breaker = for_insurer("t-slow-client", &spec);
        for _ in 0..2 {
            let permit = breaker.admit().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            permit.record(verdict(&Err::<(), _>(CallError::Client { status: 400, message: String::new() })));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn settings_come_from_the_manifest() {
        let spec = crds::CircuitBreaker {
            failure_rate_threshold: 25,
            window_size: 8,
            half_open_calls: 0,
            open_duration: crds::Duration::secs(3),
            slow_call_duration: crds::Duration::millis(700),
        };
        assert_eq!(
            settings(&spec),
            BreakerSettings {
                failure_rate: 0.25,
                window: 8,
                half_open_calls: 1,
                open_duration: Duration::from_secs(3),
                slow_call: Duration::from_millis(700)
            }
        );
    }
}
