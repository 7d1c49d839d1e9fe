//! `bench-baseline`: the floor intake is compared with — a minimal axum handler that reads
//! the quote request as JSON and stores it with one Postgres insert, answering 201 with an
//! id. Same runtime, pool size and database server as core-app; none of its work.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use sqlx::PgPool;
use std::net::SocketAddr;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    database_url: String,
    #[arg(long)]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = platform::db::pool_options(32).connect(&args.database_url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS baseline_quotes (id uuid PRIMARY KEY, request jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await?;
    let app = Router::new()
        .route("/api/v1/quotes", post(create))
        .route("/readyz", axum::routing::get(|| async { "ready" }))
        .route("/api/v1/quotes/{id}/events", axum::routing::get(idle_stream))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The floor of an idle SSE stream in axum: a `retry:` hello, then heartbeats only — what
/// one stream costs before any application state.
async fn idle_stream() -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let hello = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(
            Event::default().retry(std::time::Duration::from_secs(2)).comment("stream open"),
        )
    });
    let stream = futures::StreamExt::chain(hello, futures::stream::pending());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(10)).text("heartbeat"))
        .into_response()
}

async fn create(State(pool): State<PgPool>, body: Bytes) -> Response {
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let id = uuid::Uuid::new_v4();
    match sqlx::query("INSERT INTO baseline_quotes (id, request) VALUES ($1, $2)")
        .bind(id)
        .bind(&request)
        .execute(&pool)
        .await
    {
        Ok(_) => (StatusCode::CREATED, axum::Json(serde_json::json!({"id": id}))).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
