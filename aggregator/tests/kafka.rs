//! rdkafka against the real local broker: an idempotent producer and a consumer group keep
//! each quote's events in order, and committed offsets are not delivered again.

use chrono::Utc;
use domain::events::{InsurerOutcome, QuoteEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

fn consumer(group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer")
}

async fn drain(consumer: &StreamConsumer, expected: usize, quiet: Duration) -> Vec<QuoteEvent> {
    let mut events = vec![];
    while events.len() < expected {
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(message) => {
                let message = message.expect("kafka message");
                let event: QuoteEvent = serde_json::from_slice(message.payload().unwrap()).expect("envelope");
                assert_eq!(message.key().unwrap(), event.quote_id.to_string().as_bytes(), "keyed by quote id");
                events.push(event);
            }
            Err(_) => break,
        }
    }
    events
}

#[tokio::test]
async fn idempotent_producer_and_consumer_group_keep_per_quote_order() {
    let topic = testkit::fresh_topic("quote_events", 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .expect("producer");

    let quotes: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let per_quote = 25;
    let sends = (1..=per_quote).flat_map(|version| {
        quotes.iter().map(move |quote| QuoteEvent::new(*quote, "alfa", version, InsurerOutcome::Pending, Utc::now()))
    });
    let mut deliveries = vec![];
    for event in sends {
        let payload = serde_json::to_vec(&event).unwrap();
        let key = event.quote_id.to_string();
        let (producer, topic) = (&producer, &topic);
        deliveries.push(async move {
            producer
                .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
        });
    }
    // All in flight together, as in production; the idempotent producer keeps their order.
    for delivery in futures::future::join_all(deliveries).await {
        delivery.expect("delivered with acks=all");
    }

    let group = testkit::unique_name("core_app");
    let first = consumer(&group);
    first.subscribe(&[&topic]).unwrap();
    let events = drain(&first, quotes.len() * per_quote as usize, Duration::from_secs(20)).await;
    assert_eq!(events.len(), quotes.len() * per_quote as usize);
    let mut versions: HashMap<Uuid, Vec<u32>> = HashMap::new();
    for e in &events {
        versions.entry(e.quote_id).or_default().push(e.version);
    }
    for quote in &quotes {
        assert_eq!(versions[quote], (1..=per_quote).collect::<Vec<_>>(), "events of one quote arrive in order");
    }
    first.commit_consumer_state(CommitMode::Sync).expect("commit");
    drop(first);

    // The same group resumes after its committed offsets: nothing is delivered twice.
    let resumed = consumer(&group);
    resumed.subscribe(&[&topic]).unwrap();
    assert!(drain(&resumed, 1, Duration::from_secs(8)).await.is_empty());

    // A new group reads the topic from the start.
    let other = consumer(&testkit::unique_name("audit"));
    other.subscribe(&[&topic]).unwrap();
    assert_eq!(drain(&other, events.len(), Duration::from_secs(20)).await.len(), events.len());
}
