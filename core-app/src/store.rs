//! core-app's persistence: quotes, each insurer's latest result, and the per-quote event
//! log that SSE streams replay. Every change to a quote happens under its row lock, so
//! sequence numbers are gap-free and each insurer result is stored exactly once.

use chrono::{DateTime, Utc};
use domain::events::{InsurerOutcome, Offer, QuoteEvent};
use domain::intake::Accepted;
use platform::group_commit::{GroupCommit, Limits};
use platform::trace::TraceParent;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// The session settings of core-app's database connections: its statements find their rows by
/// key, each planned once ([`platform::db::planned_by_key`]), named for `pg_stat_activity`.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    platform::db::planned_by_key(options.application_name("core-app"))
}

/// NOTIFY channel of quotes with new events; every replica listens. The payload is
/// `<quote> <seq> <name> <data>`, or the quote id alone when the event is too large for a
/// notification (`push_payload`, migration 0004); [`parse_push`] reads it.
pub const CHANNEL: &str = "osago_quote_events";
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
    /// The database refused what the event holds ([`refuses`]): skipped, not retried.
    Refused,
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
            Applied::Refused => "refused",
        }
    }

    /// A row of `apply_events`: the label, the sequence number when stored, and completion.
    fn from_row(label: &str, seq: Option<i64>, completed: bool) -> sqlx::Result<Self> {
        Ok(match (label, seq) {
            ("stored", Some(seq)) => Applied::Stored { seq, completed },
            ("duplicate", _) => Applied::Duplicate,
            ("stale", _) => Applied::Stale,
            ("early", _) => Applied::Early,
            ("late", _) => Applied::Late,
            ("unknown_insurer", _) => Applied::UnknownInsurer,
            _ => return Err(sqlx::Error::Decode(format!("apply_events answered {label:?} ({seq:?})").into())),
        })
    }
}

/// Whether `error` refuses an event for what it holds — a data exception (SQLSTATE class 22: a
/// character Postgres cannot store, a number out of range) or a value that cannot be encoded —
/// which no retry changes.
pub fn refuses(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e.code().is_some_and(|code| code.starts_with("22")),
        sqlx::Error::Encode(_) => true,
        _ => false,
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
    // Once the quote is committed, no event goes to early_events any more (`apply_events`
    // looks for the quote under its arrival lock), so what is there now is all there will be.
    let mut tx = pool.begin().await?;
    let early: Vec<sqlx::types::Json<QuoteEvent>> =
        sqlx::query_scalar("DELETE FROM early_events WHERE quote_id = $1 RETURNING payload")
            .bind(quote)
            .fetch_all(&mut *tx)
            .await?;
    let mut early: Vec<QuoteEvent> = early.into_iter().map(|e| e.0).collect();
    early.sort_by_key(|e| (e.insurer.clone(), e.version));
    let applied = apply_all(&mut *tx, &early.iter().collect::<Vec<_>>()).await?;
    tx.commit().await?;
    let completed = applied.iter().any(|a| a.completed());
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

/// Applies one event from the aggregator exactly once, in its own transaction.
pub async fn apply(pool: &PgPool, event: &QuoteEvent) -> sqlx::Result<Applied> {
    let applied = apply_all(pool, &[event]).await?;
    applied.into_iter().next().ok_or_else(|| sqlx::Error::Decode("apply_events answered nothing".into()))
}

/// Applies events in the order given, each exactly once, in one statement (`apply_events`,
/// migrations 0004 and 0006: the round decided in the database and written as sets): its own
/// transaction on a pool, part of the caller's on a transaction. Answers for each, in the same
/// order.
pub async fn apply_all<'e>(db: impl PgExecutor<'e>, events: &[&QuoteEvent]) -> sqlx::Result<Vec<Applied>> {
    // One round trip, however many events: under load, a round trip's cost is mostly the
    // wait for the CPU on both sides, and a round of events made two or three per event.
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let columns: Vec<_> = events.iter().map(|e| outcome_columns(&e.outcome)).collect();
    // The name follows the outcome, whatever the envelope's type says.
    let names: Vec<&str> = events.iter().map(|e| e.outcome.event_type().as_str()).collect();
    let payloads = events.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>();
    let payloads = payloads.map_err(|e| sqlx::Error::Encode(e.into()))?;
    let rows: Vec<(String, Option<i64>, bool)> = sqlx::query_as(
        "SELECT out_applied, out_seq, out_completed FROM apply_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(CHANNEL)
    .bind(events.iter().map(|e| e.quote_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.insurer.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| i32::try_from(e.version).unwrap_or(i32::MAX)).collect::<Vec<_>>())
    .bind(columns.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(columns.iter().map(|c| c.1).collect::<Vec<_>>())
    .bind(columns.iter().map(|c| c.2).collect::<Vec<_>>())
    .bind(&names)
    .bind(&payloads)
    .bind(events.iter().map(|e| arrival_lock(e.quote_id)).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    if rows.len() != events.len() {
        return Err(sqlx::Error::Decode(
            format!("apply_events answered {} of {} events", rows.len(), events.len()).into(),
        ));
    }
    rows.into_iter().map(|(label, seq, completed)| Applied::from_row(&label, seq, completed)).collect()
}

/// The advisory lock key that orders a quote's arrival against its early events.
pub fn arrival_lock(quote: Uuid) -> i64 {
    // Any 64 bits of a random UUID do; a collision only makes two arrivals wait for each other.
    quote.as_u64_pair().1 as i64
}

/// An outcome's `quote_insurers` columns: status, offer, reason; borrowed, the offer written
/// to the database straight from its struct.
fn outcome_columns(outcome: &InsurerOutcome) -> (&'static str, Option<sqlx::types::Json<&Offer>>, Option<&str>) {
    let (offer, reason) = match outcome {
        InsurerOutcome::Pending => (None, None),
        InsurerOutcome::Offer { offer } => (Some(sqlx::types::Json(offer)), None),
        InsurerOutcome::Declined { reason } | InsurerOutcome::Failed { reason } => (None, Some(reason.as_str())),
        InsurerOutcome::Expired => (None, Some(EXPIRED_REASON)),
    };
    (outcome.status(), offer, reason)
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
    for &(quote, next_seq) in &due {
        // Under the quote's row lock no event changes its insurers, so once the pending ones
        // are expired none is left, and `complete` follows the status events.
        let complete_seq: i64 = sqlx::query_scalar(
            "WITH expired AS (
                 UPDATE quote_insurers SET status = 'expired', reason = $3, updated_at = now()
                 WHERE quote_id = $1 AND status = 'pending' RETURNING insurer, display_name
             ), stored AS (
                 INSERT INTO quote_events (quote_id, seq, name, data)
                 SELECT $1, $2 + row_number() OVER (ORDER BY insurer) - 1, 'status',
                        insurer_event_data(insurer, display_name, 'expired', NULL, $3)
                 FROM expired RETURNING 1
             )
             SELECT $2 + count(*) FROM stored",
        )
        .bind(quote)
        .bind(next_seq)
        .bind(EXPIRED_REASON)
        .fetch_one(&mut *tx)
        .await?;
        // The status events go unpushed: the bare id has every stream read them.
        sqlx::query("SELECT pg_notify($1, $2::text), complete_quote($1, $2, $3)")
            .bind(CHANNEL)
            .bind(quote)
            .bind(complete_seq)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    count_completed(due.len() as u64);
    Ok(due.into_iter().map(|(id, _)| id).collect())
}

/// What an event stream needs to know of its quote when it opens.
pub struct Opening {
    /// Whether the quote was complete when `first` was read.
    pub complete: bool,
    /// The trace the quote was created in.
    pub trace: Option<TraceParent>,
    /// Where the stream resumes: the caller's last event id, or the quote's latest event when
    /// that is past it (a bookmark from elsewhere, or a made-up one); never below 0.
    pub last: i64,
    /// The first page of events after `last`.
    pub first: Vec<StoredEvent>,
}

/// The quote as a stream opens on it after event `last`, with up to `limit` events; `None`
/// when it does not exist. One statement, so one snapshot: a quote complete in it has all its
/// events there too (it was two statements, completion first: each a round trip and a pooled
/// connection's ping, for every stream).
pub async fn opening(pool: &PgPool, quote: Uuid, last: i64, limit: i64) -> sqlx::Result<Option<Opening>> {
    type Row = (bool, Option<String>, i64, Option<i64>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT q.completed_at IS NOT NULL, q.traceparent, LEAST(GREATEST($2, 0), q.next_seq - 1),
                e.seq, e.name, e.data::text
         FROM quotes q
         LEFT JOIN LATERAL (
             SELECT seq, name, data FROM quote_events
             WHERE quote_id = q.id AND seq > LEAST(GREATEST($2, 0), q.next_seq - 1) ORDER BY seq LIMIT $3
         ) e ON true
         WHERE q.id = $1
         ORDER BY e.seq",
    )
    .bind(quote)
    .bind(last)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let Some((complete, trace, last, ..)) = rows.first().cloned() else { return Ok(None) };
    let first = rows
        .into_iter()
        .filter_map(|(.., seq, name, data)| Some(StoredEvent { seq: seq?, name: name?, data: data? }))
        .collect();
    Ok(Some(Opening { complete, trace: trace.as_deref().and_then(TraceParent::parse), last, first }))
}

/// One stored event, as SSE sends it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub name: String,
    /// The event's JSON, as text: every stream sends it as it is.
    pub data: String,
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
