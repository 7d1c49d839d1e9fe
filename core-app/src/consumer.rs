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
use std::collections::HashMap;
use std::time::Duration;
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
pub async fn run(pool: PgPool, consumer: QuoteEventConsumer, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // Rounds run one at a time: on a connection of their own, no pool pings it after each.
    let rounds = Dedicated::of(&pool);
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
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
        apply_batch(&rounds, &pool, &batch).await;
        // Offsets only after every event of the round is committed to the database.
        for message in &batch {
            if let Err(e) = consumer.store_offset_from_message(message) {
                tracing::warn!(error = %e, "storing offset failed");
            }
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final offset commit failed");
    }
}

/// Applies one round of messages in order within a quote (the message key), as the log has
/// them, in one database call: under load, each round trip waited for the CPU, and a slow
/// round left a larger one behind it. Should that call fail, the round is applied again event
/// by event (applying is idempotent) on `pool`, concurrently across quotes.
async fn apply_batch(rounds: &Dedicated, pool: &PgPool, batch: &[BorrowedMessage<'_>]) {
    let mut quotes: Vec<Vec<Traced>> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for message in batch {
        match message.payload().map(serde_json::from_slice::<QuoteEvent>) {
            Some(Ok(event)) => {
                let slot = *index.entry(event.quote_id).or_insert_with(|| {
                    quotes.push(Vec::new());
                    quotes.len() - 1
                });
                let trace = trace_of(message);
                let span = tracing::info_span!("event", quote = %event.quote_id, trace_id = %trace.trace_id());
                platform::trace::span_in(&span, &trace);
                quotes[slot].push(Traced { event, span });
            }
            // A message we cannot read will not become readable; skip it loudly.
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
    let events: Vec<&Traced> = quotes.iter().flatten().collect();
    if !events.is_empty() {
        let round: Vec<&QuoteEvent> = events.iter().map(|traced| &traced.event).collect();
        match rounds.run(async |conn| store::apply_all(conn, &round).await).await {
            Ok(applied) => {
                events.iter().zip(applied).for_each(|(traced, applied)| traced.done(applied));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "applying the round together failed; one by one")
            }
        }
    }
    join_all(quotes.iter().map(|events| async move {
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
