//! The partner intake API: `POST /internal/v1/applications` stores an application and one
//! task per active insurer in ONE transaction (shared with the applications that arrived
//! alongside, see [`writer`]), wakes those insurers' pollers, and answers with the id it
//! generated; `GET /internal/v1/insurers` lists who can take work.

pub mod writer;

use crate::partners::Partners;
use crate::registry::{self, ActiveInsurer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::intake::{Accepted, AssignedInsurer};
use domain::request::{QuoteRequest, RequestError};
use platform::Problem;
use platform::ratelimit::KeyedLimit;
use platform::trace::TraceParent;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use writer::{NewApplication, Writer};

/// Longest accepted Idempotency-Key.
const MAX_KEY_LEN: usize = 128;
/// How long a caller should wait when no insurer can take work.
const NO_INSURERS_RETRY: Duration = Duration::from_secs(5);

/// What the intake handlers share.
#[derive(Clone)]
pub struct Intake {
    pub pool: PgPool,
    pub partners: Arc<Partners>,
    /// Each partner's own request budget.
    pub limit: KeyedLimit<String>,
    /// Stores applications, several to a statement under load.
    pub writer: Writer,
}

/// The intake routes (without health and metrics, which the caller adds).
pub fn router(state: Intake) -> Router {
    Router::new()
        .route("/internal/v1/applications", post(create_application))
        .route("/internal/v1/insurers", get(list_insurers))
        .with_state(state)
}

/// The authenticated partner, within its rate limit.
fn partner<'a>(state: &'a Intake, headers: &HeaderMap) -> Result<&'a str, Problem> {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    let partner = state
        .partners
        .authenticate(authorization)
        .ok_or_else(|| Problem::unauthorized("a valid partner bearer token is required"))?;
    state.limit.check(&partner.to_string()).map_err(|wait| {
        metrics::counter!("intake_rate_limited_total", "partner" => partner.to_string()).increment(1);
        Problem::too_many_requests(wait)
    })?;
    Ok(partner)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Ok(Some(k.to_string())),
            _ => Err(Problem::bad_request(format!("Idempotency-Key must be 1–{MAX_KEY_LEN} visible ASCII characters"))),
        },
    }
}

async fn create_application(
    State(state): State<Intake>,
    trace: TraceParent,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let partner = partner(&state, &headers)?.to_string();
    let key = idempotency_key(&headers)?;
    let request = QuoteRequest::from_json(&body, Utc::now().date_naive()).map_err(|e| match e {
        RequestError::Syntax(msg) => Problem::bad_request(msg),
        RequestError::Invalid(errors) => Problem::invalid(&errors),
    })?;
    let normalised = serde_json::to_value(&request).map_err(internal)?;
    let hash = Sha256::digest(normalised.to_string().as_bytes()).to_vec();
    let application = NewApplication {
        id: Uuid::new_v4(),
        partner: partner.clone(),
        key,
        hash,
        request: normalised,
        trace: trace.to_string(),
    };
    match store(&state, application).await? {
        Stored::Created(accepted) => {
            metrics::counter!("intake_applications_total", "partner" => partner.clone(), "outcome" => "created")
                .increment(1);
            tracing::info!(application = %accepted.id, %partner, insurers = accepted.insurers.len(), "application accepted");
            Ok((StatusCode::CREATED, Json(accepted)).into_response())
        }
        Stored::Replayed(accepted) => Ok((StatusCode::OK, Json(accepted)).into_response()),
        Stored::KeyReused => Err(Problem::conflict("this Idempotency-Key was used with a different request body")),
        Stored::NoInsurers => {
            metrics::counter!("intake_applications_total", "partner" => partner, "outcome" => "no_insurers")
                .increment(1);
            Err(Problem::unavailable("no insurer can take applications right now", NO_INSURERS_RETRY))
        }
    }
}

enum Stored {
    Created(Accepted),
    Replayed(Accepted),
    KeyReused,
    NoInsurers,
}

/// Stores `application`; only a key seen before, or no insurer to take the work, costs a
/// second statement.
async fn store(state: &Intake, application: NewApplication) -> Result<Stored, Problem> {
    let id = application.id;
    let (partner, key, hash) = (application.partner.clone(), application.key.clone(), application.hash.clone());
    if let Some(created) = state.writer.write(application).await? {
        return Ok(Stored::Created(Accepted { id, insurers: created.insurers, deadline: created.deadline }));
    }
    // Nothing stored: the key was taken (by this partner before, or by a concurrent request
    // that won the race: answer as it did), or no insurer could take the work.
    Ok(match key {
        Some(key) => {
            replay(&state.pool, &partner, &key, &hash).await.map_err(Problem::database)?.unwrap_or(Stored::NoInsurers)
        }
        None => Stored::NoInsurers,
    })
}

/// The stored answer for `key`, or `None` when the key is new.
async fn replay(pool: &PgPool, partner: &str, key: &str, hash: &[u8]) -> sqlx::Result<Option<Stored>> {
    let row: Option<(Uuid, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, request_hash, deadline FROM applications WHERE partner = $1 AND idempotency_key = $2",
    )
    .bind(partner)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    let Some((id, stored_hash, deadline)) = row else { return Ok(None) };
    if stored_hash != hash {
        return Ok(Some(Stored::KeyReused));
    }
    let insurers: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.insurer, COALESCE(i.display_name, t.insurer) FROM tasks t LEFT JOIN insurers i ON i.name = t.insurer
         WHERE t.application_id = $1 ORDER BY t.insurer",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let insurers = insurers.into_iter().map(|(name, display_name)| AssignedInsurer { name, display_name }).collect();
    Ok(Some(Stored::Replayed(Accepted { id, insurers, deadline })))
}

async fn list_insurers(State(state): State<Intake>, headers: HeaderMap) -> Result<Json<Vec<ActiveInsurer>>, Problem> {
    partner(&state, &headers)?;
    Ok(Json(registry::active(&state.pool).await.map_err(Problem::database)?))
}

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "intake failed");
    Problem::internal()
}
