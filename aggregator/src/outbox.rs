//! The transactional outbox: events are written in the same transaction as the state
//! change they describe, and a single relay publishes them to Kafka in commit order per
//! quote, deleting each row only after the broker acknowledged it.

use domain::events::QuoteEvent;
use sqlx::PgConnection;

/// NOTIFY channel the outbox trigger signals on every insert.
pub const CHANNEL: &str = "osago_outbox";

/// Appends `event` to the outbox inside the caller's transaction.
pub async fn append(tx: &mut PgConnection, event: &QuoteEvent) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO outbox (event_id, message_key, payload) VALUES ($1, $2, $3)")
        .bind(event.event_id)
        .bind(event.quote_id.to_string())
        .bind(sqlx::types::Json(event))
        .execute(tx)
        .await?;
    Ok(())
}
