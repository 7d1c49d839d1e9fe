//! The public HTTP API of core-app (a contract: see README "API") and the web page.

mod events;
mod insurers;
pub mod openapi;
mod quotes;

use crate::aggregator_client::AggregatorClient;
use crate::hub::Hub;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// Largest quote request accepted; a real one is about 1 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Tunables of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// How long after the aggregator's deadline core-app expires what is left.
    pub deadline_grace: Duration,
    /// The reconnect delay sent to SSE clients.
    pub sse_retry: Duration,
    /// Interval of SSE heartbeat comments.
    pub sse_heartbeat: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            deadline_grace: Duration::from_secs(3),
            sse_retry: Duration::from_secs(2),
            sse_heartbeat: Duration::from_secs(10),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub hub: Arc<Hub>,
    pub aggregator: AggregatorClient,
    pub settings: Arc<ApiSettings>,
    pub insurers_cache: Arc<insurers::Cache>,
}

impl AppState {
    /// State for the handlers.
    pub fn new(pool: PgPool, hub: Arc<Hub>, aggregator: AggregatorClient, settings: ApiSettings) -> Self {
        AppState { pool, hub, aggregator, settings: Arc::new(settings), insurers_cache: Arc::default() }
    }
}

/// The API routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/quotes", post(quotes::create))
        .route("/api/v1/quotes/{id}", get(quotes::get))
        .route("/api/v1/quotes/{id}/events", get(events::stream))
        .route("/api/v1/insurers", get(insurers::list))
        .route("/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
