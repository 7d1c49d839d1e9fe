//! core-app: the public REST + SSE API, the Kafka consumer that stores quote events, the
//! deadline keeper, and the web page.

pub mod aggregator_client;
pub mod api;
pub mod consumer;
pub mod deadline;
pub mod hub;
pub mod retention;
mod server;
pub mod store;
pub mod web;

use aggregator_client::AggregatorClient;
use api::{ApiSettings, AppState};
use axum::Router;
use hub::Hub;
use platform::metrics::{postgres_ready, routes, track_http};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// core-app's database schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// What a core-app replica needs.
pub struct Settings {
    pub pool: PgPool,
    pub kafka_brokers: String,
    /// Topic of quote events (normally [`domain::events::TOPIC`]).
    pub topic: String,
    /// Consumer group; every replica of one deployment shares it.
    pub consumer_group: String,
    pub aggregator: AggregatorClient,
    pub api: ApiSettings,
}

/// The whole HTTP surface: API, page, health, readiness and metrics.
pub fn router(state: AppState) -> Router {
    let ready = postgres_ready(state.pool.clone());
    let cors = cors(&state.settings.cors_origins);
    let app = api::router(state)
        .merge(web::router())
        .merge(routes(ready))
        .layer(axum::middleware::from_fn(track_http))
        .layer(axum::middleware::from_fn(platform::trace::layer))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ));
    web::security_headers(app.layer(cors))
}

/// CORS for the allow-listed origins only; without any, browsers keep to the same origin.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static(platform::trace::HEADER),
        ])
        .expose_headers([header::LOCATION, header::RETRY_AFTER])
}

/// Runs a replica on `listener` until `shutdown` resolves: HTTP, Kafka consumer, the
/// LISTEN fan-out and the deadline keeper.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let hub = Arc::new(Hub::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listen = tokio::spawn(hub.clone().listen(settings.pool.clone()));
    platform::kafka::ensure_topic(&settings.kafka_brokers, &settings.topic).await;
    let consumer = consumer::consumer(&settings.kafka_brokers, &settings.consumer_group, &settings.topic)?;
    let consuming = tokio::spawn(consumer::run(settings.pool.clone(), consumer, server::stopped(stop_rx.clone())));
    let deadlines = tokio::spawn(deadline::run(settings.pool.clone(), server::stopped(stop_rx.clone())));
    let state = AppState::new(settings.pool, hub, settings.aggregator, settings.api);
    let http = tokio::spawn(server::run(listener, router(state), api::is_stream_path, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    // Open SSE streams end with the process; give in-flight requests a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    consuming.await?;
    deadlines.await?;
    listen.abort();
    Ok(())
}
