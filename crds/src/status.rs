//! What the operator reports on each InsurerIntegration: conditions a platform team reads in
//! `kubectl get insurers`, replicas, the pollers' breaker, the last offer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the pollers run at the desired scale AND can call the insurer (breaker not open).
pub const READY: &str = "Ready";
/// Condition type: a change is being rolled out (pods starting, scaling).
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs a person: an invalid spec, a failed apply, an open breaker.
pub const DEGRADED: &str = "Degraded";

/// The observed state of one integration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InsurerIntegrationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Poller pods that exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Poller pods available (ready for the Deployment's minReadySeconds).
    #[serde(default)]
    pub ready_replicas: i32,
    /// The pollers' circuit breaker as they last reported it to the aggregator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
    /// When this insurer last returned an offer, as the aggregator reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub last_offer_time: Option<Time>,
    /// Label selector of the poller pods, for the scale subresource (`kubectl scale`, autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

impl InsurerIntegrationStatus {
    /// The condition of this type, if reported.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// One aspect of the state, the Kubernetes way (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// One CamelCase word for machines, e.g. `Available`, `BreakerOpen`, `InvalidSpec`.
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (not the reason or message).
    #[schemars(schema_with = "date_time")]
    pub last_transition_time: Time,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { ConditionStatus::True } else { ConditionStatus::False }
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// A few trial calls test whether the insurer recovered.
    HalfOpen,
    /// Calls fail fast: the insurer is failing.
    Open,
    /// Not known: no aggregator to ask, or the pollers did not report.
    Unknown,
}

impl BreakerState {
    /// The state as the aggregator spells it (`closed`, `half_open`/`half-open`, `open`).
    pub fn from_aggregator(text: &str) -> Self {
        match text {
            "closed" => BreakerState::Closed,
            "half_open" | "half-open" => BreakerState::HalfOpen,
            "open" => BreakerState::Open,
            _ => BreakerState::Unknown,
        }
    }
}

fn date_time(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}
