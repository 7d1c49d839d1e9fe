//! `aggregator serve`: the intake API and the outbox relay in one process.

use crate::intake::writer::Writer;
use crate::intake::{self, Intake};
use crate::partners::Partners;
use crate::relay;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use platform::metrics::{postgres_ready, routes, track_http};
use platform::ratelimit::KeyedLimit;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest application body accepted; a real one is about 1 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What `serve` needs.
pub struct ServeSettings {
    pub pool: PgPool,
    pub kafka_brokers: String,
    /// Topic of quote events (normally [`domain::events::TOPIC`]).
    pub topic: String,
    pub partners: Partners,
    /// Requests per second and burst allowed to each partner.
    pub partner_rate: (u32, u32),
}

/// `/healthz`, `/readyz` (the database answers) and `/metrics`.
pub fn probes(pool: PgPool) -> Router {
    routes(postgres_ready(pool))
}

/// The HTTP router: intake plus the probes.
pub fn router(pool: PgPool, partners: Partners, partner_rate: (u32, u32)) -> Router {
    let limit = KeyedLimit::per_second(partner_rate.0, partner_rate.1);
    intake::router(Intake {
        pool: pool.clone(),
        partners: Arc::new(partners),
        limit,
        writer: Writer::start(pool.clone()),
    })
    .layer(DefaultBodyLimit::max(BODY_LIMIT))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::GATEWAY_TIMEOUT,
        Duration::from_secs(30),
    ))
    .merge(probes(pool))
    .layer(axum::middleware::from_fn(track_http))
    .layer(axum::middleware::from_fn(platform::trace::layer))
}

/// Serves intake on `listener` and runs the relay until `shutdown` resolves.
pub async fn serve(
    settings: ServeSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    platform::kafka::ensure_topic(&settings.kafka_brokers, &settings.topic).await;
    let producer = relay::producer(&settings.kafka_brokers)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let relay = tokio::spawn(relay::run(settings.pool.clone(), producer, settings.topic, stopped(stop_rx.clone())));
    let http = axum::serve(listener, router(settings.pool, settings.partners, settings.partner_rate))
        .with_graceful_shutdown(stopped(stop_rx));
    let http = tokio::spawn(async move { http.await });
    shutdown.await;
    let _ = stop_tx.send(true);
    http.await??;
    relay.await??;
    Ok(())
}
