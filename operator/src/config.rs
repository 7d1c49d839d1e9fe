//! The operator's configuration: flags with environment fallbacks; every one has a default, so
//! `cargo run -p operator` with `KUBECONFIG` set needs no argument.

use clap::{ArgAction, Args, Parser};
use k8s_openapi::api::core::v1::ResourceRequirements;
use std::net::SocketAddr;
use std::time::Duration;

/// OSAGO operator: turns each InsurerIntegration into a poller Deployment and reports its status.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct Config {
    /// Namespaces to watch, comma-separated; empty watches every namespace.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub watch_namespaces: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OPERATOR_LISTEN", default_value = "0.0.0.0:8091")]
    pub listen: SocketAddr,
    /// Run only while holding the Lease, so that several replicas are safe.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "osago-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; the kubeconfig's (or the pod's) namespace when omitted.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events; the host name and a random suffix when omitted.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease holder that stopped renewing keeps the lead.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// The aggregator's base URL, to read each insurer's circuit breaker (`GET /internal/v1/insurers`).
    /// Without it the breaker is reported `unknown` and Ready follows the Deployment alone.
    #[arg(long, env = "AGGREGATOR_URL")]
    pub aggregator_url: Option<String>,
    /// Bearer token for the aggregator's internal API.
    #[arg(long, env = "AGGREGATOR_TOKEN", hide_env_values = true)]
    pub aggregator_token: Option<String>,
    /// How often to re-read the breaker of a ready integration.
    #[arg(long, env = "BREAKER_RESYNC", default_value = "30s", value_parser = parse_duration)]
    pub breaker_resync: Duration,
    #[command(flatten)]
    pub poller: PollerConfig,
}

/// What every poller Deployment gets, besides its spec.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct PollerConfig {
    /// Image with the `aggregator` binary; pollers run `aggregator poller`.
    #[arg(long = "poller-image", env = "POLLER_IMAGE", default_value = "osago:0.1.0")]
    pub image: String,
    /// Pull policy of the poller image (Kubernetes' default when omitted).
    #[arg(long = "poller-image-pull-policy", env = "POLLER_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// Pull secrets for the poller image, comma-separated.
    #[arg(long = "poller-image-pull-secrets", env = "POLLER_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub image_pull_secrets: Vec<String>,
    /// Secret (in each integration's namespace) holding the aggregator database URL for pollers.
    #[arg(long = "poller-database-secret", env = "POLLER_DATABASE_SECRET", default_value = "aggregator-database")]
    pub database_secret: String,
    /// Key of that Secret.
    #[arg(long = "poller-database-secret-key", env = "POLLER_DATABASE_SECRET_KEY", default_value = "url")]
    pub database_secret_key: String,
    /// Port of the poller's /healthz, /readyz and /metrics.
    #[arg(long = "poller-port", env = "POLLER_PORT", default_value_t = 8090)]
    pub port: u16,
    /// Resources of the poller container as JSON (`{"requests":{"cpu":"50m"},"limits":{...}}`).
    #[arg(long = "poller-resources", env = "POLLER_RESOURCES", value_parser = parse_resources)]
    pub resources: Option<ResourceRequirements>,
    /// `RUST_LOG` of the pollers.
    #[arg(long = "poller-log-level", env = "POLLER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// The OTLP/HTTP collector the pollers export their spans to (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[arg(long = "poller-otlp-endpoint", env = "POLLER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            image: "osago:0.1.0".into(),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            database_secret: "aggregator-database".into(),
            database_secret_key: "url".into(),
            port: 8090,
            resources: None,
            log_level: None,
            otlp_endpoint: None,
        }
    }
}

impl Config {
    /// The namespaces to watch: `None` for all of them.
    pub fn namespaces(&self) -> Option<Vec<String>> {
        let named: Vec<String> =
            self.watch_namespaces.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        (!named.is_empty()).then_some(named)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crds::Duration::parse(text).map(crds::Duration::get)
}

fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(text).map_err(|e| format!("POLLER_RESOURCES is not a ResourceRequirements object: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_argument_is_required() {
        let config = Config::try_parse_from(["operator"]).unwrap();
        assert_eq!(config.namespaces(), None);
        assert!(config.leader_election);
        assert_eq!(config.poller, PollerConfig::default());
    }

    #[test]
    fn flags_parse() {
        let config = Config::try_parse_from([
            "operator",
            "--watch-namespaces",
            "a, b,",
            "--leader-election",
            "false",
            "--poller-resources",
            r#"{"limits":{"memory":"128Mi"}}"#,
            "--lease-duration",
            "10s",
        ])
        .unwrap();
        assert_eq!(config.namespaces(), Some(vec!["a".to_string(), "b".to_string()]));
        assert!(!config.leader_election);
        assert_eq!(config.lease_duration, Duration::from_secs(10));
        assert!(config.poller.resources.unwrap().limits.unwrap().contains_key("memory"));
        assert!(Config::try_parse_from(["operator", "--poller-resources", "{"]).is_err());
    }
}
