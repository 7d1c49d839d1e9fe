//! Everything between a poller step and one insurer's API, driven by its manifest: retry
//! (with a budget), circuit breaker, rate limit, bulkhead, timeout — and their metrics.
//!
//! One HTTP call, as [`Resilience::run`] makes it:
//! 1. the breaker's fast check: while open, fail at once (no waiting for the rate limiter);
//! 2. the bulkhead: at most `rateLimit.maxConcurrent` calls in flight per replica;
//! 3. the rate limiter: a permit of this replica's share of the insurer's rate (below);
//! 4. the breaker admits the call (or rejects it: it may have opened while we waited);
//! 5. the call, under `timeouts.request` — inside the breaker, so a timeout is a failure;
//! 6. the breaker records the result; on failure, [`retry::decide`] and the budget say
//!    whether to try again (each retry goes through 1–6 again).
//!
//! ## The rate limit, exactly
//! `rateLimit.requestsPerSecond` (R) and `burst` (B) are the insurer's limit for all
//! replicas (N = `replicas`) together. Each replica runs a GCRA (`governor`) that lets one
//! call through every `N / R × (1 + RATE_MARGIN)` seconds with a burst of
//! `max(1, ⌊B / N⌋)`. Together the replicas' calls conform to a token bucket of rate R
//! and depth B: an insurer that enforces (R, B) itself — as a GCRA or token bucket, like
//! the sandbox — never has a reason to answer 429, and in any window of `t` seconds it sees
//! at most `B + R × t` calls (in any one-second window at most `B + R`; in steady state a
//! little under R per second). The margin (5 % of the rate) keeps that true at the
//! insurer's end even when the network delays one call a few milliseconds more than the
//! next, which would otherwise make two calls arrive closer than we sent them. One exception: when B < N each replica still gets a
//! burst of 1, so the burst is N. Calls wait for their permit in line (with up to
//! [`RATE_LIMIT_JITTER`] added to each wait, so waiters do not wake in a herd); the permit
//! is taken right before sending, so the jitter never brings two calls closer.

use super::CallError;
use super::breaker::{self, Breaker};
use super::retry::{self, Decision, Idempotency, RetryBudget, RetryPolicy};
use crds::InsurerIntegrationSpec;
use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use platform::trace::TraceParent;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::debug;

/// How much slower than its share each replica sends (see the module docs).
pub const RATE_MARGIN: f64 = 0.05;
/// Most random delay added to a wait for the rate limiter.
pub const RATE_LIMIT_JITTER: Duration = Duration::from_millis(10);

/// What a poller step gives the calls it makes: a deadline, and a count of those calls.
#[derive(Debug)]
pub struct CallContext {
    until: tokio::time::Instant,
    calls: AtomicU32,
    trace: Option<TraceParent>,
}

impl CallContext {
    /// Calls (and their retries) must be over by `until`.
    pub fn new(until: tokio::time::Instant) -> Self {
        CallContext { until, calls: AtomicU32::new(0), trace: None }
    }

    /// Calls carry `traceparent: trace` (the quote's trace, this step's span).
    pub fn with_trace(mut self, trace: TraceParent) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The trace the calls belong to.
    pub fn trace(&self) -> Option<&TraceParent> {
        self.trace.as_ref()
    }

    /// The step's deadline.
    pub fn until(&self) -> tokio::time::Instant {
        self.until
    }

    /// HTTP calls sent to the insurer so far (retries included; calls the breaker rejected
    /// are not sent and not counted).
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// One kind of HTTP call: its name in metrics, and whether repeating it is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub endpoint: &'static str,
    pub idempotency: Idempotency,
}

impl Call {
    /// A call that is safe to repeat.
    pub const fn idempotent(endpoint: &'static str) -> Self {
        Call { endpoint, idempotency: Idempotency::Idempotent }
    }

    /// A call whose repeat may do its work twice.
    pub const fn not_idempotent(endpoint: &'static str) -> Self {
        Call { endpoint, idempotency: Idempotency::NotIdempotent }
    }
}

/// The protections of one insurer's calls in this replica.
pub struct Resilience {
    insurer: String,
    breaker: Arc<Breaker>,
    limiter: DefaultDirectRateLimiter,
    bulkhead: Semaphore,
    retry: RetryPolicy,
    budget: Mutex<RetryBudget>,
}

impl fmt::Debug for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("insurer", &self.insurer)
            .field("breaker", &self.breaker)
            .field("retry", &self.retry)
            .field("max_concurrent", &self.bulkhead.available_permits())
            .finish()
    }
}

/// Each replica's quota: one call every `replicas / requestsPerSecond × (1 + RATE_MARGIN)`
/// seconds, a burst of `max(1, ⌊burst / replicas⌋)`.
pub fn quota(spec: &InsurerIntegrationSpec) -> Quota {
    let replicas = spec.replicas.max(1);
    let rate = f64::from(spec.rate_limit.requests_per_second.max(1));
    let period = Duration::from_secs_f64(f64::from(replicas) / rate * (1.0 + RATE_MARGIN));
    let burst = NonZeroU32::new(spec.rate_limit.burst / replicas).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).expect("a positive period").allow_burst(burst)
}

impl Resilience {
    /// The protections `spec` asks for, for the insurer named `insurer`.
    pub fn new(insurer: &str, spec: &InsurerIntegrationSpec) -> Arc<Self> {
        let max_concurrent = usize::try_from(spec.rate_limit.max_concurrent.max(1)).unwrap_or(usize::MAX);
        Arc::new(Resilience {
            insurer: insurer.to_string(),
            breaker: breaker::for_insurer(insurer, &spec.circuit_breaker),
            limiter: RateLimiter::direct(quota(spec)),
            bulkhead: Semaphore::new(max_concurrent),
            retry: RetryPolicy::from_spec(spec),
            budget: Mutex::new(RetryBudget::new(Instant::now())),
        })
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Makes one HTTP call — `attempt` makes one try of it — with retries, breaker, rate
    /// limit, bulkhead and timeout, as the module docs describe.
    pub async fn run<T, F, Fut>(&self, call: Call, ctx: &CallContext, mut attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner).deposit(Instant::now());
        let mut attempts = 1;
        loop {
            let error = match self.once(call, ctx, attempt()).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let remaining = ctx.until.saturating_duration_since(tokio::time::Instant::now());
            let decision = retry::decide(&self.retry, attempts, &error, call.idempotency, remaining, rand::random());
            let Decision::Retry { wait } = decision else {
                debug!(insurer = %self.insurer, endpoint = call.endpoint, attempts, ?decision, %error, "not retried");
                return Err(error);
            };
            if !self.budget.lock().unwrap_or_else(PoisonError::into_inner).try_withdraw(Instant::now()) {
                metrics::counter!("insurer_retry_budget_exhausted_total", "insurer" => self.insurer.clone())
                    .increment(1);
                debug!(insurer = %self.insurer, endpoint = call.endpoint, attempts, %error, "retry budget exhausted");
                return Err(error);
            }
            metrics::counter!("insurer_retries_total", "insurer" => self.insurer.clone(), "endpoint" => call.endpoint)
                .increment(1);
            debug!(insurer = %self.insurer, endpoint = call.endpoint, attempts, wait_ms = wait.as_millis() as u64, %error, "retrying");
            tokio::time::sleep(wait).await;
            attempts += 1;
        }
    }

    /// One try: steps 1–6 of the module docs, without the retry.
    async fn once<T>(
        &self,
        call: Call,
        ctx: &CallContext,
        attempt: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        if let Err(rejected) = self.breaker.check() {
            self.count(call, &Err::<(), _>(rejected.into()));
            return Err(rejected.into());
        }
        let _slot = self.bulkhead.acquire().await.expect("the bulkhead is never closed");
        let waiting = Instant::now();
        self.limiter.until_ready_with_jitter(Jitter::up_to(RATE_LIMIT_JITTER)).await;
        metrics::histogram!("insurer_rate_limit_wait_seconds", "insurer" => self.insurer.clone())
            .record(waiting.elapsed().as_secs_f64());
        let permit = match self.breaker.admit() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.count(call, &Err::<(), _>(rejected.into()));
                return Err(rejected.into());
            }
        };
        ctx.calls.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight::new(&self.insurer);
        let started = Instant::now();
        let result = tokio::time::timeout(self.retry.attempt_timeout, attempt).await.unwrap_or(Err(CallError::Timeout));
        metrics::histogram!(
            "insurer_call_duration_seconds",
            "insurer" => self.insurer.clone(),
            "endpoint" => call.endpoint
        )
        .record(started.elapsed().as_secs_f64());
        self.count(call, &result);
        // Counted first, so that a transition this result causes finds it in the metrics.
        permit.record(breaker::verdict(&result));
        result
    }

    fn count<T>(&self, call: Call, result: &Result<T, CallError>) {
        let outcome = match result {
            Ok(_) => "success",
            Err(error) => {
                metrics::counter!(
                    "insurer_call_errors_total",
                    "insurer" => self.insurer.clone(),
                    "endpoint" => call.endpoint,
                    "kind" => error.kind()
                )
                .increment(1);
                error.kind()
            }
        };
        metrics::counter!(
            "insurer_calls_total",
            "insurer" => self.insurer.clone(),
            "endpoint" => call.endpoint,
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// `insurer_calls_in_flight`, up while it lives.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn new(insurer: &str) -> Self {
        let gauge = metrics::gauge!("insurer_calls_in_flight", "insurer" => insurer.to_string());
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replicas: u32, rps: u32, burst: u32) -> InsurerIntegrationSpec {
        let yaml = format!(
            "apiVersion: osago.io/v1alpha1\nkind: InsurerIntegration\nmetadata: {{name: x}}\n\
             spec: {{displayName: X, replicas: {replicas}, api: {{baseUrl: 'http://127.0.0.1:1/x', style: operation}},\n\
             rateLimit: {{requestsPerSecond: {rps}, burst: {burst}, maxConcurrent: 4}}}}\n"
        );
        crds::InsurerIntegration::from_yaml(&yaml).unwrap().spec
    }

    #[test]
    fn each_replica_gets_its_share_of_the_insurers_limit() {
        let margin = 1.0 + RATE_MARGIN;
        // (replicas, rps, burst) → (period in seconds before the margin, burst per replica)
        let cases = [
            ((1, 5, 5), (0.2, 5)),
            ((1, 40, 80), (0.025, 80)),
            ((2, 40, 80), (0.05, 40)),
            ((2, 5, 5), (0.4, 2)),
            ((3, 2, 2), (1.5, 1)),
            ((4, 1, 1), (4.0, 1)),
            ((0, 10, 10), (0.1, 10)),
        ];
        for ((replicas, rps, burst), (period, per_replica)) in cases {
            let q = quota(&spec(replicas, rps, burst));
            let expected = Duration::from_secs_f64(period * margin);
            let got = q.replenish_interval();
            assert!(got.abs_diff(expected) < Duration::from_micros(1), "{replicas}×: {got:?} vs {expected:?}");
            assert_eq!(q.burst_size().get(), per_replica, "{replicas} replicas, burst {burst}");
        }
    }

    #[tokio::test]
    async fn a_replica_never_exceeds_burst_then_rate() {
        // rps 50, burst 5: the first 5 at once, then one every 21 ms.
        let r = Resilience::new("t-rate", &spec(1, 50, 5));
        let start = Instant::now();
        for _ in 0..10 {
            r.limiter.until_ready().await;
        }
        let took = start.elapsed();
        let floor = Duration::from_secs_f64(5.0 * 0.02 * (1.0 + RATE_MARGIN));
        assert!(took >= floor, "10 permits took {took:?}, at least {floor:?}");
        assert!(took < floor + Duration::from_millis(100), "10 permits took {took:?}");
    }
}
