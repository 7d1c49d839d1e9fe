//! core-app's persistence: quotes, each insurer's latest result, and the per-quote event
//! log that SSE streams replay. Every change to a quote happens under its row lock, so
//! sequence numbers are gap-free and each insurer result is stored exactly once.

use chrono::{DateTime, Utc};
use domain::events::{InsurerOutcome, QuoteEvent};
use domain::intake::Accepted;
use platform::group_commit::{GroupCommit, Limits};
use platform::trace::TraceParent;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// NOTIFY channel of quotes with new events; every replica listens. The payload is
/// [`push_payload`]'s: the quote id, then the event itself when it fits.
pub const CHANNEL: &str = "osago_quote_events";
/// Largest payload that carries the event (Postgres refuses payloads of 8000 bytes and more).
const MAX_PUSH: usize = 7900;
/// Reason given to insurers still pending when the quote's deadline passes.
pub const EXPIRED_REASON: &str = "no answer before the deadline";

/// What happened to an event offered to [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored with this sequence number (and the quote may have completed with it).
    Stored { seq: i64, completed: bool },
    /// The same event id was stored before.
    Duplicate,
    /// An event of this insurer with the same or a newer version was stored before.
    Stale,
    /// The quote is not stored yet; the event waits for it.
    Early,
    /// The quote completed (deadline passed) before this event arrived.
    Late,
    /// The quote has no such insurer.
    UnknownInsurer,
}

impl Applied {
    /// Whether the quote completed with this event.
    pub fn completed(self) -> bool {
        matches!(self, Applied::Stored { completed: true, .. })
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Applied::Stored { .. } => "stored",
            Applied::Duplicate => "duplicate",
            Applied::Stale => "stale",
            Applied::Early => "early",
            Applied::Late => "late",
            Applied::UnknownInsurer => "unknown_insurer",
        }
    }
}

/// A quote by its idempotency key: its id and request hash.
pub async fn find_by_key(pool: &PgPool, key: &str) -> sqlx::Result<Option<(Uuid, Vec<u8>)>> {
    sqlx::query_as("SELECT id, request_hash FROM quotes WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// A quote the aggregator accepted, to store.
#[derive(Debug, Clone)]
pub struct NewQuote {
    pub accepted: Accepted,
    /// The client's Idempotency-Key.
    pub key: Option<String>,
    pub request_hash: Vec<u8>,
    /// When core-app expires what is left pending: the deadline and a grace.
    pub expires_at: DateTime<Utc>,
    pub trace: Option<TraceParent>,
}

/// What storing a quote did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now (and the events that waited for it applied).
    New,
    /// Stored before: nothing changed.
    Before,
    /// Its Idempotency-Key belongs to another quote (a concurrent request with the same key).
    KeyTaken,
}

/// Stores one quote; see [`create_all`].
pub async fn create(
    pool: &PgPool,
    accepted: &Accepted,
    key: Option<&str>,
    request_hash: &[u8],
    grace: chrono::Duration,
    trace: Option<&TraceParent>,
) -> sqlx::Result<Stored> {
    let quote = NewQuote {
        accepted: accepted.clone(),
        key: key.map(str::to_string),
        request_hash: request_hash.to_vec(),
        expires_at: accepted.deadline + grace,
        trace: trace.cloned(),
    };
    create_all(pool, std::slice::from_ref(&quote)).await?.remove(0)
}

/// Stores quotes the aggregator accepted, in one transaction, and applies the events that
/// arrived before them; answers for each, in the order given. The outer error fails them all
/// (nothing was stored); an inner one, only a quote that had to be stored on its own.
pub async fn create_all(pool: &PgPool, quotes: &[NewQuote]) -> sqlx::Result<Vec<sqlx::Result<Stored>>> {
    // Keys go in in order: an insert waits for a concurrent batch's uncommitted row of the same
    // key, and two batches holding two keys in opposite orders would wait for each other.
    let mut order: Vec<usize> = (0..quotes.len()).collect();
    order.sort_by(|&a, &b| quotes[a].key.cmp(&quotes[b].key));
    let answers = insert(pool, order.iter().map(|&i| &quotes[i]), false).await?;
    let mut stored: Vec<sqlx::Result<Stored>> = quotes.iter().map(|_| Ok(Stored::Before)).collect();
    for (&i, answer) in order.iter().zip(answers) {
        // An arrival lock held by a consumer round: this quote goes alone, waiting for it.
        let answer = match answer {
            BUSY => match insert(pool, [&quotes[i]], true).await {
                Ok(answers) => answers.first().copied().unwrap_or(STORED_BEFORE),
                Err(e) => {
                    stored[i] = Err(e);
                    continue;
                }
            },
            answer => answer,
        };
        stored[i] = Ok(match answer {
            STORED_BEFORE => Stored::Before,
            KEY_TAKEN => Stored::KeyTaken,
            early => {
                // The quote is stored whatever happens here: events left waiting are the sweep's.
                if early > 0
                    && let Err(error) = adopt_early(pool, quotes[i].accepted.id).await
                {
                    tracing::warn!(quote = %quotes[i].accepted.id, %error, "early events left to the sweep");
                }
                Stored::New
            }
        });
    }
    Ok(stored)
}

/// `create_quotes`' answers (migration 0003) other than the count of early events.
const STORED_BEFORE: i64 = -1;
const KEY_TAKEN: i64 = -2;
const BUSY: i64 = -3;

/// One call of `create_quotes`: one round trip, one transaction.
async fn insert<'a>(
    pool: &PgPool,
    quotes: impl IntoIterator<Item = &'a NewQuote>,
    wait: bool,
) -> sqlx::Result<Vec<i64>> {
    let quotes: Vec<&NewQuote> = quotes.into_iter().collect();
    let insurers = quotes.iter().flat_map(|q| &q.accepted.insurers);
    let (names, display_names): (Vec<&str>, Vec<&str>) =
        insurers.map(|i| (i.name.as_str(), i.display_name.as_str())).unzip();
    sqlx::query_scalar("SELECT create_quotes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .bind(quotes.iter().map(|q| q.accepted.id).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| q.key.as_deref()).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| q.request_hash.as_slice()).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| q.accepted.deadline).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| q.expires_at).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| q.trace.as_ref().map(TraceParent::to_string)).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| arrival_lock(q.accepted.id)).collect::<Vec<_>>())
        .bind(quotes.iter().map(|q| i32::try_from(q.accepted.insurers.len()).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(&names)
        .bind(&display_names)
        .bind(wait)
        .fetch_one(pool)
        .await
}

/// Starts the group commit of quotes: those created together are stored in one transaction.
pub fn writer(pool: PgPool) -> GroupCommit<NewQuote, Stored> {
    let limits = Limits::named("quote_store_batch_size", "quote_store_overloaded_total");
    GroupCommit::start(limits, move |quotes: Vec<NewQuote>| {
        let pool = pool.clone();
        async move {
            let stored = create_all(&pool, &quotes).await.map_err(platform::Problem::database)?;
            Ok(stored.into_iter().map(|s| s.map_err(platform::Problem::database)).collect())
        }
    })
}

/// Applies the events that wait in early_events for `quote`, which is stored. Safe to run
/// twice at once: the second finds them gone.
async fn adopt_early(pool: &PgPool, quote: Uuid) -> sqlx::Result<()> {
    // Once the quote is committed, no event goes to early_events any more (`apply_unmatched`
    // looks for the quote under its arrival lock), so what is there now is all there will be.
    let mut tx = pool.begin().await?;
    let early: Vec<sqlx::types::Json<QuoteEvent>> =
        sqlx::query_scalar("DELETE FROM early_events WHERE quote_id = $1 RETURNING payload")
            .bind(quote)
            .fetch_all(&mut *tx)
            .await?;
    let mut early: Vec<QuoteEvent> = early.into_iter().map(|e| e.0).collect();
    early.sort_by_key(|e| (e.insurer.clone(), e.version));
    let mut completed = false;
    for event in &early {
        completed |= apply_in(&mut tx, event).await?.completed();
    }
    tx.commit().await?;
    count_completed(u64::from(completed));
    Ok(())
}

/// Applies the early events of up to `limit` quotes stored over five seconds ago whose
/// `create` did not get to them (it stopped between storing the quote and applying them);
/// returns how many quotes. The age leaves the creates running now to themselves.
pub async fn adopt_orphans(pool: &PgPool, limit: i64) -> sqlx::Result<usize> {
    // Oldest first, and one quote's failure does not hold up the others.
    let quotes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT q.id FROM (SELECT DISTINCT quote_id FROM early_events) AS e JOIN quotes q ON q.id = e.quote_id
         WHERE q.created_at < now() - interval '5 seconds'
         ORDER BY q.created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut adopted = 0;
    for &quote in &quotes {
        match adopt_early(pool, quote).await {
            Ok(()) => adopted += 1,
            Err(error) => tracing::warn!(%quote, %error, "applying a quote's early events failed"),
        }
    }
    Ok(adopted)
}

/// Counts quotes completed by a transaction, once it has committed: one rolled back and done
/// again must not count twice.
pub fn count_completed(quotes: u64) {
    if quotes > 0 {
        metrics::counter!("quotes_completed_total").increment(quotes);
    }
}

/// Applies one event from the aggregator exactly once.
pub async fn apply(pool: &PgPool, event: &QuoteEvent) -> sqlx::Result<Applied> {
    let mut tx = pool.begin().await?;
    let applied = apply_in(&mut tx, event).await?;
    tx.commit().await?;
    Ok(applied)
}

/// [`apply`] inside the caller's transaction (a consumer round applies all its events in one).
pub async fn apply_in(tx: &mut PgConnection, event: &QuoteEvent) -> sqlx::Result<Applied> {
    // Four round trips (five when the quote completes): each one costs a wake-up of this
    // task and of the backend, which is most of the CPU an event costs. The first statement
    // locks the quote's row and the insurer's row; one that waited for a lock re-reads both
    // (Postgres re-checks locked rows at their newest version), so what it decides on is what
    // the previous holder committed. `seen` comes from the statement's snapshot and may miss
    // a duplicate applied meanwhile — the insurer's version then stops it as stale.
    let row: Option<Locked> = sqlx::query_as(
        "SELECT q.next_seq, q.completed_at, i.display_name, i.version,
                EXISTS (SELECT 1 FROM quote_events WHERE event_id = $3) AS seen
         FROM quotes q JOIN quote_insurers i ON i.quote_id = q.id AND i.insurer = $2
         WHERE q.id = $1
         FOR UPDATE OF q, i",
    )
    .bind(event.quote_id)
    .bind(&event.insurer)
    .bind(event.event_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Locked { next_seq, completed_at, display_name, version, seen }) = row else {
        return apply_unmatched(tx, event).await;
    };
    if seen {
        return Ok(Applied::Duplicate);
    }
    if completed_at.is_some() {
        return Ok(Applied::Late);
    }
    if i64::from(event.version) <= i64::from(version) {
        return Ok(Applied::Stale);
    }
    let (status, offer, reason) = outcome_columns(&event.outcome);
    // Serialised once: the stored event and the pushed one are the same text.
    let data = insurer_event_data(&event.insurer, &display_name, status, offer.as_ref(), reason.as_deref()).to_string();
    let name = event.outcome.event_type();
    let name = serde_json::to_value(name).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    // The insurer's new state, the event, the quote's next sequence number and the
    // notification in one statement (data-modifying CTEs run whether or not they are read);
    // it answers how many insurers are still pending — its own changes are invisible to its
    // own reads, hence "the other insurers" plus this one.
    let pending: i64 = sqlx::query_scalar(
        "WITH insurer AS (
             UPDATE quote_insurers SET status = $3, version = $4, offer = $5, reason = $6, updated_at = now()
             WHERE quote_id = $1 AND insurer = $2 RETURNING 1
         ), event AS (
             INSERT INTO quote_events (quote_id, seq, event_id, name, data) VALUES ($1, $7, $8, $9, $10::jsonb) RETURNING 1
         ), quote AS (
             UPDATE quotes SET next_seq = $7 + 1 WHERE id = $1 RETURNING 1
         )
         SELECT (SELECT count(*) FROM quote_insurers WHERE quote_id = $1 AND insurer <> $2 AND status = 'pending')
              + CASE WHEN $3 = 'pending' THEN 1 ELSE 0 END
         FROM (SELECT pg_notify($11, $12)) AS notified",
    )
    .bind(event.quote_id)
    .bind(&event.insurer)
    .bind(status)
    .bind(event.version as i32)
    .bind(&offer)
    .bind(&reason)
    .bind(next_seq)
    .bind(event.event_id)
    .bind(&name)
    .bind(&data)
    .bind(CHANNEL)
    .bind(push_payload(event.quote_id, next_seq, &name, &data))
    .fetch_one(&mut *tx)
    .await?;
    let completed = pending == 0 && complete(tx, event.quote_id, next_seq + 1).await?;
    Ok(Applied::Stored { seq: next_seq, completed })
}

/// The quote's `next_seq` and completion time, under its row lock; `None` when not stored.
async fn lock_quote(tx: &mut PgConnection, quote: Uuid) -> sqlx::Result<Option<(i64, Option<DateTime<Utc>>)>> {
    sqlx::query_as("SELECT next_seq, completed_at FROM quotes WHERE id = $1 FOR UPDATE")
        .bind(quote)
        .fetch_optional(&mut *tx)
        .await
}

/// A quote and one of its insurers, locked for applying an event.
#[derive(sqlx::FromRow)]
struct Locked {
    next_seq: i64,
    completed_at: Option<DateTime<Utc>>,
    display_name: String,
    version: i32,
    /// The event was stored before.
    seen: bool,
}

/// An event whose quote, or whose insurer in it, is not stored: it waits for its quote in
/// early_events, or is refused.
async fn apply_unmatched(tx: &mut PgConnection, event: &QuoteEvent) -> sqlx::Result<Applied> {
    let mut quote = lock_quote(tx, event.quote_id).await?;
    if quote.is_none() {
        // Not stored yet, or being stored right now by `create`, whose commit this statement
        // could not see: wait for its arrival lock, then look again. Without it the event
        // could land in early_events after `create` took them, and never be applied.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(arrival_lock(event.quote_id)).execute(&mut *tx).await?;
        quote = lock_quote(tx, event.quote_id).await?;
    }
    match quote {
        // Stored meanwhile: the normal path, under the quote's lock.
        Some(_) if is_insurer_of(tx, event).await? => Box::pin(apply_in(tx, event)).await,
        Some((_, Some(_))) => Ok(Applied::Late),
        Some(_) => Ok(Applied::UnknownInsurer),
        None => {
            sqlx::query(
                "INSERT INTO early_events (event_id, quote_id, payload) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(event.event_id)
            .bind(event.quote_id)
            .bind(sqlx::types::Json(event))
            .execute(&mut *tx)
            .await?;
            Ok(Applied::Early)
        }
    }
}

/// Whether the event's insurer is one of its quote's.
async fn is_insurer_of(tx: &mut PgConnection, event: &QuoteEvent) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM quote_insurers WHERE quote_id = $1 AND insurer = $2)")
        .bind(event.quote_id)
        .bind(&event.insurer)
        .fetch_one(&mut *tx)
        .await
}

/// The advisory lock key that orders a quote's arrival against its early events.
pub fn arrival_lock(quote: Uuid) -> i64 {
    // Any 64 bits of a random UUID do; a collision only makes two arrivals wait for each other.
    quote.as_u64_pair().1 as i64
}

fn outcome_columns(outcome: &InsurerOutcome) -> (&'static str, Option<Value>, Option<String>) {
    match outcome {
        InsurerOutcome::Pending => ("pending", None, None),
        InsurerOutcome::Offer { offer } => ("offer", serde_json::to_value(offer).ok(), None),
        InsurerOutcome::Declined { reason } => ("declined", None, Some(reason.clone())),
        InsurerOutcome::Failed { reason } => ("failed", None, Some(reason.clone())),
        InsurerOutcome::Expired => ("expired", None, Some(EXPIRED_REASON.into())),
    }
}

/// The SSE `data` of a status or offer event.
fn insurer_event_data(
    insurer: &str,
    display_name: &str,
    status: &str,
    offer: Option<&Value>,
    reason: Option<&str>,
) -> Value {
    let mut data = json!({"insurer": insurer, "display_name": display_name, "status": status});
    if let Some(offer) = offer {
        data["offer"] = offer.clone();
    }
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    data
}

async fn insert_event(
    tx: &mut PgConnection,
    quote: Uuid,
    seq: i64,
    event_id: Option<Uuid>,
    name: &str,
    data: &Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO quote_events (quote_id, seq, event_id, name, data) VALUES ($1, $2, $3, $4, $5)")
        .bind(quote)
        .bind(seq)
        .bind(event_id)
        .bind(name)
        .bind(data)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE quotes SET next_seq = $2 WHERE id = $1").bind(quote).bind(seq + 1).execute(&mut *tx).await?;
    Ok(())
}

/// Appends `complete` when no insurer is pending any more; the quote row must be locked.
async fn complete_if_done(tx: &mut PgConnection, quote: Uuid, seq: i64) -> sqlx::Result<bool> {
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM quote_insurers WHERE quote_id = $1 AND status = 'pending'")
            .bind(quote)
            .fetch_one(&mut *tx)
            .await?;
    if pending > 0 {
        return Ok(false);
    }
    complete(tx, quote, seq).await
}

/// Appends `complete` as event `seq`, marks the quote completed and pushes the event, in one
/// statement; the quote row must be locked and no insurer pending.
async fn complete(tx: &mut PgConnection, quote: Uuid, seq: i64) -> sqlx::Result<bool> {
    // The payload is push_payload's format, built where the event's data is.
    sqlx::query(
        "WITH counts AS (
             SELECT count(*) FILTER (WHERE status = 'offer') AS offers, count(*) AS total
             FROM quote_insurers WHERE quote_id = $1
         ), event AS (
             INSERT INTO quote_events (quote_id, seq, name, data)
             SELECT $1, $2, 'complete',
                    jsonb_build_object('status', 'complete', 'quote_id', $1::text, 'offers', offers, 'insurers', total)
             FROM counts RETURNING data
         )
         UPDATE quotes SET next_seq = $2 + 1, completed_at = now() FROM event WHERE id = $1
         RETURNING pg_notify($3, $1::text || ' ' || $2::text || ' complete ' || event.data::text)",
    )
    .bind(quote)
    .bind(seq)
    .bind(CHANNEL)
    .execute(&mut *tx)
    .await?;
    Ok(true)
}

async fn notify(tx: &mut PgConnection, quote: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(quote.to_string()).execute(&mut *tx).await?;
    Ok(())
}

/// Expires up to `limit` quotes past their deadline: every pending insurer becomes
/// `expired`, then `complete` follows. Safe on several replicas at once.
pub async fn expire_due(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, next_seq FROM quotes WHERE completed_at IS NULL AND expires_at <= now()
         ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut completed = 0;
    for &(quote, next_seq) in &due {
        let mut seq = next_seq;
        let pending: Vec<(String, String)> = sqlx::query_as(
            "UPDATE quote_insurers SET status = 'expired', reason = $2, updated_at = now()
             WHERE quote_id = $1 AND status = 'pending' RETURNING insurer, display_name",
        )
        .bind(quote)
        .bind(EXPIRED_REASON)
        .fetch_all(&mut *tx)
        .await?;
        for (insurer, display_name) in pending {
            let data = insurer_event_data(&insurer, &display_name, "expired", None, Some(EXPIRED_REASON));
            insert_event(&mut tx, quote, seq, None, "status", &data).await?;
            seq += 1;
        }
        completed += u64::from(complete_if_done(&mut tx, quote, seq).await?);
        notify(&mut tx, quote).await?;
    }
    tx.commit().await?;
    count_completed(completed);
    Ok(due.into_iter().map(|(id, _)| id).collect())
}

/// What an event stream needs to know of its quote when it opens.
pub struct Opening {
    pub complete: bool,
    /// The trace the quote was created in.
    pub trace: Option<TraceParent>,
    /// The sequence number of its latest event (0 before the first).
    pub latest: i64,
}

/// The quote as a stream opens on it; `None` when it does not exist.
pub async fn opening(pool: &PgPool, quote: Uuid) -> sqlx::Result<Option<Opening>> {
    let row: Option<(bool, Option<String>, i64)> =
        sqlx::query_as("SELECT completed_at IS NOT NULL, traceparent, next_seq - 1 FROM quotes WHERE id = $1")
            .bind(quote)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(complete, trace, latest)| Opening {
        complete,
        trace: trace.as_deref().and_then(TraceParent::parse),
        latest,
    }))
}

/// One stored event, as SSE sends it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub name: String,
    /// The event's JSON, as text: every stream sends it as it is.
    pub data: String,
}

/// The NOTIFY payload for event `seq` of `quote`: `<quote> <seq> <name> <data>`, so that
/// streams get the event without reading it back; just `<quote>` (read the database) when the
/// event is too large for a notification.
pub fn push_payload(quote: Uuid, seq: i64, name: &str, data: &str) -> String {
    let payload = format!("{quote} {seq} {name} {data}");
    if payload.len() < MAX_PUSH { payload } else { quote.to_string() }
}

/// A NOTIFY payload read back: the quote, and the event when the payload carries it.
pub fn parse_push(payload: &str) -> Option<(Uuid, Option<StoredEvent>)> {
    let mut parts = payload.splitn(4, ' ');
    let quote = parts.next()?.parse().ok()?;
    let event = match (parts.next(), parts.next(), parts.next()) {
        (None, ..) => None,
        (Some(seq), Some(name), Some(data)) => {
            Some(StoredEvent { seq: seq.parse().ok()?, name: name.to_string(), data: data.to_string() })
        }
        _ => return None,
    };
    Some((quote, event))
}

/// Events of `quote` after `seq`, in order.
pub async fn events_after(pool: &PgPool, quote: Uuid, seq: i64, limit: i64) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(
        "SELECT seq, name, data::text AS data FROM quote_events WHERE quote_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(quote)
    .bind(seq)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The state of a quote as `GET /api/v1/quotes/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuoteView {
    pub id: Uuid,
    /// `in_progress` or `complete`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub insurers: Vec<InsurerView>,
    /// The cheapest offer so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_offer: Option<InsurerView>,
}

/// One insurer's state within a quote.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct InsurerView {
    pub insurer: String,
    pub display_name: String,
    /// `pending`, `offer`, `declined`, `failed` or `expired`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub offer: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct QuoteRow {
    created_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// The quote's current view, `None` when unknown.
pub async fn view(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<QuoteView>> {
    let quote: Option<QuoteRow> = sqlx::query_as("SELECT created_at, deadline, completed_at FROM quotes WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(QuoteRow { created_at, deadline, completed_at }) = quote else { return Ok(None) };
    let insurers: Vec<InsurerView> = sqlx::query_as(
        "SELECT insurer, display_name, status, offer, reason FROM quote_insurers WHERE quote_id = $1 ORDER BY insurer",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let best_offer = insurers
        .iter()
        .filter_map(|i| Some((premium(i.offer.as_ref()?)?, i)))
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, i)| i.clone());
    let status = if completed_at.is_some() { "complete" } else { "in_progress" };
    Ok(Some(QuoteView { id, status: status.into(), created_at, deadline, insurers, best_offer }))
}

fn premium(offer: &Value) -> Option<rust_decimal::Decimal> {
    serde_json::from_value::<domain::events::Offer>(offer.clone()).ok().map(|o| o.premium.amount())
}
