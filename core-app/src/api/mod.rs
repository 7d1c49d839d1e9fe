//! The public HTTP API of core-app (a contract: see README "API") and the web page.

mod events;
pub use events::is_stream_path;
mod insurers;
pub mod openapi;
mod quotes;

use crate::aggregator_client::AggregatorClient;
use crate::hub::Hub;
use crate::store::{self, NewQuote, Stored};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platform::Problem;
use platform::group_commit::GroupCommit;
use platform::ratelimit::KeyedLimit;
use sqlx::PgPool;
use std::net::{IpAddr, SocketAddr};
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
    /// Requests per second and burst per client address on `/api` (the in-process limit
    /// for runs without an ingress; in Kubernetes the ingress limits too).
    pub client_rate: (u32, u32),
    /// Other origins whose pages may call the API (CORS); empty: same origin only.
    pub cors_origins: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            deadline_grace: Duration::from_secs(3),
            sse_retry: Duration::from_secs(2),
            sse_heartbeat: Duration::from_secs(10),
            client_rate: (20, 40),
            cors_origins: vec![],
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Stores created quotes, those created together in one transaction.
    pub quotes: GroupCommit<NewQuote, Stored>,
    pub hub: Arc<Hub>,
    pub aggregator: AggregatorClient,
    pub settings: Arc<ApiSettings>,
    pub insurers_cache: Arc<insurers::Cache>,
    pub client_limit: KeyedLimit<IpAddr>,
}

impl AppState {
    /// State for the handlers.
    pub fn new(pool: PgPool, hub: Arc<Hub>, aggregator: AggregatorClient, settings: ApiSettings) -> Self {
        let client_limit = KeyedLimit::per_second(settings.client_rate.0, settings.client_rate.1);
        let quotes = store::writer(pool.clone());
        AppState {
            pool,
            quotes,
            hub,
            aggregator,
            settings: Arc::new(settings),
            insurers_cache: Arc::default(),
            client_limit,
        }
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
        .fallback(|| async { Problem::not_found("no such resource") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.client_limit.clone(), limit_clients))
        // Routing's 405 and extractors' rejections (413, 400) answer problem+json too.
        .layer(middleware::from_fn(platform::problem::problem_errors))
        .with_state(state)
}

/// 429 with `Retry-After` for a client address over its rate; connections without a known
/// peer (in-process tests) are not limited.
async fn limit_clients(State(limit): State<KeyedLimit<IpAddr>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(ip) = peer
        && let Err(wait) = limit.check(&ip)
    {
        metrics::counter!("http_client_rate_limited_total").increment(1);
        return Problem::too_many_requests(wait).into_response();
    }
    next.run(request).await
}
