//! The `InsurerIntegration` resource (group `osago.io`, version `v1alpha1`): everything a
//! poller needs to talk to one insurer. The operator mounts this spec into the poller; the
//! local demo feeds the same YAML files from `examples/insurers/` straight to pollers.

mod duration;

pub use duration::Duration;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "osago.io";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "InsurerIntegration";

/// A whole manifest as written to `kubectl apply`; the shape pollers read from a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsurerIntegration {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: InsurerIntegrationSpec,
}

/// The part of Kubernetes object metadata a poller uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The insurer's name: its id in tasks, events and the API.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl InsurerIntegration {
    /// Reads a manifest, checking `apiVersion` and `kind`.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let manifest: InsurerIntegration = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let expected = format!("{GROUP}/{VERSION}");
        if manifest.api_version != expected || manifest.kind != KIND {
            return Err(format!(
                "expected apiVersion {expected} and kind {KIND}, got {} {}",
                manifest.api_version, manifest.kind
            ));
        }
        manifest.spec.check().map_err(|e| format!("{}: {e}", manifest.metadata.name))?;
        Ok(manifest)
    }

    /// The insurer's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

/// How to reach, pace and protect the calls to one insurer's partner API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InsurerIntegrationSpec {
    /// Name shown to people, e.g. "АльфаСтрахование".
    pub display_name: String,
    /// True scales the pollers to zero and stops new tasks for this insurer.
    #[serde(default)]
    pub suspend: bool,
    /// Poller replicas; the rate limit is split across them.
    #[serde(default = "one")]
    pub replicas: u32,
    pub api: Api,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub polling: Polling,
}

fn one() -> u32 {
    1
}

impl InsurerIntegrationSpec {
    /// Cross-field rules the schema alone cannot express.
    pub fn check(&self) -> Result<(), String> {
        let url = &self.api.base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("api.baseUrl must be an http or https URL, got '{url}'"));
        }
        if self.api.auth.kind != AuthType::None && self.api.auth.secret_ref.is_none() {
            return Err("api.auth.secretRef is required when api.auth.type is not none".into());
        }
        if self.api.auth.kind == AuthType::Header && self.api.auth.header.is_none() {
            return Err("api.auth.header names the header when api.auth.type is header".into());
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            return Err("retry.maxBackoff must be at least retry.initialBackoff".into());
        }
        if self.polling.max_interval < self.polling.interval {
            return Err("polling.maxInterval must be at least polling.interval".into());
        }
        Ok(())
    }
}

/// The insurer's partner API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Api {
    /// Base URL every path is relative to, e.g. `http://insurer.example:9101/alfa`.
    pub base_url: String,
    pub style: ApiStyle,
    #[serde(default)]
    pub auth: Auth,
}

/// Which protocol the insurer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiStyle {
    /// Create a calculation with our request id, poll it by that id.
    CreatePoll,
    /// 202 with an operation URL polled until done.
    Operation,
    /// Create a contract, request offers, poll the offers list.
    OffersList,
}

/// How the poller authenticates; credentials only by Secret reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Auth {
    #[serde(rename = "type", default)]
    pub kind: AuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Header carrying the key when `type` is `header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// Authentication schemes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    #[default]
    None,
    Bearer,
    /// `user:password` in the secret, sent as HTTP Basic.
    Basic,
    Header,
}

/// A key of a Kubernetes Secret in the resource's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// Time limits of the calls and of one quote at this insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    /// After this, a quote's task at this insurer ends as `expired`.
    pub quote: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::secs(2), request: Duration::secs(10), quote: Duration::secs(60) }
    }
}

/// Retry policy for failed calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            initial_backoff: Duration::millis(200),
            max_backoff: Duration::secs(5),
            multiplier: 2.0,
        }
    }
}

/// Circuit breaker over the calls to this insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Percentage of failed calls in the window that opens the circuit.
    pub failure_rate_threshold: u8,
    pub window_size: u32,
    pub half_open_calls: u32,
    pub open_duration: Duration,
    /// Calls slower than this count as failures.
    pub slow_call_duration: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            failure_rate_threshold: 50,
            window_size: 20,
            half_open_calls: 3,
            open_duration: Duration::secs(30),
            slow_call_duration: Duration::secs(5),
        }
    }
}

/// The insurer's rate limit, for all poller replicas together, and a bulkhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
    /// Calls in flight at once, per replica.
    pub max_concurrent: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { requests_per_second: 20, burst: 40, max_concurrent: 16 }
    }
}

/// The polling schedule after a create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Polling {
    /// Wait after the create before the first poll.
    pub initial_delay: Duration,
    pub interval: Duration,
    /// The interval grows up to this while the insurer keeps calculating.
    pub max_interval: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling { initial_delay: Duration::millis(500), interval: Duration::secs(1), max_interval: Duration::secs(5) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
apiVersion: osago.io/v1alpha1
kind: InsurerIntegration
metadata: {name: alfa}
spec:
  displayName: АльфаСтрахование
  api: {baseUrl: 'http://127.0.0.1:9100/alfa', style: create-poll, auth: {type: bearer, secretRef: {name: alfa-api, key: token}}}
";

    #[test]
    fn defaults_fill_everything_but_the_api() {
        let m = InsurerIntegration::from_yaml(MINIMAL).unwrap();
        assert_eq!(m.name(), "alfa");
        assert_eq!(m.spec.timeouts.quote, Duration::secs(60));
        assert_eq!(m.spec.polling.initial_delay, Duration::millis(500));
        assert_eq!(m.spec.rate_limit.requests_per_second, 20);
        assert_eq!(m.spec.replicas, 1);
    }

    #[test]
    fn cross_field_rules_are_enforced() {
        let cases = [
            ("baseUrl: 'http://127.0.0.1:9100/alfa'", "baseUrl: 'ftp://x'", "http or https"),
            (
                "auth: {type: bearer, secretRef: {name: alfa-api, key: token}}",
                "auth: {type: bearer}",
                "secretRef is required",
            ),
            ("style: create-poll", "style: smoke-signals", "unknown variant"),
            ("kind: InsurerIntegration", "kind: Deployment", "expected apiVersion"),
        ];
        for (from, to, expected) in cases {
            let err = InsurerIntegration::from_yaml(&MINIMAL.replace(from, to)).unwrap_err();
            assert!(err.contains(expected), "{to}: {err}");
        }
        let backwards = format!("{MINIMAL}  retry: {{initialBackoff: 2s, maxBackoff: 1s}}\n");
        assert!(InsurerIntegration::from_yaml(&backwards).unwrap_err().contains("maxBackoff"));
    }
}
