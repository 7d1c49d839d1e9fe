//! The poller's SQL: claim due tasks under a lease, write progress, finish a task together
//! with its outbox event, release leases. Every write is guarded by
//! `lease_owner = me AND status = 'pending'`, so a replica that lost its lease changes nothing.
//!
//! Times are the database's (`now()`), never the replica's clock.

use crate::outbox;
use chrono::Utc;
use domain::events::{InsurerOutcome, QuoteEvent};
use platform::trace::TraceParent;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use std::time::Duration;
use uuid::Uuid;

/// A task this replica holds a lease on.
#[derive(Debug, sqlx::FromRow)]
pub struct ClaimedTask {
    pub application_id: Uuid,
    pub insurer_ref: Option<String>,
    pub attempts: i32,
    /// The deadline had passed when the task was claimed.
    pub expired: bool,
    /// Seconds from the claim to the deadline (negative when passed).
    pub deadline_in: f64,
    /// Seconds since the application arrived.
    pub age: f64,
    /// The application, only while the calculation still has to be created.
    pub request: Option<Json<Value>>,
    /// The application's W3C `traceparent` (none for applications stored before traces).
    pub traceparent: Option<String>,
}

/// Claims up to `limit` due tasks of `insurer` whose lease is free or has run out.
pub async fn claim(
    pool: &PgPool,
    insurer: &str,
    me: &str,
    lease: Duration,
    limit: usize,
) -> sqlx::Result<Vec<ClaimedTask>> {
    sqlx::query_as(
        "WITH due AS (
             SELECT application_id FROM tasks
             WHERE insurer = $1 AND status = 'pending' AND next_poll_at <= now()
               AND (lease_until IS NULL OR lease_until < now())
             ORDER BY next_poll_at
             LIMIT $4
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tasks t SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
         FROM due, applications a
         WHERE t.insurer = $1 AND t.application_id = due.application_id AND a.id = t.application_id
         RETURNING t.application_id, t.insurer_ref, t.attempts, t.deadline <= now() AS expired,
                   EXTRACT(EPOCH FROM t.deadline - now())::float8 AS deadline_in,
                   EXTRACT(EPOCH FROM now() - a.created_at)::float8 AS age,
                   CASE WHEN t.insurer_ref IS NULL THEN a.request END AS request, a.traceparent",
    )
    .bind(insurer)
    .bind(me)
    .bind(lease.as_secs_f64())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
}

/// How long until some task of `insurer` may become claimable (due and not leased), or
/// `None` when it has no pending task.
pub async fn next_due(pool: &PgPool, insurer: &str) -> sqlx::Result<Option<Duration>> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM min(GREATEST(next_poll_at, COALESCE(lease_until, next_poll_at))) - now())::float8
         FROM tasks WHERE insurer = $1 AND status = 'pending'",
    )
    .bind(insurer)
    .fetch_one(pool)
    .await?;
    Ok(seconds.map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)))
}

/// Stores progress and releases the lease; the next call is due after `wait`, but never
/// after the deadline (so an unanswered task expires on time). False when the lease was lost.
pub async fn reschedule(
    pool: &PgPool,
    insurer: &str,
    me: &str,
    application_id: Uuid,
    insurer_ref: Option<&str>,
    attempts: u32,
    wait: Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tasks SET insurer_ref = COALESCE($4, insurer_ref), attempts = $5,
             next_poll_at = LEAST(now() + make_interval(secs => $6), deadline),
             lease_owner = NULL, lease_until = NULL, updated_at = now()
         WHERE application_id = $1 AND insurer = $2 AND lease_owner = $3 AND status = 'pending'",
    )
    .bind(application_id)
    .bind(insurer)
    .bind(me)
    .bind(insurer_ref)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(wait.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the task with `outcome` and appends its event, in one transaction: status,
/// `version + 1`, lease released, outbox row with that version. Returns the event, or
/// `None` when the lease was lost (nothing is written then).
// The row's key (insurer, me, id), its new state (reference, attempts, outcome) and the trace.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    pool: &PgPool,
    insurer: &str,
    me: &str,
    application_id: Uuid,
    insurer_ref: Option<&str>,
    attempts: u32,
    outcome: InsurerOutcome,
    trace: &TraceParent,
) -> sqlx::Result<Option<QuoteEvent>> {
    let mut tx = pool.begin().await?;
    let version: Option<i32> = sqlx::query_scalar(
        "UPDATE tasks SET status = $4::task_status, version = version + 1, insurer_ref = COALESCE($5, insurer_ref),
             attempts = $6, lease_owner = NULL, lease_until = NULL, updated_at = now()
         WHERE application_id = $1 AND insurer = $2 AND lease_owner = $3 AND status = 'pending'
         RETURNING version",
    )
    .bind(application_id)
    .bind(insurer)
    .bind(me)
    .bind(status_of(&outcome))
    .bind(insurer_ref)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(version) = version else {
        tx.rollback().await?;
        return Ok(None);
    };
    let version = u32::try_from(version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let event = QuoteEvent::new(application_id, insurer, version, outcome, Utc::now());
    outbox::append(&mut tx, &event, trace).await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Releases every lease this replica holds on `insurer`'s pending tasks (shutdown). A
/// released task waits at least a second, in case a call was cut off mid-flight.
pub async fn release_all(pool: &PgPool, insurer: &str, me: &str) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE tasks SET lease_owner = NULL, lease_until = NULL,
             next_poll_at = LEAST(GREATEST(next_poll_at, now() + interval '1 second'), deadline)
         WHERE insurer = $1 AND lease_owner = $2 AND status = 'pending'",
    )
    .bind(insurer)
    .bind(me)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The `task_status` of a final outcome.
fn status_of(outcome: &InsurerOutcome) -> &'static str {
    match outcome {
        InsurerOutcome::Pending => "pending",
        InsurerOutcome::Offer { .. } => "offer",
        InsurerOutcome::Declined { .. } => "declined",
        InsurerOutcome::Failed { .. } => "failed",
        InsurerOutcome::Expired => "expired",
    }
}
