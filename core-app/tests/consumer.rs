//! The Kafka consumer applies a round of events (everything already fetched) in one
//! transaction: against a real broker and Postgres, a backlog of events for several quotes —
//! with a duplicate, a stale version and an event whose quote is not stored yet — ends
//! exactly as if each had been applied alone.

use core_app::store;
use domain::events::{InsurerOutcome, QuoteEvent};
use domain::intake::{Accepted, AssignedInsurer};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use uuid::Uuid;

fn accepted(id: Uuid) -> Accepted {
    let insurer = |name: &str| AssignedInsurer { name: name.into(), display_name: name.into() };
    Accepted {
        id,
        insurers: vec![insurer("alfa"), insurer("ingos")],
        deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
    }
}

/// A migrated database and a one-partition topic of their own.
async fn database_and_topic(name: &str) -> (sqlx::PgPool, String) {
    let (pool, _) = testkit::fresh_database(name).await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    (pool, testkit::fresh_topic(&format!("quote_events_{name}"), 1).await)
}

/// Writes `events` to `topic`, each keyed by its quote, in order.
async fn produce(topic: &str, events: &[QuoteEvent]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", testkit::kafka_brokers()).create().unwrap();
    for event in events {
        let payload = serde_json::to_vec(event).unwrap();
        let key = event.quote_id.to_string();
        producer.send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(5)).await.unwrap();
    }
}

/// core-app's consumer of `topic` in a group of its own, running until the sender is used.
fn start_consumer(pool: &sqlx::PgPool, topic: &str) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let consumer = core_app::consumer::consumer(&testkit::kafka_brokers(), &testkit::unique_name("round"), topic)
        .expect("consumer");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(core_app::consumer::run(pool.clone(), consumer, async {
        let _ = stopped.await;
    }));
    (stop, running)
}

#[tokio::test]
async fn a_backlog_is_applied_together_exactly_as_one_by_one() {
    let prometheus = platform::metrics::install();
    let (pool, topic) = database_and_topic("consumer").await;
    let quotes: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    // The last quote is stored only after its events were consumed: they wait as early events.
    for &id in &quotes[..19] {
        store::create(&pool, &accepted(id), None, b"h", chrono::Duration::seconds(1), None).await.unwrap();
    }

    // The backlog is in Kafka before the consumer starts, so its first rounds take many at once.
    let failed =
        |id| QuoteEvent::new(id, "ingos", 1, InsurerOutcome::Failed { reason: "down".into() }, chrono::Utc::now());
    let mut backlog = Vec::new();
    for &id in &quotes {
        let alfa = declined(id, 2, "no");
        backlog.extend([alfa.clone(), alfa, declined(id, 1, "stale"), failed(id)]);
    }
    produce(&topic, &backlog).await;
    let (stop, running) = start_consumer(&pool, &topic);
    let early =
        || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM early_events").fetch_one(&pool).await.unwrap() };
    let completed = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM quotes WHERE completed_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while completed().await < 19 || early().await < 3 {
        assert!(std::time::Instant::now() < until, "backlog not applied: {} complete", completed().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The late quote's events waited (the duplicate once); storing it applies them in
    // version order, where the older alfa result is no longer stale.
    assert_eq!(early().await, 3, "alfa's two results (the duplicate once) and ingos's wait for their quote");
    store::create(&pool, &accepted(quotes[19]), None, b"h", chrono::Duration::seconds(1), None).await.unwrap();

    let expected = |rows: &[(i64, &str, &str)]| -> Vec<(i64, String, String)> {
        rows.iter().map(|&(seq, name, reason)| (seq, name.to_string(), reason.to_string())).collect()
    };
    for (n, &id) in quotes.iter().enumerate() {
        let events: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, name, COALESCE(data->>'reason', '') FROM quote_events WHERE quote_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
        let want = if n < 19 {
            expected(&[(1, "status", "no"), (2, "status", "down"), (3, "complete", "")])
        } else {
            expected(&[(1, "status", "stale"), (2, "status", "no"), (3, "status", "down"), (4, "complete", "")])
        };
        assert_eq!(events, want, "quote {n}: each result once, in order, then complete");
    }
    assert_eq!(early().await, 0);
    // Counted once each, after commit: 19 in the consumer's round, the last when it was stored.
    let text = prometheus.render();
    let completed = text.lines().find_map(|l| l.strip_prefix("quotes_completed_total ")).map(str::trim);
    assert_eq!(completed, Some("20"), "{text}");
    stop.send(()).unwrap();
    running.await.unwrap();
}

/// An event the database refuses for what it holds (here a NUL character, which Postgres's text
/// cannot store) is skipped and counted, not retried forever: the events behind it are applied.
#[tokio::test]
async fn an_event_the_database_refuses_is_skipped_and_the_rest_applied() {
    let prometheus = platform::metrics::install();
    let (pool, topic) = database_and_topic("consumer_refused").await;
    let id = Uuid::new_v4();
    store::create(&pool, &accepted(id), None, b"h", chrono::Duration::seconds(1), None).await.unwrap();
    let refused = InsurerOutcome::Declined { reason: "no\0 cover".into() };
    let events = [
        QuoteEvent::new(id, "alfa", 1, refused, chrono::Utc::now()),
        QuoteEvent::new(id, "ingos", 1, InsurerOutcome::Failed { reason: "down".into() }, chrono::Utc::now()),
    ];
    produce(&topic, &events).await;
    let (stop, running) = start_consumer(&pool, &topic);
    let statuses = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT insurer, status FROM quote_insurers WHERE quote_id = $1 ORDER BY insurer",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while statuses().await.iter().any(|(insurer, status)| insurer == "ingos" && status == "pending") {
        assert!(std::time::Instant::now() < until, "the event behind the refused one was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = [("alfa".to_string(), "pending".to_string()), ("ingos".to_string(), "failed".to_string())];
    assert_eq!(statuses().await, want);
    let text = prometheus.render();
    let refused =
        text.lines().find(|l| l.starts_with("quote_events_consumed_total{") && l.contains("result=\"refused\""));
    assert_eq!(refused.and_then(|l| l.rsplit(' ').next()), Some("1"), "{text}");
    stop.send(()).unwrap();
    running.await.unwrap();
}

/// Two quotes' rows stored, the first locked by another transaction until it is rolled back;
/// the other on the held one's lane of the consumer or on another.
struct HeldQuote {
    pool: sqlx::PgPool,
    held: Uuid,
    other: Uuid,
    lock: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl HeldQuote {
    async fn new(pool: &sqlx::PgPool, same_lane: bool) -> Self {
        let held = Uuid::new_v4();
        let lane = core_app::consumer::lane_of;
        let other = std::iter::repeat_with(Uuid::new_v4).find(|&id| (lane(id) == lane(held)) == same_lane).unwrap();
        for id in [held, other] {
            store::create(pool, &accepted(id), None, b"h", chrono::Duration::seconds(1), None).await.unwrap();
        }
        let mut lock = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM quotes WHERE id = $1 FOR UPDATE").bind(held).execute(&mut *lock).await.unwrap();
        HeldQuote { pool: pool.clone(), held, other, lock: Some(lock) }
    }

    /// Lets the held quote go.
    async fn release(&mut self) {
        self.lock.take().expect("held").rollback().await.unwrap();
    }

    /// The quote's stored results: sequence number and reason. No quote completes here: the
    /// test binary's other tests count completions.
    async fn events(&self, id: Uuid) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT seq, data->>'reason' FROM quote_events WHERE quote_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Sessions of this database waiting for a lock.
    async fn lock_waiters(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

/// How long a test waits for the consumer.
const WAIT: Duration = Duration::from_secs(30);

fn declined(id: Uuid, version: u32, reason: &str) -> QuoteEvent {
    QuoteEvent::new(id, "alfa", version, InsurerOutcome::Declined { reason: reason.into() }, chrono::Utc::now())
}

/// A quote waiting for the database (here for its row, locked by another transaction) holds up
/// only its lane: a quote on the other lane is applied meanwhile, from the same round and from
/// the rounds after it.
#[tokio::test]
async fn a_quote_waiting_for_the_database_holds_up_only_its_lane() {
    let (pool, topic) = database_and_topic("consumer_lanes").await;
    let mut q = HeldQuote::new(&pool, false).await;
    // Both in Kafka before the consumer starts, so they make one round, the held quote first.
    produce(&topic, &[declined(q.held, 1, "held"), declined(q.other, 1, "first")]).await;
    let (stop, running) = start_consumer(&pool, &topic);
    testkit::eventually("the held quote's lane never reached its lock", WAIT, || async { q.lock_waiters().await == 1 })
        .await;
    testkit::eventually("the other lane's part of the round waited behind the held quote", WAIT, || async {
        !q.events(q.other).await.is_empty()
    })
    .await;
    produce(&topic, &[declined(q.other, 2, "second")]).await;
    testkit::eventually("a later round on the other lane waited behind the held quote", WAIT, || async {
        q.events(q.other).await.len() == 2
    })
    .await;
    assert_eq!(q.events(q.held).await, [], "the held quote is still locked");

    q.release().await;
    testkit::eventually("the held quote's event was not applied once it was free", WAIT, || async {
        !q.events(q.held).await.is_empty()
    })
    .await;
    assert_eq!(q.events(q.other).await, [(1, "first".to_string()), (2, "second".to_string())], "in the log's order");
    stop.send(()).unwrap();
    running.await.unwrap();
}

/// A quote on the lane of one waiting for the database waits behind it, in the log's order:
/// applied first, a quote's newer result would leave the older one stale, never stored.
#[tokio::test]
async fn a_quote_on_the_lane_of_one_waiting_for_the_database_waits_behind_it() {
    let (pool, topic) = database_and_topic("consumer_shared").await;
    let mut q = HeldQuote::new(&pool, true).await;
    // Both in Kafka before the consumer starts, so they make one round, the held quote first.
    produce(&topic, &[declined(q.held, 1, "held"), declined(q.other, 1, "first")]).await;
    let (stop, running) = start_consumer(&pool, &topic);
    testkit::eventually("the round never reached the held quote's lock", WAIT, || async {
        q.lock_waiters().await == 1
    })
    .await;
    assert_eq!(q.events(q.other).await, [], "the lane waits at the held quote, before the other");

    // Two more rounds queue on the lane, applied together once it is free.
    for (version, reason) in [(2, "second"), (3, "third")] {
        produce(&topic, &[declined(q.other, version, reason)]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(q.events(q.other).await, [], "the other quote's next results wait behind its first");
    assert_eq!(q.lock_waiters().await, 1, "and do not wait for a lock of their own");

    q.release().await;
    testkit::eventually("the rounds were not applied once the quote was free", WAIT, || async {
        q.events(q.other).await.len() == 3
    })
    .await;
    let want = [(1, "first".to_string()), (2, "second".to_string()), (3, "third".to_string())];
    assert_eq!(q.events(q.other).await, want, "in the log's order");
    assert_eq!(q.events(q.held).await, [(1, "held".to_string())]);
    stop.send(()).unwrap();
    running.await.unwrap();
}
