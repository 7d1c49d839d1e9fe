//! A whole platform in one test process: sandbox insurers, pollers, the aggregator (intake
//! + relay) and core-app replicas, on a fresh pair of databases and a fresh Kafka topic.

#![allow(dead_code)] // each test binary uses its own part of this harness

use aggregator::app::ServeSettings;
use aggregator::partners::Partners;
use core_app::aggregator_client::AggregatorClient;
use core_app::api::ApiSettings;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const TOKEN: &str = "core-app-test-token";

/// Three insurers, one per API style, quick enough for tests; `slowpoke` only with `with_slow`.
pub const SANDBOX: &str = r#"
seed = 1

[[insurer]]
name = "alfa"
display_name = "АльфаСтрахование"
style = "create-poll"
auth = { type = "bearer", token = "alfa-token" }
base_rate_position = 0.9
create_latency = { median = "5ms", p99 = "20ms" }
offer_latency = { median = "300ms", p99 = "600ms" }

[[insurer]]
name = "ingos"
display_name = "Ингосстрах"
style = "operation"
auth = { type = "header", header = "X-Api-Key", key = "ingos-key" }
base_rate_position = 1.0
create_latency = { median = "5ms", p99 = "20ms" }
offer_latency = { median = "400ms", p99 = "700ms" }

[[insurer]]
name = "reso"
display_name = "РЕСО-Гарантия"
style = "offers-list"
base_rate_position = 0.5
create_latency = { median = "5ms", p99 = "20ms" }
offer_latency = { median = "300ms", p99 = "500ms" }
decline = { max_vehicle_age = 3 }
"#;

/// The manifest of one sandbox insurer for a poller.
fn manifest(name: &str, style: &str, auth: &str, sandbox: SocketAddr, quote_timeout: &str) -> String {
    format!(
        "apiVersion: osago.io/v1alpha1
kind: InsurerIntegration
metadata: {{name: {name}}}
spec:
  displayName: {name}
  api: {{baseUrl: 'http://{sandbox}/{name}', style: {style}, auth: {auth}}}
  timeouts: {{connect: 1s, request: 2s, quote: {quote_timeout}}}
  polling: {{initialDelay: 200ms, interval: 1s, maxInterval: 2s}}
"
    )
}

/// A running platform; dropping it stops everything.
pub struct Stack {
    pub core_url: String,
    pub aggregator_url: String,
    pub sandbox_url: String,
    pub core_pool: PgPool,
    pub aggregator_pool: PgPool,
    pub topic: String,
    pub group: String,
    stop: watch::Sender<bool>,
    secrets: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.secrets);
    }
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

impl Stack {
    /// Starts everything with each insurer's quote timeout `quote_timeout` (e.g. "20s").
    pub async fn start(quote_timeout: &str) -> Stack {
        let config = sandbox::config::Config::from_toml(SANDBOX).unwrap();
        let sandbox_addr = sandbox::App::build(config).spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let (aggregator_pool, _) = testkit::fresh_database("agg").await;
        aggregator::db::MIGRATOR.run(&aggregator_pool).await.unwrap();
        // Connected as core-app connects (its session settings), not as the tests' helper does.
        let (_, core_url) = testkit::fresh_database("core").await;
        let options = core_app::store::session_options(core_url.parse().unwrap());
        let core_pool = platform::db::pool_options(16).connect_with(options).await.unwrap();
        core_app::MIGRATOR.run(&core_pool).await.unwrap();
        let topic = testkit::fresh_topic("quote_events", 3).await;
        let (stop, _) = watch::channel(false);

        let secrets = std::env::temp_dir().join(testkit::unique_name("secrets"));
        for (secret, value) in [("alfa-api", "alfa-token"), ("ingos-api", "ingos-key")] {
            std::fs::create_dir_all(secrets.join(secret)).unwrap();
            std::fs::write(secrets.join(secret).join("token"), value).unwrap();
        }
        let manifests = [
            manifest(
                "alfa",
                "create-poll",
                "{type: bearer, secretRef: {name: alfa-api, key: token}}",
                sandbox_addr,
                quote_timeout,
            ),
            manifest(
                "ingos",
                "operation",
                "{type: header, header: X-Api-Key, secretRef: {name: ingos-api, key: token}}",
                sandbox_addr,
                quote_timeout,
            ),
            manifest("reso", "offers-list", "{type: none}", sandbox_addr, quote_timeout),
        ];
        for (i, yaml) in manifests.iter().enumerate() {
            let settings = aggregator::poller::PollerSettings::new(
                crds::InsurerIntegration::from_yaml(yaml).unwrap(),
                aggregator_pool.clone(),
                secrets.clone(),
                format!("test-poller-{i}"),
            );
            tokio::spawn(aggregator::poller::run(settings, stopped(&stop)));
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

        let group = testkit::unique_name("core_app");
        let mut stack = Stack {
            core_url: String::new(),
            aggregator_url,
            sandbox_url: format!("http://{sandbox_addr}"),
            core_pool,
            aggregator_pool,
            topic,
            group,
            stop,
            secrets,
        };
        stack.core_url = stack.start_core_app(&stack.aggregator_url.clone()).await;
        stack.wait_for_insurers(3).await;
        stack
    }

    /// Starts another core-app replica (same database and consumer group) and returns its URL.
    pub async fn start_core_app(&self, aggregator_url: &str) -> String {
        let api =
            ApiSettings { deadline_grace: Duration::from_secs(1), client_rate: (1000, 1000), ..ApiSettings::default() };
        self.start_core_app_with(aggregator_url, api).await
    }

    /// Starts a replica with its own API settings.
    pub async fn start_core_app_with(&self, aggregator_url: &str, api: ApiSettings) -> String {
        self.start_core_app_until(aggregator_url, api, stopped(&self.stop)).await
    }

    /// Starts a replica that stops when `stop` resolves (or with the stack).
    pub async fn start_core_app_until(
        &self,
        aggregator_url: &str,
        api: ApiSettings,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> String {
        let stack_stop = stopped(&self.stop);
        let stop = async move {
            tokio::select! {
                () = stop => {}
                () = stack_stop => {}
            }
        };
        let (l, url) = listener().await;
        let settings = core_app::Settings {
            pool: self.core_pool.clone(),
            kafka_brokers: testkit::kafka_brokers(),
            topic: self.topic.clone(),
            consumer_group: self.group.clone(),
            aggregator: AggregatorClient::new(aggregator_url, TOKEN, Duration::from_secs(2)).unwrap(),
            api,
        };
        tokio::spawn(core_app::serve(settings, l, stop));
        url
    }

    async fn wait_for_insurers(&self, n: usize) {
        let http = reqwest::Client::new();
        for _ in 0..100 {
            let list: serde_json::Value = http
                .get(format!("{}/internal/v1/insurers", self.aggregator_url))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            if list.as_array().is_some_and(|a| a.len() == n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pollers did not register");
    }
}

fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The example request, starting in a week.
pub fn sample() -> serde_json::Value {
    domain::example::request_in(7)
}
