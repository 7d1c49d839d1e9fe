//! The poller's SQL: claim due tasks under a lease, write progress, finish a task together
//! with its outbox event, release leases. Every write is guarded by
//! `lease_owner = me AND status = 'pending'`, so a replica that lost its lease changes nothing.
//!
//! Times are the database's (`now()`), never the replica's clock.

use chrono::Utc;
use domain::events::{InsurerOutcome, QuoteEvent};
use platform::trace::TraceParent;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use std::time::Duration;
use uuid::Uuid;

/// A task this replica holds a lease on.
#[derive(Debug)]
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

/// What one look for due tasks found.
#[derive(Debug, Default)]
pub struct Claim {
    /// The tasks claimed.
    pub tasks: Vec<ClaimedTask>,
    /// How long until another pending task of the insurer may become claimable (due and not
    /// leased); `None` when it has no other pending task.
    pub next_due: Option<Duration>,
}

/// A claimed task, or none (`application_id` null), with the next due time of the rest.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    application_id: Option<Uuid>,
    insurer_ref: Option<String>,
    attempts: Option<i32>,
    expired: Option<bool>,
    deadline_in: Option<f64>,
    age: Option<f64>,
    request: Option<Json<Value>>,
    traceparent: Option<String>,
    next_due: Option<f64>,
}

/// Claims up to `limit` due tasks of `insurer` whose lease is free or has run out, and reads
/// when the next of the others may become claimable — one statement, since the claim loop
/// needs both after every look.
///
/// A claimed task's `next_poll_at` is its lease's end (or its deadline, if sooner): the
/// earliest time another replica may take it over (a renewal moves only the lease). So the
/// due tasks are the first entries of the `tasks_due` index, and the next due time is the
/// entry after the claimed ones — neither part reads the tasks held (but those held past
/// their first lease, which the lease check skips).
pub async fn claim(pool: &PgPool, insurer: &str, me: &str, lease: Duration, limit: usize) -> sqlx::Result<Claim> {
    // The UPDATE's effects are invisible to the statement's other parts, so the next due
    // time leaves out the rows just claimed by id. One row comes back even when nothing was
    // claimed (the LEFT JOINs), carrying the next due time. A task held past its first lease
    // keeps that lease's end in `next_poll_at`; when it comes first, the answer is its renewed
    // lease's end, possibly later than another task's due time — the fallback tick bounds that.
    //
    // The claimed rows are found by key (`= ANY` of an array, the application by a LATERAL
    // lookup), not joined: the planner sizes a join by `LIMIT $4` (every free slot, often
    // hundreds), not by the few tasks a claim finds, and with statistics taken during a
    // backlog its generic plan hash-joined sequential scans of `tasks` and `applications`:
    // every claim read both tables whole (sequential scans were a fifth of the aggregator
    // database's CPU in one profile at 120 quotes/s; `claims_find_their_tasks_by_key…`).
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "WITH due AS (
             SELECT application_id FROM tasks
             WHERE insurer = $1 AND status = 'pending' AND next_poll_at <= now()
               AND (lease_until IS NULL OR lease_until < now())
             ORDER BY next_poll_at
             LIMIT $4
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE tasks t SET lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                 next_poll_at = LEAST(now() + make_interval(secs => $3), t.deadline)
             WHERE t.insurer = $1 AND t.application_id = ANY (ARRAY(SELECT application_id FROM due))
             RETURNING t.application_id, t.insurer_ref, t.attempts, t.deadline <= now() AS expired,
                       EXTRACT(EPOCH FROM t.deadline - now())::float8 AS deadline_in
         ), rest AS (
             SELECT EXTRACT(EPOCH FROM GREATEST(next_poll_at, COALESCE(lease_until, next_poll_at)) - now())::float8
                    AS next_due
             FROM tasks WHERE insurer = $1 AND status = 'pending'
               AND application_id NOT IN (SELECT application_id FROM due)
             ORDER BY next_poll_at
             LIMIT 1
         )
         SELECT c.*, EXTRACT(EPOCH FROM now() - a.created_at)::float8 AS age,
                CASE WHEN c.insurer_ref IS NULL THEN a.request END AS request, a.traceparent, rest.next_due
         FROM (SELECT 1) AS one LEFT JOIN rest ON true LEFT JOIN claimed c ON true
         LEFT JOIN LATERAL (SELECT created_at, request, traceparent FROM applications WHERE id = c.application_id
                            LIMIT 1) a ON true",
    )
    .bind(insurer)
    .bind(me)
    .bind(lease.as_secs_f64())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let next_due =
        rows.first().and_then(|r| r.next_due).map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO));
    let tasks = rows
        .into_iter()
        .filter_map(|r| {
            Some(ClaimedTask {
                application_id: r.application_id?,
                insurer_ref: r.insurer_ref,
                attempts: r.attempts?,
                expired: r.expired?,
                deadline_in: r.deadline_in?,
                age: r.age?,
                request: r.request,
                traceparent: r.traceparent,
            })
        })
        .collect();
    Ok(Claim { tasks, next_due })
}

/// Stores progress and the next due time, never after the deadline (so an unanswered task
/// expires on time), and releases the lease — or, with `keep`, renews it for that long and
/// keeps it (the step holds the task in memory until its next call). False when the lease
/// was lost.
// The row's key (insurer, me, id), its progress (reference, attempts, wait) and the lease.
#[allow(clippy::too_many_arguments)]
pub async fn reschedule(
    pool: &PgPool,
    insurer: &str,
    me: &str,
    application_id: Uuid,
    insurer_ref: Option<&str>,
    attempts: u32,
    wait: Duration,
    keep: Option<Duration>,
) -> sqlx::Result<bool> {
    // A renewal needs a lease still running: one that ran out may have been claimed again,
    // by another replica or by this one's own claim loop for a second runner.
    // A NULL lease length makes both lease columns NULL: released. A kept task keeps its
    // `next_poll_at` (its first lease's end; `claim` reads the lease too, so no one takes it
    // before the renewed lease ends) and `updated_at`: with no indexed column changed, the
    // renewal is a HOT update (the table leaves room for it), which writes no index entry.
    let done = sqlx::query(
        "UPDATE tasks SET insurer_ref = COALESCE($4, insurer_ref), attempts = $5,
             next_poll_at = CASE WHEN $7::float8 IS NULL
                                 THEN LEAST(now() + make_interval(secs => $6), deadline) ELSE next_poll_at END,
             lease_owner = CASE WHEN $7::float8 IS NULL THEN NULL ELSE lease_owner END,
             lease_until = now() + make_interval(secs => $7::float8),
             updated_at = CASE WHEN $7::float8 IS NULL THEN now() ELSE updated_at END
         WHERE application_id = $1 AND insurer = $2 AND lease_owner = $3 AND status = 'pending'
           AND ($7::float8 IS NULL OR lease_until > now())",
    )
    .bind(application_id)
    .bind(insurer)
    .bind(me)
    .bind(insurer_ref)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(wait.as_secs_f64())
    .bind(keep.map(|lease| lease.as_secs_f64()))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the task with `outcome` and appends its event, atomically: status, `version + 1`,
/// lease released, outbox row with that version — one statement, so one round trip. Returns
/// the event, or `None` when the lease was lost (nothing is written then).
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
    // The version is the row's, known only inside the statement: the payload gets it there.
    // Like the poller's other writes, it commits without waiting for the WAL flush: the relay
    // flushes what it read before publishing it (`relay`), so Kafka never has an outcome a
    // crashed Postgres could lose; an outcome lost before that is polled again.
    let mut event = QuoteEvent::new(application_id, insurer, 0, outcome, Utc::now());
    let version: Option<i32> = sqlx::query_scalar(
        "WITH finished AS (
             UPDATE tasks SET status = $4::task_status, version = version + 1, insurer_ref = COALESCE($5, insurer_ref),
                 attempts = $6, lease_owner = NULL, lease_until = NULL, updated_at = now()
             WHERE application_id = $1 AND insurer = $2 AND lease_owner = $3 AND status = 'pending'
             RETURNING version
         ), appended AS (
             INSERT INTO outbox (event_id, message_key, payload, traceparent)
             SELECT $7, $8, jsonb_set($9::jsonb, '{version}', to_jsonb(version)), $10 FROM finished
         )
         SELECT version FROM finished",
    )
    .bind(application_id)
    .bind(insurer)
    .bind(me)
    .bind(status_of(&event.outcome))
    .bind(insurer_ref)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(event.event_id)
    .bind(application_id.to_string())
    .bind(Json(&event))
    .bind(trace.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(version) = version else { return Ok(None) };
    event.version = u32::try_from(version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(event))
}

/// Releases every lease this replica holds on `insurer`'s pending tasks (shutdown). A
/// released task waits a second, in case a call was cut off mid-flight.
pub async fn release_all(pool: &PgPool, insurer: &str, me: &str) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE tasks SET lease_owner = NULL, lease_until = NULL,
             next_poll_at = LEAST(now() + interval '1 second', deadline)
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
