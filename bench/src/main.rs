//! `bench run [--quick]`: the whole benchmark — limits, pipeline latency at fixed loads, the
//! throughput ramp, intake against its baseline, SSE fan-out — then `docs/benchmarks.md`.

use bench::limits::{self, CommitProbe};
use bench::load::{self, Capacity, OpenLoop, QuoteRun};
use bench::pipeline::{self, Detections, Tap};
use bench::procstat::{self, Snapshot};
use bench::report::{self, BrokerWarmUp, FanOut, Http2Streams, Intake, Machine, PhaseResult, Plan, Results};
use bench::stack::{Env, Stack};
use bench::statements;
use bench::stats::Summary;
use bench::tables::{self, AGGREGATOR_DB, CORE_DB};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Benchmark harness of the OSAGO platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the benchmark and writes the report.
    Run {
        /// The quick mode (regression check, under five minutes).
        #[arg(long)]
        quick: bool,
        /// The report to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        /// Where raw data goes (a folder per invocation).
        #[arg(long, default_value = "bench/results")]
        results: PathBuf,
        /// Where the services' release binaries are (default: $CARGO_TARGET_DIR/release).
        #[arg(long, env = "BENCH_SERVICES_BIN")]
        bin: Option<PathBuf>,
        /// Only these parts (comma-separated: limits,pipeline,ramp,intake,fanout).
        #[arg(long, default_value = "limits,pipeline,ramp,intake,fanout")]
        parts: String,
    },
    /// Holds a steady open-loop load on a fresh stack and records a system-wide CPU profile
    /// (`perf record --call-graph dwarf`), folded per process into flamegraphs with inferno.
    Profile {
        /// Quotes per second.
        #[arg(long, default_value_t = 20.0)]
        qps: f64,
        /// Seconds of load; perf records the middle part of it.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value = "bench/results")]
        results: PathBuf,
        #[arg(long, env = "BENCH_SERVICES_BIN")]
        bin: Option<PathBuf>,
        /// A label for the output folder (e.g. "before", "after").
        #[arg(long, default_value = "profile")]
        label: String,
        /// Only the load, its phase data and the statements' costs, without `perf`, whose own
        /// CPU would be in the latencies of an A/B run of them.
        #[arg(long)]
        no_perf: bool,
    },
    /// Writes the report again from a run's raw data (its `results.json`), e.g. after
    /// bench/FINDINGS.md changed or the report was overwritten by a quick run.
    Report {
        /// The run's folder, e.g. bench/results/20261203-081621-full.
        run: PathBuf,
        /// The report to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
    },
}

fn default_bin(bin: Option<PathBuf>) -> PathBuf {
    bin.unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/osago/target"));
        target.join("release")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // A report written again from raw data touches no database.
    if !matches!(command, Command::Report { .. }) {
        statements::Tracking::ensure_off(&testkit::pg_admin_url()).await;
    }
    let (quick, doc, results, bin, parts) = match command {
        Command::Run { quick, doc, results, bin, parts } => (quick, doc, results, bin, parts),
        Command::Report { run, doc } => return rewrite_report(&run, &doc),
        Command::Profile { qps, seconds, results, bin, label, no_perf } => {
            return profile(qps, seconds, results, default_bin(bin), label, !no_perf).await;
        }
    };
    let plan = if quick { Plan::quick() } else { Plan::full() };
    let env = base_env(&results, default_bin(bin), &plan.mode)?;
    let (repo, out) = (env.repo.clone(), env.out.clone());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    let clock = std::time::Instant::now();
    println!("==> bench ({} mode): raw data in {}", plan.mode, out.display());

    let mut results = Results { plan: plan.clone(), machine: Machine::describe(&repo), ..Results::default() };
    results.machine.test_databases_dropped = drop_test_databases(&env).await;
    if parts.contains(&"limits") {
        println!("==> limits: pgbench, commit + NOTIFY, Kafka produce → consume");
        results.limits = limits::measure(&env, plan.limits_seconds, &out).await?;
        save(&out, "limits.json", &results.limits)?;
    }
    let vins = AtomicU64::new(rand_seed());

    if parts.contains(&"pipeline") || parts.contains(&"ramp") {
        let levels: Vec<(String, f64)> = if parts.contains(&"pipeline") {
            plan.offer_levels.iter().map(|o| (format!("{o} offers/s"), o / 6.0)).collect()
        } else {
            vec![]
        };
        if plan.fresh_stack_per_level {
            for (label, qps) in &levels {
                let mut stack = start_stack(&env, "level").await?;
                let mut session = Session::new(&mut stack).await?;
                session.warm_up(&vins).await?;
                for rep in 0..plan.reps {
                    session.phase(label, "level", rep, *qps, plan.window, &vins).await?;
                }
                results.pipeline.extend(session.finish(&env).await?);
                stack.stop().await;
            }
        }
        let mut stack = start_stack(&env, "pipe").await?;
        let mut session = Session::new(&mut stack).await?;
        session.warm_up(&vins).await?;
        if !plan.fresh_stack_per_level {
            for (label, qps) in &levels {
                for rep in 0..plan.reps {
                    session.phase(label, "level", rep, *qps, plan.window, &vins).await?;
                }
            }
        }
        let mut best: Option<f64> = None;
        if parts.contains(&"ramp") {
            let mut qps = plan.ramp_start;
            let mut broke = None;
            for _ in 0..plan.ramp_max_steps {
                let label = format!("ramp {qps:.0} quotes/s");
                let pass = session.phase(&label, "ramp", 0, qps, plan.ramp_window, &vins).await?;
                session.settle().await;
                if !pass {
                    broke = Some(qps);
                    break;
                }
                best = Some(qps);
                qps = (qps * plan.ramp_factor).round();
            }
            // One step between the last that held and the first that broke: with the quick
            // mode's factor of 1.75, the ramp alone could report 43 % less than the stack holds.
            if let (Some(held), Some(broke)) = (best, broke) {
                let between = (held * broke).sqrt().round();
                if between > held && between < broke {
                    let label = format!("ramp {between:.0} quotes/s");
                    if session.phase(&label, "ramp", 0, between, plan.ramp_window, &vins).await? {
                        best = Some(between);
                    }
                }
            }
        }
        results.pipeline.extend(session.finish(&env).await?);
        stack.stop().await;
        // The highest load that held: the ramp's last good step, or a fixed level whose every run held.
        let mut held: Vec<(f64, String)> = best.map(|q| (q, format!("ramp {q:.0} quotes/s"))).into_iter().collect();
        for (label, qps) in &levels {
            let runs: Vec<&report::PhaseResult> = results.pipeline.iter().filter(|p| &p.label == label).collect();
            if !runs.is_empty() && runs.iter().all(|p| p.pass) {
                held.push((*qps, label.clone()));
            }
        }
        let top = held.into_iter().max_by(|a, b| a.0.total_cmp(&b.0));
        results.max_sustainable_qps = top.as_ref().map(|t| t.0);
        results.max_sustainable_label = top.map(|t| t.1);
        if best.is_some() && plan.reps_at_max > 0 {
            // A load is sustainable when every one of its repeats (longer, on a fresh stack)
            // holds too; one that breaks hands over to the next lower.
            let held: Vec<f64> =
                results.pipeline.iter().filter(|p| p.kind == "ramp" && p.pass).map(|p| p.quotes_per_s).collect();
            // Confirmed by its repeats, or not at all: the ramp's step alone is one run.
            results.max_sustainable_qps = None;
            for qps in report::levels_to_confirm(&held, MAX_LEVELS_REPEATED) {
                // Each level on a stack of its own: one that broke leaves a backlog and its dead
                // rows behind, and the level below would be judged on that, not on its own load.
                let mut stack = start_stack(&env, "max").await?;
                let mut session = Session::new(&mut stack).await?;
                session.warm_up(&vins).await?;
                let label = format!("max {qps:.0} quotes/s");
                let mut all_held = true;
                for rep in 0..plan.reps_at_max {
                    all_held &= session.phase(&label, "max", rep, qps, plan.max_window, &vins).await?;
                }
                results.pipeline.extend(session.finish(&env).await?);
                stack.stop().await;
                if all_held {
                    results.max_sustainable_qps = Some(qps);
                    results.max_sustainable_label = Some(label);
                    break;
                }
            }
        }
        save(&out, "pipeline.json", &results.pipeline)?;
    }

    if parts.contains(&"intake") || parts.contains(&"fanout") {
        let mut stack = start_stack(&env, "edge").await?;
        let outcome = async {
            if parts.contains(&"intake") {
                results.intake = Some(intake(&stack, &plan, &vins).await?);
                save(&out, "intake.json", &results.intake)?;
            }
            if parts.contains(&"fanout") {
                results.fanout = Some(fanout(&mut stack, &plan, &env).await?);
                save(&out, "fanout.json", &results.fanout)?;
            }
            anyhow::Ok(())
        }
        .await;
        stack.stop().await;
        outcome?;
        // Freed memory stays with the process: HTTP/2 streams are measured on fresh processes.
        if let Some(fanout) = results.fanout.as_mut() {
            let mut stack = start_stack(&env, "h2").await?;
            let outcome = fanout_http2(&mut stack, &plan, &env).await;
            stack.stop().await;
            fanout.http2 = Some(outcome?);
            save(&out, "fanout.json", &results.fanout)?;
        }
    }
    results.machine.broker_warm_up = BROKER_WARM_UP.get().cloned().flatten();
    results.machine.finish();
    results.wall_seconds = clock.elapsed().as_secs_f64();
    save(&out, "results.json", &results)?;
    report::write(&results, &repo, &doc, &out, true)?;
    println!("==> wrote {} ({:.0} s)", doc.display(), results.wall_seconds);
    Ok(())
}

/// `bench report`: the report of an earlier run, from its raw data.
fn rewrite_report(run: &std::path::Path, doc: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let raw = run.join("results.json");
    let json = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let results: Results = serde_json::from_slice(&json).with_context(|| format!("parsing {}", raw.display()))?;
    report::write(&results, &std::env::current_dir()?, doc, run, false)?;
    println!("==> wrote {} from {}", doc.display(), run.display());
    Ok(())
}

fn rand_seed() -> u64 {
    (bench::now_us() as u64 % 1000) * 10_000
}

fn save(dir: &std::path::Path, name: &str, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(value)?)?;
    Ok(())
}

async fn start_stack(env: &Env, label: &str) -> anyhow::Result<Stack> {
    let spinner = ProgressBar::new_spinner().with_message(format!("starting a fresh stack ({label})"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let stack = Stack::start(env, label).await;
    spinner.finish_and_clear();
    let stack = stack?;
    println!(
        "==> stack {} up: core-app {}, aggregator {}, sandbox {}",
        stack.id, stack.core_url, stack.agg_url, stack.sandbox_url
    );
    Ok(stack)
}

fn bar(len: u64, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} quotes {elapsed_precise} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// One stack's pipeline phases: load, CPU, and (at the end) the join of every source.
struct Session<'a> {
    stack: &'a mut Stack,
    client: reqwest::Client,
    detections: Detections,
    tap: Tap,
    tap_task: tokio::task::JoinHandle<()>,
    phases: Vec<RawPhase>,
}

struct RawPhase {
    label: String,
    kind: String,
    rep: usize,
    qps: f64,
    window: Duration,
    outcome: OpenLoop,
    cpu: procstat::Usage,
    /// Latencies of the commit probe that ran alongside (ms).
    commits: Vec<f64>,
    tables: BTreeMap<String, tables::Left>,
    pass: bool,
}

impl<'a> Session<'a> {
    async fn new(stack: &'a mut Stack) -> anyhow::Result<Session<'a>> {
        let url = format!("{}/{}", pg_base(), stack.core_db);
        let (tap, tap_task) = Tap::start(&url).await?;
        Ok(Session { stack, client: load::client(), detections: Detections::default(), tap, tap_task, phases: vec![] })
    }

    async fn warm_up(&mut self, vins: &AtomicU64) -> anyhow::Result<()> {
        if BROKER_WARM_UP.get().is_none() {
            let warmed = self.warm_broker(vins).await;
            let _ = BROKER_WARM_UP.set(warmed);
        }
        let pb = bar(0, "warm-up 3 quotes/s");
        let _ =
            load::open_loop(&self.client, &self.stack.core_url, 3.0, Duration::from_secs(4), 10_000, vins, &pb).await;
        pb.finish_and_clear();
        self.detections.fetch(&self.client, &self.stack.sandbox_url).await?;
        Ok(())
    }

    /// Load in rounds of [`BROKER_ROUND`] until the broker's JIT compilers use under
    /// [`BROKER_SETTLED`] cores (at most [`BROKER_WARM_UP_MAX`]); `None` without a broker.
    async fn warm_broker(&mut self, vins: &AtomicU64) -> Option<BrokerWarmUp> {
        let pids = procstat::pids_matching("kafka.Kafka");
        if pids.is_empty() {
            return None;
        }
        let compiling = || -> f64 {
            pids.iter()
                .map(|p| {
                    procstat::thread_cpu_seconds(*p, "C1 Compiler") + procstat::thread_cpu_seconds(*p, "C2 Compiler")
                })
                .sum()
        };
        let started = std::time::Instant::now();
        let pb = bar(0, "warming the broker's JIT");
        let mut warm = BrokerWarmUp {
            round_seconds: BROKER_ROUND.as_secs_f64(),
            settled_below: BROKER_SETTLED,
            ..BrokerWarmUp::default()
        };
        while started.elapsed() < BROKER_WARM_UP_MAX {
            let (before, at) = (compiling(), std::time::Instant::now());
            let _ = load::open_loop(&self.client, &self.stack.core_url, 25.0, BROKER_ROUND, 10_000, vins, &pb).await;
            warm.last_cores = (compiling() - before) / at.elapsed().as_secs_f64();
            if warm.first_cores == 0.0 {
                warm.first_cores = warm.last_cores;
            }
            pb.set_message(format!("compilers {:.2} cores", warm.last_cores));
            if warm.last_cores < BROKER_SETTLED {
                warm.settled = true;
                break;
            }
        }
        pb.finish_and_clear();
        warm.seconds = started.elapsed().as_secs_f64();
        println!(
            "    broker JIT: {:.0} s of warm-up load, compilers {:.2} → {:.2} cores",
            warm.seconds, warm.first_cores, warm.last_cores
        );
        Some(warm)
    }

    async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// One open-loop phase; true when it held: no error, push p99 ≤ 1 s, generator on time.
    async fn phase(
        &mut self,
        label: &str,
        kind: &str,
        rep: usize,
        qps: f64,
        window: Duration,
        vins: &AtomicU64,
    ) -> anyhow::Result<bool> {
        self.stack.check_alive()?;
        let pb = bar(0, &format!("{label} #{}", rep + 1));
        let probe = CommitProbe::start(&format!("{}/osago", pg_base())).await?;
        let tables_before = self.tables().await;
        let before: Snapshot = self.stack.snapshot();
        let outcome = load::open_loop(&self.client, &self.stack.core_url, qps, window, 20_000, vins, &pb).await;
        let after = self.stack.snapshot();
        let tables = tables_before
            .into_iter()
            .zip(self.tables().await)
            .filter_map(|((name, before), (_, after))| Some((name, tables::Left::between(before?, after?))))
            .collect();
        let commits = probe.finish().await;
        self.detections.fetch(&self.client, &self.stack.sandbox_url).await?;
        let push = Summary::of(&pipeline::push_ms(&outcome.runs, &self.detections));
        let errors = report::errors(&outcome);
        let on_time = report::generator_on_time(outcome.late, outcome.runs.len() + outcome.shed);
        let pass = errors.0 == 0 && push.p99 <= 1000.0 && on_time;
        let line = format!(
            "{label} #{}: {} quotes, push p50 {:.1} ms p99 {:.1} ms, errors {}, late starts {}{}",
            rep + 1,
            outcome.runs.len(),
            push.p50,
            push.p99,
            errors.0,
            outcome.late,
            if pass { "" } else { "  ✗ (does not hold)" }
        );
        pb.finish_and_clear();
        println!("    {line}");
        self.phases.push(RawPhase {
            label: label.to_string(),
            kind: kind.to_string(),
            rep,
            qps,
            window,
            outcome,
            cpu: procstat::delta(&before, &after),
            commits,
            tables,
            pass,
        });
        Ok(pass)
    }

    /// Each of the stack's databases' tables now, by the name the report gives the database.
    async fn tables(&self) -> Vec<(String, Option<tables::Tables>)> {
        let mut out = Vec::new();
        for (name, db) in [(CORE_DB, &self.stack.core_db), (AGGREGATOR_DB, &self.stack.agg_db)] {
            out.push((name.to_string(), tables::read(&format!("{}/{db}", pg_base())).await));
        }
        out
    }

    /// Joins every source and summarises each phase.
    async fn finish(mut self, env: &Env) -> anyhow::Result<Vec<PhaseResult>> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.detections.fetch(&self.client, &self.stack.sandbox_url).await?;
        let (brokers, topic) = (env.brokers.clone(), self.stack.topic.clone());
        let kafka = tokio::task::spawn_blocking(move || pipeline::scan_topic(&brokers, &topic)).await??;
        let core = pipeline::core_events(&env.pg(&self.stack.core_db)).await?;
        let notifies = self.tap.by_quote();
        self.tap_task.abort();
        let mut out = Vec::new();
        for (i, p) in self.phases.iter().enumerate() {
            let traces = pipeline::join(&p.outcome.runs, &self.detections, &kafka, &core, &notifies);
            let name = format!("{}-{}-{}-{}", self.stack.id, i, p.kind, p.rep);
            write_traces(&env.out.join(format!("traces-{name}.csv")), &traces)?;
            let mut result = report::phase_result(
                &p.label,
                &p.kind,
                p.rep,
                &self.stack.id,
                p.qps,
                p.window,
                &p.outcome,
                &traces,
                &p.cpu,
                &p.commits,
                p.pass,
            );
            result.tables = p.tables.clone();
            out.push(result);
        }
        Ok(out)
    }
}

/// Drops the databases tests left on the cluster (those in use refuse): a cluster crowded with
/// them costs CPU of its own (autovacuum visits each), which would be charged to the stack.
async fn drop_test_databases(env: &Env) -> usize {
    use sqlx::Connection;
    let Ok(mut admin) = sqlx::PgConnection::connect(&env.pg("postgres")).await else { return 0 };
    let dropped = testkit::drop_test_databases(&mut admin, Duration::ZERO).await;
    if dropped > 0 {
        println!("    dropped {dropped} databases that tests had left on the cluster");
    }
    dropped
}

/// The services' Postgres URL without its database (`scripts/infra.sh env` exports
/// `OSAGO_PG_URL`).
fn pg_base() -> String {
    let url = std::env::var("OSAGO_PG_URL").unwrap_or_else(|_| "postgres://osago:osago@127.0.0.1:55432/osago".into());
    url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(url)
}

fn write_traces(path: &std::path::Path, traces: &[pipeline::Trace]) -> anyhow::Result<()> {
    use std::fmt::Write;
    let mut s = String::from("quote,insurer,ready_us,served_us,occurred_us,kafka_us,picked_us,commit_us,sse_us\n");
    let f = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    for t in traces {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{}",
            t.quote,
            t.insurer,
            f(t.ready),
            f(t.served),
            f(t.occurred),
            f(t.kafka),
            f(t.picked),
            f(t.commit),
            f(t.sse)
        );
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// Intake against the baseline, alternating, with the pollers stopped (they would compete
/// for the CPU with work the intake figure is not about). Each round also measures the
/// aggregator's half alone (`POST /internal/v1/applications` as core-app sends it): what
/// intake could reach if core-app cost nothing.
async fn intake(stack: &Stack, plan: &Plan, vins: &AtomicU64) -> anyhow::Result<Intake> {
    stack.signal_pollers("STOP");
    let heartbeats = stack.keep_heartbeats().await?;
    let client = load::client();
    let mut result = Intake { concurrency: plan.intake_concurrency, ..Intake::default() };
    let targets = [
        ("baseline", format!("{}/api/v1/quotes", stack.baseline_url), None),
        ("intake", format!("{}/api/v1/quotes", stack.core_url), None),
        ("aggregator", format!("{}/internal/v1/applications", stack.agg_url), Some(bench::stack::TOKEN)),
    ];
    // Warm each.
    for (_, url, bearer) in &targets {
        let _ = load::closed_loop(&client, url, *bearer, 4, Duration::from_secs(1), vins).await;
    }
    for rep in 0..plan.intake_reps {
        for (which, url, bearer) in &targets {
            let spinner = ProgressBar::new_spinner().with_message(format!(
                "{which} #{}: {} workers back to back",
                rep + 1,
                plan.intake_concurrency
            ));
            spinner.enable_steady_tick(Duration::from_millis(120));
            let before = stack.snapshot();
            let cap: Capacity =
                load::closed_loop(&client, url, *bearer, plan.intake_concurrency, plan.intake_window, vins).await;
            let after = stack.snapshot();
            spinner.finish_and_clear();
            println!(
                "    {which:>10} #{}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, errors {}",
                rep + 1,
                cap.throughput,
                cap.latency_ms.p50,
                cap.latency_ms.p99,
                cap.errors
            );
            let cpu = procstat::delta(&before, &after).groups;
            let (caps, cpus) = match *which {
                "baseline" => (&mut result.baseline, &mut result.baseline_cpu),
                "intake" => (&mut result.intake, &mut result.intake_cpu),
                _ => (&mut result.aggregator, &mut result.aggregator_cpu),
            };
            caps.push(cap);
            cpus.push(cpu);
        }
    }
    heartbeats.abort();
    Ok(result)
}

/// `n` quotes straight into core-app's database, six pending insurers each, due in an hour.
async fn seed_quotes(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let quotes: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO quotes (id, request_hash, deadline, expires_at)
         SELECT gen_random_uuid(), '\\x00'::bytea, now() + interval '1 hour', now() + interval '1 hour'
         FROM generate_series(1, $1) RETURNING id",
    )
    .bind(n as i64)
    .fetch_all(pool)
    .await?;
    sqlx::query(
        "INSERT INTO quote_insurers (quote_id, insurer, display_name)
         SELECT q, i, i FROM unnest($1::uuid[]) q, unnest(ARRAY['alfa','sogaz','ingos','vsk','reso','rgs']) i",
    )
    .bind(&quotes)
    .execute(pool)
    .await?;
    Ok(quotes)
}

/// HTTP/2 connections the idle streams are spread over: hyper's server allows 200 concurrent
/// streams on one connection, so 10 000 streams need at least 50.
const H2_CONNECTIONS: usize = 64;
/// Loads repeated at most, from the highest that held down, to confirm one.
const MAX_LEVELS_REPEATED: usize = 3;
/// The broker's JIT warm-up, run once per bench before the first phase.
static BROKER_WARM_UP: OnceLock<Option<BrokerWarmUp>> = OnceLock::new();
/// One round of the broker's warm-up load (25 quotes/s).
const BROKER_ROUND: Duration = Duration::from_secs(10);
/// Compiler threads under this many cores: the JIT has settled.
const BROKER_SETTLED: f64 = 0.05;
/// Long enough for a broker started a minute before (91 s measured), short enough for the quick
/// mode to stay under five minutes.
const BROKER_WARM_UP_MAX: Duration = Duration::from_secs(100);

/// The idle streams of [`fanout`] again, multiplexed over HTTP/2 on a fresh stack: memory per
/// stream on core-app and on the plain axum baseline.
async fn fanout_http2(stack: &mut Stack, plan: &Plan, env: &Env) -> anyhow::Result<Http2Streams> {
    stack.signal_pollers("STOP");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&env.pg(&stack.core_db)).await?;
    let n = plan.fanout_streams;
    let quotes = seed_quotes(&pool, n).await?;
    pool.close().await;
    // One client per connection: a client keeps one HTTP/2 connection per host.
    let clients = (0..H2_CONNECTIONS)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let measure = async |pid: u32, base: &str, label: &str| {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = procstat::rss_kib(pid).unwrap_or(0);
        let (tasks, open, _, _) = open_streams(&clients, base, &quotes, Arc::default(), label).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = procstat::rss_kib(pid).unwrap_or(0);
        for t in &tasks {
            t.abort();
        }
        (open, before, after)
    };
    let (open, before, after) =
        measure(stack.pid("core-app").unwrap_or(0), &stack.core_url, "HTTP/2 streams on core-app").await;
    let (base_open, base_before, base_after) =
        measure(stack.pid("baseline").unwrap_or(0), &stack.baseline_url, "HTTP/2 streams on the baseline").await;
    let h2 = Http2Streams {
        streams: n,
        connections: H2_CONNECTIONS,
        streams_open: open,
        rss_before_kib: before,
        rss_open_kib: after,
        baseline_streams_open: base_open,
        baseline_rss_before_kib: base_before,
        baseline_rss_open_kib: base_after,
    };
    println!(
        "    over HTTP/2 ({H2_CONNECTIONS} connections): core-app {open} streams, {:.2} KiB/stream; baseline {base_open} streams, {:.2} KiB/stream",
        h2.kib_per_stream(),
        h2.baseline_kib_per_stream()
    );
    Ok(h2)
}

/// 10 000 idle streams on one core-app: memory per stream, then events fanned out to them.
async fn fanout(stack: &mut Stack, plan: &Plan, env: &Env) -> anyhow::Result<FanOut> {
    stack.signal_pollers("STOP");
    let core_url = env.pg(&stack.core_db);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&core_url).await?;
    let n = plan.fanout_streams;
    let quotes = seed_quotes(&pool, n).await?;
    let core_pid = stack.pid("core-app").unwrap_or(0);
    let (tap, tap_task) = Tap::start(&core_url).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = procstat::rss_kib(core_pid).unwrap_or(0);
    let self_before = procstat::rss_kib(std::process::id()).unwrap_or(0);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let received: Arc<std::sync::Mutex<Vec<(Uuid, load::Received)>>> = Arc::default();
    let (tasks, streams_open, failed, open_seconds) = open_streams(
        std::slice::from_ref(&client),
        &stack.core_url,
        &quotes,
        received.clone(),
        "SSE streams on core-app",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_open = procstat::rss_kib(core_pid).unwrap_or(0);
    let self_open = procstat::rss_kib(std::process::id()).unwrap_or(0);
    println!(
        "    {streams_open} streams open in {open_seconds:.1} s; core-app RSS {rss_before} → {rss_open} KiB ({:.2} KiB/stream)",
        (rss_open as f64 - rss_before as f64) / streams_open.max(1) as f64
    );

    // Events, one per quote, produced straight into the topic at a fixed rate.
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).set("acks", "all").set("linger.ms", "0").create()?;
    let events = plan.fanout_events.min(quotes.len());
    let pb = bar(events as u64, "events to open streams");
    pb.set_style(ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} events {elapsed_precise}")?);
    let before = stack.snapshot();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.fanout_rate));
    let mut sends = Vec::with_capacity(events);
    for q in quotes.iter().take(events) {
        ticks.tick().await;
        let payload = serde_json::json!({
            "event_id": Uuid::now_v7(), "type": "status", "quote_id": q, "insurer": "alfa", "version": 1,
            "occurred_at": chrono::Utc::now().to_rfc3339(), "status": "declined", "reason": "bench fan-out probe"
        })
        .to_string();
        let (producer, topic, key) = (producer.clone(), stack.topic.clone(), q.to_string());
        sends.push(tokio::spawn(async move {
            let _ = producer.send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(5)).await;
        }));
        pb.inc(1);
    }
    for s in sends {
        let _ = s.await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    pb.finish();
    let after = stack.snapshot();
    let still_open = n - failed.load(Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    // The same number of idle streams on the baseline: plain axum SSE, no application state.
    let base_pid = stack.pid("baseline").unwrap_or(0);
    let base_before = procstat::rss_kib(base_pid).unwrap_or(0);
    let (base_tasks, base_open, _, _) = open_streams(
        std::slice::from_ref(&client),
        &stack.baseline_url,
        &quotes,
        Arc::default(),
        "SSE streams on the baseline",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base_after = procstat::rss_kib(base_pid).unwrap_or(0);
    for t in &base_tasks {
        t.abort();
    }
    println!(
        "    baseline (plain axum SSE): {base_open} streams, RSS {base_before} → {base_after} KiB ({:.2} KiB/stream)",
        (base_after as f64 - base_before as f64) / base_open.max(1) as f64
    );
    let (brokers, topic) = (env.brokers.clone(), stack.topic.clone());
    let kafka = tokio::task::spawn_blocking(move || pipeline::scan_topic(&brokers, &topic)).await??;
    let core = pipeline::core_events(&core_url).await?;
    let notifies = tap.by_quote();
    tap_task.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed = procstat::rss_kib(core_pid).unwrap_or(0);
    // Join: one run per quote with what its stream received.
    let mut by_quote: BTreeMap<Uuid, Vec<load::Received>> = BTreeMap::new();
    for (q, e) in received.lock().expect("received").drain(..) {
        by_quote.entry(q).or_default().push(e);
    }
    let runs: Vec<QuoteRun> = by_quote
        .into_iter()
        .map(|(q, events)| QuoteRun {
            vin: String::new(),
            quote: Some(q),
            scheduled_us: 0,
            submit_us: 0,
            created_us: 0,
            http_status: 200,
            events,
            complete: false,
            error: None,
        })
        .collect();
    let traces = pipeline::join(&runs, &Detections::default(), &kafka, &core, &notifies);
    write_traces(&env.out.join("traces-fanout.csv"), &traces)?;
    let delivered = traces.len();
    let commit_sse: Vec<f64> = traces.iter().filter_map(|t| t.hop_ms("commit", "sse")).collect();
    let kafka_sse: Vec<f64> = traces.iter().filter_map(|t| t.hop_ms("kafka", "sse")).collect();
    pool.close().await;
    Ok(FanOut {
        streams: n,
        streams_open,
        streams_failed: n - still_open,
        baseline_streams_open: base_open,
        baseline_rss_before_kib: base_before,
        baseline_rss_open_kib: base_after,
        open_seconds,
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_closed_kib: rss_closed,
        client_rss_delta_kib: self_open as i64 - self_before as i64,
        events_sent: events,
        events_delivered: delivered,
        event_rate: plan.fanout_rate,
        commit_to_sse_ms: Summary::of(&commit_sse),
        kafka_to_sse_ms: Summary::of(&kafka_sse),
        commit_to_sse_raw: commit_sse,
        kafka_to_sse_raw: kafka_sse,
        cpu: procstat::delta(&before, &after).groups,
        http2: None,
    })
}

/// What every command needs: the binaries, the cluster and broker, and a results folder named
/// by the time and `name`.
fn base_env(results: &std::path::Path, bin: PathBuf, name: &str) -> anyhow::Result<Env> {
    let pg_base = pg_base();
    let brokers = std::env::var("OSAGO_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:59092".into());
    let out = results.join(format!("{}-{name}", chrono::Utc::now().format("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&out)?;
    let tools = std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_else(|| bin.clone());
    Ok(Env { repo: std::env::current_dir()?, bin, tools, pg_base, brokers, out })
}

/// `bench profile`: steady load, `perf record -a` (if `record`), flamegraphs per process.
async fn profile(
    qps: f64,
    seconds: u64,
    results: PathBuf,
    bin: PathBuf,
    label: String,
    record: bool,
) -> anyhow::Result<()> {
    let env = base_env(&results, bin, &label)?;
    let mut stack = start_stack(&env, "prof").await?;
    let dbs = [(AGGREGATOR_DB, stack.agg_db.clone()), (CORE_DB, stack.core_db.clone())];
    // Outside the block, so that tracking is turned off however the profile ends.
    let mut tracking = None;
    let outcome = async {
        let pids = stack.pids();
        let mut session = Session::new(&mut stack).await?;
        let vins = AtomicU64::new(rand_seed());
        session.warm_up(&vins).await?;
        tracking = statements::Tracking::start(&testkit::pg_admin_url())
            .await
            .inspect_err(|why| eprintln!("warning: no per-statement costs: {why}"))
            .ok();
        let perf_data = env.out.join("perf.data");
        let record_for = (seconds / 2).max(5);
        let perf_out = perf_data.clone();
        let perf = record.then(|| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(seconds / 4)).await;
                tokio::process::Command::new("perf")
                    .args(["record", "-a", "-F", "199", "--call-graph", "dwarf,16384", "-o"])
                    .arg(&perf_out)
                    .args(["--", "sleep", &record_for.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .await
            })
        });
        session
            .phase(&format!("profile {qps} quotes/s"), "profile", 0, qps, Duration::from_secs(seconds), &vins)
            .await?;
        if let Some(perf) = perf {
            perf.await??;
        }
        // The harness's own reads of the results are not the stack's statements.
        if let Some(tracking) = &tracking {
            tracking.turn_off().await;
        }
        let phases = session.finish(&env).await?;
        save(&env.out, "phase.json", &phases)?;
        if let Some(tracking) = &tracking {
            let dbs: Vec<(&str, &str)> = dbs.iter().map(|(label, name)| (*label, name.as_str())).collect();
            let sent = phases.iter().map(|p| p.sent).sum();
            match tracking.report(&dbs, sent).await {
                Ok(table) => {
                    std::fs::write(env.out.join("statements.md"), &table)?;
                    println!("{table}");
                }
                Err(e) => eprintln!("warning: no per-statement costs: {e}"),
            }
        }
        if !record {
            return anyhow::Ok(());
        }
        println!("==> folding the profile (perf script | inferno-collapse-perf)");
        let script = std::process::Command::new("perf")
            .args(["script", "--no-inline", "-F", "comm,pid,tid,time,period,event,ip,sym,dso", "-i"])
            .arg(&perf_data)
            .stderr(std::process::Stdio::null())
            .output()?;
        let folded = run_with_input("inferno-collapse-perf", &["--pid"], &script.stdout)?;
        // Name each stack's root by the process it belongs to.
        let names: BTreeMap<u32, String> = pids.iter().map(|(n, p)| (*p, n.clone())).collect();
        let mut by_proc: BTreeMap<String, String> = BTreeMap::new();
        let mut all = String::new();
        for line in String::from_utf8_lossy(&folded).lines() {
            let (root, rest) = line.split_once(';').unwrap_or((line, ""));
            // root looks like "comm-pid/tid" or "comm-pid"
            let pid: Option<u32> =
                root.rsplit_once('-').and_then(|(_, p)| p.split('/').next()).and_then(|p| p.parse().ok());
            let comm = root.rsplit_once('-').map(|(c, _)| c).unwrap_or(root);
            let name = match pid.and_then(|p| names.get(&p)) {
                Some(n) => n.clone(),
                None if comm.starts_with("postgres") => postgres_label(pid.unwrap_or(0)),
                None if comm.starts_with("java") || comm.contains("kafka") || comm.starts_with("data-plane") => {
                    "kafka (jvm)".into()
                }
                None if pid == Some(std::process::id()) => "load generator".into(),
                None => format!("other: {comm}"),
            };
            let line = format!("{name};{rest}");
            let proc_line = format!("{comm};{rest}");
            by_proc.entry(name.clone()).or_default().push_str(&(proc_line + "\n"));
            all.push_str(&line);
            all.push('\n');
        }
        std::fs::write(env.out.join("folded-all.txt"), &all)?;
        flamegraph(&all, &env.out.join("flame-all.svg"), &format!("All CPU on the machine at {qps} quotes/s"))?;
        let mut totals: Vec<(String, usize)> = by_proc
            .iter()
            .map(|(n, f)| (n.clone(), f.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<usize>().ok()).sum()))
            .collect();
        totals.sort_by_key(|t| std::cmp::Reverse(t.1));
        let mut summary = String::from("samples by process:\n");
        for (n, c) in &totals {
            summary.push_str(&format!("{c:>8}  {n}\n"));
        }
        for (name, folded) in &by_proc {
            if name.starts_with("other") {
                continue;
            }
            let file = format!("flame-{}.svg", name.replace([' ', '(', ')', '/'], "_"));
            flamegraph(folded, &env.out.join(&file), &format!("{name} at {qps} quotes/s"))?;
        }
        std::fs::write(env.out.join("summary.txt"), &summary)?;
        println!("{summary}");
        let _ = std::fs::remove_file(&perf_data);
        anyhow::Ok(())
    }
    .await;
    if let Some(tracking) = tracking {
        tracking.turn_off().await;
    }
    stack.stop().await;
    outcome?;
    println!("==> profile in {}", env.out.display());
    Ok(())
}

/// Runs `cmd args` with `input` on stdin; returns stdout.
fn run_with_input(cmd: &str, args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out.stdout)
}

fn flamegraph(folded: &str, path: &std::path::Path, title: &str) -> anyhow::Result<()> {
    let svg = run_with_input("inferno-flamegraph", &["--title", title, "--width", "1400"], folded.as_bytes())?;
    std::fs::write(path, svg)?;
    Ok(())
}

/// "postgres (<database>)" from the backend's command line.
fn postgres_label(pid: u32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    let db = cmd.split_whitespace().nth(2).unwrap_or("");
    if db.starts_with("bench_agg") {
        "postgres (aggregator db)".into()
    } else if db.starts_with("bench_core") {
        "postgres (core-app db)".into()
    } else {
        "postgres (other)".into()
    }
}

type StreamTasks = Vec<tokio::task::JoinHandle<()>>;

/// Opens one SSE stream per quote on `base` (256 opening at a time); returns the stream
/// tasks, how many opened, a counter of failed ones and the seconds it took.
async fn open_streams(
    clients: &[reqwest::Client],
    base: &str,
    quotes: &[Uuid],
    received: Arc<std::sync::Mutex<Vec<(Uuid, load::Received)>>>,
    label: &str,
) -> (StreamTasks, usize, Arc<AtomicUsize>, f64) {
    let n = quotes.len();
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let pb = bar(n as u64, label);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} streams {elapsed_precise}")
            .expect("template"),
    );
    let mut tasks = Vec::with_capacity(n);
    for (i, q) in quotes.iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let (base, opened, failed, received, gate, q) =
            (base.to_string(), opened.clone(), failed.clone(), received.clone(), gate.clone(), *q);
        tasks.push(tokio::spawn(async move {
            let mut permit = gate.acquire_owned().await.ok();
            let mine = AtomicUsize::new(0);
            let sink = |e| received.lock().expect("received").push((q, e));
            let result = load::follow(&client, &base, q, sink, Some(&mine));
            tokio::pin!(result);
            // Hold an opening slot until this stream's first bytes arrive.
            loop {
                tokio::select! {
                    r = &mut result => {
                        if r.is_err() || permit.is_some() { failed.fetch_add(1, Ordering::Relaxed); }
                        return;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(5)), if permit.is_some() => {
                        if mine.load(Ordering::Relaxed) > 0 {
                            permit = None;
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    let started = std::time::Instant::now();
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && started.elapsed() < Duration::from_secs(120)
    {
        pb.set_position(opened.load(Ordering::Relaxed) as u64);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pb.finish_and_clear();
    (tasks, opened.load(Ordering::Relaxed), failed, started.elapsed().as_secs_f64())
}
