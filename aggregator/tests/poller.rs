//! The poller against the real local Postgres (`make infra-up`) and an in-process insurer
//! sandbox with short latencies: tasks written the way intake writes them end as offers,
//! declines, failures or expiries with exactly one outbox event each; notifications wake
//! the poller at once; expired leases are taken over and live ones left alone; calls for
//! one task keep a second apart; shutdown releases what it cannot finish. Plus: every
//! example manifest matches a sandbox personality.

use aggregator::clients::{self, Breaker, CallContext, CallError, Created, InsurerApi, Polled};
use aggregator::db::MIGRATOR;
use aggregator::poller::{self, PollerSettings};
use crds::{ApiStyle, AuthType, InsurerIntegration};
use domain::events::{EventType, InsurerOutcome, QuoteEvent};
use domain::request::QuoteRequest;
use domain::tariff::Quote;
use futures::future::BoxFuture;
use sandbox::config::Config;
use sandbox::control::Insurers;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Fast versions of the shipped personalities (same names and credentials), plus `slow`.
const SANDBOX: &str = r#"
seed = 11

[[insurer]]
name = "alfa"
display_name = "АльфаСтрахование"
style = "create-poll"
auth = { type = "bearer", token = "alfa-sandbox-token" }
base_rate_position = 0.93
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "300ms", p99 = "300ms" }

[[insurer]]
name = "ingos"
display_name = "Ингосстрах"
style = "operation"
auth = { type = "header", header = "X-Api-Key", key = "ingos-sandbox-key" }
base_rate_position = 0.97
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "300ms", p99 = "300ms" }

[[insurer]]
name = "reso"
display_name = "РЕСО-Гарантия"
style = "offers-list"
base_rate_position = 0.90
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "300ms", p99 = "300ms" }

[[insurer]]
name = "renins"
display_name = "Ренессанс Страхование"
style = "rpc"
auth = { type = "header", header = "X-Partner-Key", key = "renins-sandbox-key" }
base_rate_position = 0.92
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "300ms", p99 = "300ms" }

[[insurer]]
name = "sogaz"
display_name = "СОГАЗ"
style = "create-poll"
auth = { type = "bearer", token = "sogaz-sandbox-token" }
base_rate_position = 0.95
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "100ms", p99 = "100ms" }
decline = { regions = ["77"] }

[[insurer]]
name = "vsk"
display_name = "ВСК"
style = "operation"
auth = { type = "header", header = "X-Api-Key", key = "vsk-sandbox-key" }
base_rate_position = 0.99
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "100ms", p99 = "100ms" }

[[insurer]]
name = "rgs"
display_name = "Росгосстрах"
style = "offers-list"
base_rate_position = 1.0
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "100ms", p99 = "100ms" }

[[insurer]]
name = "laggy"
display_name = "Задумчивое страхование"
style = "create-poll"
auth = { type = "bearer", token = "alfa-sandbox-token" }
base_rate_position = 0.5
create_latency = { median = "400ms", p99 = "400ms" }
offer_latency = { median = "0s", p99 = "0s" }

[[insurer]]
name = "slow"
display_name = "Медленное страхование"
style = "create-poll"
auth = { type = "bearer", token = "alfa-sandbox-token" }
base_rate_position = 0.5
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "3s", p99 = "3s" }
"#;

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn example(name: &str) -> InsurerIntegration {
    let path = examples().join("insurers").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    InsurerIntegration::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A valid application with a КБМ class; `start_in_days` may be negative (insurers refuse
/// those with a 400).
fn application(start_in_days: i64) -> Value {
    let mut request = domain::example::request_in(start_in_days);
    request["drivers"][0]["kbm_class"] = json!("3");
    request
}

struct Harness {
    pool: PgPool,
    /// The test database's URL.
    url: String,
    base: String,
    config: Config,
    sandbox: Insurers,
    pollers: Vec<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

impl Harness {
    async fn new() -> Self {
        let (pool, url) = testkit::fresh_database("poller").await;
        MIGRATOR.run(&pool).await.expect("migrations apply");
        let config = Config::from_toml(SANDBOX).expect("sandbox config");
        let app = sandbox::App::build(config.clone());
        let sandbox = app.insurers.clone();
        let addr = app.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("sandbox starts");
        Harness { pool, url, base: format!("http://{addr}"), config, sandbox, pollers: Vec::new() }
    }

    /// The shipped manifest of `name`, pointed at this sandbox, polling sooner.
    fn manifest(&self, name: &str) -> InsurerIntegration {
        let mut manifest = example(name);
        manifest.spec.api.base_url = format!("{}/{name}", self.base);
        manifest.spec.polling.initial_delay = crds::Duration::millis(100);
        manifest
    }

    fn settings(&self, manifest: InsurerIntegration) -> PollerSettings {
        let replica = format!("{}-test-{}", manifest.name(), &Uuid::new_v4().simple().to_string()[..6]);
        PollerSettings::new(manifest, self.pool.clone(), examples().join("secrets"), replica)
    }

    /// Starts a poller and returns once it listens and has registered its insurer.
    async fn start(&mut self, settings: PollerSettings) {
        self.start_with(settings, None).await;
    }

    async fn start_with(&mut self, settings: PollerSettings, api: Option<Arc<dyn InsurerApi>>) {
        let name = settings.manifest.name().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let handle = match api {
            Some(api) => tokio::spawn(poller::run_with_api(settings, api, shutdown)),
            None => tokio::spawn(poller::run(settings, shutdown)),
        };
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
    }

    /// Stops every poller and checks that each stopped cleanly.
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

    /// Writes an application and its tasks the way intake does, notifying each insurer.
    async fn submit(&self, request: &Value, insurers: &[&str], deadline_in: Duration, notify: bool) -> Uuid {
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO applications (id, partner, request_hash, request, deadline)
             VALUES ($1, 'test', '\\x00', $2, now() + make_interval(secs => $3))",
        )
        .bind(id)
        .bind(request)
        .bind(deadline_in.as_secs_f64())
        .execute(&mut *tx)
        .await
        .unwrap();
        for insurer in insurers {
            sqlx::query(
                "INSERT INTO tasks (application_id, insurer, deadline) VALUES ($1, $2, now() + make_interval(secs => $3))",
            )
            .bind(id)
            .bind(insurer)
            .bind(deadline_in.as_secs_f64())
            .execute(&mut *tx)
            .await
            .unwrap();
            if notify {
                sqlx::query("SELECT pg_notify('osago_tasks', $1)").bind(insurer).execute(&mut *tx).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
        id
    }

    async fn task(&self, id: Uuid, insurer: &str) -> Task {
        sqlx::query_as(
            "SELECT status::text AS status, version, insurer_ref, attempts, lease_owner, next_poll_at <= deadline AS on_time
             FROM tasks WHERE application_id = $1 AND insurer = $2",
        )
        .bind(id)
        .bind(insurer)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until the task is no longer pending.
    async fn finished(&self, id: Uuid, insurer: &str, within: Duration) -> Task {
        eventually(within, || async {
            let task = self.task(id, insurer).await;
            (task.status != "pending").then_some(task)
        })
        .await
        .unwrap_or_else(|| panic!("{insurer} task still pending after {within:?}"))
    }

    /// The outbox events of one quote at one insurer.
    async fn events(&self, id: Uuid, insurer: &str) -> Vec<QuoteEvent> {
        let rows: Vec<Json<QuoteEvent>> = sqlx::query_scalar(
            "SELECT payload::jsonb FROM outbox WHERE message_key = $1 AND payload::jsonb->>'insurer' = $2 ORDER BY id",
        )
        .bind(id.to_string())
        .bind(insurer)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().map(|Json(event)| event).collect()
    }

    /// The one event a finished task must have produced.
    async fn only_event(&self, id: Uuid, insurer: &str) -> QuoteEvent {
        let mut events = self.events(id, insurer).await;
        assert_eq!(events.len(), 1, "{insurer}: exactly one outbox event, got {events:?}");
        let event = events.remove(0);
        assert_eq!((event.quote_id, event.insurer.as_str(), event.version), (id, insurer, 1));
        event
    }

    /// The sandbox's price for [`application`] at `insurer`.
    fn quote(&self, insurer: &str, request: &Value) -> Quote {
        let request: QuoteRequest = serde_json::from_value(request.clone()).unwrap();
        let personality = self.config.insurers.iter().find(|p| p.name == insurer).unwrap();
        sandbox::engine::price(personality, &request).unwrap()
    }

    fn requests(&self, insurer: &str, endpoint: &str) -> u64 {
        self.sandbox[insurer].counters.snapshot().by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Task {
    status: String,
    version: i32,
    insurer_ref: Option<String>,
    attempts: i32,
    lease_owner: Option<String>,
    on_time: bool,
}

/// Polls `check` every 10 ms until it yields something or `within` passes.
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------ (a) every style

#[tokio::test]
async fn each_api_style_ends_in_an_offer_at_the_tariff_price_with_one_event() {
    let mut h = Harness::new().await;
    for name in ["alfa", "ingos", "reso", "renins"] {
        h.start(h.settings(h.manifest(name))).await;
    }
    let request = application(10);
    let id = h.submit(&request, &["alfa", "ingos", "reso", "renins"], Duration::from_secs(30), true).await;

    for (insurer, create) in [
        ("alfa", "POST /v1/calculate"),
        ("ingos", "POST /api/quotes"),
        ("reso", "POST /contracts"),
        ("renins", "POST /rpc"),
    ] {
        let task = h.finished(id, insurer, Duration::from_secs(10)).await;
        assert_eq!((task.status.as_str(), task.version, task.lease_owner.as_deref()), ("offer", 1, None), "{insurer}");
        let event = h.only_event(id, insurer).await;
        assert_eq!(event.event_type, EventType::Offer);
        let InsurerOutcome::Offer { offer } = event.outcome else { panic!("{insurer}: {event:?}") };
        let expected = h.quote(insurer, &request);
        assert_eq!(offer.premium, expected.premium, "{insurer} prices with the tariff");
        assert_eq!(offer.breakdown, expected.breakdown, "{insurer}");
        assert!(offer.insurer_reference.starts_with(&insurer.to_uppercase()), "{insurer}: {}", offer.insurer_reference);
        assert!(offer.valid_until > chrono::Utc::now(), "{insurer}");
        if insurer == "renins" {
            // One endpoint for both calls: a start and at least one status call.
            assert!(h.requests(insurer, create) >= 2, "{insurer}: start and poll");
        } else {
            assert_eq!(h.requests(insurer, create), 1, "{insurer}: one create");
        }
        assert!(task.attempts >= 2, "{insurer}: a create and at least one poll, got {}", task.attempts);
        let reference = task.insurer_ref.unwrap();
        match insurer {
            "alfa" => assert_eq!(reference, clients::task_key("alfa", id), "our request_id"),
            "ingos" => assert!(reference.starts_with("/ingos/api/operations?id=op-"), "{reference}"),
            "renins" => {
                assert!(reference.starts_with('T') && reference.len() == 17, "the insurer's ticket: {reference}")
            }
            _ => assert!(Uuid::parse_str(&reference).is_ok(), "a contract id: {reference}"),
        }
    }
    assert_eq!(h.requests("reso", "POST /contracts/{id}/offers"), 1, "offers requested once");
    h.stop().await;
}

#[tokio::test]
async fn insurer_calls_carry_the_applications_trace() {
    let mut h = Harness::new().await;
    // Both applications are stored, one given its trace, before any poller can claim them.
    let id = h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
    let trace = platform::trace::TraceParent::root();
    sqlx::query("UPDATE applications SET traceparent = $2 WHERE id = $1")
        .bind(id)
        .bind(trace.to_string())
        .execute(&h.pool)
        .await
        .unwrap();
    let untraced = h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
    h.start(h.settings(h.manifest("alfa"))).await;
    h.finished(id, "alfa", Duration::from_secs(10)).await;
    h.finished(untraced, "alfa", Duration::from_secs(10)).await;
    let seen = h.sandbox["alfa"].counters.snapshot().trace_ids;
    assert!(seen.contains(&trace.trace_id()), "the create and polls carry the quote's trace: {seen:?}");
    let own = format!("{:032x}", untraced.as_u128());
    assert_eq!(seen, [trace.trace_id(), own].into(), "one trace per quote; without one, the quote's id");
    let traced: Option<String> = sqlx::query_scalar("SELECT traceparent FROM outbox WHERE message_key = $1")
        .bind(id.to_string())
        .fetch_one(&h.pool)
        .await
        .unwrap();
    let traced = platform::trace::TraceParent::parse(&traced.unwrap()).unwrap();
    assert_eq!(traced.trace_id(), trace.trace_id(), "the outbox event is in the same trace");
}

// ------------------------------------------------------------------ (b) other endings

#[tokio::test]
async fn a_declining_insurer_ends_declined_with_its_reason() {
    let mut h = Harness::new().await;
    h.start(h.settings(h.manifest("sogaz"))).await;
    let id = h.submit(&application(10), &["sogaz"], Duration::from_secs(30), true).await;

    let task = h.finished(id, "sogaz", Duration::from_secs(5)).await;
    assert_eq!((task.status.as_str(), task.version), ("declined", 1));
    let event = h.only_event(id, "sogaz").await;
    assert_eq!(event.event_type, EventType::Status);
    assert_eq!(
        event.outcome,
        InsurerOutcome::Declined { reason: "owners registered in region 77 are not insured online".into() }
    );
    h.stop().await;
}

#[tokio::test]
async fn an_application_the_poller_cannot_read_fails_its_task_without_calling_the_insurer() {
    let mut h = Harness::new().await;
    let manifest = h.manifest("alfa");
    let api = Arc::new(Recording {
        inner: clients::for_manifest(&manifest, &examples().join("secrets")).unwrap(),
        calls: Mutex::new(Vec::new()),
        idempotent_create: true,
    });
    h.start_with(h.settings(manifest), Some(api.clone())).await;
    // Stored JSON that is no quote request (an application written by a newer or broken intake).
    let id = h.submit(&json!({"vehicle": "unknown"}), &["alfa"], Duration::from_secs(30), true).await;

    let task = h.finished(id, "alfa", Duration::from_secs(5)).await;
    assert_eq!((task.status.as_str(), task.version), ("failed", 1));
    let event = h.only_event(id, "alfa").await;
    assert_eq!(
        event.outcome,
        InsurerOutcome::Failed { reason: "invalid_request: the stored application cannot be read".into() }
    );
    assert!(api.calls.lock().unwrap().is_empty(), "the insurer was called");
    h.stop().await;
}

#[tokio::test]
async fn an_insurer_down_until_the_deadline_ends_expired_without_hammering_it() {
    let mut h = Harness::new().await;
    h.sandbox["vsk"].set_faults(sandbox::config::Faults { outage: true, ..Default::default() });
    h.start(h.settings(h.manifest("vsk"))).await;
    let deadline = Duration::from_millis(2500);
    let submitted = Instant::now();
    let id = h.submit(&application(10), &["vsk"], deadline, true).await;

    let task = h.finished(id, "vsk", Duration::from_secs(5)).await;
    let took = submitted.elapsed();
    assert_eq!((task.status.as_str(), task.version), ("expired", 1));
    assert!(took >= deadline - Duration::from_millis(50), "not before the deadline: {took:?}");
    assert!(took < deadline + Duration::from_millis(800), "promptly at the deadline: {took:?}");
    assert_eq!(h.only_event(id, "vsk").await.outcome, InsurerOutcome::Expired);
    assert!(task.on_time, "never scheduled past the deadline");
    let counters = h.sandbox["vsk"].counters.snapshot();
    let failures = counters.by_status.get(&503).copied().unwrap_or(0);
    assert!((2..=3).contains(&failures), "retried about once a second within 2.5 s, got {failures}");
    assert_eq!(counters.max_requests_per_second, 1, "failed creates are at least a second apart");
    assert_eq!(task.attempts as u64, failures, "every call is counted");
    h.stop().await;
}

#[tokio::test]
async fn a_400_from_the_insurer_fails_the_task_with_its_message() {
    let mut h = Harness::new().await;
    h.start(h.settings(h.manifest("rgs"))).await;
    // Stored requests are not re-checked against today; the insurer does check.
    let id = h.submit(&application(-1), &["rgs"], Duration::from_secs(30), true).await;

    let task = h.finished(id, "rgs", Duration::from_secs(5)).await;
    assert_eq!((task.status.as_str(), task.version, task.attempts), ("failed", 1, 1), "no retry of a 400");
    let event = h.only_event(id, "rgs").await;
    assert_eq!(
        event.outcome,
        InsurerOutcome::Failed {
            reason: "rejected: HTTP 400: policy.start_date: the policy cannot start in the past".into()
        }
    );
    h.stop().await;
}

#[tokio::test]
async fn a_mapped_insurers_error_inside_http_200_fails_the_task_with_its_message() {
    let mut h = Harness::new().await;
    h.start(h.settings(h.manifest("renins"))).await;
    let id = h.submit(&application(-1), &["renins"], Duration::from_secs(30), true).await;

    let task = h.finished(id, "renins", Duration::from_secs(5)).await;
    assert_eq!((task.status.as_str(), task.version, task.attempts), ("failed", 1, 1), "a rejection is not retried");
    assert_eq!(
        h.only_event(id, "renins").await.outcome,
        InsurerOutcome::Failed {
            reason: "rejected: HTTP 200: validation failed: policy.start_date: the policy cannot start in the past"
                .into()
        }
    );
    h.stop().await;
}

// ------------------------------------------------------------------ (c) wake-up

#[tokio::test]
async fn a_notified_task_is_created_at_once_even_with_a_long_fallback_tick() {
    let mut h = Harness::new().await;
    let mut settings = h.settings(h.manifest("alfa"));
    settings.fallback_tick = Duration::from_secs(30);
    h.start(settings).await;
    let created = || h.requests("alfa", "POST /v1/calculate");
    // The poller claims once as it starts; let that first round pass (slow on a loaded
    // machine) before the task exists.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Without a notification nothing happens for a while: the tick is long…
    let id = h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(created(), 0, "an un-notified task waits for the fallback tick");
    // …and a notification (here for the task already there) wakes the poller at once. "At once"
    // is checked against the 30 s tick, with room for a machine busy running the other tests:
    // how fast a wake-up is, is measured by `make bench`, not here.
    let at_once = Duration::from_secs(3);
    sqlx::query("SELECT pg_notify('osago_tasks', 'some-other-insurer')").execute(&h.pool).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(created(), 0, "another insurer's notification does not wake it");
    sqlx::query("SELECT pg_notify('osago_tasks', 'alfa')").execute(&h.pool).await.unwrap();
    eventually(at_once, || async { (created() == 1).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("not created within {at_once:?} of the notification"));

    // A second quote, notified the way intake does, likewise.
    let id2 = h.submit(&application(10), &["alfa"], Duration::from_secs(30), true).await;
    eventually(at_once, || async { (created() == 2).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("second task not created within {at_once:?}"));
    // The next-due wake-up (not the 30 s tick) brings the polls.
    for id in [id, id2] {
        assert_eq!(h.finished(id, "alfa", Duration::from_secs(5)).await.status, "offer");
    }
    h.stop().await;
}

/// The last statement of the poller's listener connection: `LISTEN …` or `UNLISTEN …`.
async fn listener_state(h: &Harness) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%LISTEN \"osago_tasks\"'",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_busy_poller_stops_listening_yet_takes_every_task_and_listens_again_when_idle() {
    let mut h = Harness::new().await;
    let mut manifest = h.manifest("alfa");
    // One replica, and a rate limit that never holds a call back: the test is of the claims.
    manifest.spec.replicas = 1;
    manifest.spec.rate_limit.requests_per_second = 10_000;
    manifest.spec.rate_limit.burst = 10_000;
    let mut settings = h.settings(manifest);
    settings.fallback_tick = Duration::from_secs(30);
    h.start(settings).await;
    let created = || h.requests("alfa", "POST /v1/calculate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(listener_state(&h).await, [r#"LISTEN "osago_tasks""#]);

    // A busy insurer: a notified task every 10 ms, until the poller stops listening.
    let mut sent = 0;
    while listener_state(&h).await != [r#"UNLISTEN "osago_tasks""#] {
        assert!(sent < 100, "still listening after {sent} tasks notified 10 ms apart");
        h.submit(&application(10), &["alfa"], Duration::from_secs(30), true).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Busy, it looks every claim gap: tasks nobody notified are taken long before the 30 s
    // tick. (Bounds are loose for a shared machine; any of them is far under the tick.)
    for _ in 0..10 {
        h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(Duration::from_secs(5), || async { (created() == sent).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("{} of {sent} tasks created within 5 s while not listening", created()));

    // The listener's connection dies while it is not listening (a Postgres restart, an idle
    // timeout): it is replaced, not left to fail every LISTEN from then on.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query = 'UNLISTEN \"osago_tasks\"'",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "the idle listener's backend is terminated");

    // Idle again, it listens: an un-notified task waits for the tick, a notified one does not.
    eventually(Duration::from_secs(5), || async {
        (listener_state(&h).await == [r#"LISTEN "osago_tasks""#]).then_some(())
    })
    .await
    .expect("listening again once idle");
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(created(), sent, "an idle poller does not look every gap");
    h.submit(&application(10), &["alfa"], Duration::from_secs(30), true).await;
    eventually(Duration::from_secs(5), || async { (created() == sent + 2).then_some(()) })
        .await
        .expect("a notification wakes the idle poller again");
    h.stop().await;
}

#[tokio::test]
async fn tasks_notified_one_after_another_are_claimed_several_at_a_time() {
    let mut h = Harness::new().await;
    // The slow insurer's offer comes 3 s after the create: every task is still held, under
    // the lease its claim took, when the claims are counted.
    start_slow(&mut h, Duration::from_secs(5), poller::DEFAULT_LEASE, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for day in 0..20 {
        ids.push(h.submit(&application(10 + day), &["slow"], Duration::from_secs(30), true).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let span = started.elapsed();
    let claims: i64 = eventually(Duration::from_secs(2), || async {
        // A claim's `now()` is its transaction's: the tasks one claim took share a lease end.
        let (held, claims): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE lease_owner IS NOT NULL), count(DISTINCT lease_until) FROM tasks
             WHERE application_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&h.pool)
        .await
        .unwrap();
        (held == 20).then_some(claims)
    })
    .await
    .expect("every notified task is claimed");
    // One claim at the first notification, then at most one per gap of 40 ms.
    let most = 2 + span.as_millis() as i64 / 40;
    assert!(claims <= most && claims < 20, "20 tasks over {span:?} took {claims} claims (at most {most})");
    h.stop().await;
}

/// Rows read by sequential scans of `tasks` and `applications` so far (as last flushed).
async fn rows_scanned(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(seq_tup_read), 0)::int8 FROM pg_stat_user_tables WHERE relname IN ('tasks', 'applications')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn claims_find_their_tasks_by_key_however_large_the_tables() {
    let h0 = Harness::new().await;
    // The plan Postgres settles on for a statement run often (sqlx prepares them all) is the
    // generic one, sized without the claim's limit; forcing it here makes it the plan tested.
    // 4 000 tasks pending for an insurer no poller here serves make the statistics those of a
    // backlog, and a sequential scan the cost it would be in a busy stack.
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&h0.pool).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} SET plan_cache_mode = force_generic_plan"))
        .execute(&h0.pool)
        .await
        .unwrap();
    sqlx::query(
        "WITH a AS (
             INSERT INTO applications (id, partner, request_hash, request, deadline)
             SELECT gen_random_uuid(), 'test', '\\x00', '{}', now() FROM generate_series(1, 4000) RETURNING id
         )
         INSERT INTO tasks (application_id, insurer, deadline) SELECT id, 'vsk', now() + interval '1 hour' FROM a",
    )
    .execute(&h0.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE tasks, applications").execute(&h0.pool).await.unwrap();
    // The pool's connections were opened before the setting: a poller on fresh ones.
    let mut h = Harness { pool: PgPool::connect(&h0.url).await.unwrap(), ..h0 };
    h.start(h.settings(h.manifest("alfa"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&h.pool).await.unwrap();
    assert_eq!(mode, "force_generic_plan");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = rows_scanned(&h.pool).await;
    let mut ids = Vec::new();
    for day in 0..12 {
        ids.push(h.submit(&application(10 + day), &["alfa"], Duration::from_secs(30), true).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for id in &ids {
        assert_eq!(h.finished(*id, "alfa", Duration::from_secs(10)).await.status, "offer");
    }
    // A backend flushes its statistics at most once a second, and one gone idle holds them for
    // up to 10 s. (Stopping the poller would flush them too, but its release of the leases at
    // shutdown, a rare statement, may scan the table once under this plan.)
    tokio::time::sleep(Duration::from_millis(11_500)).await;
    let scanned = rows_scanned(&h.pool).await - before;
    assert!(scanned < 4000, "12 tasks claimed and finished read {scanned} rows by sequential scans");
    h.stop().await;
}

// ------------------------------------------------------------------ (d) leases

#[tokio::test]
async fn expired_leases_are_taken_over_and_live_ones_are_left_alone() {
    let mut h = Harness::new().await;
    let orphaned = h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
    let held = h.submit(&application(10), &["alfa"], Duration::from_secs(30), false).await;
    let lease = |id: Uuid, owner: &'static str, seconds: f64| {
        sqlx::query(
            "UPDATE tasks SET lease_owner = $2, lease_until = now() + make_interval(secs => $3) WHERE application_id = $1",
        )
        .bind(id)
        .bind(owner)
        .bind(seconds)
        .execute(&h.pool)
    };
    lease(orphaned, "killed-replica", -1.0).await.unwrap();
    lease(held, "live-replica", 60.0).await.unwrap();

    let mut settings = h.settings(h.manifest("alfa"));
    settings.fallback_tick = Duration::from_millis(200);
    h.start(settings).await;

    let task = h.finished(orphaned, "alfa", Duration::from_secs(5)).await;
    assert_eq!((task.status.as_str(), task.version, task.lease_owner), ("offer", 1, None));
    h.only_event(orphaned, "alfa").await;
    // Several fallback ticks later the live lease is still untouched.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let untouched = h.task(held, "alfa").await;
    assert_eq!(
        (untouched.status.as_str(), untouched.lease_owner.as_deref(), untouched.insurer_ref, untouched.attempts),
        ("pending", Some("live-replica"), None, 0)
    );
    assert!(h.events(held, "alfa").await.is_empty());
    assert_eq!(h.requests("alfa", "POST /v1/calculate"), 1, "only the orphaned task was created");
    h.stop().await;
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_writes_nothing() {
    let mut h = Harness::new().await;
    let mut manifest = h.manifest("alfa");
    manifest.metadata.name = "laggy".into();
    manifest.spec.api.base_url = format!("{}/laggy", h.base);
    h.start(h.settings(manifest)).await;
    let id = h.submit(&application(10), &["laggy"], Duration::from_secs(30), true).await;
    eventually(Duration::from_secs(2), || async { (h.requests("laggy", "POST /v1/calculate") == 1).then_some(()) })
        .await
        .expect("create in flight");
    // While the create (400 ms, answering with an offer) is in flight, another replica takes
    // the task over, as it may once a lease has run out.
    sqlx::query(
        "UPDATE tasks SET lease_owner = 'thief', lease_until = now() + interval '60 seconds' WHERE application_id = $1",
    )
    .bind(id)
    .execute(&h.pool)
    .await
    .unwrap();
    let answered = || h.sandbox["laggy"].counters.snapshot().by_status.get(&200).copied().unwrap_or(0);
    eventually(Duration::from_secs(2), || async { (answered() == 1).then_some(()) }).await.expect("create answered");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let task = h.task(id, "laggy").await;
    assert_eq!(
        (task.status.as_str(), task.version, task.lease_owner.as_deref(), task.insurer_ref, task.attempts),
        ("pending", 0, Some("thief"), None, 0),
        "the offer is not written over the new holder's lease"
    );
    assert!(h.events(id, "laggy").await.is_empty(), "and no event is emitted");
    h.stop().await;
}

// ------------------------------------------------------------------ (e) pacing

/// Wraps the real client and records when each call for each task started.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn InsurerApi>,
    calls: Mutex<Vec<(String, Instant)>>,
    /// What the client says of its create (the sandbox's create-poll is idempotent either way).
    idempotent_create: bool,
}

impl InsurerApi for Recording {
    fn create<'a>(
        &'a self,
        key: &'a str,
        request: &'a QuoteRequest,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Created, CallError>> {
        self.calls.lock().unwrap().push((key.to_string(), Instant::now()));
        self.inner.create(key, request, ctx)
    }

    fn poll<'a>(&'a self, reference: &'a str, ctx: &'a CallContext) -> BoxFuture<'a, Result<Polled, CallError>> {
        self.calls.lock().unwrap().push((reference.to_string(), Instant::now()));
        self.inner.poll(reference, ctx)
    }

    fn breaker(&self) -> Option<Arc<Breaker>> {
        self.inner.breaker()
    }

    fn create_is_idempotent(&self) -> bool {
        self.idempotent_create
    }
}

#[tokio::test]
async fn calls_for_one_task_are_at_least_a_second_apart() {
    let mut h = Harness::new().await;
    let mut manifest = h.manifest("alfa");
    manifest.metadata.name = "slow".into();
    manifest.spec.api.base_url = format!("{}/slow", h.base);
    manifest.spec.polling.initial_delay = crds::Duration::millis(500);
    manifest.spec.polling.interval = crds::Duration::millis(200);
    let api = Arc::new(Recording {
        inner: clients::for_manifest(&manifest, &examples().join("secrets")).unwrap(),
        calls: Mutex::new(Vec::new()),
        idempotent_create: true,
    });
    h.start_with(h.settings(manifest), Some(api.clone())).await;
    let ids = [
        h.submit(&application(10), &["slow"], Duration::from_secs(30), true).await,
        h.submit(&application(11), &["slow"], Duration::from_secs(30), true).await,
    ];
    for id in ids {
        assert_eq!(h.finished(id, "slow", Duration::from_secs(10)).await.status, "offer");
    }

    let calls = api.calls.lock().unwrap().clone();
    for id in ids {
        let key = clients::task_key("slow", id);
        let times: Vec<Instant> = calls.iter().filter(|(k, _)| *k == key).map(|(_, t)| *t).collect();
        // Offer after 3 s: create, first poll after 500 ms, then polls a second or more apart.
        assert!((3..=5).contains(&times.len()), "{} calls: create + 2..=4 polls", times.len());
        let first_poll = times[1] - times[0];
        assert!(first_poll >= Duration::from_millis(500) && first_poll < Duration::from_millis(900), "{first_poll:?}");
        for pair in times[1..].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_secs(1), "polls {gap:?} apart although the interval is 200 ms");
        }
    }
    let polls = h.requests("slow", "GET /v1/calculate");
    assert!((4..=8).contains(&polls), "two tasks, 2..=4 polls each: {polls}");
    h.stop().await;
}

// ------------------------------------------------------------------ (f) held tasks

/// The `slow` insurer (offer 3 s after create) behind a recording client, polled every second
/// (no backing off), with the given request timeout and lease; its create is declared
/// idempotent or not.
async fn start_slow(
    h: &mut Harness,
    request_timeout: Duration,
    lease: Duration,
    idempotent_create: bool,
) -> (Arc<Recording>, String) {
    let mut manifest = h.manifest("alfa");
    manifest.metadata.name = "slow".into();
    manifest.spec.api.base_url = format!("{}/slow", h.base);
    manifest.spec.polling.initial_delay = crds::Duration::millis(500);
    manifest.spec.polling.max_interval = manifest.spec.polling.interval;
    manifest.spec.timeouts.request = crds::Duration::millis(request_timeout.as_millis() as u64);
    let api = Arc::new(Recording {
        inner: clients::for_manifest(&manifest, &examples().join("secrets")).unwrap(),
        calls: Mutex::new(Vec::new()),
        idempotent_create,
    });
    let mut settings = h.settings(manifest);
    settings.lease = lease;
    let me = settings.replica_id.clone();
    h.start_with(settings, Some(api.clone())).await;
    (api, me)
}

/// The task's row, and whether its lease runs yet, every 20 ms until it is no longer pending.
async fn watch_until_finished(h: &Harness, id: Uuid, within: Duration) -> Vec<(Task, bool)> {
    let until = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        // One statement, so that both halves describe the same version of the row.
        let (task, leased) = sqlx::query_as::<_, (String, i32, Option<String>, i32, Option<String>, bool, bool)>(
            "SELECT status::text, version, insurer_ref, attempts, lease_owner, next_poll_at <= deadline,
                    COALESCE(lease_until > now(), false)
             FROM tasks WHERE application_id = $1",
        )
        .bind(id)
        .fetch_one(&h.pool)
        .await
        .map(|(status, version, insurer_ref, attempts, lease_owner, on_time, leased)| {
            (Task { status, version, insurer_ref, attempts, lease_owner, on_time }, leased)
        })
        .unwrap();
        if task.status != "pending" {
            seen.push((task, leased));
            return seen;
        }
        assert!(Instant::now() < until, "still pending after {within:?}");
        seen.push((task, leased));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_task_is_held_between_polls_and_written_only_with_news() {
    let mut h = Harness::new().await;
    let (api, me) = start_slow(&mut h, Duration::from_secs(5), poller::DEFAULT_LEASE, false).await;
    let id = h.submit(&application(10), &["slow"], Duration::from_secs(30), true).await;
    let seen = watch_until_finished(&h, id, Duration::from_secs(10)).await;

    let (last, _) = seen.last().unwrap();
    assert_eq!((last.status.as_str(), last.lease_owner.as_deref()), ("offer", None));
    let calls = api.calls.lock().unwrap().len();
    assert!(calls >= 4, "create + 3 polls or more before the 3 s offer: {calls}");
    assert_eq!(last.attempts as usize, calls, "the outcome counts every call");
    // From the create on: held by this replica, the reference stored at once (a create that
    // may not be repeated), and nothing else written until the outcome (attempts stay at the
    // create's 1 through the polls).
    let held: Vec<_> = seen.iter().filter(|(t, _)| t.status == "pending" && t.insurer_ref.is_some()).collect();
    assert!(held.len() > 100, "watched {} times while it waited", held.len());
    for (task, leased) in &held {
        assert_eq!((task.lease_owner.as_deref(), *leased), (Some(me.as_str()), true), "{task:?}");
        assert_eq!(task.attempts, 1, "no write for a poll that found nothing new: {task:?}");
    }
    assert_eq!(h.requests("slow", "POST /v1/calculate"), 1);
    h.only_event(id, "slow").await;
    h.stop().await;
}

#[tokio::test]
async fn an_idempotent_creates_reference_is_written_with_the_outcome() {
    let mut h = Harness::new().await;
    let (api, me) = start_slow(&mut h, Duration::from_secs(5), poller::DEFAULT_LEASE, true).await;
    let id = h.submit(&application(10), &["slow"], Duration::from_secs(30), true).await;
    let seen = watch_until_finished(&h, id, Duration::from_secs(10)).await;

    // Claimed, then nothing written until the outcome: a replica taking the task over would
    // create again under the same key and be given the same calculation.
    let (last, _) = seen.last().unwrap();
    let held: Vec<_> = seen.iter().filter(|(t, _)| t.lease_owner.as_deref() == Some(me.as_str())).collect();
    assert!(held.len() > 100, "watched {} times while it was held", held.len());
    for (task, leased) in &held {
        assert_eq!((task.status.as_str(), *leased), ("pending", true), "{task:?}");
        assert_eq!((task.insurer_ref.as_deref(), task.attempts, task.version), (None, 0, 0), "{task:?}");
    }
    let calls = api.calls.lock().unwrap().len();
    assert!(calls >= 4, "create + 3 polls or more before the 3 s offer: {calls}");
    assert_eq!((last.status.as_str(), last.attempts as usize), ("offer", calls), "the outcome counts every call");
    assert!(last.insurer_ref.as_deref().is_some_and(|r| !r.is_empty()), "and stores the reference: {last:?}");
    assert_eq!(h.requests("slow", "POST /v1/calculate"), 1);
    h.only_event(id, "slow").await;
    h.stop().await;
}

#[tokio::test]
async fn a_held_tasks_lease_is_renewed_before_it_runs_out() {
    let mut h = Harness::new().await;
    // A 3 s lease (twice the request timeout plus the margins) against a 3.5 s life: the
    // lease must be renewed while the task waits, or the outcome would be lost with it.
    let (api, me) = start_slow(&mut h, Duration::from_millis(500), Duration::from_secs(1), false).await;
    let id = h.submit(&application(10), &["slow"], Duration::from_secs(30), true).await;
    let seen = watch_until_finished(&h, id, Duration::from_secs(10)).await;

    for (task, leased) in seen.iter().filter(|(t, _)| t.status == "pending" && t.insurer_ref.is_some()) {
        assert_eq!((task.lease_owner.as_deref(), *leased), (Some(me.as_str()), true), "{task:?}");
    }
    let renewals = seen.iter().filter_map(|(t, _)| (t.status == "pending").then_some(t.attempts)).max().unwrap();
    assert!(renewals >= 2, "renewed with its progress while waiting: attempts {renewals}");
    let (last, _) = seen.last().unwrap();
    assert_eq!((last.status.as_str(), last.attempts as usize), ("offer", api.calls.lock().unwrap().len()));
    assert_eq!(h.requests("slow", "POST /v1/calculate"), 1, "never taken over and created again");
    h.only_event(id, "slow").await;
    h.stop().await;
}

#[tokio::test]
async fn a_held_task_expires_at_its_deadline_not_at_its_next_poll() {
    let mut h = Harness::new().await;
    let (_, _) = start_slow(&mut h, Duration::from_secs(5), poller::DEFAULT_LEASE, false).await;
    // Polls at 0.5 s and 1.5 s find nothing; the next would be at 2.5 s, past the 2 s deadline.
    let submitted = Instant::now();
    let id = h.submit(&application(10), &["slow"], Duration::from_secs(2), true).await;
    let task = h.finished(id, "slow", Duration::from_secs(5)).await;
    let took = submitted.elapsed();
    assert_eq!(task.status, "expired");
    assert!(took < Duration::from_millis(2400), "expired {took:?} after submission, deadline 2 s");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_gives_held_tasks_back_with_their_progress() {
    let mut h = Harness::new().await;
    // An idempotent create: the reference is in memory only until the task is given back.
    let (api, _) = start_slow(&mut h, Duration::from_secs(5), poller::DEFAULT_LEASE, true).await;
    let id = h.submit(&application(10), &["slow"], Duration::from_secs(30), true).await;
    eventually(Duration::from_secs(3), || async { (api.calls.lock().unwrap().len() == 2).then_some(()) })
        .await
        .expect("created and polled once");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stopping = Instant::now();
    let (stop, handle) = h.pollers.pop().unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(stopping.elapsed() < Duration::from_millis(800), "no waiting out the hold: {:?}", stopping.elapsed());
    let task = h.task(id, "slow").await;
    assert_eq!((task.status.as_str(), task.lease_owner.as_deref()), ("pending", None), "given back");
    assert_eq!((task.attempts, task.insurer_ref.is_some()), (2, true), "with both calls and the reference");

    // Another replica picks it up where it stood: polls, no second create.
    let (api, _) = start_slow(&mut h, Duration::from_secs(5), poller::DEFAULT_LEASE, true).await;
    assert_eq!(h.finished(id, "slow", Duration::from_secs(8)).await.status, "offer");
    assert_eq!(h.requests("slow", "POST /v1/calculate"), 1);
    assert!(!api.calls.lock().unwrap().is_empty());
    h.only_event(id, "slow").await;
    h.stop().await;
}

// ------------------------------------------------------------------ shutdown

#[tokio::test]
async fn shutdown_releases_the_leases_it_cannot_finish() {
    let mut h = Harness::new().await;
    h.sandbox["alfa"].set_faults(sandbox::config::Faults { hang: true, ..Default::default() });
    let mut settings = h.settings(h.manifest("alfa"));
    settings.shutdown_grace = Duration::from_millis(300);
    let me = settings.replica_id.clone();
    h.start(settings).await;
    let id = h.submit(&application(10), &["alfa"], Duration::from_secs(30), true).await;
    eventually(Duration::from_secs(2), || async { (h.requests("alfa", "POST /v1/calculate") == 1).then_some(()) })
        .await
        .expect("create in flight");
    assert_eq!(h.task(id, "alfa").await.lease_owner.as_deref(), Some(me.as_str()), "leased while in flight");

    let stopping = Instant::now();
    let (stop, handle) = h.pollers.pop().unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(2), "stopped within the grace: {:?}", stopping.elapsed());
    let task = h.task(id, "alfa").await;
    assert_eq!((task.status.as_str(), task.lease_owner, task.version), ("pending", None, 0), "released, not finished");
    let due_in: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM next_poll_at - now())::float8 FROM tasks WHERE application_id = $1",
    )
    .bind(id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(due_in > 0.5, "a cut-off call is not repeated at once: due in {due_in} s");
    assert!(h.events(id, "alfa").await.is_empty());
    h.stop().await;
}

// ------------------------------------------------------------------ examples

#[test]
fn every_example_manifest_matches_a_sandbox_personality() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sandbox/sandbox.toml")).unwrap();
    let shipped = Config::from_toml(&text).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples().join("insurers"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut names: Vec<String> = Vec::new();
    for path in files {
        let manifest = InsurerIntegration::from_yaml(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = manifest.name().to_string();
        assert_eq!(path.file_stem().unwrap().to_str(), Some(name.as_str()), "file named after the insurer");
        let personality =
            shipped.insurers.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name}: no personality"));
        let spec = &manifest.spec;
        assert_eq!(spec.display_name, personality.display_name, "{name}");
        assert_eq!(spec.api.base_url, format!("http://127.0.0.1:9100/{name}"), "{name}");
        let style = match personality.style {
            sandbox::config::ApiStyle::CreatePoll => ApiStyle::CreatePoll,
            sandbox::config::ApiStyle::Operation => ApiStyle::Operation,
            sandbox::config::ApiStyle::OffersList => ApiStyle::OffersList,
            sandbox::config::ApiStyle::Rpc => ApiStyle::Mapped,
        };
        assert_eq!(spec.api.style, style, "{name}");
        let secret = |auth: &crds::Auth| {
            let r = auth.secret_ref.as_ref().unwrap_or_else(|| panic!("{name}: secretRef"));
            let path = examples().join("secrets").join(&r.name).join(&r.key);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
        };
        match (&personality.auth, spec.api.auth.kind) {
            (sandbox::config::Auth::None, AuthType::None) => {}
            (sandbox::config::Auth::Bearer { token }, AuthType::Bearer) => assert_eq!(&secret(&spec.api.auth), token),
            (sandbox::config::Auth::Header { header, key }, AuthType::Header) => {
                assert_eq!(spec.api.auth.header.as_deref(), Some(header.as_str()), "{name}");
                assert_eq!(&secret(&spec.api.auth), key, "{name}");
            }
            (auth, kind) => panic!("{name}: sandbox auth {auth:?}, manifest auth {kind:?}"),
        }
        if let Some(rps) = personality.faults.rate_limit_rps {
            let burst = personality.faults.rate_limit_burst.unwrap_or(rps);
            let ours = &spec.rate_limit;
            assert!(ours.requests_per_second <= rps && ours.burst <= burst, "{name}: stay within the insurer's limit");
        }
        clients::for_manifest(&manifest, &examples().join("secrets")).unwrap_or_else(|e| panic!("{name}: {e}"));
        names.push(name);
    }
    let mut expected: Vec<String> = shipped.insurers.iter().map(|p| p.name.clone()).collect();
    expected.sort();
    assert_eq!(names, expected, "one manifest per shipped personality");
}
