//! The stack under test, as `scripts/demo.sh` starts it — sandbox, one poller per insurer,
//! `aggregator serve`, core-app — from release binaries, on fresh databases and a fresh
//! topic, with bench settings: six fast insurers, no faults, no rate limits in the way.

use crate::procstat::{self, Snapshot};
use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqlx::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// core-app's partner token at the aggregator (bench only).
pub const TOKEN: &str = "bench-core-app-token";

/// The six bench insurers: name, display name, API style, auth.
pub const INSURERS: &[(&str, &str, &str, Auth)] = &[
    ("alfa", "АльфаСтрахование", "create-poll", Auth::Bearer),
    ("sogaz", "СОГАЗ", "create-poll", Auth::Bearer),
    ("ingos", "Ингосстрах", "operation", Auth::Header),
    ("vsk", "ВСК", "operation", Auth::Header),
    ("reso", "РЕСО-Гарантия", "offers-list", Auth::None),
    ("rgs", "Росгосстрах", "offers-list", Auth::None),
];

#[derive(Clone, Copy)]
pub enum Auth {
    Bearer,
    Header,
    None,
}

/// Latency settings of the bench personalities and manifests (written into the report).
pub const CREATE_LATENCY: (&str, &str) = ("20ms", "60ms");
pub const OFFER_LATENCY: (&str, &str) = ("300ms", "700ms");
pub const POLLING: (&str, &str, &str) = ("500ms", "1s", "1s");

/// The Postgres server process's command line (`scripts/infra.sh` starts it so).
const POSTMASTER: &str = "bin/postgres -D";
/// The CPU group of Postgres processes that exited during a phase: autovacuum workers, and
/// connections closed (those of other databases too, which the bench does not open while it
/// measures).
const EXITED: &str = "postgres (autovacuum, closed connections)";

/// Where things are.
#[derive(Clone, Debug)]
pub struct Env {
    pub repo: PathBuf,
    /// The services' release binaries (aggregator, core-app).
    pub bin: PathBuf,
    /// The bench's own binaries (bench-sandbox, bench-baseline, kafka-probe).
    pub tools: PathBuf,
    /// `postgres://osago:osago@127.0.0.1:55432` (no database).
    pub pg_base: String,
    pub brokers: String,
    /// This invocation's results folder.
    pub out: PathBuf,
}

impl Env {
    pub fn pg(&self, db: &str) -> String {
        format!("{}/{db}", self.pg_base)
    }
}

/// A running stack.
pub struct Stack {
    pub id: String,
    pub agg_db: String,
    pub core_db: String,
    pub topic: String,
    pub core_url: String,
    pub agg_url: String,
    pub sandbox_url: String,
    pub baseline_url: String,
    children: Vec<(String, Child)>,
    env: Env,
}

impl Stack {
    /// Fresh databases and topic, config files, processes; returns once all six insurers can take work.
    pub async fn start(env: &Env, label: &str) -> anyhow::Result<Stack> {
        let id = format!("{}_{}", label, &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let dir = env.out.join("stacks").join(&id);
        std::fs::create_dir_all(dir.join("logs"))?;
        let agg_db = format!("bench_agg_{id}");
        let core_db = format!("bench_core_{id}");
        let base_db = format!("bench_base_{id}");
        let mut admin = sqlx::PgConnection::connect(&env.pg("osago")).await.context("connecting to Postgres")?;
        for db in [&agg_db, &core_db, &base_db] {
            sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await?;
        }
        let topic = format!("bench.quote-events.{id}");
        create_topic(&env.brokers, &topic).await?;

        let (sandbox_port, agg_port, core_port, base_port) =
            (testkit::free_port(), testkit::free_port(), testkit::free_port(), testkit::free_port());
        let sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
        let config = write_configs(&dir, &sandbox_url)?;
        let mut stack = Stack {
            id: id.clone(),
            agg_db: agg_db.clone(),
            core_db: core_db.clone(),
            topic: topic.clone(),
            core_url: format!("http://127.0.0.1:{core_port}"),
            agg_url: format!("http://127.0.0.1:{agg_port}"),
            sandbox_url: sandbox_url.clone(),
            baseline_url: format!("http://127.0.0.1:{base_port}"),
            children: vec![],
            env: env.clone(),
        };
        let logs = dir.join("logs");
        let common = |c: &mut Command| {
            c.env("LOG_FORMAT", "json").env("KAFKA_BROKERS", &env.brokers).env("KAFKA_TOPIC", &topic);
        };
        let mut c = Command::new(env.tools.join("bench-sandbox"));
        c.arg("--config").arg(config.join("sandbox.toml")).arg("--listen").arg(format!("127.0.0.1:{sandbox_port}"));
        stack.spawn("sandbox", c, &logs)?;
        wait_ready(&format!("{sandbox_url}/readyz")).await.context("sandbox")?;

        let mut c = Command::new(env.bin.join("aggregator"));
        common(&mut c);
        c.arg("serve")
            .env("AGGREGATOR_DATABASE_URL", env.pg(&agg_db))
            .env("AGGREGATOR_LISTEN", format!("127.0.0.1:{agg_port}"))
            .env("AGGREGATOR_PARTNER_TOKENS", format!("core-app:{TOKEN}"))
            .env("AGGREGATOR_PARTNER_RPS", "1000000")
            .env("AGGREGATOR_PARTNER_BURST", "1000000");
        stack.spawn("aggregator", c, &logs)?;
        wait_ready(&format!("{}/readyz", stack.agg_url)).await.context("aggregator")?;

        for (name, ..) in INSURERS {
            let mut c = Command::new(env.bin.join("aggregator"));
            common(&mut c);
            c.env("AGGREGATOR_DATABASE_URL", env.pg(&agg_db))
                .arg("poller")
                .arg("--spec")
                .arg(config.join("insurers").join(format!("{name}.yaml")))
                .arg("--secrets-dir")
                .arg(config.join("secrets"));
            stack.spawn(&format!("poller-{name}"), c, &logs)?;
        }

        let mut c = Command::new(env.bin.join("core-app"));
        common(&mut c);
        c.env("CORE_APP_DATABASE_URL", env.pg(&core_db))
            .env("CORE_APP_LISTEN", format!("127.0.0.1:{core_port}"))
            .env("CORE_APP_CONSUMER_GROUP", format!("bench-{id}"))
            .env("AGGREGATOR_URL", &stack.agg_url)
            .env("AGGREGATOR_TOKEN", TOKEN)
            .env("CORE_APP_CLIENT_RPS", "1000000")
            .env("CORE_APP_CLIENT_BURST", "1000000");
        stack.spawn("core-app", c, &logs)?;
        wait_ready(&format!("{}/readyz", stack.core_url)).await.context("core-app")?;

        let mut c = Command::new(env.tools.join("bench-baseline"));
        c.arg("--database-url").arg(env.pg(&base_db)).arg("--listen").arg(format!("127.0.0.1:{base_port}"));
        stack.spawn("baseline", c, &logs)?;
        wait_ready(&format!("{}/readyz", stack.baseline_url)).await.context("baseline")?;

        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let n = client
                .get(format!("{}/internal/v1/insurers", stack.agg_url))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()
                .and_then(|r| r.error_for_status().ok());
            let n = match n {
                Some(r) => r.json::<Vec<serde_json::Value>>().await.map(|v| v.len()).unwrap_or(0),
                None => 0,
            };
            if n >= INSURERS.len() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("only {n} of {} insurers registered; see {}", INSURERS.len(), logs.display());
            }
            stack.check_alive()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(stack)
    }

    fn spawn(&mut self, name: &str, mut command: Command, logs: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        command.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log)).kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Fails when a process of the stack has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status}); see its log under {}", self.env.out.display());
            }
        }
        Ok(())
    }

    /// Process pids by name.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        self.children.iter().filter_map(|(n, c)| Some((n.clone(), c.id()?))).collect()
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.pids().get(name).copied()
    }

    /// CPU seconds so far of every process that serves a quote: ours by name (the pollers
    /// together), Postgres backends of our databases, the Kafka broker, the load generator.
    pub fn snapshot(&self) -> Snapshot {
        let mut groups: BTreeMap<String, f64> = BTreeMap::new();
        for (name, pid) in self.pids() {
            let group = if name.starts_with("poller-") { "pollers (6)".to_string() } else { name };
            *groups.entry(group).or_default() += procstat::cpu_seconds(pid).unwrap_or(0.0);
        }
        let dbs =
            [(self.agg_db.as_str(), "postgres (aggregator db)"), (self.core_db.as_str(), "postgres (core-app db)")];
        for (group, pids) in procstat::postgres_groups(&dbs) {
            let cpu: f64 = pids.iter().filter_map(|p| procstat::cpu_seconds(*p)).sum();
            *groups.entry(group).or_default() += cpu;
        }
        // Autovacuum of our tables is work the load causes; its workers live for seconds.
        let exited: f64 =
            procstat::pids_matching(POSTMASTER).iter().filter_map(|p| procstat::exited_children_cpu_seconds(*p)).sum();
        groups.insert(EXITED.into(), exited);
        let kafka: f64 = procstat::pids_matching("kafka.Kafka").iter().filter_map(|p| procstat::cpu_seconds(*p)).sum();
        groups.insert("kafka broker".into(), kafka);
        groups.insert("load generator".into(), procstat::cpu_seconds(std::process::id()).unwrap_or(0.0));
        Snapshot { at: Instant::now(), groups, machine: procstat::machine_jiffies() }
    }

    /// SIGSTOP / SIGCONT the pollers (intake and fan-out phases run without them).
    pub fn signal_pollers(&self, signal: &str) {
        for (name, pid) in self.pids() {
            if name.starts_with("poller-") {
                let _ = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
            }
        }
    }

    /// Keeps the registry's heartbeats fresh while the pollers are stopped (intake takes only
    /// insurers heard from within 30 s), until the returned task is aborted.
    pub async fn keep_heartbeats(&self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&self.env.pg(&self.agg_db)).await?;
        Ok(tokio::spawn(async move {
            loop {
                let _ = sqlx::query("UPDATE insurers SET heartbeat_at = now()").execute(&pool).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }))
    }

    /// Stops every process (SIGTERM, then SIGKILL), drops the databases and the topic.
    pub async fn stop(mut self) {
        self.signal_pollers("CONT");
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        }
        for (_, child) in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(8), child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        // Right after the fan-out closes its 10 000 sockets a new connection can fail for a
        // moment; a stack's databases left behind would stay on the cluster for good. As the
        // superuser: an autovacuum worker still paced through a table after a long phase is
        // nobody's backend, and only a superuser's DROP ... WITH (FORCE) may end it.
        let dbs = [self.agg_db.clone(), self.core_db.clone(), format!("bench_base_{}", self.id)];
        let mut dropped = false;
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let Ok(mut admin) = sqlx::PgConnection::connect(&testkit::pg_admin_url()).await else { continue };
            let mut all = true;
            for db in &dbs {
                let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                all &= sqlx::query(&sql).execute(&mut admin).await.is_ok();
            }
            if all {
                dropped = true;
                break;
            }
        }
        if !dropped {
            eprintln!("warning: could not drop the stack's databases {}; drop them by hand", dbs.join(", "));
        }
        if let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", &self.env.brokers)
            .create::<AdminClient<DefaultClientContext>>()
        {
            let _ = admin.delete_topics(&[&self.topic], &AdminOptions::new()).await;
        }
    }
}

/// The quote-events topic, created before the services so that it stamps every message with
/// the broker's append time: that stamp is the "in Kafka" instant of each event.
async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, platform_partitions(), TopicReplication::Fixed(1))
        .set("message.timestamp.type", "LogAppendTime");
    for result in admin.create_topics(&[new], &options).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// The services create their topic with six partitions (`platform::kafka::PARTITIONS`).
fn platform_partitions() -> i32 {
    6
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} not ready after 30 s")
}

/// Sandbox personalities, InsurerIntegration manifests and their secrets.
fn write_configs(dir: &Path, sandbox_url: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join("config");
    std::fs::create_dir_all(config.join("insurers"))?;
    let mut toml = String::from(
        "# Bench personalities: six fast insurers over the three API styles, no faults, no limits.\nseed = 20261130\n",
    );
    for (i, (name, display, style, auth)) in INSURERS.iter().enumerate() {
        let auth_toml = match auth {
            Auth::Bearer => format!(r#"{{ type = "bearer", token = "bench-{name}-token" }}"#),
            Auth::Header => format!(r#"{{ type = "header", header = "X-Api-Key", key = "bench-{name}-key" }}"#),
            Auth::None => r#"{ type = "none" }"#.to_string(),
        };
        toml.push_str(&format!(
            "\n[[insurer]]\nname = \"{name}\"\ndisplay_name = \"{display}\"\nstyle = \"{style}\"\nauth = {auth_toml}\n\
             base_rate_position = {:.2}\ncreate_latency = {{ median = \"{}\", p99 = \"{}\" }}\n\
             offer_latency = {{ median = \"{}\", p99 = \"{}\" }}\n",
            0.85 + 0.03 * i as f64,
            CREATE_LATENCY.0,
            CREATE_LATENCY.1,
            OFFER_LATENCY.0,
            OFFER_LATENCY.1
        ));
        let (auth_yaml, secret) = match auth {
            Auth::Bearer => (
                format!("{{type: bearer, secretRef: {{name: {name}-api, key: token}}}}"),
                Some(("token", format!("bench-{name}-token"))),
            ),
            Auth::Header => (
                format!("{{type: header, header: X-Api-Key, secretRef: {{name: {name}-api, key: api-key}}}}"),
                Some(("api-key", format!("bench-{name}-key"))),
            ),
            Auth::None => ("{type: none}".to_string(), None),
        };
        if let Some((key, value)) = secret {
            let d = config.join("secrets").join(format!("{name}-api"));
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join(key), value)?;
        }
        let yaml = format!(
            "# Bench manifest: limits far above the load, the shortest polling the spec allows.\n\
             apiVersion: osago.io/v1alpha1\nkind: InsurerIntegration\nmetadata:\n  name: {name}\nspec:\n  displayName: {display}\n  \
             api:\n    baseUrl: {sandbox_url}/{name}\n    style: {style}\n    auth: {auth_yaml}\n  \
             timeouts: {{connect: 2s, request: 5s, quote: 10m}}\n  \
             rateLimit: {{requestsPerSecond: 100000, burst: 100000, maxConcurrent: 1024}}\n  \
             polling: {{initialDelay: {}, interval: {}, maxInterval: {}}}\n",
            POLLING.0, POLLING.1, POLLING.2
        );
        std::fs::write(config.join("insurers").join(format!("{name}.yaml")), yaml)?;
    }
    std::fs::create_dir_all(config.join("secrets"))?;
    std::fs::write(config.join("sandbox.toml"), toml)?;
    Ok(config)
}
