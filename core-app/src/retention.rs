//! core-app keeps no personal data, but it minimises what it keeps: after the retention
//! period the replay log of a finished quote and its idempotency key and request hash are
//! dropped; the quote and each insurer's result stay as anonymous statistics.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// Drops what finished quotes created before `cutoff` no longer need; returns how many quotes.
pub async fn purge(pool: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let quotes: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE quotes SET idempotency_key = NULL, request_hash = '\\x'::bytea
         WHERE completed_at IS NOT NULL AND created_at < $1 AND octet_length(request_hash) > 0 RETURNING id",
    )
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM quote_events WHERE quote_id = ANY($1)").bind(&quotes).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM early_events WHERE received_at < $1").bind(cutoff).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(quotes.len() as u64)
}

/// Purges every `every` until `shutdown`, keeping `retention` worth of data.
pub async fn run(pool: PgPool, retention: Duration, every: Duration, shutdown: impl Future<Output = ()>) {
    platform::periodic(every, shutdown, || async {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        match purge(&pool, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(quotes = n, "data past retention purged"),
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
    })
    .await
}
