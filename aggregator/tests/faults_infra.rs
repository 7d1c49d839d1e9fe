//! Infrastructure faults against the platform as real processes: the shared Kafka broker
//! stopped for 30 s, the shared Postgres restarted, and SIGKILL of a poller, of the relay
//! (`aggregator serve`) and of core-app. Quotes are in flight through every fault; afterwards
//! every accepted quote completes and its SSE client has seen each insurer's result exactly
//! once — across reconnections with `Last-Event-ID` where the fault broke the stream.
//!
//! Stopping Kafka or Postgres affects everything on this machine that uses them, so those
//! tests run alone (`SHARED_INFRA`), and a guard restarts a stopped service even when a test
//! fails. Every test prints what it measured (`eprintln!`, shown with `--nocapture` or
//! on failure): time to recover, quotes accepted or refused during the fault, duplicates.

mod common;

use common::processes::{Platform, Restore, ensure_infra_up};
use common::{Insurer, Quote, Refused, Timed, create, follow, follow_counting, follow_to_end, secs, submit, verify};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Stopping Kafka or Postgres takes the whole suite exclusively (every test here depends on
/// them); SIGKILLs hit a test's own processes only and may run side by side.
static SHARED_INFRA: RwLock<()> = RwLock::const_new(());

/// alfa's create call takes 800 ms (a kill lands in the middle of calls), its offer 1.5 s later.
const INSURERS: [Insurer; 2] =
    [Insurer::new("alfa", "create-poll", 800, 1500), Insurer::new("reso", "offers-list", 20, 500)];

/// A quote's SSE client, reconnecting like EventSource until `complete`.
type Follower = JoinHandle<(Quote, Vec<Timed>, u32)>;

fn follow_in_background(quote: Quote, timeout: Duration) -> Follower {
    tokio::spawn(async move {
        let (events, reconnects) = follow_to_end(&quote, timeout).await;
        (quote, events, reconnects)
    })
}

/// What the SSE clients of a fault's quotes saw.
struct Outcome {
    quotes: usize,
    /// Results delivered (one per insurer per quote when nothing is lost or duplicated).
    results: usize,
    offers: usize,
    reconnects: u32,
    first_event: Option<Instant>,
    last_complete: Instant,
}

/// Waits for every follower, verifies each quote (exactly once, terminal, complete) and
/// requires an offer from every insurer: these faults must lose nothing.
async fn settle(followers: Vec<Follower>, after: Instant) -> Outcome {
    let mut outcome =
        Outcome { quotes: 0, results: 0, offers: 0, reconnects: 0, first_event: None, last_complete: after };
    for follower in followers {
        let (quote, events, reconnects) = follower.await.expect("SSE client");
        let results = verify(&quote, &events);
        for (insurer, result) in &results {
            assert_eq!(
                result.status, "offer",
                "quote {}: {insurer}'s offer was lost to the fault: {result:?}",
                quote.id
            );
        }
        outcome.quotes += 1;
        outcome.results += results.len();
        outcome.offers += results.values().filter(|r| r.status == "offer").count();
        outcome.reconnects += reconnects;
        let first = events.iter().map(|e| e.at).filter(|&at| at >= after).min();
        if let Some(first) = first {
            outcome.first_event = Some(outcome.first_event.map_or(first, |earliest| earliest.min(first)));
        }
        outcome.last_complete = outcome.last_complete.max(events.last().unwrap().at);
    }
    outcome
}

/// Status codes of refused submissions, e.g. `{503: 2}`.
fn codes(refused: &[Refused]) -> BTreeMap<u16, usize> {
    let mut codes = BTreeMap::new();
    for r in refused {
        *codes.entry(r.status).or_insert(0) += 1;
    }
    codes
}

/// A refusal is clean when it is a 503 with Retry-After, within the client's patience.
fn assert_clean(refused: &[Refused]) {
    for r in refused {
        assert_eq!(r.status, 503, "refused cleanly with 503, got {r:?}");
        assert!(r.retry_after.is_some(), "a 503 says when to retry: {r:?}");
    }
}

async fn warm_up(p: &Platform) {
    let quote = create(&p.core_url(), 0).await;
    let (events, _) = follow_to_end(&quote, Duration::from_secs(60)).await;
    verify(&quote, &events);
}

async fn wait_outbox_empty(p: &Platform) {
    common::eventually("the outbox drains", Duration::from_secs(30), || async { p.outbox().await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stopped_for_30s_loses_and_duplicates_nothing() {
    let _exclusive = SHARED_INFRA.write().await;
    ensure_infra_up().await;
    let mut p = Platform::start(&INSURERS, Duration::from_secs(150)).await;
    warm_up(&p).await;
    let core = p.core_url();

    let mut followers = Vec::new();
    for n in 1..=3 {
        followers.push(follow_in_background(create(&core, n).await, Duration::from_secs(180)));
    }
    let (kafka, down_took) = Restore::stop("kafka-down", "kafka-up").await;
    let outage = Instant::now();
    let (mut accepted, mut refused, mut n) = (0, Vec::new(), 10);
    while outage.elapsed() < Duration::from_secs(30) {
        match submit(&core, n, Duration::from_secs(20)).await {
            Ok(quote) => {
                accepted += 1;
                followers.push(follow_in_background(quote, Duration::from_secs(180)));
            }
            Err(r) => refused.push(r),
        }
        n += 1;
        tokio::time::sleep(Duration::from_secs(3).min(Duration::from_secs(30).saturating_sub(outage.elapsed()))).await;
    }
    let waiting = p.outbox().await;
    let up_took = kafka.restore().await;
    let ready = Instant::now();
    let pool = p.aggregator_pool.clone();
    let drained = tokio::spawn(async move {
        common::eventually("the outbox drains", Duration::from_secs(60), || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox").fetch_one(&pool).await.is_ok_and(|n| n == 0)
        })
        .await
    });
    let outcome = settle(followers, ready).await;
    let drained = drained.await.unwrap();

    eprintln!(
        "MEASURED kafka down {} (kafka-down took {}, kafka-up {}): {accepted} quotes accepted during the outage, \
         refused {:?}; {waiting} events waited in the outbox; after the broker was ready the outbox drained in {}, \
         the first event reached a client in {}, all {} quotes complete in {}; {} results for {} insurer slots \
         ({} offers), duplicates 0, SSE reconnects {}",
        secs(ready.duration_since(outage)),
        secs(down_took),
        secs(up_took),
        codes(&refused),
        secs(drained),
        secs(outcome.first_event.map_or(Duration::ZERO, |t| t.saturating_duration_since(ready))),
        outcome.quotes,
        secs(outcome.last_complete.saturating_duration_since(ready)),
        outcome.results,
        outcome.quotes * INSURERS.len(),
        outcome.offers,
        outcome.reconnects,
    );
    assert_clean(&refused);
    assert!(accepted > 0, "intake does not need Kafka: quotes are accepted during the outage");
    assert!(waiting > 0, "events waited in the outbox while Kafka was down");
    assert_eq!(outcome.quotes, 3 + accepted);
    assert_eq!(outcome.results, outcome.quotes * INSURERS.len(), "nothing lost, nothing duplicated");
    p.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_with_quotes_in_flight() {
    let _exclusive = SHARED_INFRA.write().await;
    ensure_infra_up().await;
    let mut p = Platform::start(&INSURERS, Duration::from_secs(90)).await;
    warm_up(&p).await;
    let core = p.core_url();

    let mut followers = Vec::new();
    for n in 1..=4 {
        followers.push(follow_in_background(create(&core, n).await, Duration::from_secs(120)));
    }
    let (postgres, down_took) = Restore::stop("pg-down", "pg-up").await;
    let outage = Instant::now();
    // Quotes submitted while Postgres is down: each either waits for it and is accepted, or is
    // refused cleanly.
    let during: Vec<_> = (10..13)
        .map(|n| {
            let core = core.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500) * (n - 10) as u32).await;
                submit(&core, n, Duration::from_secs(40)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let up_took = postgres.restore().await;
    let ready = Instant::now();
    let (mut accepted, mut refused, mut took) = (0, Vec::new(), Vec::new());
    for submission in during {
        match submission.await.unwrap() {
            Ok(quote) => {
                accepted += 1;
                took.push(quote.accepted_at.saturating_duration_since(outage));
                followers.push(follow_in_background(quote, Duration::from_secs(120)));
            }
            Err(r) => refused.push(r),
        }
    }
    let refusal_took = refused.iter().map(|r| r.took).max().unwrap_or_default();
    // Services reconnect by themselves: intake takes a new quote without any restart.
    let again = Instant::now();
    let fresh = create(&core, 20).await;
    let first_accepted = again.elapsed();
    followers.push(follow_in_background(fresh, Duration::from_secs(120)));
    let outcome = settle(followers, ready).await;
    wait_outbox_empty(&p).await;

    eprintln!(
        "MEASURED postgres down {} (pg-down took {}, pg-up {}): of 3 quotes submitted while down {accepted} were \
         accepted (201 at {:?} after the stop, held until Postgres was back) and refused {:?} (slowest refusal {}); \
         a new quote afterwards took {}; after Postgres was ready the first event reached a client in {}, all {} \
         quotes complete in {}; {} results for {} insurer slots, duplicates 0, SSE reconnects {}",
        secs(ready.duration_since(outage)),
        secs(down_took),
        secs(up_took),
        took.iter().map(|t| secs(*t)).collect::<Vec<_>>(),
        codes(&refused),
        secs(refusal_took),
        secs(first_accepted),
        secs(outcome.first_event.map_or(Duration::ZERO, |t| t.saturating_duration_since(ready))),
        outcome.quotes,
        secs(outcome.last_complete.saturating_duration_since(ready)),
        outcome.results,
        outcome.quotes * INSURERS.len(),
        outcome.reconnects,
    );
    assert_clean(&refused);
    assert_eq!(outcome.results, outcome.quotes * INSURERS.len(), "nothing lost, nothing duplicated");
    p.wait_ready().await; // every process survived the restart
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_poller_mid_call() {
    let _shared = SHARED_INFRA.read().await;
    ensure_infra_up().await;
    let mut p = Platform::start(&INSURERS, Duration::from_secs(60)).await;
    warm_up(&p).await;
    let core = p.core_url();

    let mut followers = Vec::new();
    for n in 1..=4 {
        followers.push(follow_in_background(create(&core, n).await, Duration::from_secs(90)));
    }
    // Kill alfa's poller while its create calls (800 ms each) are in flight under a lease.
    let pool = p.aggregator_pool.clone();
    let leased = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tasks WHERE insurer = 'alfa' AND status = 'pending' AND lease_until > now()",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or_default()
    };
    common::eventually("alfa's calls in flight", Duration::from_secs(20), || async { leased().await >= 1 }).await;
    let in_flight = leased().await;
    let killed = p.pollers.get_mut("alfa").unwrap().kill9();
    p.start_poller("alfa");
    let outcome = settle(followers, killed).await;

    eprintln!(
        "MEASURED SIGKILL of alfa's poller with {in_flight} calls in flight under a lease, restarted at once: all {} \
         quotes complete {} after the kill (a killed replica's lease runs out after 10 s); {} results for {} insurer \
         slots, duplicates 0",
        outcome.quotes,
        secs(outcome.last_complete.saturating_duration_since(killed)),
        outcome.results,
        outcome.quotes * INSURERS.len(),
    );
    assert!(in_flight >= 1);
    assert_eq!(outcome.results, outcome.quotes * INSURERS.len(), "nothing lost, nothing duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_relay() {
    let _shared = SHARED_INFRA.read().await;
    ensure_infra_up().await;
    let mut p = Platform::start(&INSURERS, Duration::from_secs(60)).await;
    warm_up(&p).await;
    let core = p.core_url();

    let mut followers = Vec::new();
    for n in 1..=3 {
        followers.push(follow_in_background(create(&core, n).await, Duration::from_secs(90)));
    }
    let killed = p.serve.as_mut().unwrap().kill9();
    // Intake is down with it: core-app refuses new quotes cleanly.
    let mut refused = Vec::new();
    for n in 10..12 {
        match submit(&core, n, Duration::from_secs(20)).await {
            Ok(quote) => panic!("quote {} accepted with the aggregator dead", quote.id),
            Err(r) => refused.push(r),
        }
    }
    // Every result lands in the outbox while no relay publishes it.
    common::eventually("every result in the outbox", Duration::from_secs(30), || async {
        p.outbox().await >= 3 * INSURERS.len() as i64
    })
    .await;
    let waited = killed.elapsed();
    let waiting = p.outbox().await;
    p.start_serve();
    let restarted = Instant::now();
    let outcome = settle(followers, restarted).await;
    wait_outbox_empty(&p).await;

    eprintln!(
        "MEASURED SIGKILL of aggregator serve (intake + relay): refused {:?} while it was down (slowest refusal {}); \
         {waiting} events waited in the outbox ({} after the kill); restarted {} after the kill, the first event \
         reached a client {} later, all {} quotes complete {} after the restart; {} results for {} insurer slots, \
         duplicates 0",
        codes(&refused),
        secs(refused.iter().map(|r| r.took).max().unwrap_or_default()),
        secs(waited),
        secs(restarted.duration_since(killed)),
        secs(outcome.first_event.map_or(Duration::ZERO, |t| t.saturating_duration_since(restarted))),
        outcome.quotes,
        secs(outcome.last_complete.saturating_duration_since(restarted)),
        outcome.results,
        outcome.quotes * INSURERS.len(),
    );
    assert_clean(&refused);
    assert_eq!(outcome.results, outcome.quotes * INSURERS.len(), "nothing lost, nothing duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_core_app_and_sse_resume() {
    let _shared = SHARED_INFRA.read().await;
    ensure_infra_up().await;
    let mut p = Platform::start(&INSURERS, Duration::from_secs(60)).await;
    warm_up(&p).await;
    let core = p.core_url();

    // One client we drive by hand: it reads until the server dies, then resumes by Last-Event-ID.
    let quote = create(&core, 1).await;
    let url = quote.events_url.clone();
    let (counter, mut received) = tokio::sync::watch::channel(0);
    let first = tokio::spawn(async move { follow_counting(&url, None, Duration::from_secs(60), Some(counter)).await });
    // Others reconnect by themselves, as EventSource does.
    let mut followers = Vec::new();
    for n in 2..=4 {
        followers.push(follow_in_background(create(&core, n).await, Duration::from_secs(90)));
    }
    // Kill core-app once the client has reso's offer (0.5 s) and not alfa's (2.3 s).
    tokio::time::timeout(Duration::from_secs(20), received.wait_for(|&n| n >= 1))
        .await
        .expect("reso's offer reaches the client")
        .unwrap();
    let killed = p.core.as_mut().unwrap().kill9();
    let before = first.await.unwrap();
    assert!(before.broken.is_some() || !before.closed, "the stream ended with the process: {before:?}");
    assert!(!before.events.is_empty() && !before.completed(), "killed mid-quote: {:#?}", before.events);

    p.start_core();
    let restarted = Instant::now();
    let last_id = before.last_id();
    let mut attempts = 0;
    let after = loop {
        attempts += 1;
        let stream = follow(&quote.events_url, last_id.as_deref(), Duration::from_secs(60)).await;
        if stream.status == 200 {
            break stream;
        }
        assert!(restarted.elapsed() < Duration::from_secs(30), "core-app did not come back: {stream:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resumed = after.events.first().map(|e| e.at);
    let mut events = before.events.clone();
    events.extend(after.events.iter().cloned());
    let results = verify(&quote, &events);
    let outcome = settle(followers, restarted).await;

    eprintln!(
        "MEASURED SIGKILL of core-app (restarted {} after the kill): the hand-driven client had {} event(s) (last \
         id {:?}), resumed with Last-Event-ID after {attempts} attempt(s) and got {} more, first {} after the \
         restart; its results {:?}; all other {} quotes complete {} after the restart with {} reconnects; \
         duplicates 0",
        secs(restarted.duration_since(killed)),
        before.events.len(),
        last_id,
        after.events.len(),
        secs(resumed.map_or(Duration::ZERO, |t| t.saturating_duration_since(restarted))),
        results.iter().map(|(k, v)| (k.as_str(), v.status.as_str())).collect::<Vec<_>>(),
        outcome.quotes,
        secs(outcome.last_complete.saturating_duration_since(restarted)),
        outcome.reconnects,
    );
    assert!(after.events.first().is_some_and(|e| Some(e.seq()) > before.events.last().map(Timed::seq)));
    assert!(results.values().all(|r| r.status == "offer"), "nothing lost: {results:?}");
    assert_eq!(outcome.results, outcome.quotes * INSURERS.len(), "nothing lost, nothing duplicated");
    assert!(outcome.reconnects >= outcome.quotes as u32, "every other client lost its stream and came back");
}
