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
    let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query("INSERT INTO outbox (event_id, message_key, payload, traceparent) VALUES ($1, $2, $3, $4)")
        .bind(event.event_id)
        .bind(event.quote_id.to_string())
        .bind(payload)
        .bind(trace.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

/// The event's JSON in two halves, around the value of its `version`: the statement that appends
/// a finished task's event learns the version only as it updates the task, and writes it in
/// between (text, so that the database need not parse the event to set one field).
pub fn around_version(event: &QuoteEvent) -> serde_json::Result<(String, String)> {
    let mut json = serde_json::to_string(event)?;
    let field = format!("\"version\":{}", event.version);
    // Only ids, the type and the insurer's name come before the version, and no JSON string can
    // hold `n":` (a quote inside one is escaped): the first match is the event's own field.
    let Some(at) = json.find(&field) else {
        return Err(serde::ser::Error::custom("a serialized event without its version"));
    };
    let tail = json.split_off(at + field.len());
    json.truncate(at + "\"version\":".len());
    debug_assert!(json.ends_with(",\"version\":"), "the version is a field of the event's own object: {json}");
    Ok((json, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::events::InsurerOutcome;
    use uuid::Uuid;

    #[test]
    fn an_event_joined_around_any_version_reads_back_with_it_and_nothing_else_changed() {
        // Texts that look like the version, in the insurer's name and in the reason: only the
        // event's own field is cut around.
        let reason = r#"{"version":0,"x":1} "version":0"#.to_string();
        let outcome = InsurerOutcome::Declined { reason };
        let event = QuoteEvent::new(Uuid::new_v4(), r#"a"version":0"#, 0, outcome, Utc::now());
        let (head, tail) = around_version(&event).unwrap();
        for version in [1u32, 7, u32::MAX] {
            let read: QuoteEvent = serde_json::from_str(&format!("{head}{version}{tail}")).unwrap();
            assert_eq!(read, QuoteEvent { version, ..event.clone() });
        }
    }
}
