//! Consumes quote events from Kafka and stores each one exactly once; the offset is stored
//! only after the database commit, so a crash replays events rather than losing them
//! (and replays are recognised by event id).

use crate::store::{self, Applied};
use domain::events::QuoteEvent;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Statistics};
use sqlx::PgPool;
use std::time::Duration;

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
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "10")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("statistics.interval.ms", "5000")
        .create_with_context(LagContext)?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Processes messages until `shutdown` resolves, then commits what was processed.
pub async fn run(pool: PgPool, consumer: QuoteEventConsumer, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match message.payload().map(serde_json::from_slice::<QuoteEvent>) {
            Some(Ok(event)) => {
                let applied = apply_until_stored(&pool, &event).await;
                metrics::counter!("quote_events_consumed_total", "result" => applied.label()).increment(1);
                let lag = (chrono::Utc::now() - event.occurred_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                metrics::histogram!("quote_event_delivery_seconds").record(lag);
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
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %e, "storing offset failed");
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final offset commit failed");
    }
}

/// Retries while the database is unavailable: an event is never skipped.
async fn apply_until_stored(pool: &PgPool, event: &QuoteEvent) -> Applied {
    let mut wait = Duration::from_millis(100);
    loop {
        match store::apply(pool, event).await {
            Ok(applied) => return applied,
            Err(e) => {
                tracing::warn!(error = %e, quote = %event.quote_id, "storing event failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
