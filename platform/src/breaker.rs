//! A circuit breaker over one dependency's calls: `recloser` judges, this module wraps it so
//! that it behaves like resilience4j's breaker. The pollers have one per insurer, core-app one
//! over the aggregator's intake.
//!
//! What recloser does here: the count-based window of the closed state (the last
//! `windowSize` calls; it opens when their failure rate reaches `failureRateThreshold`%,
//! judged from call `windowSize + 1` on) and the open wait (`openDuration`).
//!
//! What this wrapper adds, because recloser does not:
//! - **The call's timeout is inside the breaker.** A call is admitted ([`Breaker::admit`]),
//!   runs under its own timeout, and its result is recorded ([`Permit::record`]). recloser
//!   records nothing for a future that is dropped; here every admitted call ends in a record,
//!   and a [`Permit`] dropped without one (a step cut short) counts as a failure when it had
//!   already run longer than `slowCallDuration`.
//! - **What counts is the caller's [`Verdict`]**, plus one rule of the breaker's own: a call
//!   slower than `slowCallDuration` is a failure even when it succeeded. A dependency that
//!   answers "too busy, retry later" (429, an intake's overload 503) is healthy and protecting
//!   itself: such an answer is [`Verdict::Ignored`], which does not move the window, nor, in
//!   half-open, use up a trial.
//! - **Half-open admits exactly `halfOpenCalls` trial calls** (recloser lets every call
//!   through). Others are rejected until the trials are judged: all of them must succeed to
//!   close the circuit; the first failure opens it again for another `openDuration`.
//! - **A call admitted before a transition records nothing after it**: the failures of calls
//!   that were already under way when the circuit opened do not re-open it when it is
//!   half-open (recloser would count them against the trials).
//! - **Observable state**, which recloser does not expose: the wrapper mirrors it, exactly —
//!   every interaction with the recloser happens under one lock, inside a tracing dispatcher
//!   scoped to that call which captures recloser's own transition events. Each transition
//!   sets `<kind>_breaker_state{<kind>}` (0 closed, 1 open, 2 half-open), counts
//!   `<kind>_breaker_transitions_total{<kind>,from,to}`, logs at info, and is published on
//!   a `watch` channel (a poller's heartbeat pushes it to the registry at once).
//!
//! - **Half-open when `openDuration` is over, by itself** (inside a tokio runtime), not
//!   only when the next call happens to come: the state the registry shows stays true, and
//!   an intake that refuses quotes while every breaker is open cannot keep them open forever.
//!
//! How recloser is driven: results, not calls. Its closures return a recorded outcome; the
//! HTTP call itself runs outside, under the timeout and the trial cap above. Once open, each
//! admission (and the timer at the end of the open wait) asks recloser — a rejected call
//! records nothing; the first one it lets through after `openDuration` moves it to
//! half-open. Its half-open ring has one slot, holding that first permitted outcome; the
//! wrapper feeds it the verdict of the trials (success or failure) and recloser closes or
//! re-opens accordingly.
//!
//! Each process has its own breakers; a poller's registry entry shows the state its replicas
//! last reported.

use recloser::{RECLOSER_EVENT, Recloser};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, info, span};

/// How long a call rejected while half-open (every trial slot taken) waits before asking again.
pub const HALF_OPEN_RECHECK: Duration = Duration::from_millis(500);
/// The shortest wait a rejection asks for.
const MIN_RETRY_IN: Duration = Duration::from_millis(10);

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; their outcomes fill the window.
    Closed,
    /// Calls are rejected without reaching the dependency.
    Open,
    /// A few trial calls test whether the dependency recovered.
    HalfOpen,
}

impl BreakerState {
    /// As the registry and the insurers API spell it: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `<kind>_breaker_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }

    fn from_recloser(name: &str) -> Option<Self> {
        match name {
            "Closed" => Some(BreakerState::Closed),
            "Open" => Some(BreakerState::Open),
            "HalfOpen" => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a breaker judges (an insurer's from its manifest's `circuitBreaker`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Failure rate (0..=1) over the window that opens the circuit.
    pub failure_rate: f32,
    /// Calls in the window.
    pub window: usize,
    pub half_open_calls: u32,
    pub open_duration: Duration,
    pub slow_call: Duration,
}

/// How one call's result counts in the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Neither: the call says nothing about the dependency's health.
    Ignored,
}

/// A call the breaker did not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// `Open`, or `HalfOpen` with every trial slot taken.
    pub state: BreakerState,
    /// When asking again makes sense: the rest of the open wait, or [`HALF_OPEN_RECHECK`].
    pub retry_in: Duration,
}

/// A circuit breaker over one dependency's calls.
pub struct Breaker {
    /// This breaker, for the timer that ends the open wait.
    me: Weak<Breaker>,
    /// What it guards, as its metrics' name and label say it (`insurer`, `aggregator`).
    kind: &'static str,
    /// Which one: the insurer's name, `intake`.
    name: String,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    /// Receives recloser's transition events while it is called (see [`Breaker::feed`]).
    dispatch: Dispatch,
    captured: Arc<Mutex<Option<BreakerState>>>,
    state: watch::Sender<BreakerState>,
}

struct Inner {
    recloser: Recloser,
    state: BreakerState,
    /// Bumped on every transition; a permit of an earlier generation records nothing.
    generation: u64,
    opened_at: Instant,
    trials_admitted: u32,
    trials_succeeded: u32,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field(self.kind, &self.name)
            .field("state", &self.state())
            .field("settings", &self.settings)
            .finish()
    }
}

impl Breaker {
    /// A closed breaker over `name`, a dependency of `kind` (which names its metrics).
    pub fn new(kind: &'static str, name: &str, settings: BreakerSettings) -> Arc<Self> {
        let captured = Arc::new(Mutex::new(None));
        let dispatch = Dispatch::new(Capture { captured: captured.clone() });
        let recloser = tracing::dispatcher::with_default(&dispatch, || {
            Recloser::custom()
                .error_rate_closed(settings.failure_rate)
                .closed_len(settings.window)
                // One slot: the first outcome let through after the open wait, then our verdict.
                .half_open_len(1)
                .error_rate_half_open(0.5)
                .open_wait(settings.open_duration)
                .build()
        });
        metrics::gauge!(format!("{kind}_breaker_state"), kind => name.to_string()).set(BreakerState::Closed.gauge());
        let (state, _) = watch::channel(BreakerState::Closed);
        Arc::new_cyclic(|me| Breaker {
            me: me.clone(),
            kind,
            name: name.to_string(),
            settings,
            inner: Mutex::new(Inner {
                recloser,
                state: BreakerState::Closed,
                generation: 0,
                opened_at: Instant::now(),
                trials_admitted: 0,
                trials_succeeded: 0,
            }),
            dispatch,
            captured,
            state,
        })
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.state.borrow()
    }

    /// Every state from now on, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.state.subscribe()
    }

    /// How it judges.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Fails fast, without changing anything, when a call now would surely be rejected:
    /// open and its wait not over, or half-open with every trial slot taken. Callers check
    /// this before waiting for the rate limiter; [`Breaker::admit`] decides.
    pub fn check(&self) -> Result<(), Rejected> {
        let inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => match self.open_left(&inner) {
                left if left.is_zero() => Ok(()),
                left => Err(Rejected { state: BreakerState::Open, retry_in: left.max(MIN_RETRY_IN) }),
            },
            BreakerState::HalfOpen if inner.trials_admitted < self.settings.half_open_calls => Ok(()),
            BreakerState::HalfOpen => Err(Rejected { state: BreakerState::HalfOpen, retry_in: HALF_OPEN_RECHECK }),
        }
    }

    /// Lets a call through or not. The call must start right away and end in
    /// [`Permit::record`].
    pub fn admit(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            // recloser rejects while its wait lasts (recording nothing); the first call it
            // lets through afterwards moves it to half-open.
            match self.feed(&mut inner, false) {
                Some(BreakerState::HalfOpen) => self.transition(&mut inner, BreakerState::HalfOpen),
                Some(other) => self.transition(&mut inner, other),
                None => {
                    let retry_in = self.open_left(&inner).max(MIN_RETRY_IN);
                    return Err(Rejected { state: BreakerState::Open, retry_in });
                }
            }
        }
        let trial = inner.state == BreakerState::HalfOpen;
        if trial {
            if inner.trials_admitted >= self.settings.half_open_calls {
                return Err(Rejected { state: BreakerState::HalfOpen, retry_in: HALF_OPEN_RECHECK });
            }
            inner.trials_admitted += 1;
        }
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            trial,
            started: Instant::now(),
            recorded: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_left(&self, inner: &Inner) -> Duration {
        (inner.opened_at + self.settings.open_duration).saturating_duration_since(Instant::now())
    }

    /// Records one outcome in recloser, returning the state it moved to, if it moved.
    /// While recloser is open, nothing is recorded and `None` comes back.
    fn feed(&self, inner: &mut Inner, failure: bool) -> Option<BreakerState> {
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        *captured = None;
        drop(captured);
        let _ = tracing::dispatcher::with_default(&self.dispatch, || {
            inner.recloser.call(|| if failure { Err(()) } else { Ok(()) })
        });
        self.captured.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn record(&self, permit: &Permit, verdict: Verdict) {
        let mut inner = self.lock();
        if permit.generation != inner.generation {
            return; // admitted before the last transition: says nothing about this state
        }
        match (inner.state, permit.trial, verdict) {
            (BreakerState::Closed, _, Verdict::Ignored) => {}
            (BreakerState::Closed, _, verdict) => {
                if let Some(to) = self.feed(&mut inner, verdict == Verdict::Failure) {
                    self.transition(&mut inner, to);
                }
            }
            (BreakerState::HalfOpen, true, Verdict::Ignored) => inner.trials_admitted -= 1,
            (BreakerState::HalfOpen, true, Verdict::Failure) => {
                let to = self.feed(&mut inner, true).unwrap_or(BreakerState::Open);
                self.transition(&mut inner, to);
            }
            (BreakerState::HalfOpen, true, Verdict::Success) => {
                inner.trials_succeeded += 1;
                if inner.trials_succeeded >= self.settings.half_open_calls {
                    let to = self.feed(&mut inner, false).unwrap_or(BreakerState::Closed);
                    self.transition(&mut inner, to);
                }
            }
            _ => {}
        }
    }

    /// At the end of the open wait that began with `generation`, moves to half-open unless
    /// a call did already. Needs a tokio runtime; without one, the next call does it.
    fn half_open_later(&self, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let me = self.me.clone();
        let wait = self.settings.open_duration;
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            // recloser's own wait started a moment before ours; it ends any time now.
            while me.upgrade().is_some_and(|breaker| !breaker.try_half_open(generation)) {
                tokio::time::sleep(MIN_RETRY_IN).await;
            }
        });
    }

    /// Asks recloser whether the open wait of `generation` is over, moving to half-open if so.
    /// True when there is nothing more to do.
    fn try_half_open(&self, generation: u64) -> bool {
        let mut inner = self.lock();
        if inner.state != BreakerState::Open || inner.generation != generation {
            return true;
        }
        match self.feed(&mut inner, false) {
            Some(to) => {
                self.transition(&mut inner, to);
                true
            }
            None => false,
        }
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState) {
        let from = inner.state;
        if from == to {
            return;
        }
        inner.state = to;
        inner.generation += 1;
        inner.trials_admitted = 0;
        inner.trials_succeeded = 0;
        if to == BreakerState::Open {
            inner.opened_at = Instant::now();
            self.half_open_later(inner.generation);
        }
        let (kind, name) = (self.kind, self.name.as_str());
        metrics::gauge!(format!("{kind}_breaker_state"), kind => name.to_string()).set(to.gauge());
        metrics::counter!(
            format!("{kind}_breaker_transitions_total"),
            kind => name.to_string(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        match to {
            BreakerState::Open => info!(
                kind, name, %from, %to, open_ms = self.settings.open_duration.as_millis() as u64,
                "circuit breaker opened: calls fail fast"
            ),
            BreakerState::HalfOpen => info!(
                kind, name, %from, %to, trials = self.settings.half_open_calls,
                "circuit breaker half-open: trial calls"
            ),
            BreakerState::Closed => info!(kind, name, %from, %to, "circuit breaker closed: calls flow"),
        }
        self.state.send_replace(to);
    }
}

/// Leave to make one call; record its result with [`Permit::record`].
#[must_use = "an admitted call must record its result"]
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    trial: bool,
    started: Instant,
    recorded: bool,
}

impl Permit {
    /// Records the call's verdict; a success slower than `slow_call` since it was admitted
    /// counts as a failure.
    pub fn record(mut self, verdict: Verdict) {
        self.recorded = true;
        let slow = self.started.elapsed() > self.breaker.settings.slow_call;
        let verdict = if verdict == Verdict::Success && slow { Verdict::Failure } else { verdict };
        self.breaker.record(&self, verdict);
    }

    /// Whether this call is one of half-open's trials.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

impl Drop for Permit {
    /// A call cut off without a result: a failure if it was already slow, otherwise nothing
    /// (its trial slot, if it had one, is free again).
    fn drop(&mut self) {
        if !self.recorded {
            let slow = self.started.elapsed() > self.breaker.settings.slow_call;
            self.breaker.record(self, if slow { Verdict::Failure } else { Verdict::Ignored });
        }
    }
}

/// A tracing subscriber that only listens to recloser's "state started" events.
struct Capture {
    captured: Arc<Mutex<Option<BreakerState>>>,
}

#[derive(Default)]
struct StateStarted {
    state: Option<BreakerState>,
    started: bool,
}

impl Visit for StateStarted {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "state" {
            self.state = BreakerState::from_recloser(value);
        }
    }

    fn record_u64(&mut self, field: &Field, _: u64) {
        if field.name() == "started_ts" {
            self.started = true;
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

impl tracing::Subscriber for Capture {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.target() == RECLOSER_EVENT { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == RECLOSER_EVENT
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visit = StateStarted::default();
        event.record(&mut visit);
        if let (true, Some(state)) = (visit.started, visit.state) {
            *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
        }
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(window: usize, half_open_calls: u32, open_ms: u64) -> BreakerSettings {
        BreakerSettings {
            failure_rate: 0.5,
            window,
            half_open_calls,
            open_duration: Duration::from_millis(open_ms),
            slow_call: Duration::from_secs(5),
        }
    }

    const FAIL: Verdict = Verdict::Failure;
    const OK: Verdict = Verdict::Success;

    fn call(breaker: &Arc<Breaker>, verdict: Verdict) -> Result<(), Rejected> {
        breaker.admit().map(|permit| permit.record(verdict))
    }

    /// A breaker over a test's dependency.
    fn new_breaker(name: &str, settings: BreakerSettings) -> Arc<Breaker> {
        Breaker::new("test", name, settings)
    }

    #[test]
    fn opens_once_the_window_is_full_and_failing_then_rejects() {
        let breaker = new_breaker("t-open", settings(4, 1, 60_000));
        let mut states = breaker.subscribe();
        // recloser judges from call window + 1, over the last `window` calls.
        for _ in 0..4 {
            call(&breaker, FAIL).unwrap();
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        call(&breaker, FAIL).unwrap();
        assert_eq!(breaker.state(), BreakerState::Open, "opened by the 5th failure");
        assert!(states.has_changed().unwrap());
        assert_eq!(*states.borrow_and_update(), BreakerState::Open);
        let rejected = breaker.admit().err().unwrap();
        assert_eq!(rejected.state, BreakerState::Open);
        assert!(rejected.retry_in > Duration::from_secs(59), "{rejected:?}");
        assert_eq!(breaker.check().unwrap_err().state, BreakerState::Open);
    }

    #[test]
    fn the_threshold_is_a_rate_over_the_window() {
        let breaker = new_breaker("t-rate", settings(4, 1, 60_000));
        // The window is judged from the 5th call on: 1 of the last 4 failed (25 %), twice.
        for (i, result) in [OK, FAIL, OK, OK, OK, FAIL].into_iter().enumerate() {
            call(&breaker, result).unwrap();
            assert_eq!(breaker.state(), BreakerState::Closed, "call {i}");
        }
        // Last four: OK, OK, FAIL, FAIL → 50 % → open.
        call(&breaker, FAIL).unwrap();
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn ignored_results_do_not_move_the_window_and_slow_successes_fail() {
        let breaker = new_breaker("t-ignored", settings(2, 1, 60_000));
        for _ in 0..10 {
            call(&breaker, Verdict::Ignored).unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "\"busy, retry later\" says nothing about health");
        let slow = new_breaker("t-slow", BreakerSettings { slow_call: Duration::ZERO, ..settings(2, 1, 60_000) });
        for _ in 0..3 {
            let permit = slow.admit().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            permit.record(OK);
        }
        assert_eq!(slow.state(), BreakerState::Open, "three slow successes open a window of two");
    }

    fn opened(window: usize, half_open_calls: u32, open_ms: u64) -> Arc<Breaker> {
        let breaker = new_breaker("t-half", settings(window, half_open_calls, open_ms));
        for _ in 0..=window {
            call(&breaker, FAIL).unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker
    }

    #[test]
    fn half_open_admits_exactly_the_trial_calls_and_closes_when_all_succeed() {
        let breaker = opened(2, 3, 30);
        assert!(breaker.check().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.check(), Ok(()), "the open wait is over");
        let trials: Vec<Permit> = (0..3).map(|_| breaker.admit().unwrap()).collect();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(trials.iter().all(Permit::is_trial));
        let rejected = breaker.admit().err().unwrap();
        assert_eq!(rejected, Rejected { state: BreakerState::HalfOpen, retry_in: HALF_OPEN_RECHECK });
        assert_eq!(breaker.check(), Err(rejected));
        let mut trials = trials.into_iter();
        trials.next().unwrap().record(OK);
        trials.next().unwrap().record(OK);
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "two of three trials judged");
        trials.next().unwrap().record(OK);
        assert_eq!(breaker.state(), BreakerState::Closed);
        // Closed again with a fresh window: the next failures do not open it at once.
        for _ in 0..2 {
            call(&breaker, FAIL).unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_again_and_late_results_are_ignored() {
        let breaker = opened(2, 2, 30);
        std::thread::sleep(Duration::from_millis(40));
        let first = breaker.admit().unwrap();
        let second = breaker.admit().unwrap();
        first.record(FAIL);
        assert_eq!(breaker.state(), BreakerState::Open, "the first failed trial re-opens");
        second.record(OK);
        assert_eq!(breaker.state(), BreakerState::Open, "a trial judged after the verdict changes nothing");
        assert!(breaker.admit().is_err(), "a new open wait");
        std::thread::sleep(Duration::from_millis(40));
        call(&breaker, OK).unwrap();
        call(&breaker, OK).unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_trial_dropped_or_rate_limited_frees_its_slot() {
        let breaker = opened(2, 1, 30);
        std::thread::sleep(Duration::from_millis(40));
        drop(breaker.admit().unwrap());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.admit().unwrap().record(Verdict::Ignored);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        call(&breaker, OK).unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// A subscriber that wants nothing, like a production one filtering at `warn`.
    struct Deaf;

    impl tracing::Subscriber for Deaf {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::never()
        }
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            false
        }
        fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
            Some(tracing::level_filters::LevelFilter::OFF)
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[test]
    fn transitions_are_seen_whatever_the_application_logs() {
        tracing::subscriber::with_default(Deaf, || {
            let breaker = opened(1, 1, 20);
            std::thread::sleep(Duration::from_millis(30));
            call(&breaker, OK).unwrap();
            assert_eq!(breaker.state(), BreakerState::Closed);
        });
    }

    #[tokio::test]
    async fn the_open_wait_ends_in_half_open_without_a_call() {
        let breaker = new_breaker("t-timer", settings(1, 1, 50));
        let mut states = breaker.subscribe();
        call(&breaker, FAIL).unwrap();
        call(&breaker, FAIL).unwrap();
        assert_eq!(*states.borrow_and_update(), BreakerState::Open);
        let opened = Instant::now();
        tokio::time::timeout(Duration::from_secs(1), states.changed()).await.unwrap().unwrap();
        assert_eq!(*states.borrow(), BreakerState::HalfOpen);
        let took = opened.elapsed();
        assert!(took >= Duration::from_millis(50) && took < Duration::from_millis(150), "{took:?}");
        call(&breaker, OK).unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn calls_admitted_before_opening_do_not_count_afterwards() {
        let breaker = new_breaker("t-stale", settings(2, 1, 30));
        let early = breaker.admit().unwrap();
        for _ in 0..3 {
            call(&breaker, FAIL).unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        let trial = breaker.admit().unwrap();
        early.record(FAIL);
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "a stale failure does not re-open");
        trial.record(OK);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
