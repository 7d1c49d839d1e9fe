//! The poller's SQL: claim due tasks under a lease, write progress, finish a task together
//! with its outbox event, release leases. Every write is guarded by
//! `lease_owner = me AND status = 'pending'`, so a replica that lost its lease changes nothing.
//!
//! Times are the database's (`now()`), never the replica's clock.

use chrono::Utc;
use domain::events::{InsurerOutcome, QuoteEvent};
use platform::trace::TraceParent;
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;
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
    /// The application's JSON, only while the calculation still has to be created. Text, read
    /// straight into the request (through a `serde_json::Value` it was 5–7 % of a poller's CPU).
    pub request: Option<String>,
    /// The application's W3C `traceparent` (none for applications stored before traces).
    pub traceparent: Option<String>,
}

/// What one look for due tasks found.
#[derive(Debug, Default)]
pub struct Claim {
    /// The tasks claimed.
    pub tasks: Vec<ClaimedTask>,
    /// How long until another pending task of the insurer may become claimable (due and not
    /// leased); `None` when none is due within the claim's horizon.
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
    request: Option<String>,
    traceparent: Option<String>,
    next_due: Option<f64>,
}

/// Claims up to `limit` due tasks of `insurer` whose lease is free or has run out, and reads
/// when the next of the others may become claimable, if that is within `horizon` — one
/// statement, since the claim loop needs both after every look.
///
/// A claimed task's `next_poll_at` is its lease's end (or its deadline, if sooner): the
/// earliest time another replica may take it over (a renewal moves only the lease). So the
/// due tasks are the first entries of the `tasks_due` index, and the next due time is the
/// entry after the claimed ones — neither part reads the tasks held (but those held past
/// their first lease, which the lease check skips).
///
/// The look for the next due time stops at `horizon` (the loop looks again by then anyway):
/// between now and a lease's length ahead lie the entries of every task claimed within that
/// lease and finished since, dead until vacuum, and an unbounded look walked them all to the
/// first live one — 20–300 buffers a claim at 70 quotes/s, against 10 for the due tasks.
pub async fn claim(
    db: impl sqlx::PgExecutor<'_>,
    insurer: &str,
    me: &str,
    lease: Duration,
    limit: usize,
    horizon: Duration,
) -> sqlx::Result<Claim> {
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
               AND next_poll_at <= now() + make_interval(secs => $5)
               AND application_id NOT IN (SELECT application_id FROM due)
             ORDER BY next_poll_at
             LIMIT 1
         )
         SELECT c.*, EXTRACT(EPOCH FROM now() - a.created_at)::float8 AS age,
                CASE WHEN c.insurer_ref IS NULL THEN a.request::text END AS request, a.traceparent, rest.next_due
         FROM (SELECT 1) AS one LEFT JOIN rest ON true LEFT JOIN claimed c ON true
         LEFT JOIN LATERAL (SELECT created_at, request, traceparent FROM applications WHERE id = c.application_id
                            LIMIT 1) a ON true",
    )
    .bind(insurer)
    .bind(me)
    .bind(lease.as_secs_f64())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(horizon.as_secs_f64())
    .fetch_all(db)
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

/// A held task to write back without an outcome: what its [`Write::write`] writes for it.
#[derive(Debug, Clone)]
pub struct Reschedule {
    pub application_id: Uuid,
    pub insurer_ref: Option<String>,
    pub attempts: u32,
    /// When it is due again, counted from the write (never after its deadline).
    pub wait: Duration,
    /// Renew the lease for this long and keep the task (the step holds it in memory until its
    /// next call), instead of releasing it.
    pub keep: Option<Duration>,
}

/// A task to end with an outcome: what its [`Write::write`] writes for it.
#[derive(Debug, Clone)]
pub struct Finish {
    pub application_id: Uuid,
    pub insurer_ref: Option<String>,
    pub attempts: u32,
    /// The event to append; its version is the row's, set by the statement.
    pub event: QuoteEvent,
    pub trace: TraceParent,
}

impl Finish {
    /// The task `application_id` of `insurer` ending with `outcome`, which occurred now.
    pub fn new(
        insurer: &str,
        application_id: Uuid,
        insurer_ref: Option<&str>,
        attempts: u32,
        outcome: InsurerOutcome,
        trace: &TraceParent,
    ) -> Self {
        Finish {
            application_id,
            insurer_ref: insurer_ref.map(str::to_string),
            attempts,
            event: QuoteEvent::new(application_id, insurer, 0, outcome.storable(), Utc::now()),
            trace: *trace,
        }
    }
}

/// Writes a batch of a poller's writes, one statement ([`Write::write`]) for writes of distinct tasks.
/// A task written twice in one batch would be updated once by such a statement, from either
/// write, and both told they were written; so a batch holding a task twice (two steps of one
/// replica holding one task: its claim loop took back a task whose lease ran out under a slow
/// step) is written in rounds of distinct tasks, in order, in one transaction — each write of
/// the task sees the one before, as separate statements would. Answers in the jobs' order.
pub(crate) async fn write_all<J: Write>(
    db: &mut PgConnection,
    insurer: &str,
    me: &str,
    jobs: Vec<J>,
) -> sqlx::Result<Vec<J::Answer>> {
    let rounds = rounds(&jobs.iter().map(Write::task).collect::<Vec<_>>());
    if rounds.len() <= 1 {
        return J::write(db, insurer, me, jobs).await;
    }
    let mut jobs: Vec<Option<J>> = jobs.into_iter().map(Some).collect();
    let mut answers: Vec<Option<J::Answer>> = jobs.iter().map(|_| None).collect();
    let mut tx = sqlx::Connection::begin(db).await?;
    for round in rounds {
        let batch = round.iter().map(|&i| jobs[i].take().expect("a job is in one round")).collect();
        for (i, answer) in round.into_iter().zip(J::write(&mut tx, insurer, me, batch).await?) {
            answers[i] = Some(answer);
        }
    }
    tx.commit().await?;
    Ok(answers.into_iter().map(|a| a.expect("every job is answered")).collect())
}

/// A write of a held task, written with others of its kind in one statement.
pub(crate) trait Write: Sized {
    /// What the writer of each is told.
    type Answer;
    /// The task written.
    fn task(&self) -> Uuid;
    /// Writes a batch of distinct tasks' writes in one statement.
    fn write(
        db: &mut PgConnection,
        insurer: &str,
        me: &str,
        batch: Vec<Self>,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Answer>>> + Send;
}

impl Write for Reschedule {
    type Answer = bool;
    fn task(&self) -> Uuid {
        self.application_id
    }
    /// Stores each task's progress and next due time, never after its deadline (so an unanswered
    /// task expires on time), and releases its lease — or, with `keep`, renews it — one statement
    /// for them all. Answers for each, in order: false when its lease was lost.
    ///
    /// Like outcomes, they come in bursts (the tasks of one claim are polled together), and each
    /// was a statement, a commit and a pooled connection's ping of its own; under load a poller's
    /// pool grew to its limit with them (18 connections of a poller at 110 quotes/s).
    async fn write(db: &mut PgConnection, insurer: &str, me: &str, writes: Vec<Self>) -> sqlx::Result<Vec<bool>> {
        // A renewal needs a lease still running: one that ran out may have been claimed again,
        // by another replica or by this one's own claim loop for a second runner.
        // A NULL lease length makes both lease columns NULL: released. A kept task keeps its
        // `next_poll_at` (its first lease's end; `claim` reads the lease too, so no one takes it
        // before the renewed lease ends) and `updated_at`: with no indexed column changed, the
        // renewal is a HOT update (the table leaves room for it), which writes no index entry.
        // The rows are found by key, as for outcomes.
        let written: Vec<Uuid> = sqlx::query_scalar(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $4::text[], $5::int4[], $6::float8[], $7::float8[])
                     AS i(application_id, insurer_ref, attempts, wait_s, keep_s)
             )
             UPDATE tasks t SET insurer_ref = COALESCE(i.insurer_ref, t.insurer_ref), attempts = i.attempts,
                 next_poll_at = CASE WHEN i.keep_s IS NULL
                                     THEN LEAST(now() + make_interval(secs => i.wait_s), t.deadline) ELSE t.next_poll_at END,
                 lease_owner = CASE WHEN i.keep_s IS NULL THEN NULL ELSE t.lease_owner END,
                 lease_until = now() + make_interval(secs => i.keep_s),
                 updated_at = CASE WHEN i.keep_s IS NULL THEN now() ELSE t.updated_at END
             FROM input i
             WHERE t.insurer = $2 AND t.application_id = ANY ($1::uuid[]) AND t.application_id = i.application_id
               AND t.lease_owner = $3 AND t.status = $8::task_status
               AND (i.keep_s IS NULL OR t.lease_until > now())
             RETURNING t.application_id",
        )
        .bind(writes.iter().map(|w| w.application_id).collect::<Vec<_>>())
        .bind(insurer)
        .bind(me)
        .bind(writes.iter().map(|w| w.insurer_ref.as_deref()).collect::<Vec<_>>())
        .bind(writes.iter().map(|w| i32::try_from(w.attempts).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(writes.iter().map(|w| w.wait.as_secs_f64()).collect::<Vec<_>>())
        .bind(writes.iter().map(|w| w.keep.map(|lease| lease.as_secs_f64())).collect::<Vec<_>>())
        .bind(pending_status())
        .fetch_all(db)
        .await?;
        let written: HashSet<Uuid> = written.into_iter().collect();
        Ok(writes.iter().map(|w| written.contains(&w.application_id)).collect())
    }
}

impl Write for Finish {
    type Answer = Option<QuoteEvent>;
    fn task(&self) -> Uuid {
        self.application_id
    }
    /// Ends each task with its outcome and appends its event, atomically: status, `version + 1`,
    /// lease released, outbox row with that version — one statement for them all, so one round
    /// trip and one commit. Answers for each, in order: its event, or `None` when the lease was
    /// lost (nothing is written for it then).
    ///
    /// A poller's tasks finish in bursts (the tasks of one claim are created together and polled
    /// together): at 90–110 quotes/s, 25–47 % of an insurer's outcomes came within 0.2 ms of the
    /// one before, each a statement and a commit of its own until they were written together.
    async fn write(
        db: &mut PgConnection,
        insurer: &str,
        me: &str,
        finishes: Vec<Self>,
    ) -> sqlx::Result<Vec<Option<QuoteEvent>>> {
        // The version is the row's, known only inside the statement: it goes between the two
        // halves of the event's JSON there (`outbox::around_version`).
        // Like the poller's other writes, it commits without waiting for the WAL flush: the relay
        // flushes what it read before publishing it (`relay`), so Kafka never has an outcome a
        // crashed Postgres could lose; an outcome lost before that is polled again.
        //
        // The rows are found by key (`= ANY`), not only through the join with the input: a generic
        // plan made while `tasks` was small hash-joined the input with every task of the insurer,
        // and kept doing so as the table grew (251 buffers a call for 2.8 tasks in one profile).
        let halves = finishes.iter().map(|f| crate::outbox::around_version(&f.event)).collect::<Result<Vec<_>, _>>();
        let (heads, tails): (Vec<String>, Vec<String>) =
            halves.map_err(|e| sqlx::Error::Encode(e.into()))?.into_iter().unzip();
        let rows: Vec<(Uuid, i32)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $4::text[], $5::text[], $6::int4[], $7::uuid[], $8::text[], $9::text[],
                                      $10::text[])
                     AS i(application_id, status, insurer_ref, attempts, event_id, head, tail, traceparent)
             ), finished AS (
                 UPDATE tasks t SET status = i.status::task_status, version = t.version + 1,
                     insurer_ref = COALESCE(i.insurer_ref, t.insurer_ref), attempts = i.attempts,
                     lease_owner = NULL, lease_until = NULL, updated_at = now()
                 FROM input i
                 WHERE t.insurer = $2 AND t.application_id = ANY ($1::uuid[]) AND t.application_id = i.application_id
                   AND t.lease_owner = $3 AND t.status = $11::task_status
                 RETURNING t.application_id, t.version, i.event_id, i.head, i.tail, i.traceparent
             ), appended AS (
                 INSERT INTO outbox (event_id, message_key, payload, traceparent)
                 SELECT event_id, application_id::text, head || version || tail, traceparent
                 FROM finished
             )
             SELECT application_id, version FROM finished",
        )
        .bind(finishes.iter().map(|f| f.application_id).collect::<Vec<_>>())
        .bind(insurer)
        .bind(me)
        .bind(finishes.iter().map(|f| f.event.outcome.status()).collect::<Vec<_>>())
        .bind(finishes.iter().map(|f| f.insurer_ref.as_deref()).collect::<Vec<_>>())
        .bind(finishes.iter().map(|f| i32::try_from(f.attempts).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(finishes.iter().map(|f| f.event.event_id).collect::<Vec<_>>())
        .bind(&heads)
        .bind(&tails)
        .bind(finishes.iter().map(|f| f.trace.to_string()).collect::<Vec<_>>())
        .bind(pending_status())
        .fetch_all(db)
        .await?;
        let versions: std::collections::HashMap<Uuid, i32> = rows.into_iter().collect();
        finishes
            .into_iter()
            .map(|f| {
                let Some(&version) = versions.get(&f.application_id) else { return Ok(None) };
                let mut event = f.event;
                event.version = u32::try_from(version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                Ok(Some(event))
            })
            .collect()
    }
}

/// The positions of `keys` in rounds in which each key appears once: a key's n-th occurrence
/// goes into round n, so rounds run in order keep each key's order.
fn rounds(keys: &[Uuid]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<(Vec<usize>, HashSet<Uuid>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let next = rounds.iter().rposition(|(_, seen)| seen.contains(key)).map_or(0, |r| r + 1);
        if next == rounds.len() {
            rounds.push((Vec::new(), HashSet::new()));
        }
        rounds[next].0.push(i);
        rounds[next].1.insert(*key);
    }
    rounds.into_iter().map(|(positions, _)| positions).collect()
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

/// The status a held task's writes require, bound rather than written into the statements:
/// with the literal, the planner may find a write's row through the partial `tasks_due` index
/// (the insurer only, then a filter) instead of the key. Its generic plan did so until the first
/// ANALYZE of a new database, where the two cost the same, and each write walked every pending
/// entry of its insurer (60–85 buffers a call against 7–18).
fn pending_status() -> &'static str {
    InsurerOutcome::Pending.status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::MIGRATOR;

    /// Index pages of `tasks_due` the backend has read and not yet reported (it reports at
    /// the end of a transaction, at most once a second): a difference within a transaction is
    /// what its statements read.
    async fn due_index_reads(tx: &mut sqlx::PgConnection) -> i64 {
        sqlx::query_scalar("SELECT pg_stat_get_xact_blocks_fetched('tasks_due'::regclass)").fetch_one(tx).await.unwrap()
    }

    /// Claims for "me" within one transaction, rolled back; with the pages of `tasks_due` read.
    async fn claim_reading(pool: &PgPool, horizon: Duration) -> (Claim, i64) {
        let mut tx = pool.begin().await.unwrap();
        let before = due_index_reads(&mut tx).await;
        let claim = claim(&mut *tx, "alfa", "me", Duration::from_secs(10), 8, horizon).await.unwrap();
        let reads = due_index_reads(&mut tx).await - before;
        tx.rollback().await.unwrap();
        (claim, reads)
    }

    /// Adds a pending task of `insurer` due `in_secs` from now (negative: overdue).
    async fn pending(pool: &PgPool, insurer: &str, in_secs: f64) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "WITH a AS (INSERT INTO applications (id, partner, request_hash, request, deadline)
                        VALUES ($1, 'test', '\\x00', '{}', now() + interval '1 hour'))
             INSERT INTO tasks (application_id, insurer, deadline, next_poll_at)
             VALUES ($1, $2, now() + interval '1 hour', now() + make_interval(secs => $3))",
        )
        .bind(id)
        .bind(insurer)
        .bind(in_secs)
        .execute(pool)
        .await
        .unwrap();
        id
    }

    /// A new database with `count` pending tasks of `insurers` (in turn), the first due
    /// `due_in_secs` from now and each next a millisecond later, never analysed or vacuumed.
    async fn database_with_tasks(prefix: &str, count: i64, insurers: &[&str], due_in_secs: f64) -> (PgPool, String) {
        let (pool, url) = testkit::fresh_database(prefix).await;
        MIGRATOR.run(&pool).await.unwrap();
        sqlx::query("ALTER TABLE tasks SET (autovacuum_enabled = false)").execute(&pool).await.unwrap();
        sqlx::query(
            "WITH a AS (
                 INSERT INTO applications (id, partner, request_hash, request, deadline)
                 SELECT gen_random_uuid(), 'test', '\\x00', '{}', now() FROM generate_series(1, $1) RETURNING id
             ), numbered AS (SELECT id, row_number() OVER () AS n FROM a)
             INSERT INTO tasks (application_id, insurer, deadline, next_poll_at)
             SELECT id, ($2::text[])[1 + n % cardinality($2::text[])], now() + interval '1 hour',
                    now() + make_interval(secs => $3) + n * interval '1 millisecond'
             FROM numbered",
        )
        .bind(count)
        .bind(insurers)
        .bind(due_in_secs)
        .execute(&pool)
        .await
        .unwrap();
        (pool, url)
    }

    #[tokio::test]
    async fn a_claim_looks_for_the_next_due_task_only_as_far_as_its_horizon() {
        // What a busy insurer leaves in `tasks_due` until vacuum: a claimed task's entry sits at
        // its lease's end, and once the task is finished the entry is dead. 20 000 of them, 30 to
        // 50 s ahead, made the same way (pending, then finished: no HOT update) and kept.
        let (pool, _) = database_with_tasks("claim", 20_000, &["alfa"], 30.0).await;
        sqlx::query("UPDATE tasks SET status = 'offer'").execute(&pool).await.unwrap();
        let due = pending(&pool, "alfa", -1.0).await;
        let soon = pending(&pool, "alfa", 0.5).await;
        let later = pending(&pool, "alfa", 55.0).await;
        let (claim, reads) = claim_reading(&pool, Duration::from_secs(1)).await;
        assert_eq!(claim.tasks.iter().map(|t| t.application_id).collect::<Vec<_>>(), [due]);
        let next = claim.next_due.expect("a task due within the horizon");
        assert!(next <= Duration::from_millis(500), "next due in {next:?}");
        // The claim stops before the dead entries.
        assert!(reads < 20, "the claim read {reads} pages of tasks_due");

        // With the next task beyond the horizon, the answer is "nothing due within it".
        sqlx::query("DELETE FROM tasks WHERE application_id = $1").bind(soon).execute(&pool).await.unwrap();
        let (claim, reads) = claim_reading(&pool, Duration::from_secs(1)).await;
        assert_eq!(claim.tasks.iter().map(|t| t.application_id).collect::<Vec<_>>(), [due]);
        assert_eq!(claim.next_due, None);
        assert!(reads < 20, "the claim read {reads} pages of tasks_due");

        // A horizon reaching it finds it, past the dead entries — walking them, as every claim
        // did before it had a horizon.
        let (claim, reads) = claim_reading(&pool, Duration::from_secs(60)).await;
        let next = claim.next_due.expect("the later task");
        assert!(next > Duration::from_secs(50) && next <= Duration::from_secs(55), "next due in {next:?} ({later})");
        assert!(reads > 50, "walking the dead entries read only {reads} pages of tasks_due");
    }

    #[tokio::test]
    async fn outcomes_ending_together_are_written_in_one_statement_each_with_its_event() {
        let (pool, _) = testkit::fresh_database("finish_all").await;
        MIGRATOR.run(&pool).await.unwrap();
        let (declined, failed, lost) = (
            pending(&pool, "alfa", -1.0).await,
            pending(&pool, "alfa", -1.0).await,
            pending(&pool, "alfa", -1.0).await,
        );
        let claimed = claim(&pool, "alfa", "me", Duration::from_secs(10), 8, Duration::from_secs(1)).await.unwrap();
        assert_eq!(claimed.tasks.len(), 3);
        // Another replica took `lost` over: its outcome must not be written.
        sqlx::query("UPDATE tasks SET lease_owner = 'other' WHERE application_id = $1")
            .bind(lost)
            .execute(&pool)
            .await
            .unwrap();
        let trace = TraceParent::root();
        let ending = |id, reason: &str| {
            let outcome = InsurerOutcome::Declined { reason: reason.into() };
            Finish::new("alfa", id, Some("ref"), 2, outcome, &trace)
        };
        let failure = Finish::new("alfa", failed, None, 4, InsurerOutcome::Failed { reason: "E: down".into() }, &trace);
        let finishes = [ending(declined, "taxi"), ending(lost, "late"), failure];
        let events = write_all(&mut pool.acquire().await.unwrap(), "alfa", "me", finishes.to_vec()).await.unwrap();

        let versions: Vec<Option<u32>> = events.iter().map(|e| e.as_ref().map(|e| e.version)).collect();
        assert_eq!(versions, [Some(1), None, Some(1)]);
        let tasks: Vec<(Uuid, String, i32, Option<String>)> = sqlx::query_as(
            "SELECT application_id, status::text, attempts, insurer_ref FROM tasks ORDER BY application_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for (id, status, attempts, reference) in tasks {
            let expected = match id {
                id if id == declined => ("declined", 2, Some("ref")),
                id if id == failed => ("failed", 4, None),
                _ => ("pending", 0, None),
            };
            assert_eq!((status.as_str(), attempts, reference.as_deref()), expected, "task {id}");
        }
        // One outbox row per outcome written, keyed by its quote, carrying the row's version.
        let outbox: Vec<(Uuid, String, sqlx::types::Json<QuoteEvent>)> =
            sqlx::query_as("SELECT event_id, message_key, payload::jsonb FROM outbox ORDER BY message_key")
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut written: Vec<(Uuid, String, u32)> = outbox.into_iter().map(|(e, k, p)| (e, k, p.0.version)).collect();
        written.sort();
        let mut wanted: Vec<(Uuid, String, u32)> =
            events.iter().flatten().map(|e| (e.event_id, e.quote_id.to_string(), 1)).collect();
        wanted.sort();
        assert_eq!(written, wanted);

        // Written once: the same outcomes again find no task pending.
        let again = write_all(&mut pool.acquire().await.unwrap(), "alfa", "me", finishes.to_vec()).await.unwrap();
        assert!(again.iter().all(Option::is_none), "{again:?}");
    }

    #[tokio::test]
    async fn a_batch_of_outcomes_finds_its_tasks_by_key_with_a_plan_made_while_the_table_was_small() {
        let insurers = ["alfa", "vsk", "reso", "rgs", "ingos", "sogaz"];
        let (pool, url) = database_with_tasks("finish_plan", 120, &insurers, -1.0).await;
        sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let poller = PgPool::connect_with(crate::poller::session_options(options)).await.unwrap();
        let mut conn = poller.acquire().await.unwrap();
        // The plan a prepared statement settles on after its fifth run, from the first; it is
        // made now, on a table of 120 tasks, and kept (no ANALYZE follows).
        sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await.unwrap();
        let lease = Duration::from_secs(10);
        let trace = TraceParent::root();
        let finish_claimed = async |conn: &mut sqlx::PgConnection| {
            let claimed = claim(&mut *conn, "alfa", "me", lease, 3, Duration::from_secs(1)).await.unwrap();
            let finishes: Vec<Finish> = claimed
                .tasks
                .iter()
                .map(|t| Finish::new("alfa", t.application_id, None, 1, InsurerOutcome::Expired, &trace))
                .collect();
            let pages = "SELECT pg_stat_get_xact_blocks_fetched('tasks'::regclass)
                                + pg_stat_get_xact_blocks_fetched('tasks_pkey'::regclass)";
            let before: i64 = sqlx::query_scalar(pages).fetch_one(&mut *conn).await.unwrap();
            let events = write_all(&mut *conn, "alfa", "me", finishes).await.unwrap();
            let after: i64 = sqlx::query_scalar(pages).fetch_one(&mut *conn).await.unwrap();
            assert_eq!(events.iter().flatten().count(), 3);
            after - before
        };
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        finish_claimed(&mut tx).await;
        // The table grows to 30 000 tasks, 5 000 of them the insurer's.
        sqlx::query(
            "WITH a AS (INSERT INTO applications (id, partner, request_hash, request, deadline)
                        SELECT gen_random_uuid(), 'test', '\\x00', '{}', now() FROM generate_series(1, 5000) RETURNING id)
             INSERT INTO tasks (application_id, insurer, deadline, status)
             SELECT id, i, now() + interval '1 hour', 'offer' FROM a, unnest($1::text[]) i",
        )
        .bind(insurers)
        .execute(&mut *tx)
        .await
        .unwrap();
        let reads = finish_claimed(&mut tx).await;
        // By key, 34 pages (lookups, new row versions and their index entries); found by the
        // insurer alone, 300: every leaf page of the key's index.
        assert!(reads < 100, "finishing 3 tasks read {reads} pages of tasks and its key");
    }

    #[tokio::test]
    async fn a_pollers_statements_are_planned_once_per_connection() {
        let (_, url) = database_with_tasks("planned_once", 60, &["alfa"], -1.0).await;
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let mut conn: sqlx::PgConnection =
            sqlx::Connection::connect_with(&crate::poller::session_options(options)).await.unwrap();
        let trace = TraceParent::root();
        for _ in 0..10 {
            let claimed = claim(&mut conn, "alfa", "me", Duration::from_secs(10), 3, Duration::ZERO).await.unwrap();
            let finishes = claimed
                .tasks
                .iter()
                .map(|t| Finish::new("alfa", t.application_id, None, 1, InsurerOutcome::Expired, &trace))
                .collect();
            assert_eq!(write_all(&mut conn, "alfa", "me", finishes).await.unwrap().len(), 3);
        }
        // Without the setting, the batch got a custom plan at each call, costing as much as its run.
        let plans: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let custom: Vec<_> = plans.iter().filter(|(_, _, custom)| *custom > 0).collect();
        assert!(custom.is_empty(), "planned at calls: {custom:?}");
        assert!(plans.iter().any(|(sql, generic, _)| sql.contains("unnest") && *generic == 10), "{plans:?}");
    }

    #[tokio::test]
    async fn a_batch_of_reschedules_writes_each_task_whose_lease_is_still_ours() {
        let (pool, _) = database_with_tasks("reschedule_all", 5, &["alfa"], -1.0).await;
        let lease = Duration::from_secs(10);
        let claimed = claim(&pool, "alfa", "me", lease, 5, Duration::ZERO).await.unwrap();
        let [released, kept, capped, taken, ran_out] =
            claimed.tasks.iter().map(|t| t.application_id).collect::<Vec<_>>()[..]
        else {
            panic!("claimed {} tasks", claimed.tasks.len())
        };
        sqlx::query("UPDATE tasks SET lease_owner = 'other' WHERE application_id = $1")
            .bind(taken)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE tasks SET lease_until = now() - interval '1 second' WHERE application_id = $1")
            .bind(ran_out)
            .execute(&pool)
            .await
            .unwrap();
        let write = |id, wait, keep| Reschedule {
            application_id: id,
            insurer_ref: Some(format!("ref-{id}")),
            attempts: 2,
            wait,
            keep,
        };
        let writes = [
            write(released, Duration::from_secs(2), None),
            write(kept, Duration::ZERO, Some(Duration::from_secs(20))),
            write(capped, Duration::from_secs(7200), None),
            write(taken, Duration::from_secs(2), None),
            write(ran_out, Duration::ZERO, Some(lease)),
        ];
        let written = write_all(&mut pool.acquire().await.unwrap(), "alfa", "me", writes.to_vec()).await.unwrap();
        assert_eq!(written, [true, true, true, false, false]);

        // Per task: owner, seconds until the lease ends, seconds until due, until the deadline, attempts, reference.
        let row = async |id: Uuid| -> (Option<String>, Option<f64>, f64, f64, i32, Option<String>) {
            sqlx::query_as(
                "SELECT lease_owner, EXTRACT(EPOCH FROM lease_until - now())::float8,
                        EXTRACT(EPOCH FROM next_poll_at - now())::float8, EXTRACT(EPOCH FROM deadline - now())::float8,
                        attempts, insurer_ref
                 FROM tasks WHERE application_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        };
        let (owner, lease_left, due_in, _, attempts, reference) = row(released).await;
        assert_eq!((owner, lease_left, attempts), (None, None, 2));
        assert_eq!(reference, Some(format!("ref-{released}")));
        assert!((1.0..=2.0).contains(&due_in), "released task due in {due_in} s");
        let (owner, lease_left, due_in, ..) = row(kept).await;
        assert_eq!(owner.as_deref(), Some("me"));
        assert!(lease_left.is_some_and(|s| (19.0..=20.0).contains(&s)), "kept task's lease ends in {lease_left:?} s");
        // A renewal keeps the due time the claim set (the first lease's end).
        assert!((8.0..=10.0).contains(&due_in), "kept task due in {due_in} s");
        let (_, _, due_in, deadline_in, ..) = row(capped).await;
        assert!((due_in - deadline_in).abs() < 1e-3, "due in {due_in} s, past its deadline in {deadline_in} s");
        let (owner, _, _, _, attempts, reference) = row(taken).await;
        assert_eq!((owner.as_deref(), attempts, reference), (Some("other"), 0, None));
        let (owner, lease_left, _, _, attempts, _) = row(ran_out).await;
        assert_eq!((owner.as_deref(), attempts), (Some("me"), 0));
        assert!(lease_left.is_some_and(|s| s < 0.0), "a lease that ran out was renewed: {lease_left:?}");
    }

    #[test]
    fn a_keys_later_writes_go_into_later_rounds_in_order() {
        let [a, b, c] = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        assert_eq!(rounds(&[a, b, c]), [vec![0, 1, 2]]);
        assert_eq!(rounds(&[a, b, a, c, a, b]), [vec![0, 1, 3], vec![2, 5], vec![4]]);
        assert!(rounds(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_batch_holding_a_task_twice_writes_it_as_two_statements_would() {
        let (pool, _) = database_with_tasks("twice", 3, &["alfa"], -1.0).await;
        let lease = Duration::from_secs(10);
        let claimed = claim(&pool, "alfa", "me", lease, 3, Duration::ZERO).await.unwrap();
        let [released, renewed, finished] = claimed.tasks.iter().map(|t| t.application_id).collect::<Vec<_>>()[..]
        else {
            panic!("claimed {} tasks", claimed.tasks.len())
        };
        let write = |id, keep| Reschedule { application_id: id, insurer_ref: None, attempts: 1, wait: lease, keep };
        let mut conn = pool.acquire().await.unwrap();
        // A release, then a renewal of the released task: the renewal finds no lease of ours.
        // A renewal, then a release: both written, the task released.
        let writes = vec![
            write(released, None),
            write(renewed, Some(lease)),
            write(released, Some(lease)),
            write(renewed, None),
        ];
        assert_eq!(write_all(&mut conn, "alfa", "me", writes).await.unwrap(), [true, true, false, true]);
        let owners: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT lease_owner FROM tasks WHERE application_id = ANY($1) ORDER BY application_id = $2",
        )
        .bind([released, renewed])
        .bind(renewed)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert_eq!(owners, [None, None]);

        // One outcome twice: the second finds the task finished, and one event is appended.
        let trace = TraceParent::root();
        let finish = Finish::new("alfa", finished, None, 1, InsurerOutcome::Expired, &trace);
        let events = write_all(&mut conn, "alfa", "me", vec![finish.clone(), finish]).await.unwrap();
        assert_eq!(events.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false]);
        let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(appended, 1);
    }

    #[tokio::test]
    async fn a_held_tasks_writes_find_it_by_its_key_before_any_analyze() {
        // A new database (no statistics yet; kept so) whose insurer has 5 000 tasks pending.
        let (pool, _) = database_with_tasks("writes", 5_000, &["alfa"], 60.0).await;
        let kept = pending(&pool, "alfa", -1.0).await;
        let finished = pending(&pool, "alfa", -1.0).await;
        let lease = Duration::from_secs(10);

        let mut tx = pool.begin().await.unwrap();
        // The plan a prepared statement settles on after its fifth run, from the first.
        sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan").execute(&mut *tx).await.unwrap();
        let claimed = claim(&mut *tx, "alfa", "me", lease, 8, Duration::from_secs(1)).await.unwrap();
        assert_eq!(claimed.tasks.len(), 2);
        let scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'tasks'";
        let scans_before: i64 = sqlx::query_scalar(scans).fetch_one(&mut *tx).await.unwrap();
        let before = due_index_reads(&mut tx).await;
        let renewal = Reschedule {
            application_id: kept,
            insurer_ref: Some("ref-1".into()),
            attempts: 1,
            wait: Duration::ZERO,
            keep: Some(lease),
        };
        let renewed = write_all(&mut tx, "alfa", "me", vec![renewal]).await.unwrap() == [true];
        let outcome = InsurerOutcome::Declined { reason: "test".into() };
        let finish = Finish::new("alfa", finished, Some("ref-2"), 2, outcome, &TraceParent::root());
        let event = write_all(&mut tx, "alfa", "me", vec![finish]).await.unwrap().remove(0);
        let reads = due_index_reads(&mut tx).await - before;
        let scanned = sqlx::query_scalar::<_, i64>(scans).fetch_one(&mut *tx).await.unwrap() - scans_before;
        tx.rollback().await.unwrap();
        assert!(renewed, "the lease renewal found its task");
        assert_eq!(scanned, 0, "the writes read the whole table");
        assert_eq!(event.map(|e| e.version), Some(1));
        // Through `tasks_due`, each write would read the leaf pages of all 5 000 entries.
        assert!(reads < 5, "a renewal and a finish read {reads} pages of tasks_due");
    }

    #[tokio::test]
    async fn a_pollers_claim_finds_its_tasks_by_index_on_a_new_database() {
        // A new database: 430 tasks of six insurers (a few pages), due, never analysed.
        let insurers = ["alfa", "vsk", "reso", "rgs", "ingos", "sogaz"];
        let (pool, url) = database_with_tasks("new_db", 430, &insurers, -1.0).await;
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let poller = PgPool::connect_with(crate::poller::session_options(options)).await.unwrap();
        let mut sequential = Vec::new();
        for db in [&pool, &poller] {
            let mut tx = db.begin().await.unwrap();
            // The plan a prepared statement settles on after its fifth run, from the first.
            sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan").execute(&mut *tx).await.unwrap();
            let scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'tasks'";
            let before: i64 = sqlx::query_scalar(scans).fetch_one(&mut *tx).await.unwrap();
            let claim =
                claim(&mut *tx, "alfa", "me", Duration::from_secs(10), 8, Duration::from_secs(1)).await.unwrap();
            assert_eq!(claim.tasks.len(), 8);
            let after: i64 = sqlx::query_scalar(scans).fetch_one(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            sequential.push(after - before);
        }
        // Without the poller's session settings the plan reads the table whole (the test's
        // premise); with them, by index — as it must once the table is large.
        assert!(sequential[0] > 0, "the plain session's claim scanned tasks {} times", sequential[0]);
        assert_eq!(sequential[1], 0, "the poller's claim scanned tasks {} times", sequential[1]);
    }

    #[tokio::test]
    async fn an_outcome_whose_reason_holds_a_nul_character_is_written_without_it() {
        // Postgres's text and jsonb refuse the character; core-app's database would refuse the
        // event and hold up every one behind it.
        let (pool, _) = database_with_tasks("nul_reason", 0, &["alfa"], 0.0).await;
        let id = pending(&pool, "alfa", -1.0).await;
        let claimed = claim(&pool, "alfa", "me", Duration::from_secs(10), 8, Duration::from_secs(1)).await.unwrap();
        assert_eq!(claimed.tasks.len(), 1);
        let outcome = InsurerOutcome::Declined { reason: "no\0 cover".into() };
        let finish = Finish::new("alfa", id, None, 1, outcome, &TraceParent::root());
        let mut conn = pool.acquire().await.unwrap();
        let event = write_all(&mut conn, "alfa", "me", vec![finish]).await.unwrap().remove(0).unwrap();
        assert_eq!(event.outcome, InsurerOutcome::Declined { reason: "no cover".into() });
        let stored: String =
            sqlx::query_scalar("SELECT payload::jsonb ->> 'reason' FROM outbox WHERE message_key = $1")
                .bind(id.to_string())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, "no cover");
    }
}
