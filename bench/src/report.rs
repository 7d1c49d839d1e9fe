//! The results of one invocation and `docs/benchmarks.md` written from them.

use crate::limits::{CommitProbe, Limits};
use crate::load::{Capacity, OpenLoop};
use crate::pipeline::{self, Trace};
use crate::stats::{Spread, Summary};
use crate::svg;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What one invocation runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub mode: String,
    pub limits_seconds: u32,
    pub offer_levels: Vec<f64>,
    pub reps: usize,
    pub window: Duration,
    pub fresh_stack_per_level: bool,
    pub ramp_start: f64,
    pub ramp_factor: f64,
    /// The ramp goes on until a step does not hold; this many steps at most, so that a stack
    /// that holds everything still ends.
    #[serde(alias = "ramp_steps")]
    pub ramp_max_steps: usize,
    pub ramp_window: Duration,
    pub reps_at_max: usize,
    /// Each repeat's window when confirming the highest load: long enough that a backlog
    /// growing slowly shows.
    #[serde(default = "repeats_before_max_window")]
    pub max_window: Duration,
    pub intake_concurrency: usize,
    pub intake_reps: usize,
    pub intake_window: Duration,
    pub fanout_streams: usize,
    pub fanout_events: usize,
    pub fanout_rate: f64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan::quick()
    }
}

impl Plan {
    pub fn quick() -> Plan {
        Plan {
            mode: "quick".into(),
            limits_seconds: 4,
            offer_levels: vec![10.0, 100.0],
            reps: 2,
            window: Duration::from_secs(8),
            fresh_stack_per_level: false,
            ramp_start: 25.0,
            // 25, 44, 77, 135, 236, 413, …: two steps fewer to a break than by 1.5, which took a
            // run warming a broker started just before (58 s) to 305 s, over the five minutes.
            ramp_factor: 1.75,
            ramp_max_steps: 10,
            ramp_window: Duration::from_secs(8),
            reps_at_max: 0,
            max_window: Duration::from_secs(8),
            intake_concurrency: 16,
            intake_reps: 2,
            intake_window: Duration::from_secs(5),
            fanout_streams: 10_000,
            fanout_events: 1000,
            fanout_rate: 200.0,
        }
    }

    pub fn full() -> Plan {
        Plan {
            mode: "full".into(),
            limits_seconds: 10,
            offer_levels: vec![10.0, 100.0],
            reps: 3,
            window: Duration::from_secs(30),
            fresh_stack_per_level: true,
            ramp_start: 20.0,
            ramp_factor: 1.25,
            ramp_max_steps: 20,
            ramp_window: Duration::from_secs(20),
            reps_at_max: 3,
            max_window: Duration::from_secs(60),
            intake_concurrency: 16,
            intake_reps: 3,
            intake_window: Duration::from_secs(15),
            fanout_streams: 10_000,
            fanout_events: 3000,
            fanout_rate: 200.0,
        }
    }
}

/// Results saved before `max_window` existed repeated their loads in `window`, 30 s in full mode.
fn repeats_before_max_window() -> Duration {
    Duration::from_secs(30)
}

/// The loads to repeat when confirming the highest sustainable one, highest first, at most
/// `max`: the ramp's steps that held, and between two of them farther apart than 15 % the load
/// halfway (geometrically), so that a step that breaks in its repeats hands over to one close
/// below it rather than a whole ramp factor lower.
pub fn levels_to_confirm(held: &[f64], max: usize) -> Vec<f64> {
    let mut steps: Vec<f64> = held.to_vec();
    steps.sort_by(|a, b| b.total_cmp(a));
    steps.dedup();
    let mut levels = Vec::new();
    for (i, &step) in steps.iter().enumerate() {
        levels.push(step);
        if let Some(&below) = steps.get(i + 1)
            && step / below > 1.15
        {
            levels.push((step * below).sqrt().round());
        }
    }
    levels.truncate(max);
    levels
}

/// The machine and the moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub date: String,
    pub commit: String,
    pub dirty_files: usize,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub rustc: String,
    /// Which source the services were built from (scripts/bench.sh sets it).
    pub source: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// The load run first for the Kafka broker's JIT compiler, if a broker was found.
    pub broker_warm_up: Option<BrokerWarmUp>,
    /// Databases that tests had left on the cluster, dropped before anything was measured.
    pub test_databases_dropped: usize,
}

/// How long the broker's JIT took to settle under load before anything was measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrokerWarmUp {
    pub seconds: f64,
    /// The length of one round of load, and the compilers' share of a core that counts as settled.
    pub round_seconds: f64,
    pub settled_below: f64,
    /// Cores the broker's compiler threads used in the first round and in the last.
    pub first_cores: f64,
    pub last_cores: f64,
    /// False when the compilers were still busy at the time limit.
    pub settled: bool,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    pub fn describe(repo: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_default();
        let repo = repo.to_string_lossy().to_string();
        Machine {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            commit: sh("git", &["-C", &repo, "rev-parse", "--short=12", "HEAD"]),
            dirty_files: sh("git", &["-C", &repo, "status", "--porcelain"]).lines().count(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel: sh("uname", &["-sr"]),
            os,
            rustc: sh("rustc", &["-V"]),
            source: std::env::var("BENCH_SOURCE")
                .unwrap_or_else(|_| "services from $BENCH_SERVICES_BIN or the target folder".into()),
            loadavg_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string(),
            loadavg_end: String::new(),
            broker_warm_up: None,
            test_databases_dropped: 0,
        }
    }

    pub fn finish(&mut self) {
        self.loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    }
}

/// One open-loop phase, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseResult {
    pub label: String,
    pub kind: String,
    pub rep: usize,
    pub stack: String,
    pub quotes_per_s: f64,
    pub offers_per_s: f64,
    pub window_s: f64,
    pub sent: usize,
    pub complete: usize,
    pub errors: usize,
    pub error_kinds: BTreeMap<String, usize>,
    pub shed: usize,
    pub late: usize,
    /// Whether the generator's pacer ran at raised priority (it needs the right to).
    pub pacer_raised: bool,
    pub results: usize,
    pub hops: BTreeMap<String, Summary>,
    pub cpu_ms_per_quote: BTreeMap<String, f64>,
    pub cpu_cores: BTreeMap<String, f64>,
    pub machine_busy_cores: f64,
    pub other_load_cores: f64,
    /// CPU the hypervisor gave other guests while this one had work (steal), in cores.
    #[serde(default)]
    pub stolen_cores: f64,
    /// The commit probe's latencies during the phase (`limits::CommitProbe`); none in older runs.
    #[serde(default)]
    pub commit_probe_ms: Option<Summary>,
    /// Each database's tables at the phase's end, and autovacuum runs during it; none in older runs.
    #[serde(default)]
    pub tables: BTreeMap<String, crate::tables::Left>,
    pub pass: bool,
    #[serde(skip)]
    pub raw: BTreeMap<String, Vec<f64>>,
}

impl PhaseResult {
    /// CPU-ms a quote of the stack's own processes: the services, the sandbox standing in for the
    /// insurers, the Postgres backends of their databases and the autovacuum workers and closed
    /// connections counted with them (not the broker or Postgres's shared processes, which others
    /// use too, nor the load generator).
    pub fn stack_cpu_ms_per_quote(&self) -> f64 {
        let own = |k: &str| !k.contains("other") && !matches!(k, "kafka broker" | "load generator" | "baseline");
        self.cpu_ms_per_quote.iter().filter(|(k, _)| own(k)).map(|(_, v)| v).sum()
    }
}

/// Errors of a phase: count and kinds.
pub fn errors(outcome: &OpenLoop) -> (usize, BTreeMap<String, usize>) {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    if outcome.shed > 0 {
        kinds.insert("shed (all slots busy)".into(), outcome.shed);
    }
    for run in &outcome.runs {
        let results: Vec<_> = run.events.iter().filter(|e| e.name != "complete").collect();
        let kind = if let Some(e) = &run.error {
            Some(e.split(':').next().unwrap_or(e).to_string() + e.strip_prefix("submit: HTTP").unwrap_or(""))
        } else if results.len() < crate::stack::INSURERS.len() {
            Some("fewer than 6 insurer results".into())
        } else {
            results
                .iter()
                .find(|e| e.status.as_deref() != Some("offer"))
                .map(|e| format!("insurer result {}", e.status.clone().unwrap_or_default()))
        };
        if let Some(kind) = kind {
            *kinds.entry(kind).or_default() += 1;
        }
    }
    (kinds.values().sum(), kinds)
}

/// Whether the generator started its arrivals on time: under 1 % of them late, and one late
/// start is always forgiven. A quick mode's fixed loads send 13 quotes, where one arrival
/// delayed by a page fault or a compile on the machine was 8 % and failed the step, though
/// the stack had nothing to do with it; from 200 arrivals on the rule is the 1 % alone.
pub fn generator_on_time(late: usize, arrivals: usize) -> bool {
    (late as f64) < (0.01 * arrivals as f64).max(2.0)
}

#[allow(clippy::too_many_arguments)]
pub fn phase_result(
    label: &str,
    kind: &str,
    rep: usize,
    stack: &str,
    qps: f64,
    window: Duration,
    outcome: &OpenLoop,
    traces: &[Trace],
    cpu: &crate::procstat::Usage,
    commits: &[f64],
    pass: bool,
) -> PhaseResult {
    let (errors, error_kinds) = errors(outcome);
    let complete = outcome.runs.iter().filter(|r| r.complete).count();
    let hops = pipeline::hops(traces);
    let crate::procstat::Usage { groups, busy_share, steal_share, wall } = cpu;
    let ours: f64 = groups.values().sum();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    PhaseResult {
        label: label.into(),
        kind: kind.into(),
        rep,
        stack: stack.into(),
        quotes_per_s: qps,
        offers_per_s: qps * 6.0,
        window_s: window.as_secs_f64(),
        sent: outcome.runs.len() + outcome.shed,
        complete,
        errors,
        error_kinds,
        shed: outcome.shed,
        late: outcome.late,
        pacer_raised: outcome.pacer_raised,
        results: traces.len(),
        hops: hops.iter().map(|(k, (s, _))| (k.clone(), *s)).collect(),
        cpu_ms_per_quote: groups.iter().map(|(k, v)| (k.clone(), v * 1000.0 / complete.max(1) as f64)).collect(),
        cpu_cores: groups.iter().map(|(k, v)| (k.clone(), v / wall.max(1e-9))).collect(),
        machine_busy_cores: busy_share * cores,
        other_load_cores: (busy_share * cores - ours / wall.max(1e-9)).max(0.0),
        stolen_cores: steal_share * cores,
        commit_probe_ms: (!commits.is_empty()).then(|| Summary::of(commits)),
        tables: BTreeMap::new(),
        pass,
        raw: hops.into_iter().map(|(k, (_, v))| (k, v)).collect(),
    }
}

/// Intake against the baseline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Intake {
    pub concurrency: usize,
    pub baseline: Vec<Capacity>,
    pub intake: Vec<Capacity>,
    /// The aggregator's half alone: `POST /internal/v1/applications` straight from the bench.
    pub aggregator: Vec<Capacity>,
    pub baseline_cpu: Vec<BTreeMap<String, f64>>,
    pub intake_cpu: Vec<BTreeMap<String, f64>>,
    pub aggregator_cpu: Vec<BTreeMap<String, f64>>,
}

/// SSE fan-out on one core-app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanOut {
    pub streams: usize,
    pub streams_open: usize,
    pub streams_failed: usize,
    pub baseline_streams_open: usize,
    pub baseline_rss_before_kib: u64,
    pub baseline_rss_open_kib: u64,
    pub open_seconds: f64,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_closed_kib: u64,
    pub client_rss_delta_kib: i64,
    pub events_sent: usize,
    pub events_delivered: usize,
    pub event_rate: f64,
    pub commit_to_sse_ms: Summary,
    pub kafka_to_sse_ms: Summary,
    #[serde(skip)]
    pub commit_to_sse_raw: Vec<f64>,
    #[serde(skip)]
    pub kafka_to_sse_raw: Vec<f64>,
    pub cpu: BTreeMap<String, f64>,
    /// The same idle streams over HTTP/2, on a fresh stack.
    pub http2: Option<Http2Streams>,
}

impl FanOut {
    pub fn kib_per_stream(&self) -> f64 {
        (self.rss_open_kib as f64 - self.rss_before_kib as f64) / self.streams_open.max(1) as f64
    }
}

/// Idle SSE streams multiplexed over HTTP/2 connections (cleartext, prior knowledge), as an
/// ingress or a browser speaking HTTP/2 opens them: memory per stream on a fresh core-app and
/// a fresh baseline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Http2Streams {
    pub streams: usize,
    pub connections: usize,
    pub streams_open: usize,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub baseline_streams_open: usize,
    pub baseline_rss_before_kib: u64,
    pub baseline_rss_open_kib: u64,
}

impl Http2Streams {
    pub fn kib_per_stream(&self) -> f64 {
        (self.rss_open_kib as f64 - self.rss_before_kib as f64) / self.streams_open.max(1) as f64
    }

    pub fn baseline_kib_per_stream(&self) -> f64 {
        (self.baseline_rss_open_kib as f64 - self.baseline_rss_before_kib as f64)
            / self.baseline_streams_open.max(1) as f64
    }
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub plan: Plan,
    pub machine: Machine,
    pub limits: Limits,
    pub pipeline: Vec<PhaseResult>,
    pub max_sustainable_qps: Option<f64>,
    /// The phases that figure comes from.
    pub max_sustainable_label: Option<String>,
    pub intake: Option<Intake>,
    pub fanout: Option<FanOut>,
    pub wall_seconds: f64,
}

/// Per load repeated to confirm the highest (full mode), in order: how many repeats held, of
/// how many.
fn repeats_held(results: &Results) -> Vec<(String, usize, usize)> {
    let mut levels: Vec<(String, usize, usize)> = Vec::new();
    for p in results.pipeline.iter().filter(|p| p.kind == "max") {
        let label = p.label.trim_start_matches("max ").to_string();
        match levels.iter_mut().find(|l| l.0 == label) {
            Some(level) => {
                level.1 += usize::from(p.pass);
                level.2 += 1;
            }
            None => levels.push((label, usize::from(p.pass), 1)),
        }
    }
    levels
}

/// The repeats as a clause: "; repeated, each on a fresh stack: 55 quotes/s held in 2 of 3, …".
fn repeats_clause(results: &Results) -> String {
    let levels = repeats_held(results);
    if levels.is_empty() {
        return String::new();
    }
    let each: Vec<String> = levels.iter().map(|(l, held, of)| format!("{l} held in {held} of {of}")).collect();
    format!("; repeated, each on a fresh stack: {}", each.join(", "))
}

/// The highest sustainable load and the label of its phases, when confirmed: where loads were
/// repeated (full mode) only one whose every repeat held counts, not the ramp's single run.
fn sustainable(results: &Results) -> Option<(f64, String)> {
    let q = results.max_sustainable_qps?;
    let label = results.max_sustainable_label.clone().unwrap_or_default();
    (repeats_held(results).is_empty() || label.starts_with("max ")).then_some((q, label))
}

/// Said of a run whose repeats confirmed no load: what the ramp held once, and the repeats.
fn unconfirmed(results: &Results) -> Option<String> {
    let label = results.max_sustainable_label.clone()?;
    sustainable(results)
        .is_none()
        .then(|| format!("the ramp held {}{}", label.trim_start_matches("ramp "), repeats_clause(results)))
}

/// Whether the ramp stopped at its last step without one breaking: its highest load is then the
/// harness's ceiling, not the stack's.
fn ramp_ran_out(results: &Results) -> bool {
    let mut ramp = results.pipeline.iter().filter(|p| p.kind == "ramp").peekable();
    ramp.peek().is_some() && ramp.all(|p| p.pass)
}

const E2E: &str = "end to end: ready → SSE";
const PUSH: &str = "push: poll answered → SSE";

/// Phases of one load level, grouped by label in order of appearance.
fn levels(results: &Results) -> Vec<(String, Vec<&PhaseResult>)> {
    let mut out: Vec<(String, Vec<&PhaseResult>)> = Vec::new();
    for p in &results.pipeline {
        match out.iter_mut().find(|(l, _)| *l == p.label) {
            Some((_, v)) => v.push(p),
            None => out.push((p.label.clone(), vec![p])),
        }
    }
    out
}

fn spread(phases: &[&PhaseResult], f: impl Fn(&PhaseResult) -> f64) -> Spread {
    Spread::of(&phases.iter().map(|p| f(p)).collect::<Vec<_>>())
}

fn hop(p: &PhaseResult, name: &str) -> Summary {
    p.hops.get(name).copied().unwrap_or_default()
}

/// A limits-table row: `what`'s p50 / p99 / max in milliseconds, to `decimals` places.
fn p50_p99_max_row(what: &str, s: &Summary, decimals: usize) -> String {
    format!("| {what} p50 / p99 / max | {:.*} / {:.*} / {:.*} ms |", decimals, s.p50, decimals, s.p99, decimals, s.max)
}

/// The commit probe's longest commit in each of `phases`, for a target's row: a push p99 that
/// missed while the disk's flush stalled reads differently from one that missed on the CPU.
/// Empty for runs made before the probe.
fn probe_maxima(phases: &[&PhaseResult]) -> String {
    let maxima: Vec<String> =
        phases.iter().filter_map(|p| p.commit_probe_ms.map(|s| format!("{:.0}", s.max))).collect();
    if maxima.is_empty() {
        String::new()
    } else {
        format!("; longest durable commit meanwhile {} ms", maxima.join(", "))
    }
}

/// The tables each run of a level left: dead rows at its end and autovacuum runs during it, per
/// database. `None` for runs made before they were recorded.
fn tables_line(phases: &[&PhaseResult]) -> Option<String> {
    let names: Vec<&String> = phases.first()?.tables.keys().collect();
    if names.is_empty() || phases.iter().any(|p| p.tables.len() != names.len()) {
        return None;
    }
    let each: Vec<String> = names
        .iter()
        .map(|name| {
            let runs: Vec<String> = phases
                .iter()
                .map(|p| {
                    let t = p.tables[*name];
                    format!("{} dead of {} ({} autovacuum runs)", t.dead_rows, t.live_rows + t.dead_rows, t.autovacuums)
                })
                .collect();
            format!("{name} {}", runs.join(", "))
        })
        .collect();
    Some(format!("Row versions at each run's end: {}.", each.join("; ")))
}

fn status(ok: bool) -> &'static str {
    if ok { "✅ met" } else { "❌ missed" }
}

/// Writes the report, and its plots with `draw_plots` (a report written again from
/// `results.json` has no samples to draw them from, and links the ones the run drew).
pub fn write(results: &Results, repo: &Path, doc: &Path, out: &Path, draw_plots: bool) -> anyhow::Result<()> {
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots)?;
    let plot = |file: &Path, draw: &dyn Fn() -> String| if draw_plots { std::fs::write(file, draw()) } else { Ok(()) };
    let doc_dir = repo.join(doc).parent().map(Path::to_path_buf).unwrap_or_default();
    let rel = |p: &Path| relative(&doc_dir, &repo.join(p));
    let mut md = String::new();
    let m = &results.machine;
    let l = &results.limits;
    let by_level = levels(results);
    let w = |md: &mut String, s: String| {
        md.push_str(&s);
        md.push('\n');
    };

    w(&mut md, "# Benchmarks".into());
    w(&mut md, String::new());
    w(
        &mut md,
        format!(
            "> Generated by `make bench{}` ({} mode) on {} at commit `{}`{} in {:.0} s. Raw data: [`{}`]({}). \
         Every figure is measured here, in this run; a figure of several runs is the median with (min–max).",
            if results.plan.mode == "quick" { "-quick" } else { "" },
            results.plan.mode,
            m.date,
            m.commit,
            if m.dirty_files > 0 { format!(" plus {} uncommitted files", m.dirty_files) } else { String::new() },
            results.wall_seconds,
            out.display(),
            rel(out)
        ),
    );
    w(&mut md, String::new());
    w(&mut md, "## The machine and its load".into());
    w(&mut md, String::new());
    w(
        &mut md,
        format!(
            "- CPU: {} × {} cores, {:.1} GiB memory; {}; {}; {}",
            m.cpu, m.cores, m.memory_gib, m.os, m.kernel, m.rustc
        ),
    );
    w(
        &mut md,
        format!(
            "- Load average (1/5/15 min, runnable/total): at start `{}`, at end `{}`.",
            m.loadavg_start, m.loadavg_end
        ),
    );
    if m.test_databases_dropped > 0 {
        w(
            &mut md,
            format!(
                "- Postgres: {} databases that tests had left on the cluster were dropped first (autovacuum visits each \
                one, and that CPU would be charged to the stack).",
                m.test_databases_dropped
            ),
        );
    }
    if let Some(b) = &m.broker_warm_up {
        w(
            &mut md,
            format!(
                "- Kafka's JIT: a broker started minutes before compiles for minutes, and that CPU would be charged to \
                every phase. So load ran first, in rounds of {:.0} s, until the broker's compiler threads used under \
                {:.0} % of a core: {:.0} s, from {:.2} to {:.2} cores{}.",
                b.round_seconds,
                b.settled_below * 100.0,
                b.seconds,
                b.first_cores,
                b.last_cores,
                if b.settled { "" } else { " (still compiling at the time limit: the broker's figures are high)" }
            ),
        );
    }
    w(
        &mut md,
        "- Everything is co-located on these two cores: Postgres, Kafka (JVM), the sandbox, 6 pollers, \
        `aggregator serve`, core-app, and the load generator itself; other engineers were compiling and testing on the \
        same machine during the run — the *other load* column below is CPU used by processes that are not part of the \
        stack under test. The machine is a virtual one: *stolen* is CPU time the hypervisor gave other guests while \
        this one had work to run (steal in `/proc/stat`), time the stack waited for without using it."
            .into(),
    );
    w(
        &mut md,
        format!(
            "- Release build (`[profile.release]`: codegen-units 16, no LTO, opt-level 3). Bench insurers: 6 \
        (2 × create-poll, 2 × operation, 2 × offers-list), create latency median {} / p99 {}, offer latency median {} / p99 {}, \
        no faults or rate limits; manifests: polling initialDelay {}, interval {} (the poller's floor between two polls \
        of one task is 1 s), rate limit 100000/s, maxConcurrent 1024.",
            crate::stack::CREATE_LATENCY.0,
            crate::stack::CREATE_LATENCY.1,
            crate::stack::OFFER_LATENCY.0,
            crate::stack::OFFER_LATENCY.1,
            crate::stack::POLLING.0,
            crate::stack::POLLING.1
        ),
    );
    w(&mut md, String::new());

    // Targets.
    let at = |label_part: &str| by_level.iter().find(|(l, _)| l.starts_with(label_part)).map(|(_, v)| v.clone());
    let level100 = at("100 offers/s");
    let max_phases = sustainable(results).and_then(|(_, l)| at(&l));
    w(&mut md, "## Targets".into());
    w(&mut md, String::new());
    w(&mut md, "| target | measured | target value | distance | |".into());
    w(&mut md, "|---|---|---|---|---|".into());
    if let Some(ps) = &level100 {
        let p99 = spread(ps, |p| hop(p, PUSH).p99);
        w(
            &mut md,
            format!(
                "| pipeline p99 at 100 offers/s (poll answered → SSE) | {} ms{} | ≤ 25 ms | {:+.1} ms ({:.1}×) | {} |",
                p99.fmt(1),
                probe_maxima(ps),
                p99.median - 25.0,
                p99.median / 25.0,
                status(p99.median <= 25.0)
            ),
        );
        let e2e = spread(ps, |p| hop(p, E2E).p99);
        w(
            &mut md,
            format!(
                "| ready → SSE p99 at 100 offers/s | {} ms | ≤ polling interval + 25 ms = 1025 ms | {:+.0} ms | {} |",
                e2e.fmt(0),
                e2e.median - 1025.0,
                status(e2e.median <= 1025.0)
            ),
        );
    }
    match (&max_phases, sustainable(results).map(|(q, _)| q)) {
        (Some(ps), Some(q)) => {
            let p99 = spread(ps, |p| hop(p, PUSH).p99);
            w(
                &mut md,
                format!(
                    "| pipeline p99 at the highest sustainable load ({q:.0} quotes/s) | {} ms{} | ≤ 100 ms | {:+.1} ms | {} |",
                    p99.fmt(1),
                    probe_maxima(ps),
                    p99.median - 100.0,
                    status(p99.median <= 100.0)
                ),
            );
            w(
                &mut md,
                format!(
                    "| highest sustainable load, 6 insurers | {q:.0} quotes/s ({:.0} offers/s){} | ≥ 200 quotes/s | {:.0} % of target | {} |",
                    q * 6.0,
                    repeats_held(results)
                        .iter()
                        .find(|(l, ..)| *l == format!("{q:.0} quotes/s"))
                        .map(|(_, held, of)| format!(", held in {held} of {of} repeats"))
                        .unwrap_or_default(),
                    q / 200.0 * 100.0,
                    status(q >= 200.0)
                ),
            );
        }
        _ => match unconfirmed(results) {
            Some(said) => w(
                &mut md,
                format!("| highest sustainable load | not confirmed: {said} | ≥ 200 quotes/s | – | ❌ missed |"),
            ),
            None => w(&mut md, "| highest sustainable load | no step held | ≥ 200 quotes/s | – | ❌ missed |".into()),
        },
    }
    if let Some(i) = &results.intake {
        let base = Spread::of(&i.baseline.iter().map(|c| c.throughput).collect::<Vec<_>>());
        let int = Spread::of(&i.intake.iter().map(|c| c.throughput).collect::<Vec<_>>());
        let ratio = int.median / base.median.max(1e-9);
        w(
            &mut md,
            format!(
                "| intake throughput / baseline | {:.0} % ({} vs {} req/s) | ≥ 50 % | {:+.0} points | {} |",
                ratio * 100.0,
                int.fmt(0),
                base.fmt(0),
                ratio * 100.0 - 50.0,
                status(ratio >= 0.5)
            ),
        );
    }
    if let Some(f) = &results.fanout {
        let kib = f.kib_per_stream();
        w(
            &mut md,
            format!(
                "| memory per idle SSE stream ({} streams on one core-app) | {:.2} KiB | ≤ 8 KiB | {:+.2} KiB | {} |",
                f.streams_open,
                kib,
                kib - 8.0,
                status(kib <= 8.0 && f.streams_open >= f.streams)
            ),
        );
        if let Some(h2) = &f.http2 {
            let kib = h2.kib_per_stream();
            w(
                &mut md,
                format!(
                    "| the same over HTTP/2 ({} streams on {} connections) | {:.2} KiB | ≤ 8 KiB | {:+.2} KiB | {} |",
                    h2.streams_open,
                    h2.connections,
                    kib,
                    kib - 8.0,
                    status(kib <= 8.0 && h2.streams_open >= h2.streams)
                ),
            );
        }
    }
    w(&mut md, String::new());

    // Pipeline latency.
    w(&mut md, "## 1. Pipeline latency, hop by hop".into());
    w(&mut md, String::new());
    w(
        &mut md,
        "Per insurer result (one offer per insurer per quote), milliseconds. *Ready* is the instant the sandbox's \
        calculation became visible to polls; *poll answered* is when the sandbox answered the first poll that saw it; \
        the other instants are defined under [Method](#method). *Push* (poll answered → SSE) is the platform's own \
        latency; *end to end* adds the wait for the next poll, which the polling schedule bounds."
            .into(),
    );
    w(&mut md, String::new());
    let mut hop_svgs = Vec::new();
    for (label, ps) in &by_level {
        let first = ps[0];
        w(
            &mut md,
            format!(
                "### {label} ({:.2} quotes/s × 6 insurers, {} run(s) of {:.0} s{})",
                first.quotes_per_s,
                ps.len(),
                first.window_s,
                if first.kind == "ramp" { ", ramp step" } else { "" }
            ),
        );
        w(&mut md, String::new());
        w(&mut md, "| hop | p50 | p99 | max | results |".into());
        w(&mut md, "|---|---|---|---|---|".into());
        for (name, ..) in pipeline::HOPS {
            let p50 = spread(ps, |p| hop(p, name).p50);
            let p99 = spread(ps, |p| hop(p, name).p99);
            let max = spread(ps, |p| hop(p, name).max);
            let n: usize = ps.iter().map(|p| hop(p, name).n).sum();
            w(&mut md, format!("| {name} | {} | {} | {} | {n} |", p50.fmt(1), p99.fmt(1), max.fmt(1)));
        }
        let errs: usize = ps.iter().map(|p| p.errors).sum();
        let kinds: BTreeMap<String, usize> =
            ps.iter().flat_map(|p| p.error_kinds.clone()).fold(BTreeMap::new(), |mut a, (k, v)| {
                *a.entry(k).or_default() += v;
                a
            });
        w(&mut md, String::new());
        w(
            &mut md,
            format!(
                "Quotes sent {}, complete {}, errors {}{}; generator late starts {}; machine busy {} cores, of which other load {} cores; stolen by the hypervisor {} cores.",
                ps.iter().map(|p| p.sent).sum::<usize>(),
                ps.iter().map(|p| p.complete).sum::<usize>(),
                errs,
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", kinds.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))
                },
                ps.iter().map(|p| p.late).sum::<usize>(),
                spread(ps, |p| p.machine_busy_cores).fmt(2),
                spread(ps, |p| p.other_load_cores).fmt(2),
                spread(ps, |p| p.stolen_cores).fmt(2)
            ),
        );
        if ps.iter().all(|p| p.commit_probe_ms.is_some()) {
            let probe = |p: &PhaseResult| p.commit_probe_ms.unwrap_or_default();
            w(&mut md, String::new());
            w(
                &mut md,
                format!(
                    "Meanwhile, one durable commit every {} ms on a connection of its own (`CommitProbe`, the floor of the hops that wait for the disk's flush: the relay's round, core-app's commit): p50 {}, p99 {}, max {} ms.",
                    CommitProbe::EVERY.as_millis(),
                    spread(ps, |p| probe(p).p50).fmt(2),
                    spread(ps, |p| probe(p).p99).fmt(2),
                    spread(ps, |p| probe(p).max).fmt(1)
                ),
            );
        }
        if let Some(line) = tables_line(ps) {
            w(&mut md, String::new());
            w(&mut md, line);
        }
        w(&mut md, String::new());
        let file = format!("hops-{}.svg", slug(label));
        let series: Vec<(String, Vec<f64>)> = pipeline::HOPS
            .iter()
            .filter(|(n, ..)| !n.starts_with("3a"))
            .map(|(n, ..)| {
                (n.to_string(), ps.iter().flat_map(|p| p.raw.get(*n).cloned().unwrap_or_default()).collect())
            })
            .collect();
        plot(&plots.join(&file), &|| svg::cdf(&format!("Pipeline hops at {label}"), &series))?;
        w(&mut md, format!("![hops at {label}]({})", rel(&plots.join(&file))));
        w(&mut md, String::new());
        hop_svgs.push(file);
    }
    let series: Vec<(String, Vec<f64>)> = by_level
        .iter()
        .map(|(l, ps)| (l.clone(), ps.iter().flat_map(|p| p.raw.get(PUSH).cloned().unwrap_or_default()).collect()))
        .collect();
    if !series.is_empty() {
        plot(&plots.join("push-by-load.svg"), &|| svg::cdf("Push latency (poll answered → SSE) by load", &series))?;
        w(&mut md, format!("All loads, push latency: ![push by load]({})", rel(&plots.join("push-by-load.svg"))));
        w(&mut md, String::new());
    }

    // Throughput.
    w(&mut md, "## 2. Throughput and CPU per quote".into());
    w(&mut md, String::new());
    w(
        &mut md,
        format!(
            "Open-loop ramp: each step sends quotes at a fixed rate for {:.0} s, {:.2}× the step before, until a step \
            does not hold (at most {} steps); a step *holds* when no error appears (every quote gets 6 offers and \
            `complete`, no HTTP error, no arrival shed, the generator on time) and push p99 ≤ 1 s. After the first \
            step that does not hold, one more step runs halfway (geometrically) between it and the last that held. \
            In full mode, the highest step that held is then repeated {} times back to back, {:.0} s each, on a fresh \
            stack; it is the highest sustainable load only if every repeat holds too, else the next lower load is \
            repeated on another fresh stack (at most three loads, halfway between two steps more than 15 % apart \
            included), so that no load inherits the backlog of one that broke.",
            results.plan.ramp_window.as_secs_f64(),
            results.plan.ramp_factor,
            results.plan.ramp_max_steps,
            results.plan.reps_at_max,
            results.plan.max_window.as_secs_f64(),
        ),
    );
    w(&mut md, String::new());
    w(
        &mut md,
        "| step | offers/s | push p50 | push p99 | end-to-end p99 | errors | late starts | machine busy (cores) | \
        other load (cores) | stolen (cores) | stack CPU-ms / quote | held |"
            .into(),
    );
    w(&mut md, "|---|---|---|---|---|---|---|---|---|---|---|---|".into());
    for p in results.pipeline.iter().filter(|p| p.kind == "ramp") {
        w(
            &mut md,
            format!(
                "| {:.0} quotes/s | {:.0} | {:.1} | {:.1} | {:.0} | {}{} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
                p.quotes_per_s,
                p.offers_per_s,
                hop(p, PUSH).p50,
                hop(p, PUSH).p99,
                hop(p, E2E).p99,
                p.errors,
                if p.error_kinds.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        p.error_kinds.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
                    )
                },
                p.late,
                p.machine_busy_cores,
                p.other_load_cores,
                p.stolen_cores,
                p.stack_cpu_ms_per_quote(),
                if p.pass { "yes" } else { "**no**" }
            ),
        );
    }
    w(&mut md, String::new());
    let unraised = results.pipeline.iter().filter(|p| !p.pacer_raised).count();
    if unraised > 0 {
        w(
            &mut md,
            format!(
                "The generator's pacer ran at the default priority in {unraised} of {} phases (raising it needs \
                root or CAP_SYS_NICE): late starts there may be the generator's own.",
                results.pipeline.len()
            ),
        );
        w(&mut md, String::new());
    }
    match (sustainable(results), unconfirmed(results)) {
        (Some((q, label)), _) => w(
            &mut md,
            format!(
                "**Highest sustainable load: {q:.0} quotes/s × 6 insurers = {:.0} offers/s** (the highest load that held: {label}{}).",
                q * 6.0,
                repeats_clause(results)
            ),
        ),
        (None, Some(said)) => w(&mut md, format!("**Highest sustainable load: not confirmed** ({said}).")),
        (None, None) => w(&mut md, "**No ramp step held.**".into()),
    }
    if ramp_ran_out(results) {
        w(&mut md, String::new());
        w(
            &mut md,
            "Every step of the ramp held, its last one included: the stack may sustain more than this run asked of it."
                .into(),
        );
    }
    w(&mut md, String::new());
    let cpu_phases: Vec<&PhaseResult> = max_phases.clone().or_else(|| level100.clone()).unwrap_or_default();
    if !cpu_phases.is_empty() {
        w(
            &mut md,
            format!(
                "CPU per completed quote at {} (CPU-milliseconds per quote, from `/proc/<pid>/stat` utime + stime over the phase; \
            Postgres backends are charged to the database they serve, and the Postgres processes that exited during the phase — \
            autovacuum workers, closed connections — to *postgres (autovacuum, closed connections)*, from the server's counts of its \
            finished children; the Kafka broker and Postgres's shared processes also serve other engineers' tests):",
                cpu_phases[0].label
            ),
        );
        w(&mut md, String::new());
        w(&mut md, "| process | CPU ms / quote | cores busy |".into());
        w(&mut md, "|---|---|---|".into());
        let names: Vec<String> = cpu_phases[0].cpu_ms_per_quote.keys().cloned().collect();
        for name in names {
            let per = spread(&cpu_phases, |p| p.cpu_ms_per_quote.get(&name).copied().unwrap_or(0.0));
            let cores = spread(&cpu_phases, |p| p.cpu_cores.get(&name).copied().unwrap_or(0.0));
            w(&mut md, format!("| {name} | {} | {} |", per.fmt(2), cores.fmt(2)));
        }
        let total: Vec<f64> = cpu_phases.iter().map(|p| p.stack_cpu_ms_per_quote()).collect();
        let t = Spread::of(&total);
        w(&mut md, String::new());
        w(
            &mut md,
            format!(
                "The stack's own processes (services + their Postgres backends) use **{} CPU-ms per quote**; two cores give \
                at most {:.0} such quotes/s if nothing else ran. That is a figure of this load: the more quotes come, the more \
                each statement, relay round, Kafka request and consumer round carries, and the less each quote costs (the \
                ramp's *stack CPU-ms / quote*), paid for in waiting.",
                t.fmt(1),
                2000.0 / t.median.max(1e-9)
            ),
        );
        w(&mut md, String::new());
    }

    // Intake.
    if let Some(i) = &results.intake {
        w(&mut md, "## 3. Intake: `POST /api/v1/quotes` against a baseline".into());
        w(&mut md, String::new());
        w(
            &mut md,
            format!(
                "Closed loop, {} workers sending back to back for {:.0} s, alternating baseline and intake, {} times; pollers paused \
            (SIGSTOP) so that only the intake path runs. The baseline (`bench-baseline`) is an axum handler that parses the same JSON \
            and does one `INSERT` into its own database on the same Postgres, pool of 32 like core-app. Intake is core-app validating, \
            calling the aggregator (which stores the application and 6 tasks in one transaction, shared with the applications that arrived alongside), and storing the quote. \
            *Aggregator alone* is the aggregator's half of it, `POST /internal/v1/applications` sent straight from the bench \
            with core-app's partner token: the most intake could reach with the synchronous hop of the design (DESIGN §3) \
            if core-app cost nothing.",
                i.concurrency,
                results.plan.intake_window.as_secs_f64(),
                i.baseline.len()
            ),
        );
        w(&mut md, String::new());
        w(&mut md, "| | throughput (req/s) | p50 (ms) | p99 (ms) | max (ms) | errors |".into());
        w(&mut md, "|---|---|---|---|---|---|".into());
        for (name, caps) in [
            ("baseline: 1 insert", &i.baseline),
            ("intake: POST /api/v1/quotes", &i.intake),
            ("aggregator alone: POST /internal/v1/applications", &i.aggregator),
        ] {
            if caps.is_empty() {
                continue;
            }
            let c: Vec<&Capacity> = caps.iter().collect();
            let sp = |f: &dyn Fn(&Capacity) -> f64| Spread::of(&c.iter().map(|x| f(x)).collect::<Vec<_>>());
            w(
                &mut md,
                format!(
                    "| {name} | {} | {} | {} | {} | {} |",
                    sp(&|x| x.throughput).fmt(0),
                    sp(&|x| x.latency_ms.p50).fmt(2),
                    sp(&|x| x.latency_ms.p99).fmt(2),
                    sp(&|x| x.latency_ms.max).fmt(1),
                    c.iter().map(|x| x.errors).sum::<usize>()
                ),
            );
        }
        let base = Spread::of(&i.baseline.iter().map(|c| c.throughput).collect::<Vec<_>>());
        let int = Spread::of(&i.intake.iter().map(|c| c.throughput).collect::<Vec<_>>());
        w(&mut md, String::new());
        w(
            &mut md,
            format!(
                "Ratio intake / baseline: **{:.0} %** (target ≥ 50 %).",
                int.median / base.median.max(1e-9) * 100.0
            ),
        );
        if !i.aggregator.is_empty() {
            let alone = Spread::of(&i.aggregator.iter().map(|c| c.throughput).collect::<Vec<_>>());
            w(&mut md, String::new());
            w(
                &mut md,
                format!(
                    "The aggregator's half alone: {:.0} % of the baseline — the most intake could reach in this design.",
                    alone.median / base.median.max(1e-9) * 100.0
                ),
            );
        }
        if let (Some(b), Some(ic)) = (i.baseline_cpu.first(), i.intake_cpu.first()) {
            let per = |cpu: &BTreeMap<String, f64>, n: usize| -> String {
                cpu.iter()
                    .filter(|(_, v)| **v > 0.05)
                    .map(|(k, v)| format!("{k} {:.2}", v * 1000.0 / n.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            w(&mut md, String::new());
            w(
                &mut md,
                format!(
                    "CPU-ms per request (first run): baseline — {}; intake — {}{}.",
                    per(b, i.baseline[0].ok),
                    per(ic, i.intake[0].ok),
                    match (i.aggregator_cpu.first(), i.aggregator.first()) {
                        (Some(a), Some(c)) => format!("; aggregator alone — {}", per(a, c.ok)),
                        _ => String::new(),
                    }
                ),
            );
        }
        let series = vec![
            ("baseline".to_string(), i.baseline.iter().flat_map(|c| c.latencies.clone()).collect()),
            ("intake".to_string(), i.intake.iter().flat_map(|c| c.latencies.clone()).collect()),
            ("aggregator alone".to_string(), i.aggregator.iter().flat_map(|c| c.latencies.clone()).collect()),
        ];
        plot(&plots.join("intake.svg"), &|| svg::cdf("POST /api/v1/quotes vs baseline, closed loop", &series))?;
        w(&mut md, String::new());
        w(&mut md, format!("![intake latency]({})", rel(&plots.join("intake.svg"))));
        w(&mut md, String::new());
    }

    // Fan-out.
    if let Some(f) = &results.fanout {
        w(&mut md, "## 4. SSE fan-out on one core-app".into());
        w(&mut md, String::new());
        w(
            &mut md,
            format!(
                "{} quotes were seeded straight into core-app's database (6 pending insurers each, deadline an hour away) \
            and one SSE stream opened per quote ({} open, {} failed, in {:.1} s). Memory per idle stream is core-app's RSS \
            delta over the open streams. Then {} events (one `status` event per quote) were produced into the topic at {:.0}/s \
            while all streams were open; delivery is measured to the SSE client.",
                f.streams, f.streams_open, f.streams_failed, f.open_seconds, f.events_sent, f.event_rate
            ),
        );
        w(&mut md, String::new());
        w(&mut md, "| | value |".into());
        w(&mut md, "|---|---|".into());
        w(
            &mut md,
            format!(
                "| core-app RSS before / with streams / after closing | {:.1} / {:.1} / {:.1} MiB |",
                f.rss_before_kib as f64 / 1024.0,
                f.rss_open_kib as f64 / 1024.0,
                f.rss_closed_kib as f64 / 1024.0
            ),
        );
        w(&mut md, format!("| **memory per idle stream** | **{:.2} KiB** (target ≤ 8 KiB) |", f.kib_per_stream()));
        w(
            &mut md,
            format!(
                "| the same number of idle streams on plain axum SSE (`bench-baseline`, no application state) | {:.2} KiB per stream |",
                (f.baseline_rss_open_kib as f64 - f.baseline_rss_before_kib as f64)
                    / f.baseline_streams_open.max(1) as f64
            ),
        );
        if let Some(h2) = &f.http2 {
            w(
                &mut md,
                format!(
                    "| **over HTTP/2** (a fresh core-app; {} of {} streams open on {} connections, cleartext with prior knowledge) | **{:.2} KiB per stream**; plain axum SSE: {:.2} KiB |",
                    h2.streams_open,
                    h2.streams,
                    h2.connections,
                    h2.kib_per_stream(),
                    h2.baseline_kib_per_stream()
                ),
            );
        }
        w(
            &mut md,
            format!(
                "| load generator RSS delta (client side, for comparison) | {:.2} KiB per stream |",
                f.client_rss_delta_kib as f64 / f.streams_open.max(1) as f64
            ),
        );
        w(&mut md, format!("| events delivered / sent | {} / {} |", f.events_delivered, f.events_sent));
        w(&mut md, p50_p99_max_row("delivery, core-app commit → SSE client:", &f.commit_to_sse_ms, 1));
        w(&mut md, p50_p99_max_row("delivery, in Kafka → SSE client:", &f.kafka_to_sse_ms, 1));
        w(&mut md, String::new());
        let series = vec![
            ("commit → SSE".to_string(), f.commit_to_sse_raw.clone()),
            ("in Kafka → SSE".to_string(), f.kafka_to_sse_raw.clone()),
        ];
        plot(&plots.join("fanout.svg"), &|| {
            svg::cdf(&format!("Delivery with {} open streams", f.streams_open), &series)
        })?;
        w(&mut md, format!("![fan-out delivery]({})", rel(&plots.join("fanout.svg"))));
        w(&mut md, String::new());
    }

    // Limits.
    w(&mut md, "## 5. The limits, same run, and each hop against its limit".into());
    w(&mut md, String::new());
    // A run of some parts only (`--parts`) has no limits: zeros would make every ratio absurd.
    if l.pg_commit_tps > 0.0 {
        w(&mut md, "| limit | value |".into());
        w(&mut md, "|---|---|".into());
        w(
            &mut md,
            format!("| Postgres: pgbench simple-update (`-N`), 8 clients | {:.0} tps |", l.pgbench_simple_update_tps),
        );
        w(
            &mut md,
            format!("| Postgres: one INSERT per transaction, 8 clients (pgbench) | {:.0} commits/s |", l.pg_commit_tps),
        );
        w(
            &mut md,
            format!(
                "| Postgres: one INSERT per transaction, 1 client (pgbench) | {:.3} ms per commit |",
                l.pg_commit_latency_ms
            ),
        );
        w(
            &mut md,
            format!(
                "| Postgres: `SELECT 1` round trip from Rust (sqlx) p50 / p99 | {:.3} / {:.3} ms |",
                l.pg_roundtrip_ms.p50, l.pg_roundtrip_ms.p99
            ),
        );
        w(
            &mut md,
            format!(
                "| Postgres: BEGIN; INSERT; pg_notify; COMMIT from Rust p50 / p99 | {:.3} / {:.3} ms |",
                l.pg_tx_notify_commit_ms.p50, l.pg_tx_notify_commit_ms.p99
            ),
        );
        w(
            &mut md,
            format!(
                "| Postgres: COMMIT sent → LISTENer has the notification p50 / p99 | {:.3} / {:.3} ms |",
                l.pg_notify_delivery_ms.p50, l.pg_notify_delivery_ms.p99
            ),
        );
        w(
            &mut md,
            p50_p99_max_row(
                "Kafka (rdkafka, acks=all, idempotent, 200 msg/s × 1.5 KiB): produce → ack",
                &l.kafka_produce_ack_ms,
                2,
            ),
        );
        w(&mut md, p50_p99_max_row("Kafka: produce → consumed (fetch.wait.max.ms 10)", &l.kafka_produce_consume_ms, 2));
        w(&mut md, String::new());
        if let Some(ps) = level100.clone().or_else(|| by_level.first().map(|(_, v)| v.clone())) {
            let limit2 = l.pg_tx_notify_commit_ms.p50 + l.kafka_produce_ack_ms.p50;
            let limit3 = l.kafka_produce_consume_ms.p50 + l.pg_tx_notify_commit_ms.p50;
            let limit4 = l.pg_notify_after_commit_ms.p50 + l.pg_roundtrip_ms.p50;
            w(
                &mut md,
                format!(
                    "Hop p50 at {} against the floor the limits above set for it (ratio = measured / floor):",
                    ps[0].label
                ),
            );
            w(&mut md, String::new());
            w(&mut md, "| hop | measured p50 (ms) | floor (ms) | floor is | ratio |".into());
            w(&mut md, "|---|---|---|---|---|".into());
            let rows = [
                ("2 outbox tx → in Kafka", limit2, "one commit + one Kafka produce → ack"),
                ("3 in Kafka → core-app commit", limit3, "Kafka produce → consumed + one commit"),
                ("4 core-app commit → SSE client", limit4, "NOTIFY delivery + one query round trip"),
            ];
            for (name, floor, what) in rows {
                let v = spread(&ps, |p| hop(p, name).p50);
                w(
                    &mut md,
                    format!("| {name} | {} | {floor:.2} | {what} | {:.1}× |", v.fmt(2), v.median / floor.max(1e-9)),
                );
            }
            let d = spread(&ps, |p| hop(p, "1 poll detection: ready → poll answered").p50);
            w(
                &mut md,
                format!(
                    "| 1 poll detection: ready → poll answered | {} | {:.0} | the polling interval (worst case) | {:.2}× |",
                    d.fmt(1),
                    1000.0,
                    d.median / 1000.0
                ),
            );
            w(&mut md, String::new());
        }
        if let Some((q, _)) = sustainable(results) {
            w(
                &mut md,
                format!(
                    "Throughput against Postgres: the highest sustainable {q:.0} quotes/s is {:.1} % of the {:.0} single-insert commits/s pgbench reaches \
                (each quote costs several transactions: see the CPU table and [the findings](#findings)).",
                    q / l.pg_commit_tps * 100.0,
                    l.pg_commit_tps
                ),
            );
            w(&mut md, String::new());
        }
    } else {
        w(&mut md, "Not measured in this run (`--parts` left `limits` out).".into());
        w(&mut md, String::new());
    }

    // Findings (kept by hand in bench/FINDINGS.md).
    if let Ok(findings) = std::fs::read_to_string(repo.join("bench/FINDINGS.md")) {
        w(&mut md, "## Findings".into());
        w(&mut md, String::new());
        let body: String = findings.lines().skip_while(|l| l.starts_with("# ")).collect::<Vec<_>>().join("\n");
        w(&mut md, body.trim().to_string());
        w(&mut md, String::new());
    }

    w(&mut md, "## Method".into());
    w(&mut md, String::new());
    w(&mut md, METHOD.trim().to_string());
    w(&mut md, String::new());
    std::fs::write(repo.join(doc), md)?;
    Ok(())
}

const METHOD: &str = r#"
- `make bench` / `make bench-quick` run `scripts/bench.sh`: Postgres and Kafka up (`make infra-up`), release build,
  `ulimit -n 65536`, then `bench run [--quick]` (the `bench` crate). Every stack it starts gets fresh databases
  (`bench_agg_*`, `bench_core_*`, `bench_base_*`, dropped afterwards) and a fresh topic created with
  `message.timestamp.type=LogAppendTime`, 6 partitions; processes are the release binaries started as `scripts/demo.sh`
  starts them, configured by files written under the run's raw-data folder (`stacks/*/config`), logs beside them.
- Before the first phase, the bench loads the first stack at 25 quotes/s, in rounds of 10 s, until the Kafka broker's
  JIT compiler threads (`C1/C2 CompilerThread` in `/proc/<pid>/task`) use under 5 % of a core, for at most 100 s. A
  broker started minutes earlier is still compiling, and its CPU per quote reads 1.5–3 times its settled figure.
- The sandbox runs as `bench-sandbox`: the sandbox library's own routers plus a recorder (a middleware) that notes, per
  calculation, the VIN of its application at create time and, at the first poll that finds it ready, the ready instant
  (`started + ready_after`, the sandbox's own decision, converted from its monotonic clock to wall time once) and the
  instant that poll was answered. Each quote carries a unique VIN, which maps every calculation back to its quote for
  all three API styles.
- Instants per insurer result: *ready* and *poll answered* (sandbox recorder); *outbox tx* = `QuoteEvent.occurred_at`
  (set by the poller inside the transaction that updates the task and inserts the outbox row, before its commit);
  *in Kafka* = the broker's append timestamp (ms resolution, so hops 2 and 3 carry ±1 ms of rounding);
  *consumer tx start* = core-app's `quote_events.created_at` (`now()`, the start of the consumer's transaction);
  *core-app commit* = arrival of core-app's `NOTIFY` on the bench's own `LISTEN` connection (notifications are
  delivered at commit, in commit order; the n-th one of a quote is the commit of its n-th event); *SSE* = the chunk
  carrying the event reached the load generator. All are wall-clock readings of the one machine clock.
- The load generator is open loop: quote *i* is sent at `start + i / rate` whether or not earlier quotes finished,
  each quote on its own task with its own SSE connection, at most 20 000 in flight (an arrival finding no free slot
  is *shed* and counted as an error). Arrivals are paced, and quotes submitted, on a thread with its own runtime,
  at the highest priority of a normal thread (nice −20; it stands for drivers elsewhere, whose clocks a busy stack
  does not hold back); only the SSE streams are read on the bench's main runtime. A start more than 20 ms late is
  counted (*late starts*); 1 % or more late, and more than one, fails a step: even that light thread did not get the
  CPU in time, so the machine, not the stack alone, was the bottleneck, and the load was not offered as planned.
- Intake capacity is measured closed loop (workers back to back) because capacity is what the ratio is about; the
  pipeline is always open loop.
- The generator, the SSE clients and the bench's LISTEN share the two cores with the stack: its CPU is reported in the
  CPU table (*load generator*), and its scheduling delay inflates the SSE-side hops under load.
"#;

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// `to` relative to the folder `from` (both absolute or both relative to the same root).
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = String::new();
    for _ in common..from.len() {
        out.push_str("../");
    }
    let rest: Vec<String> = to_c[common..].iter().map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
    out.push_str(&rest.join("/"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_written_again_from_its_raw_data() {
        let results = Results { plan: Plan::quick(), wall_seconds: 56.0, ..Results::default() };
        let json = serde_json::to_string(&results).unwrap();
        let read: Results = serde_json::from_str(&json).unwrap();
        let repo = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        std::fs::create_dir_all(repo.join("docs")).unwrap();
        let run = repo.join("bench/results/x-quick");
        write(&read, &repo, Path::new("docs/benchmarks.md"), &run, false).unwrap();
        let doc = std::fs::read_to_string(repo.join("docs/benchmarks.md")).unwrap();
        std::fs::remove_dir_all(&repo).unwrap();
        assert!(doc.contains("(quick mode)") && doc.contains("in 56 s"), "{doc}");
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative(Path::new("/r/docs"), Path::new("/r/bench/results/x/plots/a.svg")),
            "../bench/results/x/plots/a.svg"
        );
        assert_eq!(slug("ramp 25 quotes/s"), "ramp-25-quotes-s");
    }

    #[test]
    fn one_late_start_is_forgiven_and_one_percent_is_not() {
        assert!(generator_on_time(0, 13) && generator_on_time(1, 13));
        assert!(!generator_on_time(2, 13) && !generator_on_time(2, 150));
        assert!(generator_on_time(9, 1_000) && !generator_on_time(10, 1_000));
        assert!(generator_on_time(1, 0), "a phase with no arrivals is not held back by the rule");
    }

    /// A phase of `kind` labelled `label` that held or not.
    fn phase(label: &str, kind: &str, pass: bool) -> PhaseResult {
        PhaseResult { label: label.into(), kind: kind.into(), pass, ..PhaseResult::default() }
    }

    #[test]
    fn a_level_tells_the_rows_each_run_left_and_runs_from_before_the_record_tell_nothing() {
        use crate::tables::{AGGREGATOR_DB, CORE_DB, Left};
        let mut first = phase("max 186 quotes/s", "max", true);
        let mut second = first.clone();
        first.tables.insert(CORE_DB.into(), Left { live_rows: 900, dead_rows: 100, autovacuums: 0 });
        first.tables.insert(AGGREGATOR_DB.into(), Left { live_rows: 10, dead_rows: 5, autovacuums: 1 });
        second.tables.insert(CORE_DB.into(), Left { live_rows: 1500, dead_rows: 4000, autovacuums: 2 });
        second.tables.insert(AGGREGATOR_DB.into(), Left { live_rows: 20, dead_rows: 0, autovacuums: 0 });
        assert_eq!(
            tables_line(&[&first, &second]).unwrap(),
            "Row versions at each run's end: aggregator database 5 dead of 15 (1 autovacuum runs), 0 dead of 20 \
             (0 autovacuum runs); core-app database 100 dead of 1000 (0 autovacuum runs), 4000 dead of 5500 (2 \
             autovacuum runs)."
        );
        let old = phase("max 186 quotes/s", "max", true);
        assert_eq!(tables_line(&[&old, &old]), None);
        assert_eq!(tables_line(&[&first, &old]), None, "a level with a run unrecorded says nothing");
    }

    #[test]
    fn repeats_are_told_per_load_in_the_order_they_ran() {
        let mut results = Results::default();
        assert_eq!(repeats_clause(&results), "", "quick mode repeats nothing");
        results.pipeline = vec![
            phase("ramp 55 quotes/s", "ramp", true),
            phase("max 55 quotes/s", "max", true),
            phase("max 55 quotes/s", "max", false),
            phase("max 55 quotes/s", "max", true),
            phase("max 49 quotes/s", "max", true),
            phase("max 49 quotes/s", "max", true),
            phase("max 49 quotes/s", "max", true),
        ];
        assert_eq!(repeats_held(&results), [("55 quotes/s".to_string(), 2, 3), ("49 quotes/s".to_string(), 3, 3)]);
        assert_eq!(
            repeats_clause(&results),
            "; repeated, each on a fresh stack: 55 quotes/s held in 2 of 3, 49 quotes/s held in 3 of 3"
        );
    }

    /// A run whose repeats all broke (the ramp held 186 once, every repeated load then broke at
    /// least once) was reported as sustaining 186 quotes/s.
    #[test]
    fn loads_confirmed_are_the_steps_that_held_with_one_between_steps_far_apart() {
        let held = [20.0, 25.0, 186.0, 233.0, 291.0];
        assert_eq!(levels_to_confirm(&held, 3), [291.0, 260.0, 233.0]);
        assert_eq!(levels_to_confirm(&held, 9), [291.0, 260.0, 233.0, 208.0, 186.0, 68.0, 25.0, 22.0, 20.0]);
        // The ramp's step between the last that held and the first that broke is close enough.
        assert_eq!(levels_to_confirm(&[233.0, 291.0, 326.0, 291.0], 3), [326.0, 291.0, 260.0]);
        assert!(levels_to_confirm(&[], 3).is_empty());
    }

    #[test]
    fn a_ramp_whose_every_step_held_is_said_to_have_run_out() {
        let mut results = Results::default();
        assert!(!ramp_ran_out(&results), "no ramp, nothing ran out");
        results.pipeline = vec![phase("ramp 20 quotes/s", "ramp", true), phase("ramp 25 quotes/s", "ramp", true)];
        assert!(ramp_ran_out(&results));
        results.pipeline.push(phase("ramp 31 quotes/s", "ramp", false));
        assert!(!ramp_ran_out(&results));
    }

    #[test]
    fn a_load_no_repeat_confirmed_is_not_called_sustainable() {
        let mut results = Results {
            max_sustainable_qps: Some(186.0),
            max_sustainable_label: Some("ramp 186 quotes/s".into()),
            pipeline: vec![
                phase("ramp 186 quotes/s", "ramp", true),
                phase("max 186 quotes/s", "max", false),
                phase("max 149 quotes/s", "max", true),
                phase("max 149 quotes/s", "max", false),
            ],
            ..Results::default()
        };
        assert_eq!(sustainable(&results), None);
        let said = unconfirmed(&results).unwrap();
        assert!(
            said.starts_with(
                "the ramp held 186 quotes/s; repeated, each on a fresh stack: 186 quotes/s held in 0 of 1"
            ),
            "{said}"
        );
        // Quick mode repeats nothing: the ramp's step is the figure.
        results.pipeline.retain(|p| p.kind == "ramp");
        assert_eq!(sustainable(&results), Some((186.0, "ramp 186 quotes/s".into())));
        // A confirmed load.
        results.max_sustainable_label = Some("max 149 quotes/s".into());
        results.max_sustainable_qps = Some(149.0);
        results.pipeline.push(phase("max 149 quotes/s", "max", true));
        assert_eq!(sustainable(&results), Some((149.0, "max 149 quotes/s".into())));
        assert_eq!(unconfirmed(&results), None);
    }

    #[test]
    fn a_quotes_stack_cpu_is_the_services_and_their_databases() {
        let mut p = phase("ramp 20 quotes/s", "ramp", true);
        let groups = [
            ("aggregator", 1.0),
            ("pollers (6)", 2.0),
            ("core-app", 4.0),
            ("sandbox", 8.0),
            ("postgres (aggregator db)", 16.0),
            ("postgres (core-app db)", 32.0),
            ("postgres (autovacuum, closed connections)", 64.0),
            ("postgres (other)", 128.0),
            ("kafka broker", 256.0),
            ("load generator", 512.0),
            ("baseline", 1024.0),
        ];
        p.cpu_ms_per_quote = groups.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(p.stack_cpu_ms_per_quote(), 127.0);
    }

    #[test]
    fn a_targets_row_names_the_longest_commit_of_each_run_when_the_probe_ran() {
        let mut with = phase("100 offers/s", "level", true);
        with.commit_probe_ms = Some(Summary { max: 483.8, ..Summary::default() });
        let mut other = with.clone();
        other.commit_probe_ms = Some(Summary { max: 4.1, ..Summary::default() });
        assert_eq!(probe_maxima(&[&with, &other]), "; longest durable commit meanwhile 484, 4 ms");
        assert_eq!(probe_maxima(&[&phase("100 offers/s", "level", true)]), "", "a run before the probe");
    }
}
