//! `operator` binary: reconciles InsurerIntegrations with the cluster of `KUBECONFIG` (or the pod's service account).

use clap::Parser;
use operator::{Config, Exit};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("operator");
    let config = Config::parse();
    let client = kube::Client::try_default().await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "health and metrics listening");
    match operator::run(config, client, Some(listener), platform::shutdown_signal()).await? {
        Exit::Shutdown => Ok(()),
        Exit::LostLeadership => std::process::exit(1),
    }
}
