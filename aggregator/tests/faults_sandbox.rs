//! Insurer faults switched on at run time through the sandbox's control API: every call a
//! 500, calls that hang, a 429 storm, offers five and twenty times slower. Whatever one
//! insurer does, every quote completes, every insurer's result reaches the SSE client exactly
//! once and is terminal, and the other insurers' offers are not held up.
//!
//! Every test prints what it measured (`eprintln!`, shown with `--nocapture` or on failure).

mod common;

use common::{Sandbox, Stack, TRIO, run_quotes, secs, slowest, statuses};
use serde_json::json;
use std::time::Duration;
use tokio::sync::RwLock;
use tokio::time::Instant;

/// Shared by tests that only need correctness, exclusive for tests that measure timing.
static TIMING: RwLock<()> = RwLock::const_new(());

async fn setup(quote: Duration) -> (Sandbox, Stack) {
    let sandbox = Sandbox::start(&TRIO).await;
    let stack = Stack::start(&common::direct(&sandbox, &TRIO, quote)).await;
    run_quotes(&stack.core_url, 0, 1, Duration::from_secs(30)).await; // warm-up: consumer assigned
    (sandbox, stack)
}

fn reasons(runs: &[std::collections::BTreeMap<String, common::InsurerResult>], insurer: &str) -> Vec<String> {
    let mut reasons: Vec<String> = runs
        .iter()
        .filter_map(|r| r[insurer].reason.as_deref())
        .map(|r| r.split(':').next().unwrap_or_default().to_string())
        .collect();
    reasons.dedup();
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_a_500() {
    let _shared = TIMING.read().await;
    let quote = Duration::from_secs(5);
    let (sandbox, stack) = setup(quote).await;
    sandbox.faults("alfa", json!({"error_rate": 1.0})).await;
    let before = sandbox.requests("alfa").await;

    let submitted = Instant::now();
    let runs = run_quotes(&stack.core_url, 10, 3, Duration::from_secs(30)).await;
    let completed = submitted.elapsed();

    let calls = sandbox.requests("alfa").await - before;
    let errors = sandbox.responses("alfa", 500).await;
    eprintln!(
        "MEASURED sandbox 100% 500s at alfa: results {:?} (reasons {:?}), {calls} calls for 3 tasks, {errors} \
         answered 500; quotes complete {} after submit (deadline {})",
        statuses(&runs, "alfa"),
        reasons(&runs, "alfa"),
        secs(completed),
        secs(quote)
    );
    for r in &runs {
        let status = r["alfa"].status.as_str();
        assert!(
            status == "failed" || status == "expired",
            "an insurer that only fails ends failed or expired: {status}"
        );
    }
    assert!(errors >= 3, "every task met the 500s");
    assert!(calls <= 3 * 10, "retries are paced (backoff), not a storm: {calls} calls");
    assert!(completed <= common::by_deadline(quote), "complete by the deadline, took {completed:?}");
    for healthy in ["ingos", "reso"] {
        assert_eq!(statuses(&runs, healthy), [("offer".to_string(), 3)].into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_insurer_holds_up_no_one_else() {
    let _timing = TIMING.write().await;
    let quote = Duration::from_secs(5);
    let (sandbox, stack) = setup(quote).await;
    let baseline = run_quotes(&stack.core_url, 10, 3, Duration::from_secs(30)).await;
    sandbox.faults("alfa", json!({"hang": true})).await;
    let before = sandbox.requests("alfa").await;

    let submitted = Instant::now();
    let runs = run_quotes(&stack.core_url, 20, 3, Duration::from_secs(30)).await;
    let completed = submitted.elapsed();

    let calls = sandbox.requests("alfa").await - before;
    eprintln!(
        "MEASURED sandbox hang at alfa: results {:?}, {calls} calls for 3 tasks (each cut by the 1s request timeout); \
         quotes complete {} after submit (deadline {})",
        statuses(&runs, "alfa"),
        secs(completed),
        secs(quote)
    );
    for r in &runs {
        let status = r["alfa"].status.as_str();
        assert!(status == "failed" || status == "expired", "a hanging insurer ends expired or failed: {status}");
    }
    assert!(calls >= 3, "every task called the hanging insurer");
    assert!(completed <= common::by_deadline(quote), "complete by the deadline, took {completed:?}");
    for healthy in &TRIO[1..] {
        let (b, d) = (slowest(&baseline, healthy.name), slowest(&runs, healthy.name));
        eprintln!(
            "MEASURED   {} while alfa hangs: slowest offer {} (without the fault {}, own latency {})",
            healthy.name,
            secs(d),
            secs(b),
            secs(healthy.latency() + common::FIRST_POLL_MARGIN)
        );
        assert_eq!(statuses(&runs, healthy.name), [("offer".to_string(), 3)].into());
        assert!(d <= b + Duration::from_secs(1), "{}'s offers within their own latency + 1 s", healthy.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_keeps_quotes_complete() {
    let _shared = TIMING.read().await;
    let quote = Duration::from_secs(12);
    let (sandbox, stack) = setup(quote).await;
    sandbox.faults("alfa", json!({"rate_limit_rps": 1, "rate_limit_burst": 1})).await;
    let before = sandbox.requests("alfa").await;
    let limited_before = sandbox.responses("alfa", 429).await;

    let submitted = Instant::now();
    let runs = run_quotes(&stack.core_url, 10, 4, Duration::from_secs(30)).await;
    let completed = submitted.elapsed();

    let calls = sandbox.requests("alfa").await - before;
    let limited = sandbox.responses("alfa", 429).await - limited_before;
    let peak = sandbox.counters("alfa").await["max_requests_per_second"].as_u64().unwrap_or(0);
    eprintln!(
        "MEASURED sandbox 429 storm at alfa (1 rps): results {:?}, {calls} calls for 4 tasks, {limited} answered 429, \
         peak {peak} requests/s at the insurer; slowest alfa offer {}, quotes complete {} after submit",
        statuses(&runs, "alfa"),
        secs(slowest(&runs, "alfa")),
        secs(completed)
    );
    assert!(limited > 0, "the storm happened: some calls were answered 429");
    // Terminal and exactly once is checked for every quote; how many offers squeeze through 1 rps
    // before the deadline depends on how well retries spread out (see the measured line).
    let offers = statuses(&runs, "alfa").get("offer").copied().unwrap_or(0);
    assert!(offers >= 1, "the storm is survivable: offers still come through");
    // Each task waits out Retry-After (1 s) after a 429: at most about one call per task per second.
    assert!(peak <= 2 * 4, "429s are not hammered: {peak} requests within one second");
    for healthy in ["ingos", "reso"] {
        assert_eq!(statuses(&runs, healthy), [("offer".to_string(), 4)].into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_offers_arrive_late_or_expire() {
    let _shared = TIMING.read().await;
    let quote = Duration::from_secs(6);
    let (sandbox, stack) = setup(quote).await;
    // alfa: 600 ms → 3 s, within the deadline; ingos: 800 ms → 16 s, beyond it.
    sandbox.faults("alfa", json!({"slowdown": 5.0})).await;
    sandbox.faults("ingos", json!({"slowdown": 20.0})).await;

    let submitted = Instant::now();
    let runs = run_quotes(&stack.core_url, 10, 3, Duration::from_secs(30)).await;
    let completed = submitted.elapsed();

    let alfa = slowest(&runs, "alfa");
    let fastest_alfa = runs.iter().map(|r| r["alfa"].after).min().unwrap();
    eprintln!(
        "MEASURED sandbox slowdown: alfa ×5 (offer at 3s) results {:?}, offers after {}–{}; ingos ×20 (offer at 16s) \
         results {:?}; quotes complete {} after submit (deadline {})",
        statuses(&runs, "alfa"),
        secs(fastest_alfa),
        secs(alfa),
        statuses(&runs, "ingos"),
        secs(completed),
        secs(quote)
    );
    assert_eq!(statuses(&runs, "alfa"), [("offer".to_string(), 3)].into(), "slow but within the deadline: offers");
    assert!(fastest_alfa >= Duration::from_secs(3), "no offer before the insurer had it: {fastest_alfa:?}");
    for r in &runs {
        let status = r["ingos"].status.as_str();
        assert!(status == "expired" || status == "failed", "an offer later than the deadline expires: {status}");
    }
    assert_eq!(statuses(&runs, "reso"), [("offer".to_string(), 3)].into());
    assert!(completed <= common::by_deadline(quote), "complete by the deadline, took {completed:?}");
}
