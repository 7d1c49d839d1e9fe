//! The machine's own limits, measured in the same run: Postgres commit rate and latency
//! (pgbench), a commit + NOTIFY → LISTEN round trip (what core-app's fan-out rides on), a
//! query round trip, and Kafka produce → ack / produce → consume (the `kafka-probe` binary).

use crate::stack::Env;
use crate::stats::Summary;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::postgres::PgListener;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Limits {
    /// pgbench built-in simple-update (`-N`), 8 clients: transactions per second.
    pub pgbench_simple_update_tps: f64,
    /// One INSERT per transaction, 8 clients: commits per second.
    pub pg_commit_tps: f64,
    /// One INSERT per transaction, 1 client: latency of a commit (ms).
    pub pg_commit_latency_ms: f64,
    /// `SELECT 1` round trip from Rust (sqlx), ms.
    pub pg_roundtrip_ms: Summary,
    /// BEGIN; INSERT; pg_notify; COMMIT from Rust, ms.
    pub pg_tx_notify_commit_ms: Summary,
    /// From sending COMMIT to a LISTENing connection receiving the notification, ms (includes the commit).
    pub pg_notify_delivery_ms: Summary,
    /// From COMMIT having returned to the LISTENing connection receiving the notification, ms (0 when it was there first).
    pub pg_notify_after_commit_ms: Summary,
    pub kafka: serde_json::Value,
    pub kafka_produce_ack_ms: Summary,
    pub kafka_produce_consume_ms: Summary,
    pub pgbench_version: String,
}

fn pgbench() -> String {
    for v in ["17", "16", "15", "14", "13"] {
        let p = format!("/usr/lib/postgresql/{v}/bin/pgbench");
        if Path::new(&p).exists() {
            return p;
        }
    }
    "pgbench".into()
}

fn run_pgbench(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(pgbench()).args(args).output().context("running pgbench")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        anyhow::bail!("pgbench {args:?} failed: {text}");
    }
    Ok(text)
}

fn field(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn measure(env: &Env, seconds: u32, dir: &Path) -> anyhow::Result<Limits> {
    let mut limits = Limits::default();
    let db = format!("bench_limits_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut admin = sqlx::PgConnection::connect(&env.pg("osago")).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut admin).await?;
    let url = env.pg(&db);
    let result = async {
        limits.pgbench_version = run_pgbench(&["--version"])?.trim().to_string();
        run_pgbench(&["-i", "-q", "-s", "1", &url])?;
        let t = seconds.to_string();
        let text = run_pgbench(&["-N", "-c", "8", "-j", "2", "-T", &t, &url])?;
        std::fs::write(dir.join("pgbench-simple-update.txt"), &text)?;
        limits.pgbench_simple_update_tps = field(&text, "tps =");
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::query("CREATE TABLE bench_commit (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now())")
            .execute(&mut conn)
            .await?;
        let script = dir.join("commit.sql");
        std::fs::write(&script, "INSERT INTO bench_commit (v) VALUES (1);\n")?;
        let script = script.to_string_lossy().to_string();
        let text = run_pgbench(&["-n", "-f", &script, "-c", "8", "-j", "2", "-T", &t, &url])?;
        std::fs::write(dir.join("pgbench-commit-8.txt"), &text)?;
        limits.pg_commit_tps = field(&text, "tps =");
        let text = run_pgbench(&["-n", "-f", &script, "-c", "1", "-T", &t, &url])?;
        std::fs::write(dir.join("pgbench-commit-1.txt"), &text)?;
        limits.pg_commit_latency_ms = field(&text, "latency average =");

        // Round trips from Rust, as the services make them.
        let mut rt = Vec::new();
        for _ in 0..500 {
            let t0 = Instant::now();
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            rt.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        limits.pg_roundtrip_ms = Summary::of(&rt);
        let mut listener = PgListener::connect(&url).await?;
        listener.listen("bench_probe").await?;
        let (mut commit, mut delivery, mut after) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..300 {
            let t0 = Instant::now();
            let mut tx = conn.begin().await?;
            sqlx::query("INSERT INTO bench_commit (v) VALUES (2)").execute(&mut *tx).await?;
            sqlx::query("SELECT pg_notify('bench_probe', 'x')").execute(&mut *tx).await?;
            let t_commit = Instant::now();
            tx.commit().await?;
            let committed = Instant::now();
            commit.push(t0.elapsed().as_secs_f64() * 1000.0);
            tokio::time::timeout(Duration::from_secs(5), listener.recv()).await??;
            delivery.push(t_commit.elapsed().as_secs_f64() * 1000.0);
            after.push(committed.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        limits.pg_tx_notify_commit_ms = Summary::of(&commit);
        limits.pg_notify_delivery_ms = Summary::of(&delivery);
        limits.pg_notify_after_commit_ms = Summary::of(&after);
        anyhow::Ok(())
    }
    .await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin).await;
    result?;

    let out = tokio::process::Command::new(env.tools.join("kafka-probe"))
        .env("OSAGO_KAFKA_BROKERS", &env.brokers)
        .args(["--rate", "200", "--seconds", &seconds.to_string()])
        .output()
        .await
        .context("running kafka-probe")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let kafka: serde_json::Value = serde_json::from_str(text.trim())
        .with_context(|| format!("kafka-probe said: {text}{}", String::from_utf8_lossy(&out.stderr)))?;
    limits.kafka_produce_ack_ms = serde_json::from_value(kafka["produce_ack_ms"].clone()).unwrap_or_default();
    limits.kafka_produce_consume_ms = serde_json::from_value(kafka["produce_consume_ms"].clone()).unwrap_or_default();
    limits.kafka = kafka;
    Ok(limits)
}

/// Commits timed alongside a phase, on a connection and in a database of their own: what a
/// durable commit costs on this machine while the stack runs. The limits above take 300
/// commits in a second or two, which cannot see a stall of the disk's flush that comes once in
/// 10–30 s; the relay's round and core-app's consumer round both wait for that flush.
pub struct CommitProbe {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>,
}

impl CommitProbe {
    /// One INSERT, committed waiting for the WAL flush, every this often.
    pub const EVERY: Duration = Duration::from_millis(50);

    /// Starts committing into `bench_commit_probe` of the database at `url`.
    pub async fn start(url: &str) -> anyhow::Result<CommitProbe> {
        let mut conn = sqlx::PgConnection::connect(url).await.context("connecting the commit probe")?;
        sqlx::query("SET synchronous_commit = on").execute(&mut conn).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
        )
        .execute(&mut conn)
        .await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut commits = Vec::new();
            let mut tick = tokio::time::interval(Self::EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let started = Instant::now();
                sqlx::query("INSERT INTO bench_commit_probe DEFAULT VALUES").execute(&mut conn).await?;
                commits.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            sqlx::query("DELETE FROM bench_commit_probe").execute(&mut conn).await?;
            Ok(commits)
        });
        Ok(CommitProbe { stop, task })
    }

    /// Stops the probe; its commits' latencies in ms (none when it failed: the phase stands).
    pub async fn finish(self) -> Vec<f64> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(commits)) => commits,
            Ok(Err(e)) => {
                eprintln!("    commit probe failed: {e:#}");
                Vec::new()
            }
            Err(e) => {
                eprintln!("    commit probe failed: {e}");
                Vec::new()
            }
        }
    }
}
