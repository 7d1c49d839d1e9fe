//! `sandbox` binary: runs the fake insurers of a configuration file.

use clap::Parser;
use sandbox::App;
use sandbox::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs fake insurer partner APIs for demos, tests and benchmarks.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Personalities file (TOML).
    #[arg(long, env = "SANDBOX_CONFIG", default_value = "sandbox/sandbox.toml")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Overrides the seed in the configuration file.
    #[arg(long, env = "SANDBOX_SEED")]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config).map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let mut config = Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    let names: Vec<String> = config.insurers.iter().map(|p| format!("{} ({:?})", p.name, p.style)).collect();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, insurers = ?names, "sandbox listening");
    App::build(config)
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
