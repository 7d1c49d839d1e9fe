//! Intake's writer: applications that arrive together are stored together, in one statement
//! and one commit (group commit). Each application is still written whole or not at all, with
//! a task per usable insurer; batch-mates merely share the transaction.
//!
//! There is no waiting for company: a batch is whatever queued while the previous ones were
//! in flight, so one application alone is written at once. Under load the statement, the
//! commit's WAL flush and the wake-up of the pollers are paid once per batch instead of once
//! per application.

use crate::registry;
use chrono::{DateTime, Utc};
use domain::intake::AssignedInsurer;
use platform::Problem;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Most applications in one statement.
const MAX_BATCH: usize = 64;
/// Batches in flight at once (each holds one pooled connection).
const IN_FLIGHT: usize = 4;
/// An application queued longer than this is refused (503) rather than stored: the database
/// is not keeping up, and the caller is better told to retry than left waiting.
pub const MAX_QUEUED: Duration = Duration::from_secs(3);
/// What a refused caller is told to wait.
const OVERLOADED_RETRY: Duration = Duration::from_secs(1);

/// One application to store.
#[derive(Debug, Clone)]
pub struct NewApplication {
    pub id: Uuid,
    pub partner: String,
    pub key: Option<String>,
    pub hash: Vec<u8>,
    pub request: Value,
    pub trace: String,
}

/// A stored application: its deadline and the insurers that got a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub deadline: DateTime<Utc>,
    pub insurers: Vec<AssignedInsurer>,
}

/// `None`: not stored, because its partner's key was taken or no insurer could take the work.
type Outcome = Result<Option<Created>, Problem>;

struct Job {
    application: NewApplication,
    queued: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// The handle the intake handlers write through.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer on `pool`; it stops when the last handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        Self::with_max_queued(pool, MAX_QUEUED)
    }

    /// [`Writer::start`], refusing applications queued longer than `max_queued`.
    pub fn with_max_queued(pool: PgPool, max_queued: Duration) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue, max_queued));
        Self { jobs }
    }

    /// Stores `application` with the next batch.
    pub async fn write(&self, application: NewApplication) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { application, queued: Instant::now(), reply }).map_err(|_| Problem::internal())?;
        answer.await.map_err(|_| Problem::internal())?
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>, max_queued: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // Waiting for a slot is when company gathers: whatever queued meanwhile joins.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A caller that gave up while queued (timed out, went away) gets no answer, so its
        // application is not stored either: a retry without a key would make it twice.
        jobs.retain(|job| !job.reply.is_closed());
        let (stale, jobs): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.queued.elapsed() >= max_queued);
        for job in stale {
            metrics::counter!("intake_overloaded_total").increment(1);
            let _ = job.reply.send(Err(Problem::unavailable("intake is overloaded; please retry", OVERLOADED_RETRY)));
        }
        if jobs.is_empty() {
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (applications, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.application, j.reply)).unzip();
            metrics::histogram!("intake_batch_size").record(applications.len() as f64);
            match store(&pool, &applications).await {
                Ok(created) => {
                    for (reply, created) in replies.into_iter().zip(created) {
                        let _ = reply.send(Ok(created));
                    }
                }
                Err(e) => {
                    let problem = Problem::database(e);
                    for reply in replies {
                        let _ = reply.send(Err(problem.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}

/// An application stored: its id, deadline, and its insurers' names and display names.
type StoredRow = (Uuid, DateTime<Utc>, Vec<String>, Vec<String>);

/// Stores `applications` in one statement: reads the live insurers, stores each application
/// whose partner's key is new with one task per usable insurer, and wakes those insurers'
/// pollers. Returns, in the order given, what was stored of each.
pub async fn store(pool: &PgPool, applications: &[NewApplication]) -> sqlx::Result<Vec<Option<Created>>> {
    // With every breaker open, each task would fail at once: `usable` is empty then, and the
    // applications are refused instead of accepting doomed work. Times are the database's.
    // A key given twice in one batch is taken by the first; the second is then a replay. Rows
    // go in in key order: an insert waits for a concurrent batch's uncommitted row of the same
    // key, and two batches holding two keys in opposite orders would wait for each other.
    let sql = format!(
        "WITH live AS (
             SELECT name, display_name, breaker_state,
                    now() + quote_timeout_ms * interval '1 millisecond' AS deadline
             FROM insurers WHERE {alive}
         ), usable AS (
             SELECT * FROM live WHERE EXISTS (SELECT 1 FROM live WHERE breaker_state <> 'open')
         ), application AS (
             INSERT INTO applications (id, partner, idempotency_key, request_hash, request, deadline, traceparent)
             SELECT i.id, i.partner, i.key, i.hash, i.request, u.deadline, i.trace
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[], $6::text[])
                      WITH ORDINALITY AS i (id, partner, key, hash, request, trace, n),
                  (SELECT max(deadline) AS deadline FROM usable HAVING count(*) > 0) AS u
             ORDER BY i.partner, i.key, i.n
             ON CONFLICT (partner, idempotency_key) DO NOTHING
             RETURNING id, deadline
         ), assigned AS (
             INSERT INTO tasks (application_id, insurer, deadline)
             SELECT application.id, usable.name, usable.deadline FROM application, usable
         ), notified AS (
             SELECT count(pg_notify($7, name)) AS n FROM usable WHERE EXISTS (SELECT 1 FROM application)
         )
         SELECT application.id, application.deadline,
                (SELECT array_agg(name ORDER BY name) FROM usable),
                (SELECT array_agg(display_name ORDER BY name) FROM usable)
         FROM application, notified",
        alive = *registry::ALIVE
    );
    let rows: Vec<StoredRow> = sqlx::query_as(&sql)
        .bind(applications.iter().map(|a| a.id).collect::<Vec<_>>())
        .bind(applications.iter().map(|a| a.partner.as_str()).collect::<Vec<_>>())
        .bind(applications.iter().map(|a| a.key.as_deref()).collect::<Vec<_>>())
        .bind(applications.iter().map(|a| a.hash.as_slice()).collect::<Vec<_>>())
        .bind(applications.iter().map(|a| &a.request).collect::<Vec<_>>())
        .bind(applications.iter().map(|a| a.trace.as_str()).collect::<Vec<_>>())
        .bind(registry::TASKS_CHANNEL)
        .fetch_all(pool)
        .await?;
    let mut stored: std::collections::HashMap<Uuid, Created> = rows
        .into_iter()
        .map(|(id, deadline, names, display_names)| {
            let insurers =
                names.into_iter().zip(display_names).map(|(name, display_name)| AssignedInsurer { name, display_name });
            (id, Created { deadline, insurers: insurers.collect() })
        })
        .collect();
    Ok(applications.iter().map(|a| stored.remove(&a.id)).collect())
}
