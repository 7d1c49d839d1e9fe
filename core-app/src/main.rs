//! `core-app` binary: one replica of the public API.

use clap::Parser;
use core_app::aggregator_client::AggregatorClient;
use core_app::api::ApiSettings;
use core_app::{MIGRATOR, Settings};
use std::net::SocketAddr;
use std::time::Duration;

/// OSAGO core-app: public REST + SSE API and the web page.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CORE_APP_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Postgres URL of core-app's database.
    #[arg(long, env = "CORE_APP_DATABASE_URL", default_value = "postgres://osago:osago@127.0.0.1:55432/core_app")]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:59092")]
    kafka_brokers: String,
    /// Topic of quote events.
    #[arg(long, env = "KAFKA_TOPIC", default_value = domain::events::TOPIC)]
    topic: String,
    /// Kafka consumer group shared by all replicas.
    #[arg(long, env = "CORE_APP_CONSUMER_GROUP", default_value = "core-app")]
    consumer_group: String,
    /// Base URL of the aggregator intake.
    #[arg(long, env = "AGGREGATOR_URL", default_value = "http://127.0.0.1:8081")]
    aggregator_url: String,
    /// core-app's partner token at the aggregator.
    #[arg(long, env = "AGGREGATOR_TOKEN", hide_env_values = true)]
    aggregator_token: String,
    /// Time limit of one call to the aggregator.
    #[arg(long, env = "AGGREGATOR_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    aggregator_timeout: Duration,
    /// Extra time after the aggregator's deadline before core-app expires what is left.
    #[arg(long, env = "CORE_APP_DEADLINE_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    deadline_grace: Duration,
    /// Origins of other sites whose pages may call the API, comma-separated (CORS allow-list).
    #[arg(long, env = "CORE_APP_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// How long finished quotes keep their replay log and idempotency key.
    #[arg(long, env = "RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Requests per second each client address may send to /api (429 with Retry-After beyond).
    #[arg(long, env = "CORE_APP_CLIENT_RPS", default_value_t = 20)]
    client_rps: u32,
    /// Burst each client address may send above its rate.
    #[arg(long, env = "CORE_APP_CLIENT_BURST", default_value_t = 40)]
    client_burst: u32,
    /// Most pooled connections to the database, LISTEN's included (the consumer's rounds keep one
    /// more, outside the pool). A pool of 16 served 130 quotes/s on the bench
    /// without a refusal.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..))]
    db_pool_size: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("core-app");
    let args = Args::parse();
    let options = core_app::store::session_options(args.database_url.parse()?);
    let pool = platform::db::pool_options(args.db_pool_size)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    let aggregator = AggregatorClient::new(&args.aggregator_url, &args.aggregator_token, args.aggregator_timeout)?;
    let hourly = Duration::from_secs(3600);
    tokio::spawn(core_app::retention::run(pool.clone(), args.retention, hourly, std::future::pending()));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "core-app listening");
    let settings = Settings {
        pool,
        kafka_brokers: args.kafka_brokers,
        topic: args.topic,
        consumer_group: args.consumer_group,
        aggregator,
        api: ApiSettings {
            deadline_grace: args.deadline_grace,
            client_rate: (args.client_rps, args.client_burst),
            cors_origins: args.cors_origins,
            ..ApiSettings::default()
        },
    };
    core_app::serve(settings, listener, platform::shutdown_signal()).await
}
