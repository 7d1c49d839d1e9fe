//! Intake's writer: applications that arrive together are stored together, in one statement
//! and one commit ([`platform::group_commit`]), each with a task per usable insurer.

use crate::registry;
use chrono::{DateTime, Utc};
use domain::intake::AssignedInsurer;
use platform::Problem;
use platform::group_commit::{GroupCommit, Limits};
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

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

/// The handle the intake handlers write through.
#[derive(Clone)]
pub struct Writer {
    batches: GroupCommit<NewApplication, Option<Created>>,
}

impl Writer {
    /// Starts the writer on `pool`; it stops when the last handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        Self::with_limits(pool, Limits::named("intake_batch_size", "intake_overloaded_total"))
    }

    /// [`Writer::start`], refusing applications queued longer than `max_queued`.
    pub fn with_max_queued(pool: PgPool, max_queued: Duration) -> Self {
        Self::with_limits(pool, Limits { max_queued, ..Limits::named("intake_batch_size", "intake_overloaded_total") })
    }

    fn with_limits(pool: PgPool, limits: Limits) -> Self {
        let batches = GroupCommit::start(limits, move |applications: Vec<NewApplication>| {
            let pool = pool.clone();
            async move {
                let created = store(&pool, &applications).await.map_err(Problem::database)?;
                Ok(created.into_iter().map(Ok).collect())
            }
        });
        Self { batches }
    }

    /// Stores `application` with the next batch.
    pub async fn write(&self, application: NewApplication) -> Outcome {
        self.batches.write(application).await
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
