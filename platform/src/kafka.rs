//! Kafka plumbing shared by the services.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Partitions of the quote-events topic: quotes spread over them by id, in order per quote.
pub const PARTITIONS: i32 = 6;

/// Creates `topic` when it does not exist, so consumers find it at once instead of after
/// a metadata refresh; a failure is logged, not fatal (the broker may auto-create it).
pub async fn ensure_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = match ClientConfig::new().set("bootstrap.servers", brokers).create()
    {
        Ok(a) => a,
        Err(e) => return tracing::warn!(error = %e, "kafka admin client"),
    };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    match admin.create_topics(&[new], &options).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => tracing::info!(topic = %t, "topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => tracing::warn!(topic = %t, %code, "topic not created"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, topic, "cannot create topic"),
    }
}
