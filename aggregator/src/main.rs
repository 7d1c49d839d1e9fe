//! `aggregator` binary: `serve` runs intake + outbox relay; `poller` runs one insurer's poller.

use aggregator::app::{self, ServeSettings};
use aggregator::partners::Partners;
use aggregator::poller::{self, PollerSettings};
use clap::{Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;
use std::net::SocketAddr;

/// OSAGO aggregator: partner intake, outbox relay, insurer pollers.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Postgres URL of the aggregator's database.
    #[arg(
        long,
        env = "AGGREGATOR_DATABASE_URL",
        global = true,
        default_value = "postgres://osago:osago@127.0.0.1:55432/aggregator"
    )]
    database_url: String,
    /// How long applications keep their personal data (`serve` erases it after this).
    #[arg(long, env = "RETENTION", global = true, default_value = "30days", value_parser = humantime::parse_duration)]
    retention: std::time::Duration,
    /// Most pooled connections to the database, LISTEN's included (default: 16 for `serve`, 3
    /// for `poller`, whose claims and writes each keep one connection of their own outside the pool).
    #[arg(long, env = "DB_POOL_SIZE", global = true, value_parser = clap::value_parser!(u32).range(2..))]
    db_pool_size: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Intake API and outbox relay.
    Serve {
        /// Address of the intake API.
        #[arg(long, env = "AGGREGATOR_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Kafka bootstrap servers.
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:59092")]
        kafka_brokers: String,
        /// Topic of quote events.
        #[arg(long, env = "KAFKA_TOPIC", default_value = domain::events::TOPIC)]
        topic: String,
        /// Partners allowed to submit applications, as `name:token,name:token`.
        #[arg(long, env = "AGGREGATOR_PARTNER_TOKENS", hide_env_values = true)]
        partner_tokens: String,
        /// Requests per second each partner may send (429 with Retry-After beyond).
        #[arg(long, env = "AGGREGATOR_PARTNER_RPS", default_value_t = 200)]
        partner_rps: u32,
        /// Burst each partner may send above its rate.
        #[arg(long, env = "AGGREGATOR_PARTNER_BURST", default_value_t = 400)]
        partner_burst: u32,
    },
    /// One insurer's poller, configured by its InsurerIntegration manifest.
    Poller {
        /// The InsurerIntegration YAML (what `kubectl apply` takes; the operator mounts it).
        #[arg(long, env = "POLLER_SPEC")]
        spec: std::path::PathBuf,
        /// Where the Secrets the spec refers to are mounted: `{dir}/{name}/{key}`.
        #[arg(long, env = "POLLER_SECRETS_DIR", default_value = "/var/run/secrets/osago")]
        secrets_dir: std::path::PathBuf,
        /// This replica's lease owner name; the pod name in Kubernetes.
        #[arg(long, env = "POD_NAME")]
        replica_id: Option<String>,
        /// Address of /healthz, /readyz and /metrics (none when omitted).
        #[arg(long, env = "POLLER_LISTEN")]
        listen: Option<SocketAddr>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A poller is light I/O on a handful of sockets; on one thread it has no wake-ups across
    // threads to pay for (six pollers share the node's cores with everything else, and a
    // busier insurer scales out by replicas). `serve` answers many callers at once.
    let runtime = match cli.command {
        Command::Poller { .. } => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let manifest = match &cli.command {
        Command::Poller { spec, .. } => Some(read_manifest(spec)?),
        Command::Serve { .. } => None,
    };
    let _telemetry = platform::telemetry::init(if manifest.is_some() { "poller" } else { "aggregator" });
    let mut options: PgConnectOptions = cli.database_url.parse()?;
    // The name `pg_stat_activity` shows for each connection: who holds them.
    options = match &manifest {
        Some(manifest) => poller::session_options(options).application_name(&format!("poller-{}", manifest.name())),
        None => options.application_name("aggregator"),
    };
    let pool_size = cli.db_pool_size.unwrap_or(if manifest.is_some() { poller::POOL_SIZE } else { 16 });
    let pool = platform::db::pool_options(pool_size)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect_with(options)
        .await?;
    aggregator::db::MIGRATOR.run(&pool).await?;
    match cli.command {
        Command::Serve { listen, kafka_brokers, topic, partner_tokens, partner_rps, partner_burst } => {
            let partners = Partners::parse(&partner_tokens).map_err(anyhow::Error::msg)?;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "aggregator listening");
            let hourly = std::time::Duration::from_secs(3600);
            tokio::spawn(aggregator::retention::run(pool.clone(), cli.retention, hourly, std::future::pending()));
            app::serve(
                ServeSettings { pool, kafka_brokers, topic, partners, partner_rate: (partner_rps, partner_burst) },
                listener,
                platform::shutdown_signal(),
            )
            .await
        }
        Command::Poller { secrets_dir, replica_id, listen, .. } => {
            let manifest = manifest.expect("read above for a poller");
            let replica_id =
                replica_id.unwrap_or_else(|| format!("{}-{}", manifest.name(), uuid::Uuid::new_v4().simple()));
            tracing::info!(insurer = manifest.name(), replica = %replica_id, "poller starting");
            let pool_for_probes = pool.clone();
            if let Some(addr) = listen {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                tracing::info!(addr = %listener.local_addr()?, "poller probes listening");
                tokio::spawn(async move { axum::serve(listener, app::probes(pool_for_probes)).await });
            }
            let settings = PollerSettings::new(manifest, pool, secrets_dir, replica_id);
            poller::run(settings, platform::shutdown_signal()).await
        }
    }
}

/// The InsurerIntegration a poller runs, from the file the operator mounts.
fn read_manifest(spec: &std::path::Path) -> anyhow::Result<crds::InsurerIntegration> {
    let text = std::fs::read_to_string(spec).map_err(|e| anyhow::anyhow!("{}: {e}", spec.display()))?;
    crds::InsurerIntegration::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", spec.display()))
}
