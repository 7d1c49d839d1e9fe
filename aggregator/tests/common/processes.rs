//! The platform as real processes — `aggregator serve`, one `aggregator poller` per insurer,
//! `core-app` — around an in-process sandbox, so a fault can SIGKILL any of them; and control
//! of the shared local Postgres and Kafka (`scripts/infra.sh`) with a guard that brings a
//! stopped service back even when the test fails.

use super::{Insurer, PollerSpec, Sandbox, TOKEN, eventually};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// The aggregator binary of this build.
pub const AGGREGATOR: &str = env!("CARGO_BIN_EXE_aggregator");

/// The core-app binary, built next to the aggregator (`make test` builds every binary first).
pub fn core_app_bin() -> PathBuf {
    let path = Path::new(AGGREGATOR).with_file_name("core-app");
    assert!(path.exists(), "{} is missing: build it first (`cargo build -p core-app`; make test does)", path.display());
    path
}

const INFRA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/infra.sh");

/// Runs `scripts/infra.sh <command>` and returns how long it took; panics when it fails.
pub async fn infra(command: &str) -> Duration {
    let start = Instant::now();
    let output = tokio::process::Command::new(INFRA).arg(command).output().await.expect("scripts/infra.sh runs");
    assert!(
        output.status.success(),
        "scripts/infra.sh {command} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    start.elapsed()
}

/// Starts Postgres and Kafka unless both already answer (a previous test may have died
/// with one stopped).
pub async fn ensure_infra_up() {
    let status = tokio::process::Command::new(INFRA).arg("status").output().await.expect("scripts/infra.sh runs");
    if !status.status.success() {
        eprintln!("infra not fully up; starting it:\n{}", String::from_utf8_lossy(&status.stdout));
        infra("pg-up").await;
        infra("kafka-up").await;
    }
}

/// Runs `scripts/infra.sh <up>` when dropped while armed: a test that stopped a shared
/// service leaves it running again, even when it panics halfway.
pub struct Restore {
    up: &'static str,
    armed: bool,
}

impl Restore {
    /// Stops a service with `down` and arms the guard with `up`.
    pub async fn stop(down: &'static str, up: &'static str) -> (Restore, Duration) {
        let guard = Restore { up, armed: true };
        let took = infra(down).await;
        (guard, took)
    }

    /// Brings the service back now; returns how long `up` took.
    pub async fn restore(mut self) -> Duration {
        self.armed = false;
        infra(self.up).await
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("restoring the shared service: scripts/infra.sh {}", self.up);
            let status = Command::new(INFRA).arg(self.up).status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("scripts/infra.sh {} failed: run `make infra-up`", self.up);
            }
        }
    }
}

/// A child process, SIGKILLed when dropped and when the test's thread ends.
pub struct Proc {
    child: Child,
    pub name: String,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, String)], log: &Path) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(program).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { child, name: name.to_string() }
    }

    /// SIGKILL, then reap; returns the moment of the kill.
    pub fn kill9(&mut self) -> Instant {
        let at = Instant::now();
        let _ = self.child.kill();
        let _ = self.child.wait();
        at
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|s| s.is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The whole platform as processes, on fresh databases and a fresh topic.
pub struct Platform {
    pub sandbox: Sandbox,
    pub dir: PathBuf,
    pub aggregator_pool: PgPool,
    pub core_pool: PgPool,
    aggregator_db: String,
    core_db: String,
    topic: String,
    group: String,
    pub aggregator_addr: String,
    pub core_addr: String,
    pub serve: Option<Proc>,
    pub pollers: BTreeMap<String, Proc>,
    pub core: Option<Proc>,
    specs: Vec<PollerSpec>,
    starts: u32,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.core.take();
        self.pollers.clear();
        self.serve.take();
        if std::thread::panicking() || std::env::var_os("FAULTS_KEEP_LOGS").is_some() {
            eprintln!("process logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Platform {
    /// Starts everything for `insurers` with quote deadline `quote`; returns when core-app,
    /// the aggregator and every poller are ready.
    pub async fn start(insurers: &[Insurer], quote: Duration) -> Platform {
        let sandbox = Sandbox::start(insurers).await;
        let (aggregator_pool, aggregator_db) = testkit::fresh_database("faults_agg").await;
        aggregator::db::MIGRATOR.run(&aggregator_pool).await.unwrap();
        let (core_pool, core_db) = testkit::fresh_database("faults_core").await;
        core_app::MIGRATOR.run(&core_pool).await.unwrap();
        let topic = testkit::fresh_topic("faults_events", 3).await;
        let dir = std::env::temp_dir().join(testkit::unique_name("faults"));
        std::fs::create_dir_all(&dir).unwrap();
        let specs: Vec<PollerSpec> = insurers
            .iter()
            .map(|i| PollerSpec {
                request: Duration::from_secs(2),
                ..PollerSpec::new(i, sandbox.base_url(i.name), quote)
            })
            .collect();
        for spec in &specs {
            std::fs::write(dir.join(format!("{}.yaml", spec.name)), spec.manifest()).unwrap();
        }
        let mut platform = Platform {
            sandbox,
            dir,
            aggregator_pool,
            core_pool,
            aggregator_db,
            core_db,
            topic,
            group: testkit::unique_name("faults_core"),
            aggregator_addr: format!("127.0.0.1:{}", testkit::free_port()),
            core_addr: format!("127.0.0.1:{}", testkit::free_port()),
            serve: None,
            pollers: BTreeMap::new(),
            core: None,
            specs,
            starts: 0,
        };
        platform.start_serve();
        for name in platform.specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>() {
            platform.start_poller(&name);
        }
        platform.start_core();
        platform.wait_ready().await;
        platform
    }

    pub fn core_url(&self) -> String {
        format!("http://{}", self.core_addr)
    }

    fn log(&mut self, what: &str) -> PathBuf {
        self.starts += 1;
        self.dir.join(format!("{:02}-{what}.log", self.starts))
    }

    fn aggregator_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AGGREGATOR_DATABASE_URL", self.aggregator_db.clone()),
            ("KAFKA_BROKERS", testkit::kafka_brokers()),
            ("KAFKA_TOPIC", self.topic.clone()),
            ("AGGREGATOR_PARTNER_TOKENS", format!("core-app:{TOKEN}")),
        ]
    }

    /// Starts `aggregator serve` (intake + relay).
    pub fn start_serve(&mut self) {
        let log = self.log("serve");
        let addr = self.aggregator_addr.clone();
        let env = self.aggregator_env();
        self.serve = Some(Proc::spawn("serve", Path::new(AGGREGATOR), &["serve", "--listen", &addr], &env, &log));
    }

    /// Starts the poller of `insurer` under a new replica id.
    pub fn start_poller(&mut self, insurer: &str) {
        let log = self.log(&format!("poller-{insurer}"));
        let spec = self.dir.join(format!("{insurer}.yaml"));
        let replica = format!("{insurer}-{}", self.starts);
        let env = self.aggregator_env();
        let args = [
            "poller",
            "--spec",
            spec.to_str().unwrap(),
            "--secrets-dir",
            self.dir.to_str().unwrap(),
            "--replica-id",
            &replica,
        ];
        let proc = Proc::spawn(&format!("poller {insurer}"), Path::new(AGGREGATOR), &args, &env, &log);
        self.pollers.insert(insurer.to_string(), proc);
    }

    /// Starts core-app.
    pub fn start_core(&mut self) {
        let log = self.log("core-app");
        let env = vec![
            ("CORE_APP_LISTEN", self.core_addr.clone()),
            ("CORE_APP_DATABASE_URL", self.core_db.clone()),
            ("KAFKA_BROKERS", testkit::kafka_brokers()),
            ("KAFKA_TOPIC", self.topic.clone()),
            ("CORE_APP_CONSUMER_GROUP", self.group.clone()),
            ("AGGREGATOR_URL", format!("http://{}", self.aggregator_addr)),
            ("AGGREGATOR_TOKEN", TOKEN.to_string()),
            ("AGGREGATOR_TIMEOUT", "2s".to_string()),
            ("CORE_APP_DEADLINE_GRACE", "2s".to_string()),
            ("CORE_APP_CLIENT_RPS", "1000".to_string()),
            ("CORE_APP_CLIENT_BURST", "1000".to_string()),
        ];
        self.core = Some(Proc::spawn("core-app", &core_app_bin(), &[], &env, &log));
    }

    /// Waits until core-app and the aggregator answer `/readyz` and every insurer's poller
    /// has registered (heartbeat within the last few seconds).
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        for url in [format!("http://{}/readyz", self.aggregator_addr), format!("{}/readyz", self.core_url())] {
            eventually(&format!("{url} ready"), Duration::from_secs(60), || async {
                http.get(&url).send().await.is_ok_and(|r| r.status().is_success())
            })
            .await;
        }
        let n = self.specs.len() as i64;
        let pool = self.aggregator_pool.clone();
        eventually("every poller registered", Duration::from_secs(60), || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM insurers WHERE heartbeat_at > now() - interval '20s'")
                .fetch_one(&pool)
                .await
                .is_ok_and(|alive| alive == n)
        })
        .await;
        let dir = self.dir.display().to_string();
        for proc in self.pollers.values_mut().chain(self.serve.as_mut()).chain(self.core.as_mut()) {
            assert!(proc.alive(), "{} exited; see the logs in {dir}", proc.name);
        }
    }

    /// Rows waiting in the aggregator's outbox.
    pub async fn outbox(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.aggregator_pool).await.unwrap_or(-1)
    }
}
