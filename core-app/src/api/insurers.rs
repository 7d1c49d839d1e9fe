//! `GET /api/v1/insurers`: the insurers that can take quotes now, from the aggregator,
//! cached briefly so a page load storm does not become an aggregator storm.

use super::{AppState, openapi};
use crate::aggregator_client::Insurer;
use axum::Json;
use axum::extract::State;
use platform::Problem;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fetched list is served.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// The last fetched list.
#[derive(Default)]
pub struct Cache(Mutex<Option<(Instant, Vec<Insurer>)>>);

/// Active insurers with display names.
#[utoipa::path(get, path = "/api/v1/insurers", tag = "insurers",
    responses(
        (status = 200, description = "Active insurers", body = [Insurer]),
        (status = 429, description = "Over the per-client rate", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The aggregator is unavailable", body = openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Insurer>>, Problem> {
    if let Some((at, list)) = state.insurers_cache.0.lock().expect("cache lock").as_ref()
        && at.elapsed() < FRESH_FOR
    {
        return Ok(Json(list.clone()));
    }
    let list = state.aggregator.insurers().await.map_err(|e| {
        tracing::warn!(error = %e, "listing insurers failed");
        Problem::unavailable("the insurer list is unavailable right now", Duration::from_secs(2))
    })?;
    *state.insurers_cache.0.lock().expect("cache lock") = Some((Instant::now(), list.clone()));
    Ok(Json(list))
}
