//! Crash test with real processes: while quotes are in flight, SIGKILL a poller and the
//! aggregator (intake + outbox relay), restart both; every quote still completes and the
//! SSE client sees each insurer's result exactly once, none of them lost to the crash.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::sse;
use tokio::net::TcpListener;

const TOKEN: &str = "crash-test-token";
const BIN: &str = env!("CARGO_BIN_EXE_aggregator");

const SANDBOX: &str = r#"
seed = 3
[[insurer]]
name = "alfa"
display_name = "Альфа"
style = "create-poll"
base_rate_position = 0.9
create_latency = { median = "5ms", p99 = "20ms" }
offer_latency = { median = "1500ms", p99 = "2500ms" }

[[insurer]]
name = "reso"
display_name = "РЕСО"
style = "offers-list"
base_rate_position = 0.5
create_latency = { median = "5ms", p99 = "20ms" }
offer_latency = { median = "1s", p99 = "2s" }
"#;

fn manifest(name: &str, style: &str, sandbox: &str) -> String {
    format!(
        "apiVersion: osago.io/v1alpha1
kind: InsurerIntegration
metadata: {{name: {name}}}
spec:
  displayName: {name}
  api: {{baseUrl: 'http://{sandbox}/{name}', style: {style}}}
  timeouts: {{connect: 1s, request: 1s, quote: 40s}}
  polling: {{initialDelay: 300ms, interval: 1s, maxInterval: 1s}}
"
    )
}

/// A child process killed with SIGKILL when dropped (the test's own clean-up).
struct Proc(Child);

impl Proc {
    fn kill9(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(args: &[&str], db: &str, topic: &str, log: &PathBuf) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .args(args)
            .env("AGGREGATOR_DATABASE_URL", db)
            .env("KAFKA_BROKERS", testkit::kafka_brokers())
            .env("KAFKA_TOPIC", topic)
            .env("AGGREGATOR_PARTNER_TOKENS", format!("core-app:{TOKEN}"))
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("aggregator binary"),
    )
}

async fn wait_ready(url: &str) {
    for _ in 0..200 {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not ready");
}

#[tokio::test]
async fn killed_poller_and_relay_lose_no_result() {
    let sandbox_config = sandbox::config::Config::from_toml(SANDBOX).unwrap();
    let sandbox = sandbox::App::build(sandbox_config).spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (agg_pool, agg_url) = testkit::fresh_database("crash_agg").await;
    aggregator::db::MIGRATOR.run(&agg_pool).await.unwrap();
    let (core_pool, _) = testkit::fresh_database("crash_core").await;
    core_app::MIGRATOR.run(&core_pool).await.unwrap();
    let topic = testkit::fresh_topic("crash_events", 3).await;
    let dir = std::env::temp_dir().join(testkit::unique_name("crash"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, style) in [("alfa", "create-poll"), ("reso", "offers-list")] {
        std::fs::write(dir.join(format!("{name}.yaml")), manifest(name, style, &sandbox.to_string())).unwrap();
    }
    let agg_port = testkit::free_port();
    let agg_addr = format!("127.0.0.1:{agg_port}");
    let serve =
        |n: u32| spawn(&["serve", "--listen", &agg_addr], &agg_url, &topic, &dir.join(format!("serve-{n}.log")));
    let poller = |name: &str, n: u32| {
        let spec = dir.join(format!("{name}.yaml"));
        let replica = format!("{name}-{n}");
        spawn(
            &[
                "poller",
                "--spec",
                spec.to_str().unwrap(),
                "--secrets-dir",
                dir.to_str().unwrap(),
                "--replica-id",
                &replica,
            ],
            &agg_url,
            &topic,
            &dir.join(format!("poller-{name}-{n}.log")),
        )
    };
    let mut aggregator = serve(1);
    let mut alfa = poller("alfa", 1);
    let _reso = poller("reso", 1);
    wait_ready(&format!("http://{agg_addr}/readyz")).await;

    let core = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let core_url = format!("http://{}", core.local_addr().unwrap());
    let settings = core_app::Settings {
        pool: core_pool.clone(),
        kafka_brokers: testkit::kafka_brokers(),
        topic: topic.clone(),
        consumer_group: testkit::unique_name("crash_core"),
        aggregator: core_app::aggregator_client::AggregatorClient::new(
            &format!("http://{agg_addr}"),
            TOKEN,
            Duration::from_secs(2),
        )
        .unwrap(),
        api: core_app::api::ApiSettings::default(),
    };
    tokio::spawn(core_app::serve(settings, core, std::future::pending()));
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM insurers").fetch_one(&agg_pool).await.unwrap();
        if n == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Ten quotes in flight, each followed by its own SSE client.
    let http = reqwest::Client::new();
    let mut streams = vec![];
    for i in 0..10 {
        let mut body = sample();
        body["drivers"][0]["licence"] = json!(format!("77{i:02} 123456"));
        let created: Value =
            http.post(format!("{core_url}/api/v1/quotes")).json(&body).send().await.unwrap().json().await.unwrap();
        let url = format!("{core_url}{}", created["events_url"].as_str().expect("quote created"));
        streams.push(tokio::spawn(async move { sse::read(&url, None, Duration::from_secs(60)).await }));
    }

    // Kill the relay and a poller mid-flight, keep them down a moment, restart them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // alfa's create is idempotent, so a held task's reference is in the poller's memory only:
    // the restarted poller creates again under the same key and is given the same calculation.
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE insurer = 'alfa' AND status = 'pending' AND lease_owner = 'alfa-1'",
    )
    .fetch_one(&agg_pool)
    .await
    .unwrap();
    assert_eq!(in_flight, 10, "the kill hits alfa with every quote held there and none answered");
    assert_eq!(creates(&http, &sandbox).await, 10, "every quote created at alfa before the kill");
    aggregator.kill9();
    alfa.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _aggregator = serve(2);
    let _alfa = poller("alfa", 2);

    for stream in streams {
        let received = stream.await.unwrap();
        let (last, results) = received.events.split_last().expect("events");
        assert_eq!(last.event, "complete", "every quote completes");
        let mut per_insurer: HashMap<String, Vec<String>> = HashMap::new();
        for e in results {
            let data = e.json();
            per_insurer
                .entry(data["insurer"].as_str().unwrap().to_string())
                .or_default()
                .push(data["status"].as_str().unwrap().to_string());
        }
        assert_eq!(per_insurer["alfa"], ["offer"], "alfa's result exactly once, not lost to the crash");
        assert_eq!(per_insurer["reso"], ["offer"], "reso's result exactly once");
    }
    assert_eq!(creates(&http, &sandbox).await, 20, "each created once more after the kill, under its own key");
    // Every result reached its stream, so it was published; the relay deletes what it
    // delivered with its next round, or on its own after a short wait for one.
    let mut leftover: i64 = -1;
    for _ in 0..40 {
        leftover = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&agg_pool).await.unwrap();
        if leftover == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leftover, 0, "the restarted relay published and deleted everything");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Creates alfa received (the sandbox's own count).
async fn creates(http: &reqwest::Client, sandbox: &std::net::SocketAddr) -> u64 {
    let view: Value =
        http.get(format!("http://{sandbox}/_control/insurers/alfa")).send().await.unwrap().json().await.unwrap();
    view["counters"]["by_endpoint"]["POST /v1/calculate"].as_u64().unwrap_or(0)
}

fn sample() -> Value {
    domain::example::request_in(7)
}
