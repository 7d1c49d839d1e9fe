//! `GET /api/v1/quotes/{id}/events`: the quote's events as Server-Sent Events. Replays what
//! is stored after `Last-Event-ID` (or everything), then goes live; `complete` is last and
//! the server closes after it.

use super::quotes::{not_found, parse_id};
use super::{AppState, openapi};
use crate::hub::{Subscription, Wake};
use crate::store::{self, StoredEvent};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use platform::Problem;
use platform::trace::TraceParent;
use serde::Deserialize;
use sqlx::PgPool;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// Events read from the database per round trip.
const PAGE: i64 = 64;

/// Where to resume, for clients that cannot set the `Last-Event-ID` header.
#[derive(Deserialize)]
pub struct Resume {
    last_event_id: Option<i64>,
}

/// The event stream of a quote.
#[utoipa::path(get, path = "/api/v1/quotes/{id}/events", tag = "quotes",
    params(
        ("id" = Uuid, Path, description = "Quote id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id; a value that is not a number starts from the first event, an id past the latest event resumes after the latest"),
        ("last_event_id" = Option<i64>, Query, description = "Resume after this event, for clients that cannot set Last-Event-ID; the header wins; read as the header is"),
    ),
    responses(
        (status = 200, description = "Events `status` and `offer`, then `complete`, after which the server closes; \
            the schema is that of each event", body = openapi::StreamEvent, content_type = "text/event-stream"),
        (status = 204, description = "The quote is complete and nothing follows the given event id"),
        (status = 400, description = "last_event_id is not a number", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such quote", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the per-client rate", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database is unavailable", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(resume.last_event_id)
        .unwrap_or(0);
    // Subscribe before the first read, so nothing committed in between is missed.
    let mut subscription = state.hub.subscribe(id);
    subscription.mark_seen();
    // An id past the quote's latest event resumes after the latest: the stream then follows
    // what comes next and ends with `complete`.
    let store::Opening { complete, trace, last, first } =
        store::opening(&state.pool, id, last, PAGE).await.map_err(Problem::database)?.ok_or_else(|| not_found(id))?;
    metrics::counter!("sse_log_reads_total", "reason" => "open").increment(1);
    if first.is_empty() && complete {
        // 204 tells EventSource not to reconnect: the stream is over.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // The stream belongs to the quote's trace, not to this request's (EventSource cannot send a
    // traceparent); a quote stored without one is traced by its id, as the pollers do.
    let trace = TraceParent::of_work(trace, id.as_u128());
    let span = tracing::info_span!(parent: None, "stream", quote = %id, trace_id = %trace.trace_id(), after = last);
    platform::trace::span_in(&span, &trace);
    span.in_scope(|| tracing::info!("event stream opened"));
    let live = Live {
        pool: state.pool.clone(),
        quote: id,
        last,
        read: first.len() as i64 == PAGE,
        buffer: first.into(),
        subscription,
        done: false,
        hello: Some(state.settings.sse_retry),
        span,
        sent: 0,
    };
    let sse =
        Sse::new(events(live)).keep_alive(KeepAlive::new().interval(state.settings.sse_heartbeat).text("heartbeat"));
    let mut response = sse.into_response();
    // Proxies such as nginx must pass events through at once.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Whether `path` is a quote's event stream, the route of [`stream`].
pub fn is_stream_path(path: &str) -> bool {
    let id = path.strip_prefix("/api/v1/quotes/").and_then(|rest| rest.strip_suffix("/events"));
    id.is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The state of one live stream.
struct Live {
    pool: PgPool,
    quote: Uuid,
    last: i64,
    buffer: VecDeque<StoredEvent>,
    subscription: Subscription,
    /// The database may hold events the stream has not sent.
    read: bool,
    done: bool,
    /// The `retry:` to send first.
    hello: Option<Duration>,
    /// The stream's span in the quote's trace.
    span: tracing::Span,
    /// Events sent.
    sent: u32,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Whether the quote completed or the client went away, the stream's end is in the trace.
        self.span
            .in_scope(|| tracing::info!(sent = self.sent, last = self.last, done = self.done, "event stream closed"));
    }
}

fn events(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(live, |s| {
        let span = s.span.clone();
        next(s).instrument(span)
    })
}

/// The stream's next frame, and its state after it.
async fn next(mut s: Live) -> Option<(Result<Event, Infallible>, Live)> {
    if let Some(retry) = s.hello.take() {
        return Some((Ok(Event::default().retry(retry).comment("stream open")), s));
    }
    loop {
        if let Some(e) = s.buffer.pop_front() {
            s.last = e.seq;
            s.done = e.name == "complete";
            s.sent += 1;
            tracing::debug!(seq = e.seq, event = %e.name, "event sent");
            let event = Event::default().id(e.seq.to_string()).event(&e.name).data(e.data);
            return Some((Ok(event), s));
        }
        if s.done {
            return None;
        }
        if s.read {
            s.subscription.mark_seen();
            metrics::counter!("sse_log_reads_total", "reason" => "catch_up").increment(1);
            match store::events_after(&s.pool, s.quote, s.last, PAGE).await {
                Ok(more) => {
                    // A full page may have more behind it.
                    s.read = more.len() as i64 == PAGE;
                    s.buffer.extend(more);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            continue;
        }
        match s.subscription.changed().await {
            Wake::Event(e) if e.seq == s.last + 1 => s.buffer.push_back(StoredEvent::clone(&e)),
            // Sent already (read before its notification came).
            Wake::Event(e) if e.seq <= s.last => {}
            _ => s.read = true,
        }
    }
}
