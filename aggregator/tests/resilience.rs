//! Resilience between the pollers and the insurers, proven by faults: the real local Postgres
//! (`make infra-up`), an in-process insurer sandbox whose faults the tests switch at run time
//! (and, for `Retry-After`, a scripted insurer), and the poller as production runs it.
//!
//! - a failing insurer opens the breaker within its window, no call reaches it while open,
//!   new quotes fail fast with `circuit_open`, and it recovers through half-open with exactly
//!   `halfOpenCalls` trial calls;
//! - a hanging insurer's timeouts open the breaker too, and calculations already created
//!   wait for it instead of failing;
//! - retries stay within their budget under a 100 % failing insurer, and a create without an
//!   idempotency key is never repeated once it may have arrived;
//! - `Retry-After` is honoured within a step, and a long one reschedules instead;
//! - two replicas flooding an insurer stay within its rate, as the sandbox counts it.
//!
//! Every test prints what it measured (`MEASURED …`, with `--nocapture`). They run one at a
//! time: their figures are timings, and this machine has two cores.

use aggregator::clients::retry::{BUDGET_PER_SECOND, BUDGET_RATIO};
use aggregator::clients::{self, Breaker, BreakerState};
use aggregator::db::MIGRATOR;
use aggregator::poller::{self, PollerSettings};
use aggregator::registry;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crds::InsurerIntegration;
use domain::events::{InsurerOutcome, QuoteEvent};
use sandbox::config::{ApiStyle, Config, Faults};
use sandbox::control::Insurers;
use sandbox::state::{CounterSnapshot, Insurer};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SANDBOX: &str = r#"
seed = 5

[[insurer]]
name = "alfa"
display_name = "Альфа"
style = "create-poll"
base_rate_position = 0.9
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "200ms", p99 = "200ms" }

[[insurer]]
name = "slowoffer"
display_name = "Неспешное"
style = "create-poll"
base_rate_position = 0.8
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "2500ms", p99 = "2500ms" }

[[insurer]]
name = "reso"
display_name = "РЕСО"
style = "offers-list"
base_rate_position = 0.9
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "200ms", p99 = "200ms" }

[[insurer]]
name = "flood"
display_name = "Лимит"
style = "create-poll"
base_rate_position = 0.9
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "0s", p99 = "0s" }
"#;

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A valid application: the example, registered in the Moscow region (50), with a КБМ class.
fn application() -> Value {
    let mut request = domain::example::request_in(10);
    request["owner"]["region"] = json!("50");
    request["owner"].as_object_mut().expect("owner").remove("city");
    request["drivers"][0]["kbm_class"] = json!("3");
    request
}

struct Harness {
    pool: PgPool,
    base: String,
    sandbox: Insurers,
    pollers: Vec<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Task {
    status: String,
    insurer_ref: Option<String>,
    attempts: i32,
    lease_owner: Option<String>,
}

impl Harness {
    async fn new() -> Self {
        let (pool, _) = testkit::fresh_database("resilience").await;
        MIGRATOR.run(&pool).await.expect("migrations apply");
        let app = sandbox::App::build(Config::from_toml(SANDBOX).expect("sandbox config"));
        let sandbox = app.insurers.clone();
        let addr = app.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox starts");
        Harness { pool, base: format!("http://{addr}"), sandbox, pollers: Vec::new() }
    }

    /// A manifest named `name` calling the sandbox personality `personality`, with `spec` lines.
    fn manifest(&self, name: &str, personality: &str, spec: &str) -> InsurerIntegration {
        let style = match self.sandbox[personality].personality.style {
            ApiStyle::CreatePoll => "create-poll",
            ApiStyle::Operation => "operation",
            ApiStyle::OffersList => "offers-list",
            ApiStyle::Rpc => unreachable!("an rpc insurer needs a mapping; these tests use the built-in styles"),
        };
        manifest_at(name, &format!("{}/{personality}", self.base), style, spec)
    }

    /// Starts a poller replica of `manifest`; returns its circuit breaker once it registered.
    async fn start(&mut self, manifest: InsurerIntegration) -> Arc<Breaker> {
        let name = manifest.name().to_string();
        let api = clients::for_manifest(&manifest, &PathBuf::from("/nonexistent")).expect("client");
        let breaker = api.breaker().expect("HTTP clients have a breaker");
        let replica = format!("{name}-{}", &Uuid::new_v4().simple().to_string()[..6]);
        let settings = PollerSettings::new(manifest, self.pool.clone(), PathBuf::from("/nonexistent"), replica);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(poller::run_with_api(settings, api, async move {
            let _ = stopped.await;
        }));
        self.pollers.push((stop, handle));
        eventually(Duration::from_secs(5), || async {
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM insurers WHERE name = $1)")
                .bind(&name)
                .fetch_one(&self.pool)
                .await
                .unwrap()
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("poller {name} did not register"));
        breaker
    }

    async fn stop(self) {
        for (stop, handle) in self.pollers {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("poller stops")
                .expect("poller task")
                .expect("poller ran without error");
        }
    }

    /// `n` applications for `insurer`, written and notified the way intake does.
    async fn submit(&self, insurer: &str, n: usize, deadline_in: Duration) -> Vec<Uuid> {
        let mut tx = self.pool.begin().await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO applications (id, partner, request_hash, request, deadline)
                 VALUES ($1, 'test', '\\x00', $2, now() + make_interval(secs => $3))",
            )
            .bind(id)
            .bind(application())
            .bind(deadline_in.as_secs_f64())
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO tasks (application_id, insurer, deadline) VALUES ($1, $2, now() + make_interval(secs => $3))",
            )
            .bind(id)
            .bind(insurer)
            .bind(deadline_in.as_secs_f64())
            .execute(&mut *tx)
            .await
            .unwrap();
            ids.push(id);
        }
        sqlx::query("SELECT pg_notify('osago_tasks', $1)").bind(insurer).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        ids
    }

    async fn task(&self, id: Uuid, insurer: &str) -> Task {
        sqlx::query_as(
            "SELECT status::text AS status, insurer_ref, attempts, lease_owner FROM tasks
             WHERE application_id = $1 AND insurer = $2",
        )
        .bind(id)
        .bind(insurer)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until every task in `ids` is final; returns each one's only outbox event.
    async fn outcomes(&self, ids: &[Uuid], insurer: &str, within: Duration) -> Vec<InsurerOutcome> {
        let mut outcomes = Vec::new();
        for &id in ids {
            eventually(within, || async { (self.task(id, insurer).await.status != "pending").then_some(()) })
                .await
                .unwrap_or_else(|| panic!("{insurer} task still pending after {within:?}"));
            let rows: Vec<Json<QuoteEvent>> = sqlx::query_scalar(
                "SELECT payload::jsonb FROM outbox WHERE message_key = $1 AND payload::jsonb->>'insurer' = $2 ORDER BY id",
            )
            .bind(id.to_string())
            .bind(insurer)
            .fetch_all(&self.pool)
            .await
            .unwrap();
            assert_eq!(rows.len(), 1, "{insurer}: exactly one event per final task");
            outcomes.push(rows.into_iter().next().unwrap().0.outcome);
        }
        outcomes
    }

    fn counters(&self, personality: &str) -> CounterSnapshot {
        self.sandbox[personality].counters.snapshot()
    }

    fn requests(&self, personality: &str) -> u64 {
        self.counters(personality).requests_total
    }

    fn faults(&self, personality: &str, faults: Faults) {
        self.sandbox[personality].set_faults(faults);
    }

    /// The breaker state the registry (and so `GET /internal/v1/insurers`) shows.
    async fn registered_state(&self, insurer: &str) -> Option<String> {
        registry::active(&self.pool).await.unwrap().into_iter().find(|i| i.name == insurer).map(|i| i.breaker_state)
    }

    /// Waits until the registry shows `state`; returns how long that took.
    async fn registry_shows(&self, insurer: &str, state: BreakerState, within: Duration) -> Duration {
        let start = Instant::now();
        eventually(within, || async {
            (self.registered_state(insurer).await.as_deref() == Some(state.as_str())).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("the registry does not show {state} for {insurer} within {within:?}"));
        start.elapsed()
    }
}

fn manifest_at(name: &str, base_url: &str, style: &str, spec: &str) -> InsurerIntegration {
    let yaml = format!(
        "apiVersion: osago.io/v1alpha1\nkind: InsurerIntegration\nmetadata: {{name: {name}}}\nspec:\n  \
         displayName: {name}\n  api: {{baseUrl: '{base_url}', style: {style}}}\n{spec}"
    );
    InsurerIntegration::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Polls `check` every 5 ms until it yields something or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, check: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A breaker transition as the test saw it: when, and how many calls the insurer had counted.
#[derive(Debug, Clone, Copy)]
struct Seen {
    state: BreakerState,
    at: Instant,
    calls: u64,
}

/// Records every transition of `breaker` with the insurer's call count at that moment.
fn watch_breaker(breaker: &Breaker, insurer: Arc<Insurer>) -> Arc<Mutex<Vec<Seen>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut states = breaker.subscribe();
    let writer = log.clone();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let state = *states.borrow_and_update();
            let calls = insurer.counters.snapshot().requests_total;
            writer.lock().unwrap().push(Seen { state, at: Instant::now(), calls });
        }
    });
    log
}

/// The first transition to `state` after the `after`-th one.
async fn transition_to(log: &Mutex<Vec<Seen>>, state: BreakerState, after: usize, within: Duration) -> (usize, Seen) {
    eventually(within, || async {
        log.lock().unwrap().iter().enumerate().skip(after).find(|(_, s)| s.state == state).map(|(i, s)| (i + 1, *s))
    })
    .await
    .unwrap_or_else(|| panic!("no transition to {state} within {within:?}: {:?}", log.lock().unwrap()))
}

/// The value of the Prometheus series `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .find(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn failed(reason: &str) -> InsurerOutcome {
    InsurerOutcome::Failed { reason: reason.into() }
}

// ------------------------------------------------------------------ circuit breaker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_insurer_opens_the_breaker_within_its_window_then_recovers_through_half_open() {
    let _serial = SERIAL.lock().await;
    let prometheus = platform::metrics::install();
    let mut h = Harness::new().await;
    let (insurer, window, trials, max_concurrent) = ("alfa-breaker", 10u64, 3u64, 4u64);
    let open = Duration::from_secs(2);
    let manifest = h.manifest(
        insurer,
        "alfa",
        &format!(
            "  timeouts: {{connect: 1s, request: 1s, quote: 30s}}
  retry: {{maxAttempts: 1}}
  circuitBreaker: {{failureRateThreshold: 50, windowSize: {window}, halfOpenCalls: {trials}, openDuration: 2s, slowCallDuration: 1s}}
  rateLimit: {{requestsPerSecond: 500, burst: 500, maxConcurrent: {max_concurrent}}}
  polling: {{initialDelay: 700ms, interval: 1s, maxInterval: 2s}}
"
        ),
    );
    h.faults("alfa", Faults { error_rate: 1.0, ..Faults::default() });
    let breaker = h.start(manifest).await;
    let seen = watch_breaker(&breaker, h.sandbox["alfa"].clone());
    assert_eq!(h.registered_state(insurer).await.as_deref(), Some("closed"));

    // Every create answers 500: the window fills with failures and the breaker opens.
    let submitted = Instant::now();
    let failing = h.submit(insurer, 20, Duration::from_secs(30)).await;
    let (n, opened) = transition_to(&seen, BreakerState::Open, 0, Duration::from_secs(10)).await;
    let time_to_open = opened.at - submitted;
    assert!(
        (window + 1..=window + max_concurrent).contains(&opened.calls),
        "opened after {} calls: judged at call windowSize + 1, plus what was already in flight",
        opened.calls
    );
    let shown_open = h.registry_shows(insurer, BreakerState::Open, Duration::from_secs(1)).await;
    // Calls admitted just before it opened may still have been on their way: count from 100 ms on.
    tokio::time::sleep((opened.at + Duration::from_millis(100)).saturating_duration_since(Instant::now())).await;
    let settled = h.requests("alfa");
    assert!(settled <= window + max_concurrent, "{settled} calls reached the insurer before it opened");

    // While open, new quotes fail at once with `circuit_open`, each with its one event…
    let fast = Instant::now();
    let newcomers = h.submit(insurer, 3, Duration::from_secs(30)).await;
    let outcomes = h.outcomes(&newcomers, insurer, Duration::from_secs(1)).await;
    let fail_fast = fast.elapsed();
    assert!(outcomes.iter().all(|o| *o == failed("circuit_open")), "{outcomes:?}");
    assert!(fail_fast < Duration::from_secs(1), "failed within {fail_fast:?}");
    // …and so do the first ones, none of which could create its calculation.
    let outcomes = h.outcomes(&failing, insurer, Duration::from_secs(3)).await;
    assert!(outcomes.iter().all(|o| *o == failed("circuit_open")), "{outcomes:?}");

    // No call reaches the insurer while open.
    let almost_over = opened.at + open - Duration::from_millis(100);
    tokio::time::sleep(almost_over.saturating_duration_since(Instant::now())).await;
    let during_open = h.requests("alfa") - settled;
    assert_eq!(during_open, 0, "calls reached the insurer while the breaker was open");

    // The insurer recovers; the breaker half-opens by itself when the open wait is over…
    h.faults("alfa", Faults::default());
    let fixed = Instant::now();
    let (n, half) = transition_to(&seen, BreakerState::HalfOpen, n, Duration::from_secs(2)).await;
    let open_for = half.at - opened.at;
    assert!(open_for >= open && open_for < open + Duration::from_millis(300), "open for {open_for:?}");
    h.registry_shows(insurer, BreakerState::HalfOpen, Duration::from_secs(1)).await;
    // …lets exactly `halfOpenCalls` trial creates through, closes, and the rest follow.
    let recovering = h.submit(insurer, 6, Duration::from_secs(30)).await;
    let (_, closed) = transition_to(&seen, BreakerState::Closed, n, Duration::from_secs(5)).await;
    assert_eq!(closed.calls - half.calls, trials, "trial calls while half-open");
    let outcomes = h.outcomes(&recovering, insurer, Duration::from_secs(10)).await;
    assert!(outcomes.iter().all(|o| matches!(o, InsurerOutcome::Offer { .. })), "{outcomes:?}");
    h.registry_shows(insurer, BreakerState::Closed, Duration::from_secs(1)).await;

    let text = prometheus.render();
    let labels = |from: &'static str, to: &'static str| [("insurer", insurer), ("from", from), ("to", to)];
    for (from, to) in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")] {
        assert_eq!(metric(&text, "insurer_breaker_transitions_total", &labels(from, to)), Some(1.0), "{from}→{to}");
    }
    assert_eq!(metric(&text, "insurer_breaker_state", &[("insurer", insurer)]), Some(0.0));
    let rejected = metric(&text, "insurer_calls_total", &[("insurer", insurer), ("outcome", "circuit_open")]);
    assert!(rejected.unwrap_or_default() >= 3.0, "rejections are counted: {rejected:?}");
    eprintln!(
        "MEASURED breaker (100 % HTTP 500, windowSize {window}, threshold 50 %, maxConcurrent {max_concurrent}): \
         opened after {} calls / {} ms from submit; registry showed open {} ms later; new quotes failed \
         `circuit_open` within {} ms; {} calls in flight as it opened reached the insurer after; {during_open} calls \
         reached it during the rest of the {} ms open; half-open \
         after {} ms open; {trials} trial calls (halfOpenCalls {trials}) closed it {} ms after half-open \
         (time to recover from the fix: {} ms)",
        opened.calls,
        ms(time_to_open),
        ms(shown_open),
        ms(fail_fast),
        settled - opened.calls,
        ms(open),
        ms(open_for),
        ms(closed.at - half.at),
        ms(closed.at - fixed),
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_insurers_timeouts_open_the_breaker_and_created_quotes_wait_for_it() {
    let _serial = SERIAL.lock().await;
    let prometheus = platform::metrics::install();
    let mut h = Harness::new().await;
    let (insurer, window, trials) = ("slow-hang", 6u64, 2u64);
    let open = Duration::from_millis(1500);
    let manifest = h.manifest(
        insurer,
        "slowoffer",
        &format!(
            "  timeouts: {{connect: 1s, request: 300ms, quote: 20s}}
  retry: {{maxAttempts: 1}}
  circuitBreaker: {{failureRateThreshold: 50, windowSize: {window}, halfOpenCalls: {trials}, openDuration: 1500ms, slowCallDuration: 5s}}
  rateLimit: {{requestsPerSecond: 500, burst: 500, maxConcurrent: 8}}
  polling: {{initialDelay: 100ms, interval: 1s, maxInterval: 1s}}
"
        ),
    );
    let breaker = h.start(manifest).await;
    let seen = watch_breaker(&breaker, h.sandbox["slowoffer"].clone());

    // Four calculations are created (their offers are ready 2.5 s later)…
    let created = h.submit(insurer, 4, Duration::from_secs(20)).await;
    // An idempotent create's reference stays with the poller while it holds the task: the
    // sandbox tells when all four were created and polled once.
    let calls = |endpoint: &str| h.counters("slowoffer").by_endpoint.get(endpoint).copied().unwrap_or(0);
    eventually(Duration::from_secs(3), || async {
        (calls("POST /v1/calculate") >= 4 && calls("GET /v1/calculate") >= 4).then_some(())
    })
    .await
    .expect("created and polled");
    // …then the insurer hangs: polls and new creates time out after 300 ms.
    h.faults("slowoffer", Faults { hang: true, ..Faults::default() });
    let hung = Instant::now();
    let before = h.requests("slowoffer");
    let newcomers = h.submit(insurer, 4, Duration::from_secs(20)).await;
    let (n, opened) = transition_to(&seen, BreakerState::Open, 0, Duration::from_secs(5)).await;
    let calls_to_open = opened.calls - before;
    assert!(calls_to_open <= window + 1 + 8, "opened after {calls_to_open} timed-out calls");
    let text = prometheus.render();
    // Half the window failing opens it (50 %); the only failures were timeouts.
    let timeouts = metric(&text, "insurer_call_errors_total", &[("insurer", insurer), ("kind", "timeout")]);
    assert!(timeouts.unwrap_or_default() >= (window / 2) as f64, "the breaker opened on timeouts: {timeouts:?}");
    for kind in ["server_error", "transport", "connect", "protocol"] {
        assert_eq!(metric(&text, "insurer_call_errors_total", &[("insurer", insurer), ("kind", kind)]), None, "{kind}");
    }

    // While open: new quotes fail fast, created ones wait (pending, not failed).
    let outcomes = h.outcomes(&newcomers, insurer, Duration::from_secs(2)).await;
    assert!(outcomes.iter().all(|o| *o == failed("circuit_open")), "{outcomes:?}");
    for &id in &created {
        assert_eq!(h.task(id, insurer).await.status, "pending", "a created calculation waits for the breaker");
    }
    h.faults("slowoffer", Faults::default());

    // Half-open: two trial polls find the offers, the breaker closes, everyone gets an offer.
    let (n, half) = transition_to(&seen, BreakerState::HalfOpen, n, Duration::from_secs(3)).await;
    let (_, closed) = transition_to(&seen, BreakerState::Closed, n, Duration::from_secs(5)).await;
    assert_eq!(closed.calls - half.calls, trials, "trial calls while half-open");
    let outcomes = h.outcomes(&created, insurer, Duration::from_secs(10)).await;
    assert!(outcomes.iter().all(|o| matches!(o, InsurerOutcome::Offer { .. })), "{outcomes:?}");
    eprintln!(
        "MEASURED hang (300 ms request timeout, windowSize {window}): opened after {calls_to_open} timed-out calls / \
         {} ms after the hang began; {} timeouts counted; open {} ms; {trials} trial polls closed it {} ms later; \
         the 4 created quotes waited and got offers, the 4 new ones failed `circuit_open`",
        ms(opened.at - hung),
        timeouts.unwrap_or_default(),
        ms(half.at - opened.at),
        ms(closed.at - half.at),
    );
    // The watcher notes a transition when it gets to run, a moment after it happened; a trial
    // call now lands right at the end of openDuration, so allow for that moment.
    assert!(half.at - opened.at >= open - Duration::from_millis(20), "half-open too early");
    h.stop().await;
}

// ------------------------------------------------------------------ retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_their_budget_and_never_repeat_an_unkeyed_create() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::new().await;
    // Three attempts per call, a 300 ms request timeout, a breaker that never judges here.
    let spec = "  timeouts: {connect: 1s, request: 300ms, quote: 20s}
  retry: {maxAttempts: 3, initialBackoff: 50ms, maxBackoff: 200ms, multiplier: 2.0}
  circuitBreaker: {failureRateThreshold: 100, windowSize: 10000}
  rateLimit: {requestsPerSecond: 5000, burst: 5000, maxConcurrent: 64}
";
    h.faults("alfa", Faults { error_rate: 1.0, ..Faults::default() });
    h.faults("reso", Faults { error_rate: 1.0, ..Faults::default() });
    h.start(h.manifest("alfa-retry", "alfa", spec)).await;
    h.start(h.manifest("reso-retry", "reso", spec)).await;

    // 50 quotes with a 1 s deadline: one step each (the next would be a second later).
    let tasks = 50;
    let started = Instant::now();
    let ids = h.submit("alfa-retry", tasks, Duration::from_secs(1)).await;
    let reso = h.submit("reso-retry", 10, Duration::from_secs(1)).await;
    let outcomes = h.outcomes(&ids, "alfa-retry", Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(outcomes.iter().all(|o| *o == InsurerOutcome::Expired), "{outcomes:?}");
    h.outcomes(&reso, "reso-retry", Duration::from_secs(5)).await;

    let calls = h.requests("alfa");
    let bound = tasks as f64 * (1.0 + BUDGET_RATIO) + BUDGET_PER_SECOND * (1.0 + took.as_secs_f64());
    let naive = tasks * 3;
    assert!(calls > tasks as u64, "some calls were retried: {calls}");
    assert!((calls as f64) <= bound, "{calls} calls for {tasks} quotes, budget bound {bound:.1}");
    // The offers-list create carries no idempotency key: a 500 may have created a contract,
    // so it is not repeated within the step, budget or not.
    let contracts = h.counters("reso").by_endpoint.get("POST /contracts").copied().unwrap_or(0);
    assert_eq!(contracts, 10, "one POST /contracts per quote");
    eprintln!(
        "MEASURED retry budget (100 % HTTP 500, maxAttempts 3): {tasks} quotes → {calls} calls \
         ({} retries; bound {bound:.1} = quotes × {} + {BUDGET_PER_SECOND}/s × {:.1} s; {naive} without a budget); \
         offers-list: 10 quotes → {contracts} POST /contracts",
        calls - tasks as u64,
        1.0 + BUDGET_RATIO,
        1.0 + took.as_secs_f64(),
    );
    h.stop().await;
}

/// An insurer of the create-poll style answering from a script, recording when each call came.
#[derive(Clone, Default)]
struct Scripted {
    arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
}

impl Scripted {
    async fn spawn(&self) -> String {
        let app = axum::Router::new()
            .route("/{insurer}/v1/calculate", axum::routing::post(scripted_create))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn arrivals(&self, key: &str) -> Vec<Instant> {
        self.arrivals.lock().unwrap().get(key).cloned().unwrap_or_default()
    }
}

/// `short`: the first call is a 429 with `Retry-After: 1`, the next a decline.
/// `long`: always 429 with `Retry-After: 30`.
async fn scripted_create(State(s): State<Scripted>, Path(insurer): Path<String>, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    let key = body["request_id"].as_str().unwrap().to_string();
    let n = {
        let mut arrivals = s.arrivals.lock().unwrap();
        let calls = arrivals.entry(key.clone()).or_default();
        calls.push(Instant::now());
        calls.len()
    };
    let limited = |seconds: &'static str| {
        let mut response =
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!({"request_id": key, "message": "slow down"})))
                .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        response
    };
    match (insurer.as_str(), n) {
        ("short", 1) => limited("1"),
        ("long", _) => limited("30"),
        _ => axum::Json(json!({"request_id": key, "status": "NO_CALCULATION_AVAILABLE", "message": "not today"}))
            .into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_the_step_and_a_long_one_reschedules() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::new().await;
    let scripted = Scripted::default();
    let base = scripted.spawn().await;
    let spec = "  timeouts: {connect: 1s, request: 500ms, quote: 20s}
  retry: {maxAttempts: 3, initialBackoff: 10ms, maxBackoff: 20ms}
";
    h.start(manifest_at("short", &format!("{base}/short"), "create-poll", spec)).await;
    h.start(manifest_at("long", &format!("{base}/long"), "create-poll", spec)).await;

    // A 429 with Retry-After: 1 — retried within the step (lease held), a second later.
    let [id] = h.submit("short", 1, Duration::from_secs(20)).await[..] else { unreachable!() };
    let key = clients::task_key("short", id);
    eventually(Duration::from_secs(2), || async { (scripted.arrivals(&key).len() == 1).then_some(()) })
        .await
        .expect("first call");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = h.task(id, "short").await;
    assert!(waiting.lease_owner.is_some(), "the step waits, holding its lease: {waiting:?}");
    let outcome = h.outcomes(&[id], "short", Duration::from_secs(5)).await.remove(0);
    assert_eq!(outcome, InsurerOutcome::Declined { reason: "not today".into() });
    let calls = scripted.arrivals(&key);
    assert_eq!(calls.len(), 2);
    let gap = calls[1] - calls[0];
    assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(1300), "retried {gap:?} later");
    assert_eq!(h.task(id, "short").await.attempts, 2, "both calls are counted");

    // A 429 with Retry-After: 30 and a 3 s deadline: no waiting in the step; the task is
    // rescheduled (to its deadline, where it expires) without another call.
    let [long] = h.submit("long", 1, Duration::from_secs(3)).await[..] else { unreachable!() };
    let long_key = clients::task_key("long", long);
    eventually(Duration::from_secs(2), || async { (scripted.arrivals(&long_key).len() == 1).then_some(()) })
        .await
        .expect("first call");
    eventually(Duration::from_secs(1), || async { h.task(long, "long").await.lease_owner.is_none().then_some(()) })
        .await
        .expect("the step ends at once, releasing the task");
    let outcome = h.outcomes(&[long], "long", Duration::from_secs(5)).await.remove(0);
    assert_eq!(outcome, InsurerOutcome::Expired);
    assert_eq!(scripted.arrivals(&long_key).len(), 1, "not called again before Retry-After");
    eprintln!(
        "MEASURED Retry-After: 1 s → retried {} ms later within the step; Retry-After: 30 s with 3 s left → \
         rescheduled, 1 call, expired at the deadline",
        ms(gap)
    );
    h.stop().await;
}

// ------------------------------------------------------------------ rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_flooding_an_insurer_stay_within_its_rate() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::new().await;
    let (rps, burst, tasks) = (5u64, 5u64, 30usize);
    // The insurer enforces the very limit the manifest declares.
    h.faults(
        "flood",
        Faults { rate_limit_rps: Some(rps as u32), rate_limit_burst: Some(burst as u32), ..Faults::default() },
    );
    let spec = format!(
        "  replicas: 2
  timeouts: {{connect: 1s, request: 1s, quote: 60s}}
  rateLimit: {{requestsPerSecond: {rps}, burst: {burst}, maxConcurrent: 8}}
"
    );
    h.start(h.manifest("flood", "flood", &spec)).await;
    h.start(h.manifest("flood", "flood", &spec)).await;

    let started = Instant::now();
    let ids = h.submit("flood", tasks, Duration::from_secs(60)).await;
    let outcomes = h.outcomes(&ids, "flood", Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(outcomes.iter().all(|o| matches!(o, InsurerOutcome::Offer { .. })), "{outcomes:?}");

    let counters = h.counters("flood");
    let limited = counters.by_status.get(&429).copied().unwrap_or(0);
    let calls = counters.requests_total;
    let rate = calls as f64 / took.as_secs_f64();
    eprintln!(
        "MEASURED rate limit (requestsPerSecond {rps}, burst {burst}, 2 replicas, insurer enforcing the same): \
         {calls} calls in {} ms ({rate:.2}/s overall), at most {} within any 1 s window (bound {}), {limited} × 429",
        ms(took),
        counters.max_requests_per_second,
        burst + rps,
    );
    assert_eq!(limited, 0, "the insurer never had to refuse a call");
    assert!(counters.max_requests_per_second <= burst + rps, "{counters:?}");
    assert_eq!(calls, tasks as u64, "one create per quote (the offer comes with it)");
    // The burst (2 per replica) at once, then the rate: (30 − 4) / 5 per second ≈ 5.2 s.
    let floor = Duration::from_secs_f64((tasks as f64 - 4.0) / rps as f64);
    assert!(took >= floor, "{took:?}: faster than the rate allows");
    h.stop().await;
}
