//! TCP faults between the pollers and one insurer, injected by a real toxiproxy-server
//! (`scripts/toxiproxy.sh` builds it): added latency, connection resets, a black hole and a
//! slow trickle of bytes. The insurer's poller calls the proxy (its `baseUrl`), the other
//! insurers' pollers call the sandbox directly; each test runs a whole platform of its own.
//!
//! Every test prints what it measured (`eprintln!`, shown with `--nocapture` or on failure).
//! Tests whose assertions are about timing hold the suite's lock exclusively, so another
//! test's load on this small machine cannot skew them.

mod common;

use common::toxiproxy::{Direction, Proxy, Toxiproxy};
use common::{Insurer, PollerSpec, Sandbox, Stack, TRIO, run_quotes, secs, slowest, statuses};
use serde_json::json;
use std::time::Duration;
use tokio::sync::RwLock;
use tokio::time::Instant;

/// Shared by tests that only need correctness, exclusive for tests that measure timing.
static TIMING: RwLock<()> = RwLock::const_new(());

/// The insurer behind the proxy.
const FAULTY: &Insurer = &TRIO[0];
const HEALTHY: [&Insurer; 2] = [&TRIO[1], &TRIO[2]];

/// A platform whose `alfa` poller goes through a toxiproxy proxy.
struct Setup {
    sandbox: Sandbox,
    proxy: Proxy,
    stack: Stack,
    _toxiproxy: Toxiproxy,
}

async fn setup(quote: Duration, faulty_extra: &str) -> Setup {
    let sandbox = Sandbox::start(&TRIO).await;
    let toxiproxy = Toxiproxy::start().await;
    let proxy = toxiproxy.proxy(&testkit::unique_name("alfa"), sandbox.addr).await;
    let mut pollers = common::direct(&sandbox, &TRIO, quote);
    pollers[0] = PollerSpec { base_url: proxy.url("/alfa"), extra: faulty_extra.into(), ..pollers[0].clone() };
    let stack = Stack::start(&pollers).await;
    Setup { sandbox, proxy, stack, _toxiproxy: toxiproxy }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_delays_offers_accordingly() {
    let _timing = TIMING.write().await;
    let s = setup(Duration::from_secs(15), "").await;
    run_quotes(&s.stack.core_url, 0, 1, Duration::from_secs(30)).await; // warm-up: consumer assigned
    let baseline = run_quotes(&s.stack.core_url, 10, 3, Duration::from_secs(30)).await;

    let latency = Duration::from_millis(300);
    s.proxy.add("latency", "latency", Direction::Downstream, json!({"latency": 300, "jitter": 0})).await;
    let delayed = run_quotes(&s.stack.core_url, 20, 3, Duration::from_secs(30)).await;

    // The fastest of 3: a load spike on this small machine can only slow a run down.
    let fastest = |runs: &[std::collections::BTreeMap<String, common::InsurerResult>], insurer: &str| {
        runs.iter().map(|r| r[insurer].after).min().unwrap()
    };
    let (before, after) = (fastest(&baseline, FAULTY.name), fastest(&delayed, FAULTY.name));
    let added = after.saturating_sub(before);
    eprintln!(
        "MEASURED tcp latency {}ms on every answer of {}: offer after {} (fastest of 3) vs {} without; added {} \
         (create + first poll = 2 answers = {}ms expected)",
        latency.as_millis(),
        FAULTY.name,
        secs(after),
        secs(before),
        secs(added),
        2 * latency.as_millis()
    );
    assert_eq!(statuses(&delayed, FAULTY.name), [("offer".to_string(), 3)].into(), "offers still arrive");
    assert!(
        added >= 2 * latency - Duration::from_millis(150),
        "each of the 2 calls is delayed by {latency:?}: added only {added:?}"
    );
    assert!(added <= 2 * latency + Duration::from_secs(1), "delayed far more than the toxic: {added:?}");
    for healthy in HEALTHY {
        let (b, d) = (slowest(&baseline, healthy.name), slowest(&delayed, healthy.name));
        eprintln!("MEASURED   {} (direct) slowest offer {} vs {} without the toxic", healthy.name, secs(d), secs(b));
        assert!(d <= b + Duration::from_secs(1), "{} is not behind the proxy and must not slow down", healthy.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried_and_quotes_complete() {
    let _shared = TIMING.read().await;
    // The manifest allows enough attempts to outlast a short burst of resets, and a breaker
    // window wider than the burst: this test is about retries (the breaker has its own tests).
    let s = setup(
        Duration::from_secs(20),
        "  retry: {maxAttempts: 10, initialBackoff: 200ms, maxBackoff: 1s}\n  circuitBreaker: {windowSize: 200}\n",
    )
    .await;
    run_quotes(&s.stack.core_url, 0, 1, Duration::from_secs(30)).await;
    let before = s.sandbox.requests(FAULTY.name).await;

    s.proxy.add("reset", "reset_peer", Direction::Upstream, json!({"timeout": 0})).await;
    let core_url = s.stack.core_url.clone();
    let quotes = tokio::spawn(async move { run_quotes(&core_url, 10, 3, Duration::from_secs(40)).await });
    // Every connection is reset for a while; then the network heals.
    let pool = s.stack.aggregator_pool.clone();
    common::eventually("resets make alfa's calls fail", Duration::from_secs(15), || async {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE insurer = $1 AND status = 'pending' AND attempts >= 2",
        )
        .bind(FAULTY.name)
        .fetch_one(&pool)
        .await
        .unwrap_or_default();
        failed == 3
    })
    .await;
    s.proxy.remove("reset").await;
    let healed = Instant::now();
    let runs = quotes.await.unwrap();

    let reached = s.sandbox.requests(FAULTY.name).await - before;
    let attempts: Vec<i32> = sqlx::query_scalar(
        "SELECT attempts FROM tasks t JOIN applications a ON a.id = t.application_id WHERE insurer = $1 \
         ORDER BY a.created_at DESC LIMIT 3",
    )
    .bind(FAULTY.name)
    .fetch_all(&s.stack.aggregator_pool)
    .await
    .unwrap();
    let recovered = slowest(&runs, FAULTY.name);
    let last_offer_after_heal = common::last_arrival(&runs, FAULTY.name).saturating_duration_since(healed);
    eprintln!(
        "MEASURED tcp resets on {}: calls per task {attempts:?} (the sandbox saw {reached} of them), \
         results {:?}, slowest offer {} after submit, last one {} after the network healed",
        FAULTY.name,
        statuses(&runs, FAULTY.name),
        secs(recovered),
        secs(last_offer_after_heal),
    );
    assert!(attempts.iter().all(|&a| a >= 3), "every task was retried after resets: {attempts:?}");
    assert_eq!(statuses(&runs, FAULTY.name), [("offer".to_string(), 3)].into(), "retries completed every task");
    for healthy in HEALTHY {
        assert_eq!(statuses(&runs, healthy.name), [("offer".to_string(), 3)].into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_times_out_while_healthy_insurers_stay_fast() {
    let _timing = TIMING.write().await;
    let quote = Duration::from_secs(5);
    let s = setup(quote, "").await;
    run_quotes(&s.stack.core_url, 0, 1, Duration::from_secs(30)).await;
    let baseline = run_quotes(&s.stack.core_url, 10, 3, Duration::from_secs(30)).await;
    let before = s.sandbox.requests(FAULTY.name).await;

    // Requests vanish: connections open, nothing arrives, nothing is answered, nothing closes.
    s.proxy.add("black-hole", "timeout", Direction::Upstream, json!({"timeout": 0})).await;
    let core_url = s.stack.core_url.clone();
    let submitted = Instant::now();
    let runs = run_quotes(&core_url, 20, 3, Duration::from_secs(30)).await;
    let completed = submitted.elapsed();

    let reached = s.sandbox.requests(FAULTY.name).await - before;
    let calls: Vec<i32> = sqlx::query_scalar(
        "SELECT attempts FROM tasks t JOIN applications a ON a.id = t.application_id WHERE insurer = $1 \
         ORDER BY a.created_at DESC LIMIT 3",
    )
    .bind(FAULTY.name)
    .fetch_all(&s.stack.aggregator_pool)
    .await
    .unwrap();
    eprintln!(
        "MEASURED tcp black hole on {}: results {:?}, calls per task {calls:?} each cut by the 1s request timeout, \
         {reached} reached the insurer; quotes complete {} after submit (deadline {})",
        FAULTY.name,
        statuses(&runs, FAULTY.name),
        secs(completed),
        secs(quote),
    );
    for r in &runs {
        let status = r[FAULTY.name].status.as_str();
        assert!(status == "expired" || status == "failed", "the black-holed insurer ends expired or failed: {status}");
    }
    assert_eq!(reached, 0, "nothing passes a black hole");
    assert!(calls.iter().all(|&c| c >= 2), "timed-out calls are retried until the deadline: {calls:?}");
    assert!(completed <= common::by_deadline(quote), "complete by the deadline, took {completed:?}");
    for healthy in HEALTHY {
        let (b, d) = (slowest(&baseline, healthy.name), slowest(&runs, healthy.name));
        eprintln!(
            "MEASURED   {} while {} is black-holed: slowest offer {} (without the fault {}, own latency {})",
            healthy.name,
            FAULTY.name,
            secs(d),
            secs(b),
            secs(healthy.latency() + common::FIRST_POLL_MARGIN)
        );
        assert_eq!(statuses(&runs, healthy.name), [("offer".to_string(), 3)].into());
        assert!(d <= b + Duration::from_secs(1), "{}'s offers within their own latency + 1 s", healthy.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_complete_or_time_out_cleanly() {
    let _shared = TIMING.read().await;
    let quote = Duration::from_secs(5);
    let s = setup(quote, "").await;
    run_quotes(&s.stack.core_url, 0, 1, Duration::from_secs(30)).await;

    // Answers trickle in 64-byte slices 20 ms apart: slower, still within the 1 s request timeout.
    s.proxy
        .add("slow", "slicer", Direction::Downstream, json!({"average_size": 64, "size_variation": 0, "delay": 20_000}))
        .await;
    let slow = run_quotes(&s.stack.core_url, 10, 2, Duration::from_secs(30)).await;
    eprintln!(
        "MEASURED tcp slow answers (64 B / 20 ms) on {}: results {:?}, slowest offer {} (own latency {})",
        FAULTY.name,
        statuses(&slow, FAULTY.name),
        secs(slowest(&slow, FAULTY.name)),
        secs(FAULTY.latency() + common::FIRST_POLL_MARGIN)
    );
    assert_eq!(statuses(&slow, FAULTY.name), [("offer".to_string(), 2)].into(), "slow but in time: offers");

    // 4-byte slices 100 ms apart: not even the headers arrive within the request timeout.
    s.proxy.remove("slow").await;
    s.proxy
        .add(
            "slower",
            "slicer",
            Direction::Downstream,
            json!({"average_size": 4, "size_variation": 0, "delay": 100_000}),
        )
        .await;
    let submitted = Instant::now();
    let slower = run_quotes(&s.stack.core_url, 20, 2, Duration::from_secs(30)).await;
    let completed = submitted.elapsed();
    eprintln!(
        "MEASURED tcp slower answers (4 B / 100 ms) on {}: results {:?}; quotes complete {} after submit (deadline {})",
        FAULTY.name,
        statuses(&slower, FAULTY.name),
        secs(completed),
        secs(quote)
    );
    for r in &slower {
        let status = r[FAULTY.name].status.as_str();
        assert!(status == "expired" || status == "failed", "a call that cannot finish times out: {status}");
    }
    assert!(completed <= common::by_deadline(quote), "complete by the deadline, took {completed:?}");
    for healthy in HEALTHY {
        assert_eq!(statuses(&slower, healthy.name), [("offer".to_string(), 2)].into());
    }
}
