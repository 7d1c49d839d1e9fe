//! Erases personal data after the retention period: the request of every application older
//! than the cut-off. Tasks (statuses, versions, timings) remain as anonymous statistics.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// Erases the requests of applications created before `cutoff`; returns how many.
pub async fn purge(pool: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE applications SET request = NULL, request_hash = '\\x'::bytea, idempotency_key = NULL, purged_at = now()
         WHERE purged_at IS NULL AND created_at < $1",
    )
    .bind(cutoff)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Purges every `every` until `shutdown`, keeping `retention` worth of data.
pub async fn run(pool: PgPool, retention: Duration, every: Duration, shutdown: impl Future<Output = ()>) {
    platform::periodic(every, shutdown, || async {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        match purge(&pool, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(applications = n, "data past retention purged"),
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
    })
    .await
}
