//! The outbox relay: publishes outbox rows to Kafka and deletes each row once the broker
//! acknowledged it. One relay is active at a time (a Postgres advisory lock), so rows are
//! published in commit order; rows are claimed by reading what is there, never by
//! remembering an offset, so a transaction that commits late is not skipped.
//!
//! Nothing leaves for Kafka before it is durable in Postgres: a round that reads rows commits
//! waiting for the WAL flush, and a row it read was committed before the round began, so its
//! commit record precedes the round's in the WAL and is flushed with it. The writers of the
//! outbox (a poller's `finish`) may therefore commit without waiting for the flush: one flush
//! per round instead of one per row.

use crate::outbox::CHANNEL;
use futures::FutureExt;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgPool};
use std::time::{Duration, Instant};

/// Advisory lock key held by the active relay ("OSAGOREL").
const LOCK_KEY: i64 = 0x4F53_4147_4F52_454C;
/// Rows published per round trip.
const BATCH: i64 = 500;
/// Polling fallback when no NOTIFY arrives (a lost notification costs at most this).
const FALLBACK: Duration = Duration::from_millis(500);
/// How long a standby relay waits before trying the lock again.
const STANDBY_RETRY: Duration = Duration::from_secs(2);
/// Rows a round must carry for the next to wait for [`ROUND_GAP`]: rows then come faster than
/// rounds one after another can carry them a few at a time.
const BUSY_ROUND: usize = 4;
/// Shortest time from a busy round's start to the next round's. Each round costs the pipeline
/// a statement and a WAL flush here, a produce and a fetch in Kafka, and a round of core-app's
/// consumer and database, whatever it carries; back to back they came every 7 ms at 149
/// quotes/s, 6.7 rows each. Quiet rounds (fewer rows) are not held back, so the latency at low
/// load stays a round trip.
pub const ROUND_GAP: Duration = Duration::from_millis(20);
/// Pause before reconnecting after the database was lost.
const RECONNECT: Duration = Duration::from_secs(1);
/// How long delivered rows wait for the next round to delete them in its own statement,
/// before a statement of their own does: a row committed meanwhile saves that statement.
const DELETE_LINGER: Duration = Duration::from_millis(100);
/// Rows deleted after which the relay vacuums the outbox itself. A round reads the outbox's
/// heap whole, deleted rows too until a vacuum clears them, and autovacuum comes once a minute
/// at most: at 110 quotes/s the heap grew to 1 561 pages between its visits, and stayed that
/// size after (inserts reused the freed space all over it, so no empty end was left to cut
/// off), so every round read about 1 000 pages for a few dozen rows — a third of the
/// aggregator database's time. A vacuum of a few hundred dead rows is a few pages' work on a
/// pooled connection; a shorter autovacuum naptime cost a new process per visit and every
/// table (FINDINGS).
const VACUUM_AFTER: usize = 1_000;

/// A Kafka producer set up for the outbox: idempotent, acks from all replicas.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        // A message not delivered in time stays in the outbox and is retried by the next round.
        .set("message.timeout.ms", "10000")
        .create()?)
}

/// Runs the relay until `shutdown` resolves: standby until it holds the lock, then publishes.
///
/// Losing the database (a restart, a failover, a killed backend) does not end the relay: it
/// stops publishing — the lock went with its connection, another relay may hold it now —
/// and goes back to standby, reconnecting until it holds the lock again.
pub async fn run(
    pool: PgPool,
    producer: FutureProducer,
    topic: String,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        match active(&pool, &producer, &topic, &mut shutdown).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay lost the database; reconnecting");
                metrics::counter!("outbox_relay_errors_total").increment(1);
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(RECONNECT) => {}
        }
    }
    tracing::info!("outbox relay stopped");
    Ok(())
}

/// One tenure: connect, wait for the lock, publish. `Ok` on shutdown, `Err` when a connection
/// the relay depends on failed.
async fn active(
    pool: &PgPool,
    producer: &FutureProducer,
    topic: &str,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let mut lock = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
    loop {
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut lock).await?;
        if locked {
            break;
        }
        tracing::info!("another relay is active; standing by");
        tokio::select! {
            _ = &mut *shutdown => return Ok(()),
            _ = tokio::time::sleep(STANDBY_RETRY) => {}
        }
    }
    // A delete lost with a crashed Postgres only publishes its rows again, and consumers drop
    // repeats by event id: the relay's deletes need not wait for the WAL flush (a round that
    // reads rows asks for the flush itself, see `publish_batch`).
    sqlx::query("SET synchronous_commit = off").execute(&mut lock).await?;
    tracing::info!("outbox relay active");
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let mut last_gauge = Instant::now() - Duration::from_secs(60);
    // Rows the broker acknowledged and that are not deleted yet: deleted by the next round's
    // read when one follows within `DELETE_LINGER` (one statement a round), else on their own.
    let mut delivered = Vec::new();
    // Rows deleted since the relay's last vacuum of the outbox, and that vacuum while it runs
    // (a set: it ends with the tenure, like a vacuum run between two rounds did).
    let mut deleted = 0;
    let mut vacuuming = tokio::task::JoinSet::new();
    // When the round before was busy, the next starts no sooner than this; a shutdown during
    // the wait is kept (a finished future must not be polled again) and ends the tenure after
    // one more round.
    let mut not_before: Option<Instant> = None;
    let mut shut_down = false;
    loop {
        if let Some(at) = not_before.take() {
            shut_down = tokio::select! {
                _ = &mut *shutdown => true,
                _ = tokio::time::sleep_until(at.into()) => false,
            };
        }
        drain(&mut listener);
        let deleting = delivered.len();
        let started = Instant::now();
        let follows = match publish_batch(&mut lock, producer, topic, &mut delivered).await {
            Ok(published) => {
                deleted += deleting;
                // A full round leaves a backlog: the next one goes at once.
                if (BUSY_ROUND..BATCH as usize).contains(&published) {
                    not_before = Some(started + ROUND_GAP);
                }
                published as i64 == BATCH || notified(&mut listener)
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox round failed; retrying");
                metrics::counter!("outbox_relay_errors_total").increment(1);
                if shut_down {
                    return Ok(());
                }
                tokio::select! {
                    _ = &mut *shutdown => return Ok(()),
                    _ = tokio::time::sleep(FALLBACK) => {}
                }
                // The lock lives as long as its connection; lose one and the other relay takes
                // over. A round that succeeded went through it; a failed one checks it.
                sqlx::query("SELECT 1").execute(&mut lock).await?;
                continue;
            }
        };
        while vacuuming.try_join_next().is_some() {}
        if deleted >= VACUUM_AFTER && vacuuming.is_empty() {
            vacuuming.spawn(vacuum(pool.clone()));
            deleted = 0;
        }
        if last_gauge.elapsed() > Duration::from_secs(2) {
            record_depth(pool).await;
            last_gauge = Instant::now();
        }
        // Looked at after every round: under a steady stream a round always follows.
        let mut stopping = shut_down || shutdown.as_mut().now_or_never().is_some();
        if follows && !stopping {
            continue;
        }
        let idle_since = Instant::now();
        if !delivered.is_empty() && !stopping {
            // The next row is usually milliseconds away: at 40 quotes/s, deletes of their own
            // followed nearly four rounds a quote.
            stopping = tokio::select! {
                _ = &mut *shutdown => true,
                notified = listener.recv() => {
                    if notified.is_ok() {
                        continue;
                    }
                    false
                }
                _ = tokio::time::sleep(DELETE_LINGER) => false,
            };
        }
        if !delivered.is_empty() {
            match delete(&mut lock, &delivered).await {
                Ok(()) => {
                    deleted += delivered.len();
                    delivered.clear();
                }
                // Kept for the next round's read, which runs on the lock's connection: a lost
                // connection ends the tenure there.
                Err(e) => {
                    tracing::warn!(error = %e, "deleting delivered rows failed; the next round retries");
                    metrics::counter!("outbox_relay_errors_total").increment(1);
                }
            }
        }
        if stopping {
            return Ok(());
        }
        tokio::select! {
            _ = &mut *shutdown => return Ok(()),
            // A failed receive (the listener reconnects on the next one) must not spin.
            notified = listener.recv() => if notified.is_err() { tokio::time::sleep(FALLBACK).await },
            // The wait for a delete's company counts: a lost notification costs FALLBACK at most.
            _ = tokio::time::sleep(FALLBACK.saturating_sub(idle_since.elapsed())) => {}
        }
    }
}

/// Takes the notifications already received. They are for rows committed before the round
/// about to start, which reads them all: left queued, each would wake a round of its own that
/// finds nothing (about three in four rounds did, at 57 quotes/s). One that arrives later is
/// for a row the round may miss, and wakes the next one.
fn drain(listener: &mut PgListener) {
    while notified(listener) {}
}

/// Whether a notification has already been received (taking it); no waiting for one.
fn notified(listener: &mut PgListener) -> bool {
    matches!(listener.recv().now_or_never(), Some(Ok(_)))
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    message_key: String,
    /// The event's JSON, sent as it is.
    payload: String,
    created_at: chrono::DateTime<chrono::Utc>,
    traceparent: Option<String>,
}

/// Deletes the rows of an earlier round that the broker acknowledged, then publishes up to
/// [`BATCH`] rows in id order; the ids acknowledged now are left in `delivered` for the next
/// round (or [`delete`]). Both go through `own`, the relay's connection, which holds the lock.
/// A round that reads rows commits waiting for the WAL flush before they are sent (the
/// module's note says why that makes them durable); one that reads none does not wait.
async fn publish_batch(
    own: &mut sqlx::PgConnection,
    producer: &FutureProducer,
    topic: &str,
    delivered: &mut Vec<i64>,
) -> anyhow::Result<usize> {
    // The statement's read does not see its own delete: the rows deleted are left out by id.
    // When it reads rows, `durable` makes this transaction's commit wait for the WAL flush: a
    // synchronous commit, and a WAL record of its own (a logical message, which nothing
    // decodes), since Postgres does not flush at the commit of a transaction that wrote none.
    // `fetch_all` returns after the commit (sqlx reads up to ReadyForQuery).
    let rows: Vec<Row> = sqlx::query_as(
        "WITH gone AS (DELETE FROM outbox WHERE id = ANY($2)),
         batch AS (
             SELECT id, message_key, payload, created_at, traceparent FROM outbox
             WHERE id <> ALL($2) ORDER BY id LIMIT $1
         ), durable AS (
             SELECT set_config('synchronous_commit', 'on', true), pg_logical_emit_message(true, 'osago.relay', '')
             WHERE EXISTS (SELECT 1 FROM batch)
         )
         SELECT batch.* FROM batch, (SELECT count(*) FROM durable) AS flushed ORDER BY id",
    )
    .bind(BATCH)
    .bind(&*delivered)
    .fetch_all(&mut *own)
    .await?;
    delivered.clear();
    if rows.is_empty() {
        return Ok(0);
    }
    metrics::histogram!("outbox_round_rows").record(rows.len() as f64);
    // All sends are in flight together; the idempotent producer keeps their order per partition.
    let sends = rows.iter().map(|row| {
        let mut headers = OwnedHeaders::new().insert(Header { key: "content-type", value: Some("application/json") });
        if let Some(trace) = &row.traceparent {
            headers = headers.insert(Header { key: platform::trace::HEADER, value: Some(trace.as_str()) });
        }
        let record = FutureRecord::to(topic).key(&row.message_key).payload(&row.payload).headers(headers);
        producer.send(record, Duration::from_secs(0))
    });
    let results = join_all(sends).await;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(_) => {
                delivered.push(row.id);
                let age = (chrono::Utc::now() - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                metrics::histogram!("outbox_publish_delay_seconds").record(age);
            }
            Err((e, _)) => tracing::warn!(outbox_id = row.id, error = %e, "not delivered; will retry"),
        }
    }
    metrics::counter!("outbox_published_total").increment(delivered.len() as u64);
    Ok(delivered.len())
}

/// Deletes delivered rows at once (no round follows to take them).
async fn delete(own: &mut sqlx::PgConnection, delivered: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(delivered).execute(own).await.map(drop)
}

/// Vacuums the outbox ([`VACUUM_AFTER`] says why) on a pooled connection, beside the rounds: run
/// between two of them on the relay's own connection, each vacuum (4–10 ms under load) held back
/// every row committed meanwhile. A failure only waits for the next one.
async fn vacuum(pool: PgPool) {
    // Plain text (the simple protocol): nothing to prepare for a statement run once in a while.
    // SKIP_LOCKED: it must not queue behind another vacuum, an ANALYZE or an index build; the
    // next one comes 1 000 rows later. Cutting off an empty end of the file (after a backlog)
    // stays: it takes its lock only when free, and lets go within 20 ms of a writer waiting.
    let vacuumed: sqlx::Result<Duration> = async {
        let mut conn = pool.acquire().await?;
        let started = Instant::now();
        sqlx::Executor::execute(&mut *conn, "VACUUM (SKIP_LOCKED) outbox").await?;
        Ok(started.elapsed())
    }
    .await;
    match vacuumed {
        Ok(took) => metrics::histogram!("outbox_vacuum_seconds").record(took.as_secs_f64()),
        Err(e) => {
            tracing::warn!(error = %e, "vacuuming the outbox failed");
            metrics::counter!("outbox_relay_errors_total").increment(1);
        }
    }
}

async fn record_depth(pool: &PgPool) {
    let row: Result<(i64, Option<f64>), _> =
        sqlx::query_as("SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox")
            .fetch_one(pool)
            .await;
    if let Ok((depth, oldest)) = row {
        metrics::gauge!("outbox_depth").set(depth as f64);
        metrics::gauge!("outbox_oldest_age_seconds").set(oldest.unwrap_or(0.0));
    }
}
