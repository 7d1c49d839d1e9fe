//! core-app enforces each quote's deadline itself, so a quote completes even when the
//! aggregator or Kafka is down; after a restart, overdue quotes are completed at once. The
//! same loop applies early events that a stopped `create` left behind.

use crate::store;
use sqlx::PgPool;
use std::time::Duration;

/// How often overdue quotes are looked for.
const EVERY: Duration = Duration::from_millis(250);

/// Completes overdue quotes, and applies orphaned early events, until `shutdown` resolves.
pub async fn run(pool: PgPool, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        // Orphans first: their events were on time, and would be refused once the quote expired.
        match store::adopt_orphans(&pool, 100).await {
            Ok(0) => {}
            Ok(quotes) => tracing::warn!(quotes, "early events applied after their quote's create stopped"),
            Err(e) => tracing::warn!(error = %e, "applying orphaned early events failed"),
        }
        match store::expire_due(&pool, 100).await {
            Ok(expired) if !expired.is_empty() => {
                metrics::counter!("quotes_expired_total").increment(expired.len() as u64);
                tracing::info!(count = expired.len(), "overdue quotes completed");
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring quotes failed"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
