//! Run-time state of each fake insurer: current faults, its rate limiter, its
//! calculations in flight and the counters tests assert on.

use crate::config::{Faults, Personality};
use crate::engine::Decision;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// Calculations older than this are forgotten, bounding memory in long demos.
const CALCULATION_TTL: Duration = Duration::from_secs(30 * 60);
/// Arrival times kept for the per-second peak; enough for minutes of heavy load.
const ARRIVALS_KEPT: usize = 200_000;
/// Trace ids kept for tests; a long demo stops adding after this many.
const TRACE_IDS_KEPT: usize = 1000;

/// One fake insurer at run time.
pub struct Insurer {
    pub personality: Personality,
    pub seed: u64,
    faults: RwLock<Faults>,
    limiter: RwLock<Option<DefaultDirectRateLimiter>>,
    calculations: Mutex<HashMap<String, Calculation>>,
    pub counters: Counters,
    calls: AtomicU64,
}

/// One calculation the insurer is working on.
#[derive(Debug, Clone)]
pub struct Calculation {
    /// When the clock for `decision.ready_after` started (None: not started yet, e.g. offers not requested).
    pub started: Option<Instant>,
    pub created: Instant,
    /// Wall-clock twin of `created`, for validity timestamps.
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub decision: Decision,
    /// The caller's own id of the request, where the style has one.
    pub request_key: String,
}

impl Calculation {
    /// The decided outcome once it is ready, `None` while the insurer is still "calculating".
    pub fn ready(&self, now: Instant) -> Option<&crate::engine::Outcome> {
        let started = self.started?;
        (now >= started + self.decision.ready_after).then_some(&self.decision.outcome)
    }

    /// When an offer made by this calculation stops being valid, RFC 3339.
    pub fn valid_until(&self, valid_for: Duration) -> String {
        let ready = self.created_at + self.decision.ready_after + valid_for;
        ready.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// Time left until ready, for `Retry-After` hints.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.started.map_or(Duration::ZERO, |s| (s + self.decision.ready_after).saturating_duration_since(now))
    }
}

impl Insurer {
    /// An insurer in its configured initial state.
    pub fn new(personality: Personality, seed: u64) -> Self {
        let faults = personality.faults.clone();
        Insurer {
            limiter: RwLock::new(limiter_for(&faults)),
            faults: RwLock::new(faults),
            personality,
            seed,
            calculations: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            calls: AtomicU64::new(0),
        }
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.faults.read().expect("faults lock").clone()
    }

    /// Replaces the faults; the rate limiter starts afresh with the new quota.
    pub fn set_faults(&self, faults: Faults) {
        *self.limiter.write().expect("limiter lock") = limiter_for(&faults);
        *self.faults.write().expect("faults lock") = faults;
    }

    /// `Err(wait)` when the configured rate is exceeded.
    pub fn check_rate(&self) -> Result<(), Duration> {
        let limiter = self.limiter.read().expect("limiter lock");
        match limiter.as_ref().map(|l| l.check()) {
            Some(Err(not_until)) => {
                Err(not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default())))
            }
            _ => Ok(()),
        }
    }

    /// A sequence number per call, so injected errors are reproducible under the seed.
    pub fn next_call(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed)
    }

    /// Stores a calculation under `id`, dropping expired ones.
    pub fn insert(&self, id: String, calculation: Calculation) {
        let mut calcs = self.calculations.lock().expect("calculations lock");
        let now = Instant::now();
        if calcs.len().is_multiple_of(1024) {
            calcs.retain(|_, c| now.duration_since(c.created) < CALCULATION_TTL);
        }
        calcs.insert(id, calculation);
    }

    /// A copy of the calculation stored under `id`.
    pub fn get(&self, id: &str) -> Option<Calculation> {
        self.calculations.lock().expect("calculations lock").get(id).cloned()
    }

    /// Changes the calculation under `id` in place; false when there is none.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Calculation)) -> bool {
        self.calculations.lock().expect("calculations lock").get_mut(id).map(f).is_some()
    }

    /// Forgets calculations, counters and run-time faults.
    pub fn reset(&self) {
        self.set_faults(self.personality.faults.clone());
        self.calculations.lock().expect("calculations lock").clear();
        self.counters.reset();
    }
}

fn limiter_for(faults: &Faults) -> Option<DefaultDirectRateLimiter> {
    let rps = NonZeroU32::new(faults.rate_limit_rps?)?;
    let burst = faults.rate_limit_burst.and_then(NonZeroU32::new).unwrap_or(rps);
    Some(RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)))
}

/// What the insurer has seen, for tests and the control API.
#[derive(Default)]
pub struct Counters {
    inner: Mutex<CounterData>,
}

#[derive(Default)]
struct CounterData {
    total: u64,
    by_endpoint: BTreeMap<String, u64>,
    by_status: BTreeMap<u16, u64>,
    arrivals: VecDeque<Instant>,
    trace_ids: BTreeSet<String>,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CounterSnapshot {
    pub requests_total: u64,
    pub by_endpoint: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// The most requests that arrived within any one-second window.
    pub max_requests_per_second: u64,
    /// W3C trace ids the calls carried in `traceparent` (the first 1000).
    #[serde(default)]
    pub trace_ids: BTreeSet<String>,
}

impl Counters {
    /// Records a request as it arrives, before any fault or limit applies, with its `traceparent`.
    pub fn arrived(&self, endpoint: &str, traceparent: Option<&str>) {
        let mut c = self.inner.lock().expect("counters lock");
        // A traceparent is 00-<trace id>-<span id>-<flags>; the sandbox only keeps the trace id.
        if let Some(trace_id) = traceparent.and_then(|t| t.split('-').nth(1))
            && c.trace_ids.len() < TRACE_IDS_KEPT
        {
            c.trace_ids.insert(trace_id.to_string());
        }
        c.total += 1;
        *c.by_endpoint.entry(endpoint.to_string()).or_default() += 1;
        if c.arrivals.len() == ARRIVALS_KEPT {
            c.arrivals.pop_front();
        }
        c.arrivals.push_back(Instant::now());
    }

    /// Records the status a request was answered with.
    pub fn answered(&self, status: u16) {
        *self.inner.lock().expect("counters lock").by_status.entry(status).or_default() += 1;
    }

    /// The current figures.
    pub fn snapshot(&self) -> CounterSnapshot {
        let c = self.inner.lock().expect("counters lock");
        CounterSnapshot {
            requests_total: c.total,
            by_endpoint: c.by_endpoint.clone(),
            by_status: c.by_status.clone(),
            max_requests_per_second: max_in_window(&c.arrivals, Duration::from_secs(1)),
            trace_ids: c.trace_ids.clone(),
        }
    }

    fn reset(&self) {
        *self.inner.lock().expect("counters lock") = CounterData::default();
    }
}

/// The largest number of sorted instants within any window of length `window`.
fn max_in_window(times: &VecDeque<Instant>, window: Duration) -> u64 {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_peak() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let times: VecDeque<Instant> = [0, 100, 900, 999, 1000, 1500, 2600].into_iter().map(at).collect();
        // 0,100,900,999 fall in [0,1000); 100..1000 → 100,900,999,1000 too.
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 4);
        assert_eq!(max_in_window(&VecDeque::new(), Duration::from_secs(1)), 0);
    }
}
