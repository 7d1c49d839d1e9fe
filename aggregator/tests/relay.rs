//! The outbox relay against real Postgres and Kafka: a row whose transaction commits late
//! is still published, rows are deleted only once delivered (a steady stream's rows each
//! published once), a second relay stands by while the first holds the lock, the relay
//! vacuums the outbox itself as rows come and go, and busy rounds are paced apart.

use chrono::Utc;
use domain::events::{InsurerOutcome, QuoteEvent};
use platform::trace::TraceParent;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

fn event(quote: Uuid, insurer: &str) -> QuoteEvent {
    QuoteEvent::new(quote, insurer, 1, InsurerOutcome::Declined { reason: "test".into() }, Utc::now())
}

/// Up to `n` events with their `traceparent` header, waiting at most `quiet` for each.
async fn received_within(consumer: &StreamConsumer, n: usize, quiet: Duration) -> Vec<(QuoteEvent, Option<String>)> {
    let mut out = vec![];
    while out.len() < n {
        let Ok(message) = tokio::time::timeout(quiet, consumer.recv()).await else { break };
        let message = message.unwrap();
        let trace = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == "traceparent")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        out.push((serde_json::from_slice(message.payload().unwrap()).unwrap(), trace));
    }
    out
}

async fn received(consumer: &StreamConsumer, n: usize) -> Vec<(QuoteEvent, Option<String>)> {
    received_within(consumer, n, Duration::from_secs(15)).await
}

/// A fresh aggregator database, a fresh topic, and a consumer of it from the start.
async fn outbox_and_topic(name: &str) -> (sqlx::PgPool, String, StreamConsumer) {
    let (pool, _) = testkit::fresh_database(name).await;
    aggregator::db::MIGRATOR.run(&pool).await.unwrap();
    let topic = testkit::fresh_topic(name, 3).await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("group.id", testkit::unique_name(name))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    (pool, topic, consumer)
}

/// A relay on `topic`, running until the returned sender says `true`.
fn start_relay(pool: &sqlx::PgPool, topic: &str) -> (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (stop, mut stopped) = watch::channel(false);
    let producer = aggregator::relay::producer(&testkit::kafka_brokers()).unwrap();
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    (stop, tokio::spawn(aggregator::relay::run(pool.clone(), producer, topic.to_string(), shutdown)))
}

async fn outbox_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_late_commit_is_published_and_only_one_relay_runs() {
    let (pool, topic, consumer) = outbox_and_topic("relay").await;

    // Transaction A takes the lower id but commits after B.
    let quote = Uuid::new_v4();
    let (late, early) = (event(quote, "alfa"), event(quote, "reso"));
    let trace = TraceParent::root();
    let mut a = pool.begin().await.unwrap();
    aggregator::outbox::append(&mut a, &late, &trace).await.unwrap();
    let mut b = pool.begin().await.unwrap();
    aggregator::outbox::append(&mut b, &early, &trace.child()).await.unwrap();
    b.commit().await.unwrap();

    let (stop, first) = start_relay(&pool, &topic);
    let got = received(&consumer, 1).await;
    assert_eq!(got.iter().map(|(e, _)| e.event_id).collect::<Vec<_>>(), [early.event_id]);
    let sent = TraceParent::parse(got[0].1.as_deref().unwrap()).expect("a valid traceparent header");
    assert_eq!(sent.trace_id(), trace.trace_id(), "the quote's trace travels with the message");

    a.commit().await.unwrap();
    let got = received(&consumer, 1).await;
    assert_eq!(
        got.iter().map(|(e, _)| e.event_id).collect::<Vec<_>>(),
        [late.event_id],
        "the late commit is not skipped"
    );
    for _ in 0..50 {
        if outbox_rows(&pool).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outbox_rows(&pool).await, 0, "delivered rows are deleted");

    // A second relay stands by: while the first runs, a row is published exactly once.
    let (stop_second, second) = start_relay(&pool, &topic);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = pool.acquire().await.unwrap();
    let once = event(Uuid::new_v4(), "alfa");
    aggregator::outbox::append(&mut conn, &once, &trace).await.unwrap();
    // A second copy would follow within milliseconds; three quiet seconds are plenty.
    let got = received_within(&consumer, 2, Duration::from_secs(3)).await;
    assert_eq!(got.iter().map(|(e, _)| e.event_id).collect::<Vec<_>>(), [once.event_id], "published once");

    // When the active relay stops, the standby takes over.
    stop.send(true).unwrap();
    first.await.unwrap().unwrap();
    let handover = event(Uuid::new_v4(), "reso");
    aggregator::outbox::append(&mut conn, &handover, &trace).await.unwrap();
    let got = received(&consumer, 1).await;
    assert_eq!(
        got.iter().map(|(e, _)| e.event_id).collect::<Vec<_>>(),
        [handover.event_id],
        "the standby published it"
    );
    stop_second.send(true).unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_is_published_once_each_and_then_deleted() {
    let (pool, topic, consumer) = outbox_and_topic("relay_stream").await;
    let (stop, relay) = start_relay(&pool, &topic);

    // Rows committed one by one while rounds run: a round deletes the rows the one before it
    // delivered, and must not publish them again.
    let trace = TraceParent::root();
    let mut sent = std::collections::BTreeSet::new();
    let mut conn = pool.acquire().await.unwrap();
    for _ in 0..300 {
        let event = event(Uuid::new_v4(), "alfa");
        sent.insert(event.event_id);
        aggregator::outbox::append(&mut conn, &event, &trace).await.unwrap();
    }
    let mut got = received(&consumer, 300).await;
    // A copy would follow its first within milliseconds; two quiet seconds are plenty.
    got.extend(received_within(&consumer, 1, Duration::from_secs(2)).await);
    let ids: Vec<Uuid> = got.iter().map(|(e, _)| e.event_id).collect();
    let unique: std::collections::BTreeSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "each row published once");
    assert_eq!(unique, sent, "every row published");
    assert_eq!(outbox_rows(&pool).await, 0, "delivered rows are deleted");

    // Rows still arriving do not hold up a stop: a round always follows then. Most of a busy
    // relay's time is the wait between paced rounds, so the stop usually lands there (a relay
    // that polled the finished shutdown again panicked in one run of three).
    drop(conn);
    let mut writing = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (pool, trace) = (pool.clone(), trace);
        writing.spawn(async move {
            // Without waiting for the flush, rows come faster than rounds.
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET synchronous_commit = off").execute(&mut *conn).await.unwrap();
            loop {
                aggregator::outbox::append(&mut conn, &event(Uuid::new_v4(), "reso"), &trace).await.unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), relay)
        .await
        .expect("the relay stops while rows keep arriving")
        .unwrap()
        .unwrap();
    writing.abort_all();
}

async fn outbox_pages(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT pg_relation_size('outbox') / current_setting('block_size')::int8")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_relay_keeps_the_outbox_heap_small_as_rows_come_and_go() {
    let (pool, topic, consumer) = outbox_and_topic("relay_vacuum").await;
    // Autovacuum would come at its own time; the relay must not depend on it.
    sqlx::query("ALTER TABLE outbox SET (autovacuum_enabled = false)").execute(&pool).await.unwrap();
    let (stop, relay) = start_relay(&pool, &topic);

    // Every round reads the whole heap: deleted rows left in it are read again and again.
    let trace = TraceParent::root();
    let (chunk, chunks) = (200, 30);
    let mut first_chunk_pages = 0;
    for n in 0..chunks {
        let mut tx = pool.begin().await.unwrap();
        for _ in 0..chunk {
            aggregator::outbox::append(&mut tx, &event(Uuid::new_v4(), "alfa"), &trace).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(received(&consumer, chunk).await.len(), chunk);
        if n == 0 {
            first_chunk_pages = outbox_pages(&pool).await;
        }
    }
    let pages = outbox_pages(&pool).await;
    assert!(
        pages * 2 < first_chunk_pages * chunks as i64,
        "{pages} pages after {chunks} chunks of {chunk} rows, one chunk took {first_chunk_pages}"
    );
    stop.send(true).unwrap();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn rows_committed_without_waiting_for_the_flush_are_durable_before_they_are_published() {
    let (pool, topic, consumer) = outbox_and_topic("relay_durable").await;
    let (stop, relay) = start_relay(&pool, &topic);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A poller's `finish` commits without waiting for the WAL flush. Each row's WAL position,
    // read in its transaction after the insert, must be on disk by the time Kafka has the row.
    let trace = TraceParent::root();
    let mut behind = Vec::new();
    for _ in 0..20 {
        let event = event(Uuid::new_v4(), "alfa");
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await.unwrap();
        aggregator::outbox::append(&mut tx, &event, &trace).await.unwrap();
        let written: String =
            sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text").fetch_one(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        let got = received(&consumer, 1).await;
        assert_eq!(got.iter().map(|(e, _)| e.event_id).collect::<Vec<_>>(), [event.event_id]);
        let flushed: bool = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn")
            .bind(&written)
            .fetch_one(&pool)
            .await
            .unwrap();
        if !flushed {
            behind.push(written);
        }
    }
    assert!(behind.is_empty(), "published before their WAL was flushed: {behind:?}");
    stop.send(true).unwrap();
    relay.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_coming_faster_than_rounds_go_in_rounds_paced_apart() {
    let (pool, topic, consumer) = outbox_and_topic("relay_paced").await;
    // The relay's rounds, counted by pg_stat_statements for this database's sessions (only a
    // superuser may turn tracking on; the relay's sessions, opened after, inherit it).
    let database = pool.connect_options().get_database().unwrap().to_string();
    let admin = PgConnectOptions::from_str(&testkit::pg_admin_url()).unwrap().database(&database);
    let mut admin = PgConnection::connect_with(&admin).await.unwrap();
    for setting in [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements".to_string(),
        format!("ALTER DATABASE {database} SET pg_stat_statements.track = 'top'"),
    ] {
        sqlx::query(&setting).execute(&mut admin).await.unwrap();
    }
    let (stop, relay) = start_relay(&pool, &topic);

    // Four writers that do not wait for the flush commit rows far faster than rounds back to
    // back (a few milliseconds each) would carry them a few at a time.
    let trace = TraceParent::root();
    let mut writing = tokio::task::JoinSet::new();
    let writers = 4;
    for _ in 0..writers {
        let (pool, trace) = (pool.clone(), trace);
        writing.spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET synchronous_commit = off").execute(&mut *conn).await.unwrap();
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            let mut rows = 0;
            while tokio::time::Instant::now() < until {
                aggregator::outbox::append(&mut conn, &event(Uuid::new_v4(), "alfa"), &trace).await.unwrap();
                rows += 1;
            }
            rows
        });
    }
    let sent: usize = writing.join_all().await.into_iter().sum();
    assert_eq!(received(&consumer, sent).await.len(), sent, "every row published");

    let (rounds, rows): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(calls), 0)::int8, coalesce(sum(rows), 0)::int8 FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query LIKE 'WITH gone AS%'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_statements is preloaded by scripts/infra.sh");
    assert_eq!(rows as usize, sent, "the rounds read every row once");
    // Two seconds of busy rounds, each at least ROUND_GAP after the one before, and a few to
    // carry what was left and to find nothing.
    let most = (Duration::from_secs(2).as_secs_f64() / aggregator::relay::ROUND_GAP.as_secs_f64()) as i64 + 10;
    assert!(rounds <= most, "{sent} rows in {rounds} rounds (at most {most} expected)");
    assert!(sent as i64 > 8 * most, "the writers were too slow to need pacing: {sent} rows");
    stop.send(true).unwrap();
    relay.await.unwrap().unwrap();
}
