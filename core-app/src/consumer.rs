//! Consumes quote events from Kafka and stores each one exactly once; the offset is stored
//! only after the database commit, so a crash replays events rather than losing them
//! (and replays are recognised by event id).

use crate::store::{self, Applied};
use domain::events::QuoteEvent;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all, try_join_all};
use platform::db::Dedicated;
use platform::trace::TraceParent;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Statistics};
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::oneshot::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
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
/// Each round is split among [`LANES`] lanes, each quote's events always on the same one
/// ([`lane_of`]), and each lane applies its part of a round after its part of the round before,
/// on a connection of its own: so each quote's events are applied in the log's order, two lanes
/// never wait for each other's row locks, and a lane waiting for the database (for its commit to
/// reach the disk, or for the CPU) does not hold up the other. Deciding by quote rather than by
/// round matters under load: a quote's six offers come over a second, so a round nearly always
/// shares a quote with the round before it, and rounds that had to wait for any round sharing
/// a quote ran one at a time. Offsets are stored in the log's order, each once every lane has
/// committed its part of the round.
///
/// A rebalance may take partitions away while rounds are in flight: their offsets are not
/// stored yet, so the partitions' next owner applies their events again (recognised by event
/// id, no result twice) and storing them here fails with a warning.
pub async fn run(pool: PgPool, consumer: QuoteEventConsumer, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (lanes, workers): (Vec<Lane>, Vec<JoinHandle<()>>) = (0..LANES).map(|_| Lane::start(&pool)).unzip();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
            // A round ending while no message comes has its offsets stored at once.
            ended = async { (&mut in_flight.front_mut().expect("a round in flight").applied).await },
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
        while in_flight.len() >= AHEAD {
            let oldest = in_flight.pop_front().expect("a round in flight");
            store_offsets(&consumer, &oldest.offsets, oldest.applied.await);
        }
        let Round { events, offsets } = round;
        let mut parts = Vec::with_capacity(LANES);
        for (lane, events) in lanes.iter().zip(by_lane(events)) {
            if !events.is_empty() {
                parts.push(lane.apply(events).await);
            }
        }
        in_flight.push_back(InFlight { applied: try_join_all(parts).map(|ended| ended.map(drop)).boxed(), offsets });
    }
    for round in in_flight {
        store_offsets(&consumer, &round.offsets, round.applied.await);
    }
    drop(lanes);
    for worker in workers {
        if let Err(e) = worker.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final offset commit failed");
    }
}

/// Lanes rounds are applied on ([`run`]), each on a connection outside the pool.
pub const LANES: usize = 2;

/// Rounds read ahead of the oldest one not yet committed, at most.
const AHEAD: usize = 4;

/// The lane a quote's events are applied on.
pub fn lane_of(quote: Uuid) -> usize {
    (quote.as_u128() % LANES as u128) as usize
}

/// A lane: a task applying the parts of rounds sent to it in order, on a connection of its
/// own. The parts that queued while it applied one are applied together next, in one call: a
/// lane behind catches up in fewer, larger transactions, as a backlog's rounds do.
struct Lane {
    parts: mpsc::Sender<Part>,
}

/// A round's events for one lane in the log's order, and who waits for them.
type Part = (Vec<Traced>, oneshot::Sender<()>);

impl Lane {
    /// The lane and its task, which ends once the lane is dropped and its parts applied.
    fn start(pool: &PgPool) -> (Self, JoinHandle<()>) {
        let (parts, mut waiting) = mpsc::channel::<Part>(AHEAD);
        let pool = pool.clone();
        let worker = tokio::spawn(async move {
            let conn = Dedicated::of(&pool);
            while let Some(first) = waiting.recv().await {
                let mut taken = vec![first];
                while let Ok(part) = waiting.try_recv() {
                    taken.push(part);
                }
                let (events, applied): (Vec<_>, Vec<_>) = taken.into_iter().unzip();
                apply_round(&conn, &pool, by_quote(events.into_iter().flatten())).await;
                for applied in applied {
                    let _ = applied.send(());
                }
            }
        });
        (Lane { parts }, worker)
    }

    /// Queues `events` (in the log's order); the receiver resolves once they are committed, and
    /// fails if the lane's task panicked.
    async fn apply(&self, events: Vec<Traced>) -> oneshot::Receiver<()> {
        let (applied, committed) = oneshot::channel();
        // A send fails only once the task has ended (a panic): the receiver then fails too.
        let _ = self.parts.send((events, applied)).await;
        committed
    }
}

/// Events taken apart by lane ([`lane_of`]), the parts in lane order, the log's order kept.
fn by_lane(events: Vec<Traced>) -> Vec<Vec<Traced>> {
    let mut parts: Vec<Vec<Traced>> = (0..LANES).map(|_| Vec::new()).collect();
    for traced in events {
        parts[lane_of(traced.event.quote_id)].push(traced);
    }
    parts
}

/// Events grouped by quote, in the order given within each quote.
fn by_quote(events: impl IntoIterator<Item = Traced>) -> Vec<Vec<Traced>> {
    let mut grouped: Vec<Vec<Traced>> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for traced in events {
        let slot = *index.entry(traced.event.quote_id).or_insert_with(|| {
            grouped.push(Vec::new());
            grouped.len() - 1
        });
        grouped[slot].push(traced);
    }
    grouped
}

/// A round being applied: its lanes' parts committing, and the offsets to store once they have.
struct InFlight {
    applied: BoxFuture<'static, Result<(), RecvError>>,
    offsets: Vec<(String, i32, i64)>,
}

/// Stores a committed round's offsets. A lane's panic is the consumer's, as when rounds ran on
/// its own task: going on would store a later round's offsets, which cover this one's events.
fn store_offsets(consumer: &QuoteEventConsumer, offsets: &[(String, i32, i64)], applied: Result<(), RecvError>) {
    if applied.is_err() {
        panic!("a lane of the consumer ended with a round unapplied (its panic is logged above)");
    }
    for (topic, partition, offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
            tracing::warn!(error = %e, "storing offset failed");
        }
    }
}

/// A round of messages, read: its events in the log's order, and the last offset of each
/// partition (an unreadable message's too).
struct Round {
    events: Vec<Traced>,
    offsets: Vec<(String, i32, i64)>,
}

impl Round {
    /// Reads `batch`; a message that cannot be read is skipped loudly (it will not become
    /// readable).
    fn read(batch: &[BorrowedMessage<'_>]) -> Self {
        let mut events: Vec<Traced> = Vec::new();
        for message in batch {
            match message.payload().map(serde_json::from_slice::<QuoteEvent>) {
                Some(Ok(event)) => {
                    let trace = trace_of(message);
                    let span = tracing::info_span!("event", quote = %event.quote_id, trace_id = %trace.trace_id());
                    platform::trace::span_in(&span, &trace);
                    events.push(Traced { event, span });
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
        Round { events, offsets }
    }
}

/// Applies a round in the log's order within each quote, in one database call on `lane`:
/// under load, each round trip waited for the CPU, and a slow round left a larger one behind
/// it. Should that call fail, the round is applied again event by event (applying is
/// idempotent) on `pool`, concurrently across quotes.
async fn apply_round(lane: &Dedicated, pool: &PgPool, round: Vec<Vec<Traced>>) {
    let events: Vec<&Traced> = round.iter().flatten().collect();
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
    join_all(round.iter().map(|events| async move {
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
