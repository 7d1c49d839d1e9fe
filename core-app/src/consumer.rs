//! Consumes quote events from Kafka and stores each one exactly once; the offset is stored
//! only after the database commit, so a crash replays events rather than losing them
//! (and replays are recognised by event id).

use crate::store::{self, Applied};
use domain::events::QuoteEvent;
use futures::FutureExt;
use futures::future::join_all;
use platform::db::Dedicated;
use platform::trace::TraceParent;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Statistics};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinError, JoinHandle};
use tracing::Instrument;
use uuid::Uuid;

/// Messages taken into one round at most.
const BATCH: usize = 128;

/// Publishes librdkafka's statistics as metrics: the consumer lag per partition.
pub struct LagContext;

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (partition, p) in &topic.partitions {
                // -1 is librdkafka's "unknown" (e.g. a partition not assigned to us).
                if *partition >= 0 && p.consumer_lag >= 0 {
                    let labels = [("topic", name.clone()), ("partition", partition.to_string())];
                    metrics::gauge!("kafka_consumer_lag", &labels).set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// The consumer type core-app uses.
pub type QuoteEventConsumer = StreamConsumer<LagContext>;

/// A consumer of `topic` in `group` that commits only offsets stored after processing.
pub fn consumer(brokers: &str, group: &str, topic: &str) -> anyhow::Result<QuoteEventConsumer> {
    let consumer: QuoteEventConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        // The broker answers a fetch as soon as one byte is there (fetch.min.bytes = 1): a long
        // wait costs no latency, a short one only makes an idle consumer fetch 100 times a second.
        .set("fetch.wait.max.ms", "200")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("statistics.interval.ms", "5000")
        .create_with_context(LagContext)?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Processes messages until `shutdown` resolves, then commits what was processed.
///
/// Up to [`IN_FLIGHT`] rounds run at once, each on a connection of its own: a round spends much
/// of its time waiting for its commit to reach the disk, and the next one is applied meanwhile
/// instead of waiting behind it. Rounds in flight together hold no quote in common (a round
/// sharing one waits for those before it), so each quote's events are applied in the log's
/// order and two rounds never wait for each other's row locks. So a round waiting for the
/// database lets the one after it through, unless they share a quote, and holds up the rest.
/// Offsets are stored in the log's order, each once its round has committed.
///
/// A rebalance may take partitions away while two rounds are in flight: their offsets are not
/// stored yet, so the partitions' next owner applies their events again (recognised by event
/// id, no result twice) and storing them here fails with a warning.
pub async fn run(pool: PgPool, consumer: QuoteEventConsumer, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // On connections of their own, no pool pings one after each round.
    let lanes: Vec<Arc<Dedicated>> = (0..IN_FLIGHT).map(|_| Arc::new(Dedicated::of(&pool))).collect();
    let mut started = 0usize;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
            // A round ending while no message comes has its offsets stored at once.
            ended = async { (&mut in_flight.front_mut().expect("a round in flight").running).await },
                if !in_flight.is_empty() =>
            {
                let round = in_flight.pop_front().expect("a round in flight");
                store_offsets(&consumer, &round.offsets, ended);
                continue;
            }
        };
        let first = match first {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Whatever else is already fetched joins this round, without waiting for more.
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    break;
                }
                None => break,
            }
        }
        let round = Round::read(&batch);
        drop(batch);
        // A round waits for every round before it that holds one of its quotes (and so for
        // those before that one), and for the oldest when all lanes are taken.
        let shared = in_flight.iter().rposition(|running| !running.quotes.is_disjoint(&round.quotes));
        let wait_for = shared.map_or(0, |i| i + 1).max((in_flight.len() + 1).saturating_sub(IN_FLIGHT));
        for running in in_flight.drain(..wait_for) {
            let ended = running.running.await;
            store_offsets(&consumer, &running.offsets, ended);
        }
        let lane = lanes[started % IN_FLIGHT].clone();
        started = started.wrapping_add(1);
        let (quotes, offsets) = (round.quotes.clone(), round.offsets.clone());
        let pool = pool.clone();
        let running = tokio::spawn(async move { apply_round(&lane, &pool, round).await });
        in_flight.push_back(InFlight { running, quotes, offsets });
    }
    for running in in_flight {
        let ended = running.running.await;
        store_offsets(&consumer, &running.offsets, ended);
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final offset commit failed");
    }
}

/// Rounds applied at once at most ([`run`]), each on a connection outside the pool.
pub const IN_FLIGHT: usize = 2;

/// A round being applied: its task, its quotes and the offsets to store once it has committed.
struct InFlight {
    running: JoinHandle<()>,
    quotes: HashSet<Uuid>,
    offsets: Vec<(String, i32, i64)>,
}

/// Stores a committed round's offsets. A round's panic is the consumer's, as when rounds ran on
/// its own task: going on would store a later round's offsets, which cover this one's events.
fn store_offsets(consumer: &QuoteEventConsumer, offsets: &[(String, i32, i64)], ended: Result<(), JoinError>) {
    match ended {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a round ended unapplied: {e}"),
    }
    for (topic, partition, offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
            tracing::warn!(error = %e, "storing offset failed");
        }
    }
}

/// A round of messages, read: the events of each quote in the log's order, the quotes, and the
/// last offset of each partition (an unreadable message's too).
struct Round {
    events: Vec<Vec<Traced>>,
    quotes: HashSet<Uuid>,
    offsets: Vec<(String, i32, i64)>,
}

impl Round {
    /// Reads `batch`; a message that cannot be read is skipped loudly (it will not become
    /// readable).
    fn read(batch: &[BorrowedMessage<'_>]) -> Self {
        let mut events: Vec<Vec<Traced>> = Vec::new();
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for message in batch {
            match message.payload().map(serde_json::from_slice::<QuoteEvent>) {
                Some(Ok(event)) => {
                    let slot = *index.entry(event.quote_id).or_insert_with(|| {
                        events.push(Vec::new());
                        events.len() - 1
                    });
                    let trace = trace_of(message);
                    let span = tracing::info_span!("event", quote = %event.quote_id, trace_id = %trace.trace_id());
                    platform::trace::span_in(&span, &trace);
                    events[slot].push(Traced { event, span });
                }
                _ => {
                    metrics::counter!("quote_events_consumed_total", "result" => "unreadable").increment(1);
                    tracing::error!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "unreadable quote event skipped"
                    );
                }
            }
        }
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
            let offset = last.entry((m.topic(), m.partition())).or_insert(m.offset());
            *offset = (*offset).max(m.offset());
        }
        let offsets =
            last.into_iter().map(|((topic, partition), offset)| (topic.to_string(), partition, offset)).collect();
        Round { events, quotes: index.into_keys().collect(), offsets }
    }
}

/// Applies a round in the log's order within each quote, in one database call on `lane`:
/// under load, each round trip waited for the CPU, and a slow round left a larger one behind
/// it. Should that call fail, the round is applied again event by event (applying is
/// idempotent) on `pool`, concurrently across quotes.
async fn apply_round(lane: &Dedicated, pool: &PgPool, round: Round) {
    let events: Vec<&Traced> = round.events.iter().flatten().collect();
    if !events.is_empty() {
        let batch: Vec<&QuoteEvent> = events.iter().map(|traced| &traced.event).collect();
        match lane.run(async |conn| store::apply_all(conn, &batch).await).await {
            Ok(applied) => {
                events.iter().zip(applied).for_each(|(traced, applied)| traced.done(applied));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "applying the round together failed; one by one")
            }
        }
    }
    join_all(round.events.iter().map(|events| async move {
        for traced in events {
            let applied = apply_until_stored(pool, &traced.event).instrument(traced.span.clone()).await;
            traced.done(applied);
        }
    }))
    .await;
}

/// An event with the span it is applied in.
struct Traced {
    event: QuoteEvent,
    span: tracing::Span,
}

impl Traced {
    /// Logs and counts the event once it is committed.
    fn done(&self, applied: Applied) {
        let event = &self.event;
        self.span.in_scope(|| {
            tracing::info!(insurer = %event.insurer, version = event.version, result = applied.label(), "event applied")
        });
        metrics::counter!("quote_events_consumed_total", "result" => applied.label()).increment(1);
        store::count_completed(u64::from(applied.completed()));
        let lag = (chrono::Utc::now() - event.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::histogram!("quote_event_delivery_seconds").record(lag);
    }
}

/// The message's `traceparent` header, or a new trace for a message sent without one.
fn trace_of(message: &BorrowedMessage<'_>) -> TraceParent {
    let header = message.headers().and_then(|headers| {
        headers.iter().find(|h| h.key == platform::trace::HEADER).and_then(|h| h.value).map(String::from_utf8_lossy)
    });
    TraceParent::from_header(header.as_deref())
}

/// Retries while the database is unavailable: an event is skipped only when the database
/// refuses what it holds ([`store::refuses`]), since retried it would hold up every event behind
/// it for good.
async fn apply_until_stored(pool: &PgPool, event: &QuoteEvent) -> Applied {
    let mut wait = Duration::from_millis(100);
    loop {
        match store::apply(pool, event).await {
            Ok(applied) => return applied,
            Err(e) if store::refuses(&e) => {
                tracing::error!(error = %e, quote = %event.quote_id, event_id = %event.event_id, "event refused by the database; skipped");
                return Applied::Refused;
            }
            Err(e) => {
                tracing::warn!(error = %e, quote = %event.quote_id, "storing event failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
