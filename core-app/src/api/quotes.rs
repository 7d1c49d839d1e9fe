//! `POST /api/v1/quotes` and `GET /api/v1/quotes/{id}`.

use super::AppState;
use super::openapi;
use crate::aggregator_client::SubmitError;
use crate::store::{self, NewQuote, QuoteView, Stored};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::intake::Accepted;
use domain::request::{QuoteRequest, RequestError};
use platform::Problem;
use platform::trace::TraceParent;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What a quote refused for now (503) is told.
const REFUSED: &str = "quotes cannot be taken right now; please retry";

/// Longest accepted Idempotency-Key.
const MAX_KEY_LEN: usize = 128;

/// The answer to a created quote.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: Uuid,
    /// Always `in_progress` when created.
    pub status: String,
    /// Names of the insurers asked.
    pub insurers: Vec<String>,
    pub deadline: DateTime<Utc>,
    /// Where the results stream (SSE).
    pub events_url: String,
}

/// Creates a quote: validates, asks the aggregator, stores, answers 201.
#[utoipa::path(post, path = "/api/v1/quotes", tag = "quotes",
    request_body(content = domain::request::QuoteRequest, description = "The quote request (at most 64 KiB)"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → same quote (1–128 visible ASCII characters)")),
    responses(
        (status = 201, description = "Quote created; results follow on events_url", body = Created,
            headers(("Location" = String, description = "The quote, /api/v1/quotes/{id}"))),
        (status = 400, description = "Not JSON, or a malformed Idempotency-Key", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another body", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, all of them listed in `errors`", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the per-client rate", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The aggregator or the database is unavailable, or the platform is overloaded (type `urn:osago:problem:overloaded`)", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create(
    State(state): State<AppState>,
    trace: TraceParent,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let request = QuoteRequest::from_json(&body, Utc::now().date_naive()).map_err(|e| match e {
        RequestError::Syntax(msg) => Problem::bad_request(msg),
        RequestError::Invalid(errors) => {
            metrics::counter!("quotes_rejected_total", "reason" => "validation").increment(1);
            Problem::invalid(&errors)
        }
    })?;
    let normalised = serde_json::to_value(&request).map_err(internal)?;
    let hash = Sha256::digest(normalised.to_string().as_bytes()).to_vec();

    if let Some(key) = &key
        && let Some(response) = replay(&state, key, &hash).await?
    {
        return Ok(response);
    }
    // The quote store is backed up: refuse now, before the aggregator takes an application (and
    // six insurers start on it) that the store would refuse after all.
    if state.quotes.backed_up() {
        metrics::counter!("quotes_rejected_total", "reason" => "store_overloaded").increment(1);
        return Err(Problem::overloaded(REFUSED, platform::problem::OVERLOADED_RETRY));
    }
    // Retries reuse the key, so the aggregator never creates two applications for one quote.
    let aggregator_key = key.as_ref().map_or_else(|| Uuid::new_v4().to_string(), |k| format!("core-app:{k}"));
    let accepted = state.aggregator.submit(&normalised, &aggregator_key, &trace).await.map_err(|e| match e {
        SubmitError::CircuitOpen { retry_after } => {
            metrics::counter!("quotes_rejected_total", "reason" => "aggregator_circuit_open").increment(1);
            Problem::unavailable(REFUSED, retry_after)
        }
        SubmitError::Overloaded { retry_after } => {
            metrics::counter!("quotes_rejected_total", "reason" => "aggregator_overloaded").increment(1);
            Problem::overloaded(REFUSED, retry_after)
        }
        SubmitError::Unavailable { reason, retry_after } => {
            tracing::warn!(%reason, "aggregator unavailable");
            metrics::counter!("quotes_rejected_total", "reason" => "aggregator_unavailable").increment(1);
            Problem::unavailable(REFUSED, retry_after)
        }
        SubmitError::Rejected(reason) => {
            tracing::error!(%reason, "aggregator rejected a validated request");
            Problem::internal()
        }
    })?;
    let grace = chrono::Duration::from_std(state.settings.deadline_grace).unwrap_or_default();
    let quote = NewQuote {
        accepted: accepted.clone(),
        key: key.clone(),
        request_hash: hash.clone(),
        expires_at: accepted.deadline + grace,
        trace: Some(trace),
    };
    match state.quotes.write(quote).await? {
        Stored::New | Stored::Before => {}
        // Two requests with one key raced; the winner stored the quote.
        Stored::KeyTaken => {
            let replayed = match &key {
                Some(key) => replay(&state, key, &hash).await?,
                None => None,
            };
            return replayed.ok_or_else(|| internal("a quote without a key was refused for its key"));
        }
    }
    metrics::counter!("quotes_created_total").increment(1);
    tracing::info!(quote = %accepted.id, insurers = accepted.insurers.len(), "quote created");
    Ok(created(&accepted))
}

fn created(accepted: &Accepted) -> Response {
    let body = Created {
        id: accepted.id,
        status: "in_progress".into(),
        insurers: accepted.insurers.iter().map(|i| i.name.clone()).collect(),
        deadline: accepted.deadline,
        events_url: format!("/api/v1/quotes/{}/events", accepted.id),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let location = format!("/api/v1/quotes/{}", accepted.id);
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ascii location"));
    response
}

/// The earlier answer for `key`, a conflict for another body, or `None` for a new key.
async fn replay(state: &AppState, key: &str, hash: &[u8]) -> Result<Option<Response>, Problem> {
    let Some((id, stored_hash)) = store::find_by_key(&state.pool, key).await.map_err(Problem::database)? else {
        return Ok(None);
    };
    if stored_hash != hash {
        return Err(Problem::conflict("this Idempotency-Key was used with a different request body"));
    }
    let view = store::view(&state.pool, id).await.map_err(Problem::database)?.ok_or_else(Problem::internal)?;
    let accepted = Accepted {
        id,
        insurers: view
            .insurers
            .into_iter()
            .map(|i| domain::intake::AssignedInsurer { name: i.insurer, display_name: i.display_name })
            .collect(),
        deadline: view.deadline,
    };
    Ok(Some(created(&accepted)))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= MAX_KEY_LEN => Ok(Some(k.trim().to_string())),
            _ => Err(Problem::bad_request(format!("Idempotency-Key must be 1–{MAX_KEY_LEN} visible ASCII characters"))),
        },
    }
}

/// The current state of a quote.
#[utoipa::path(get, path = "/api/v1/quotes/{id}", tag = "quotes",
    params(("id" = Uuid, Path, description = "Quote id")),
    responses(
        (status = 200, description = "The quote", body = QuoteView),
        (status = 404, description = "No such quote", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the per-client rate", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database is unavailable", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<QuoteView>, Problem> {
    let id = parse_id(&id)?;
    store::view(&state.pool, id).await.map_err(Problem::database)?.map(Json).ok_or_else(|| not_found(id))
}

/// A quote id from the path; anything that is not a UUID cannot be a quote.
pub(super) fn parse_id(text: &str) -> Result<Uuid, Problem> {
    text.parse().map_err(|_| Problem::not_found("no such quote"))
}

pub(super) fn not_found(_id: Uuid) -> Problem {
    Problem::not_found("no such quote")
}

pub(super) fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "request failed");
    Problem::internal()
}
