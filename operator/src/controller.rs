//! The imperative shell around [`crate::build`] and [`crate::status`]: the kube-runtime
//! Controller, server-side apply, the status patch, Events and the error policy.
//!
//! One reconcile: validate (pure) → build (pure) → apply ConfigMap and Deployment (server-side
//! apply, field manager [`MANAGER`]) → read the breaker → status (pure) → patch status → Events.

use crate::aggregator::Aggregator;
use crate::build::{self, Desired, MANAGER, Valid};
use crate::config::Config;
use crate::status::{self, Breaker, Observed};
use crds::{BreakerState, DEGRADED, InsurerIntegrationResource, InsurerIntegrationStatus, READY};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors of one reconcile; all of them are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {what}: {source}")]
    Apply { what: String, source: kube::Error },
    #[error("updating the status: {0}")]
    Status(kube::Error),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub aggregator: Aggregator,
    pub recorder: Recorder,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<InsurerIntegrationResource>, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, identity: &str) -> Self {
        let reporter = Reporter { controller: MANAGER.into(), instance: Some(identity.to_string()) };
        let aggregator = Aggregator::new(config.aggregator_url.clone(), config.aggregator_token.clone());
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            aggregator,
            failures: Mutex::default(),
        }
    }

    fn failed(&self, object: ObjectRef<InsurerIntegrationResource>) -> u32 {
        let mut failures = self.failures.lock().expect("not poisoned");
        let n = failures.entry(object).or_default();
        *n += 1;
        *n
    }

    fn succeeded(&self, object: &ObjectRef<InsurerIntegrationResource>) {
        self.failures.lock().expect("not poisoned").remove(object);
    }
}

/// Runs the controller over one namespace (or all) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (integrations, deployments, config_maps) = match &namespace {
        Some(ns) => (
            Api::<InsurerIntegrationResource>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    let owned = watcher::Config::default().labels(&build::managed_selector());
    tracing::info!(namespace = namespace.as_deref().unwrap_or("*"), "controller starting");
    Controller::new(integrations, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(config_maps, owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

/// One reconcile of one InsurerIntegration.
pub async fn reconcile(object: Arc<InsurerIntegrationResource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&object, &ctx).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    metrics::counter!("operator_reconciliations_total", "result" => outcome).increment(1);
    metrics::histogram!("operator_reconcile_duration_seconds").record(start.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&ObjectRef::from_obj(object.as_ref()));
    }
    result
}

async fn reconcile_inner(object: &InsurerIntegrationResource, ctx: &Context) -> Result<Action, Error> {
    let namespace = object.namespace().unwrap_or_default();
    let integrations: Api<InsurerIntegrationResource> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = object.metadata.generation;
    let previous = object.status.as_ref();
    let valid = match build::validate(object) {
        Ok(valid) => valid,
        Err(invalid) => {
            tracing::warn!(name = %object.name_any(), %namespace, error = %invalid, "invalid InsurerIntegration");
            let status = status::invalid(generation, &invalid.0, previous, Timestamp::now());
            if previous != Some(&status) {
                publish(ctx, object, EventType::Warning, "InvalidSpec", "Validate", &invalid.0).await;
                patch_status(&integrations, &object.name_any(), &status).await?;
            }
            metrics::counter!("operator_invalid_specs_total").increment(1);
            // Nothing to retry: the next change of the object triggers a new reconcile.
            return Ok(Action::await_change());
        }
    };
    let desired = build::build(&valid, &ctx.config.poller);
    let deployment = match apply(ctx, &valid, &desired).await {
        Ok(applied) => applied,
        Err(e) => {
            let status = status::apply_failed(generation, &e.to_string(), previous, Timestamp::now());
            publish(ctx, object, EventType::Warning, "ApplyFailed", "Apply", &e.to_string()).await;
            let _ = patch_status(&integrations, &valid.name, &status).await;
            return Err(e);
        }
    };
    let breaker = if object.spec.suspend {
        Breaker::Unknown("suspended".into())
    } else {
        ctx.aggregator.breaker(&valid.name).await
    };
    let status = status::compute(&Observed {
        generation,
        desired_replicas: desired.replicas,
        suspended: object.spec.suspend,
        deployment: &deployment,
        breaker,
        selector: build::selector_string(&valid.name),
        previous,
        now: Timestamp::now(),
    });
    if previous != Some(&status) {
        patch_status(&integrations, &valid.name, &status).await?;
        events_for_change(ctx, object, previous, &status).await;
    }
    let ready = status.condition(READY).is_some_and(|c| c.status == crds::ConditionStatus::True);
    // The Deployment's status changes arrive by watch; the breaker does not, so it is re-read.
    Ok(if ctx.aggregator.configured() && !object.spec.suspend {
        Action::requeue(ctx.config.breaker_resync)
    } else if ready {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(60))
    })
}

/// Server-side apply of both objects; returns the Deployment as stored (with its status).
async fn apply(ctx: &Context, valid: &Valid, desired: &Desired) -> Result<Deployment, Error> {
    let params = PatchParams::apply(MANAGER).force();
    let name = build::poller_name(&valid.name);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let before = deployments.get_opt(&name).await.ok().flatten();
    config_maps
        .patch(&name, &params, &Patch::Apply(with_type(&desired.config_map, "v1", "ConfigMap")))
        .await
        .map_err(|source| Error::Apply { what: format!("ConfigMap {name}"), source })?;
    let applied = deployments
        .patch(&name, &params, &Patch::Apply(with_type(&desired.deployment, "apps/v1", "Deployment")))
        .await
        .map_err(|source| Error::Apply { what: format!("Deployment {name}"), source })?;
    let hash_before = before.as_ref().and_then(pod_template_hash);
    if hash_before.as_deref() != Some(desired.config_hash.as_str()) {
        let (reason, note) = match hash_before {
            None => ("Created", format!("created ConfigMap and Deployment {name} (config {})", desired.config_hash)),
            Some(old) => {
                ("ConfigChanged", format!("rolling Deployment {name}: config {old} → {}", desired.config_hash))
            }
        };
        publish_ref(ctx, &valid.owner_reference(), EventType::Normal, reason, "Apply", &note).await;
    }
    let replicas_before = before.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
    if let Some(before) = replicas_before
        && before != desired.replicas
    {
        let note = format!("scaled {name} from {before} to {} replicas", desired.replicas);
        let reason = if desired.replicas == 0 { "Suspended" } else { "Scaled" };
        publish_ref(ctx, &valid.owner_reference(), EventType::Normal, reason, "Scale", &note).await;
    }
    Ok(applied)
}

fn pod_template_hash(deployment: &Deployment) -> Option<String> {
    deployment.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(build::CONFIG_HASH).cloned()
}

/// The object as JSON with `apiVersion` and `kind`, which server-side apply requires.
fn with_type<T: serde::Serialize>(object: &T, api_version: &str, kind: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("Kubernetes objects serialise");
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    value
}

async fn patch_status(
    api: &Api<InsurerIntegrationResource>,
    name: &str,
    status: &InsurerIntegrationStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", crds::GROUP, crds::VERSION),
        "kind": crds::KIND,
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await.map_err(Error::Status)?;
    Ok(())
}

/// Events for what changed between two statuses: readiness and the breaker.
async fn events_for_change(
    ctx: &Context,
    object: &InsurerIntegrationResource,
    previous: Option<&InsurerIntegrationStatus>,
    now: &InsurerIntegrationStatus,
) {
    let ready = |s: Option<&InsurerIntegrationStatus>| s.and_then(|s| s.condition(READY)).map(|c| c.status);
    // The first status of a new object is no news; a change of readiness after it is.
    if ready(previous).is_some()
        && ready(previous) != ready(Some(now))
        && let Some(c) = now.condition(READY)
    {
        let kind = if c.status == crds::ConditionStatus::True { EventType::Normal } else { EventType::Warning };
        let reason = if c.status == crds::ConditionStatus::True { "Ready" } else { "NotReady" };
        publish(ctx, object, kind, reason, "Observe", &format!("{}: {}", c.reason, c.message)).await;
    }
    let breaker = |s: Option<&InsurerIntegrationStatus>| s.and_then(|s| s.breaker);
    if breaker(previous) != breaker(Some(now)) && breaker(Some(now)) == Some(BreakerState::Open) {
        publish(ctx, object, EventType::Warning, "BreakerOpen", "Observe", "the pollers' circuit breaker opened").await;
    }
    if let Some(c) = now.condition(DEGRADED)
        && c.status == crds::ConditionStatus::True
        && c.reason == "ProgressDeadlineExceeded"
        && previous.and_then(|p| p.condition(DEGRADED)).map(|p| &p.reason) != Some(&c.reason)
    {
        publish(ctx, object, EventType::Warning, "ProgressDeadlineExceeded", "Observe", &c.message).await;
    }
}

async fn publish(
    ctx: &Context,
    object: &InsurerIntegrationResource,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    publish_ref(ctx, &object.object_ref(&()), type_, reason, action, note).await;
}

async fn publish_ref(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "publishing an event failed");
    }
}

/// Retries with exponential backoff per object: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn error_policy(object: Arc<InsurerIntegrationResource>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failed(ObjectRef::from_obj(object.as_ref()));
    let wait = backoff(failures);
    tracing::warn!(name = %object.name_any(), error = %error, failures, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// The wait after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

impl Valid {
    /// A reference to the InsurerIntegration, for Events about it.
    fn owner_reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(self.owner.api_version.clone()),
            kind: Some(self.owner.kind.clone()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: Some(self.owner.uid.clone()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(0), Duration::from_secs(1));
    }
}
