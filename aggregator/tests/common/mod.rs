//! Shared harness of the fault-injection suites (`faults_*.rs`): sandbox insurers with constant
//! latencies, poller manifests, an in-process platform (pollers, aggregator, core-app) on fresh
//! databases and a fresh topic, quote submission, an SSE reader that timestamps every event and
//! survives a broken connection, and the exactly-once check of a quote's event history.

#![allow(dead_code)] // each suite uses its own part of the harness

pub mod processes;
pub mod toxiproxy;

use aggregator::app::ServeSettings;
use aggregator::partners::Partners;
use core_app::aggregator_client::AggregatorClient;
use core_app::api::ApiSettings;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::sse::SseEvent;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// core-app's partner token at the aggregator.
pub const TOKEN: &str = "faults-test-token";

/// One sandbox insurer with constant latencies, and how its poller calls it.
#[derive(Debug, Clone)]
pub struct Insurer {
    pub name: &'static str,
    pub style: &'static str,
    /// Latency of the create call.
    pub create: Duration,
    /// Time from create until the offer is visible to polls.
    pub offer: Duration,
}

impl Insurer {
    pub const fn new(name: &'static str, style: &'static str, create_ms: u64, offer_ms: u64) -> Self {
        Insurer { name, style, create: Duration::from_millis(create_ms), offer: Duration::from_millis(offer_ms) }
    }

    /// The latency a healthy insurer shows: create, then the offer.
    pub fn latency(&self) -> Duration {
        self.create + self.offer
    }
}

/// Three insurers, one per API style, each with its own constant latency.
pub const TRIO: [Insurer; 3] = [
    Insurer::new("alfa", "create-poll", 20, 600),
    Insurer::new("ingos", "operation", 20, 800),
    Insurer::new("reso", "offers-list", 20, 400),
];

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The sandbox configuration of `insurers` (no auth, no decline rules that the sample hits).
pub fn sandbox_toml(insurers: &[Insurer]) -> String {
    let mut toml = String::from("seed = 7\n");
    for i in insurers {
        let (create, offer) = (ms(i.create), ms(i.offer));
        toml.push_str(&format!(
            "\n[[insurer]]\nname = \"{n}\"\ndisplay_name = \"{n}\"\nstyle = \"{s}\"\nbase_rate_position = 0.8\n\
             create_latency = {{ median = \"{create}\", p99 = \"{create}\" }}\n\
             offer_latency = {{ median = \"{offer}\", p99 = \"{offer}\" }}\n",
            n = i.name,
            s = i.style,
        ));
    }
    toml
}

/// An in-process insurer sandbox and its control API.
#[derive(Clone)]
pub struct Sandbox {
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl Sandbox {
    pub async fn start(insurers: &[Insurer]) -> Sandbox {
        let config = sandbox::config::Config::from_toml(&sandbox_toml(insurers)).expect("sandbox config");
        let addr = sandbox::App::build(config).spawn("127.0.0.1:0".parse().unwrap()).await.expect("sandbox");
        Sandbox { addr, http: reqwest::Client::new() }
    }

    /// The base URL of `insurer`'s partner API.
    pub fn base_url(&self, insurer: &str) -> String {
        format!("http://{}/{insurer}", self.addr)
    }

    /// Merges `patch` into `insurer`'s faults (`PATCH /_control/insurers/{name}/faults`).
    pub async fn faults(&self, insurer: &str, patch: Value) {
        let response = self
            .http
            .patch(format!("http://{}/_control/insurers/{insurer}/faults", self.addr))
            .json(&patch)
            .send()
            .await
            .expect("sandbox control API");
        assert!(response.status().is_success(), "faults {patch} refused: {}", response.text().await.unwrap());
    }

    /// `insurer`'s counters: `by_endpoint`, `by_status`, `max_requests_per_second`.
    pub async fn counters(&self, insurer: &str) -> Value {
        let view: Value = self
            .http
            .get(format!("http://{}/_control/insurers/{insurer}", self.addr))
            .send()
            .await
            .expect("sandbox control API")
            .json()
            .await
            .expect("insurer view");
        view["counters"].clone()
    }

    /// Requests `insurer` received, all endpoints together.
    pub async fn requests(&self, insurer: &str) -> u64 {
        self.counters(insurer).await["requests_total"].as_u64().unwrap_or(0)
    }

    /// Responses of `insurer` with HTTP `status`.
    pub async fn responses(&self, insurer: &str, status: u16) -> u64 {
        self.counters(insurer).await["by_status"][status.to_string()].as_u64().unwrap_or(0)
    }
}

/// The first poll comes this long after the offer is ready, so it finds the offer.
pub const FIRST_POLL_MARGIN: Duration = Duration::from_millis(100);

/// core-app's grace after a quote's deadline in [`Stack`].
pub const GRACE: Duration = Duration::from_secs(1);

/// The latest a quote with deadline `quote` may complete: the deadline, core-app's grace, and
/// slack for a loaded 2-core machine. Without a working deadline it would never complete.
pub fn by_deadline(quote: Duration) -> Duration {
    quote + GRACE + Duration::from_secs(5)
}

/// How a poller calls one insurer: its manifest.
#[derive(Debug, Clone)]
pub struct PollerSpec {
    pub name: String,
    pub style: String,
    pub base_url: String,
    /// Per-request timeout (`timeouts.request`).
    pub request: Duration,
    /// The quote deadline at this insurer (`timeouts.quote`).
    pub quote: Duration,
    /// Wait after create before the first poll (just past the offer latency: the first poll finds it).
    pub initial_delay: Duration,
    /// More spec lines, indented by two spaces (`retry`, `circuitBreaker`, …).
    pub extra: String,
}

impl PollerSpec {
    /// A poller of `insurer` at `base_url` with a 1 s request timeout and the given deadline.
    pub fn new(insurer: &Insurer, base_url: String, quote: Duration) -> Self {
        PollerSpec {
            name: insurer.name.into(),
            style: insurer.style.into(),
            base_url,
            request: Duration::from_secs(1),
            quote,
            initial_delay: insurer.offer + FIRST_POLL_MARGIN,
            extra: String::new(),
        }
    }

    pub fn manifest(&self) -> String {
        format!(
            "apiVersion: osago.io/v1alpha1
kind: InsurerIntegration
metadata: {{name: {name}}}
spec:
  displayName: {name}
  api: {{baseUrl: '{url}', style: {style}}}
  timeouts: {{connect: 1s, request: {request}, quote: {quote}}}
  polling: {{initialDelay: {delay}, interval: 500ms, maxInterval: 1s}}
{extra}",
            name = self.name,
            url = self.base_url,
            style = self.style,
            request = ms(self.request),
            quote = ms(self.quote),
            delay = ms(self.initial_delay),
            extra = self.extra,
        )
    }

    pub fn parsed(&self) -> crds::InsurerIntegration {
        crds::InsurerIntegration::from_yaml(&self.manifest())
            .unwrap_or_else(|e| panic!("manifest of {}: {e}\n{}", self.name, self.manifest()))
    }
}

/// Pollers for `insurers` straight at the sandbox.
pub fn direct(sandbox: &Sandbox, insurers: &[Insurer], quote: Duration) -> Vec<PollerSpec> {
    insurers.iter().map(|i| PollerSpec::new(i, sandbox.base_url(i.name), quote)).collect()
}

/// A whole platform in this process: pollers, aggregator (intake + relay) and core-app on
/// fresh databases and a fresh topic. Dropping it stops everything.
pub struct Stack {
    pub core_url: String,
    pub aggregator_url: String,
    pub aggregator_pool: PgPool,
    pub core_pool: PgPool,
    pub topic: String,
    stop: watch::Sender<bool>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl Stack {
    pub async fn start(pollers: &[PollerSpec]) -> Stack {
        let (aggregator_pool, _) = testkit::fresh_database("faults_agg").await;
        aggregator::db::MIGRATOR.run(&aggregator_pool).await.unwrap();
        let (core_pool, _) = testkit::fresh_database("faults_core").await;
        core_app::MIGRATOR.run(&core_pool).await.unwrap();
        let topic = testkit::fresh_topic("faults_events", 3).await;
        let (stop, _) = watch::channel(false);
        let secrets = std::env::temp_dir().join("osago-faults-no-secrets");
        for (i, spec) in pollers.iter().enumerate() {
            let settings = aggregator::poller::PollerSettings::new(
                spec.parsed(),
                aggregator_pool.clone(),
                secrets.clone(),
                format!("{}-{i}", spec.name),
            );
            let stop = stopped(&stop);
            tokio::spawn(async move {
                if let Err(e) = aggregator::poller::run(settings, stop).await {
                    eprintln!("poller stopped with an error: {e:#}");
                }
            });
        }
        let (l, aggregator_url) = listener().await;
        let serve = ServeSettings {
            pool: aggregator_pool.clone(),
            kafka_brokers: testkit::kafka_brokers(),
            topic: topic.clone(),
            partners: Partners::parse(&format!("core-app:{TOKEN}")).unwrap(),
            partner_rate: (1000, 1000),
        };
        tokio::spawn(aggregator::app::serve(serve, l, stopped(&stop)));
        let (l, core_url) = listener().await;
        let settings = core_app::Settings {
            pool: core_pool.clone(),
            kafka_brokers: testkit::kafka_brokers(),
            topic: topic.clone(),
            consumer_group: testkit::unique_name("faults_core"),
            aggregator: AggregatorClient::new(&aggregator_url, TOKEN, Duration::from_secs(3)).unwrap(),
            api: ApiSettings { deadline_grace: GRACE, client_rate: (1000, 1000), ..ApiSettings::default() },
        };
        tokio::spawn(core_app::serve(settings, l, stopped(&stop)));
        let stack = Stack { core_url, aggregator_url, aggregator_pool, core_pool, topic, stop };
        let n = pollers.len();
        eventually("every poller registers", Duration::from_secs(30), || async {
            let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM insurers")
                .fetch_one(&stack.aggregator_pool)
                .await
                .unwrap_or_default();
            alive as usize == n
        })
        .await;
        stack
    }
}

pub use testkit::eventually;

/// The example request of a 2023 car, starting in a week; `n` makes the licence (and so the
/// application) distinct.
pub fn body(n: usize) -> Value {
    let mut request = domain::example::request_in(7);
    request["vehicle"]["year"] = json!(2023);
    request["drivers"][0]["licence"] = json!(format!("77{:02} {:06}", n % 100, 123_456 + n / 100));
    request
}

/// A quote core-app accepted.
#[derive(Debug, Clone)]
pub struct Quote {
    pub id: String,
    pub insurers: Vec<String>,
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// Absolute URL of the event stream.
    pub events_url: String,
    /// When the 201 arrived.
    pub accepted_at: Instant,
}

/// What `POST /api/v1/quotes` answered when it did not create a quote.
#[derive(Debug, Clone)]
pub struct Refused {
    /// HTTP status, or 0 when no answer came at all (connection or client timeout).
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
    pub took: Duration,
}

/// Submits quote `n` to core-app at `core_url`, with a client timeout of `timeout`.
pub async fn submit(core_url: &str, n: usize, timeout: Duration) -> Result<Quote, Refused> {
    let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let start = Instant::now();
    let response = match http
        .post(format!("{core_url}/api/v1/quotes"))
        .header("idempotency-key", format!("faults-{n}-{}", uuid::Uuid::new_v4()))
        .json(&body(n))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Err(Refused { status: 0, retry_after: None, body: e.to_string(), took: start.elapsed() }),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = response.text().await.unwrap_or_default();
    if status != 201 {
        return Err(Refused { status, retry_after, body: text, took: start.elapsed() });
    }
    let created: Value = serde_json::from_str(&text).expect("201 body is JSON");
    Ok(Quote {
        id: created["id"].as_str().expect("id").to_string(),
        insurers: created["insurers"]
            .as_array()
            .expect("insurers")
            .iter()
            .map(|v| v.as_str().unwrap().into())
            .collect(),
        deadline: created["deadline"].as_str().expect("deadline").parse().expect("RFC 3339 deadline"),
        events_url: format!("{core_url}{}", created["events_url"].as_str().expect("events_url")),
        accepted_at: Instant::now(),
    })
}

/// Submits quote `n` and panics unless core-app created it.
pub async fn create(core_url: &str, n: usize) -> Quote {
    submit(core_url, n, Duration::from_secs(30)).await.unwrap_or_else(|r| panic!("quote {n} not created: {r:?}"))
}

/// One received event and when it arrived.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at: Instant,
    pub event: SseEvent,
}

impl Timed {
    /// The event's sequence number (its SSE id).
    pub fn seq(&self) -> i64 {
        self.event.id.as_deref().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("event without id: {self:?}"))
    }
}

/// How one SSE connection ended.
#[derive(Debug, Default)]
pub struct Stream {
    /// HTTP status (0: no connection).
    pub status: u16,
    pub events: Vec<Timed>,
    /// The server closed the stream normally (after `complete`).
    pub closed: bool,
    /// The connection broke (reset, server killed) or could not be opened.
    pub broken: Option<String>,
}

impl Stream {
    pub fn last_id(&self) -> Option<String> {
        self.events.last().and_then(|e| e.event.id.clone())
    }

    pub fn completed(&self) -> bool {
        self.events.last().is_some_and(|e| e.event.event == "complete")
    }
}

/// Reads the event stream at `url` (resuming after `last_event_id`) until the server closes
/// it, the connection breaks, or `timeout`, timestamping every event.
pub async fn follow(url: &str, last_event_id: Option<&str>, timeout: Duration) -> Stream {
    follow_counting(url, last_event_id, timeout, None).await
}

/// [`follow`], publishing the number of events received so far on `received`.
pub async fn follow_counting(
    url: &str,
    last_event_id: Option<&str>,
    timeout: Duration,
    received: Option<watch::Sender<usize>>,
) -> Stream {
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().unwrap();
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let deadline = Instant::now() + timeout;
    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Stream { broken: Some(e.to_string()), ..Stream::default() },
        Err(_) => return Stream { broken: Some("no answer".into()), ..Stream::default() },
    };
    let mut stream = Stream { status: response.status().as_u16(), ..Stream::default() };
    if stream.status != 200 {
        stream.closed = true;
        return stream;
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => return stream,
            Ok(None) => {
                stream.closed = true;
                return stream;
            }
            Ok(Some(Err(e))) => {
                stream.broken = Some(e.to_string());
                return stream;
            }
            Ok(Some(Ok(chunk))) => {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let (Some(event), _) = testkit::sse::parse_fields(&block) {
                        stream.events.push(Timed { at: Instant::now(), event });
                        if let Some(received) = &received {
                            received.send_replace(stream.events.len());
                        }
                    }
                }
            }
        }
    }
}

/// Follows `quote` until it completes (within `timeout`), reconnecting with `Last-Event-ID`
/// whenever the connection breaks, as a browser's EventSource does. Returns every event
/// received over all connections and the number of reconnections.
pub async fn follow_to_end(quote: &Quote, timeout: Duration) -> (Vec<Timed>, u32) {
    let deadline = Instant::now() + timeout;
    let mut events: Vec<Timed> = Vec::new();
    let mut reconnects = 0;
    loop {
        let last = events.last().and_then(|e| e.event.id.clone());
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = follow(&quote.events_url, last.as_deref(), left).await;
        events.extend(stream.events);
        if events.last().is_some_and(|e| e.event.event == "complete") || stream.status == 204 {
            return (events, reconnects);
        }
        assert!(Instant::now() < deadline, "quote {} not complete within {timeout:?}: {events:#?}", quote.id);
        reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One insurer's result at the SSE client.
#[derive(Debug, Clone)]
pub struct InsurerResult {
    pub status: String,
    pub reason: Option<String>,
    /// From the 201 to the event's arrival.
    pub after: Duration,
    /// When the event arrived.
    pub at: Instant,
}

/// Checks a quote's whole event history as the SSE client saw it: ids strictly increase (no
/// event twice), one result per insurer of the quote (nothing lost, nothing duplicated), every
/// result terminal, `complete` last and once. Returns each insurer's result.
pub fn verify(quote: &Quote, events: &[Timed]) -> BTreeMap<String, InsurerResult> {
    let seqs: Vec<i64> = events.iter().map(Timed::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "quote {}: event ids not strictly increasing: {seqs:?}", quote.id);
    let (last, results) = events.split_last().unwrap_or_else(|| panic!("quote {}: no events", quote.id));
    assert_eq!(last.event.event, "complete", "quote {}: complete is last: {events:#?}", quote.id);
    let mut seen: BTreeMap<String, InsurerResult> = BTreeMap::new();
    for e in results {
        assert_ne!(e.event.event, "complete", "quote {}: complete twice", quote.id);
        let data = e.event.json();
        let insurer = data["insurer"].as_str().expect("insurer").to_string();
        let status = data["status"].as_str().expect("status").to_string();
        assert!(
            ["offer", "declined", "failed", "expired"].contains(&status.as_str()),
            "quote {}: {insurer} sent a non-terminal {status}",
            quote.id
        );
        let result = InsurerResult {
            status,
            reason: data["reason"].as_str().map(str::to_string),
            after: e.at.saturating_duration_since(quote.accepted_at),
            at: e.at,
        };
        if let Some(earlier) = seen.insert(insurer.clone(), result) {
            panic!("quote {}: {insurer} delivered twice (first {earlier:?})", quote.id);
        }
    }
    let expected: Vec<&String> = quote.insurers.iter().collect();
    let got: Vec<&String> = seen.keys().collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(got, expected_sorted, "quote {}: one result per insurer", quote.id);
    seen
}

/// Submits quotes `from..from + n`, follows each to its end and verifies it.
pub async fn run_quotes(
    core_url: &str,
    from: usize,
    n: usize,
    timeout: Duration,
) -> Vec<BTreeMap<String, InsurerResult>> {
    let mut followers = Vec::new();
    for i in from..from + n {
        let quote = create(core_url, i).await;
        followers.push(tokio::spawn(async move {
            let (events, _) = follow_to_end(&quote, timeout).await;
            verify(&quote, &events)
        }));
    }
    let mut results = Vec::new();
    for f in followers {
        results.push(f.await.expect("follower"));
    }
    results
}

/// The slowest arrival of `insurer`'s result over `runs`.
pub fn slowest(runs: &[BTreeMap<String, InsurerResult>], insurer: &str) -> Duration {
    runs.iter().map(|r| r[insurer].after).max().unwrap_or_default()
}

/// When the last result of `insurer` over `runs` arrived.
pub fn last_arrival(runs: &[BTreeMap<String, InsurerResult>], insurer: &str) -> Instant {
    runs.iter().map(|r| r[insurer].at).max().expect("runs")
}

/// Counts of each status of `insurer` over `runs`.
pub fn statuses(runs: &[BTreeMap<String, InsurerResult>], insurer: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in runs {
        *counts.entry(r[insurer].status.clone()).or_insert(0) += 1;
    }
    counts
}

/// Seconds with millisecond precision, for the measurement lines.
pub fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}
