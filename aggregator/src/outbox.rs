//! The transactional outbox: events are written in the same transaction as the state
//! change they describe, and a single relay publishes them to Kafka in commit order per
//! quote, deleting each row only after the broker acknowledged it.

use domain::events::QuoteEvent;
use platform::trace::TraceParent;
use sqlx::PgConnection;

/// NOTIFY channel the outbox trigger signals on every insert.
pub const CHANNEL: &str = "osago_outbox";

/// Appends `event` to the outbox inside the caller's transaction; the relay sends `trace` as the
/// message's `traceparent` header. (The poller's `finish` writes its row in the same statement
/// as the task's final state instead, to spend one round trip.)
pub async fn append(tx: &mut PgConnection, event: &QuoteEvent, trace: &TraceParent) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO outbox (event_id, message_key, payload, traceparent) VALUES ($1, $2, $3, $4)")
        .bind(event.event_id)
        .bind(event.quote_id.to_string())
        .bind(sqlx::types::Json(event))
        .bind(trace.to_string())
        .execute(tx)
        .await?;
    Ok(())
}
