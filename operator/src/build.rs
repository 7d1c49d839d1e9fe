//! The pure core of a reconcile: validate an InsurerIntegration, and build the objects that
//! should exist for it — the poller's ConfigMap (the manifest the poller reads) and Deployment.
//! No I/O here: same input, same output, which the unit tests pin down field by field.

use crate::config::PollerConfig;
use crds::{InsurerIntegration, InsurerIntegrationResource, MAX_NAME_LEN};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Field manager of every server-side apply, and `app.kubernetes.io/managed-by` of what it creates.
pub const MANAGER: &str = "osago-operator";
/// `app.kubernetes.io/name` of every poller object.
pub const APP_NAME: &str = "osago-poller";
/// Pod-template annotation with the hash of the poller's configuration: any change rolls the pods.
pub const CONFIG_HASH: &str = "osago.io/config-hash";
/// Label naming the insurer on every object built for it.
pub const INSURER_LABEL: &str = "osago.io/insurer";
/// Key of the manifest in the ConfigMap, and its file name in the pod.
pub const SPEC_FILE: &str = "insurer.yaml";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/osago/poller";
/// Where Secrets are mounted: `{SECRETS_DIR}/{secret name}/{key}`, what the poller reads.
pub const SECRETS_DIR: &str = "/var/run/secrets/osago";
/// The distroless "nonroot" user of the platform image.
pub const RUN_AS: i64 = 65532;

/// Why an object cannot be reconciled until someone changes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// An InsurerIntegration that passed validation, with the manifest its pollers will read.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    pub name: String,
    pub namespace: String,
    pub manifest: InsurerIntegration,
    pub owner: OwnerReference,
}

/// Checks what the API server's schema cannot (or what an older CRD may have let through).
pub fn validate(resource: &InsurerIntegrationResource) -> Result<Valid, InvalidSpec> {
    let name = resource.metadata.name.clone().ok_or_else(|| InvalidSpec("metadata.name is missing".into()))?;
    let namespace = resource
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| InvalidSpec("an InsurerIntegration must be namespaced".into()))?;
    let dns_label = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !dns_label {
        return Err(InvalidSpec(format!(
            "metadata.name must be a DNS label of at most {MAX_NAME_LEN} characters, got '{name}'"
        )));
    }
    resource.spec.check().map_err(InvalidSpec)?;
    let manifest = InsurerIntegration::from_resource(resource).map_err(InvalidSpec)?;
    let mut owner = resource
        .controller_owner_ref(&())
        .ok_or_else(|| InvalidSpec("the object has no uid yet (not stored by the API server)".into()))?;
    // A foreground deletion of the InsurerIntegration waits until its pollers are gone.
    owner.block_owner_deletion = Some(true);
    Ok(Valid { name, namespace, manifest, owner })
}

/// Name of the ConfigMap and the Deployment of an integration.
pub fn poller_name(insurer: &str) -> String {
    format!("{insurer}-poller")
}

/// Labels selecting the pods of one integration (immutable once a Deployment exists).
pub fn selector_labels(insurer: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), insurer.to_string()),
    ])
}

/// The selector as a string, for the scale subresource's `status.selector`.
pub fn selector_string(insurer: &str) -> String {
    selector_labels(insurer).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Every label of the objects built for an integration.
pub fn labels(insurer: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(insurer);
    labels.extend([
        ("app.kubernetes.io/component".to_string(), "poller".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "osago".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string()),
        (INSURER_LABEL.to_string(), insurer.to_string()),
    ]);
    labels
}

/// The label selector of everything this operator manages (its watches of owned objects).
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGER}")
}

/// The objects that should exist for one integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    /// Hash of everything the pods read from the ConfigMap.
    pub config_hash: String,
    /// Pods the Deployment should run: 0 when suspended.
    pub replicas: i32,
}

/// Builds the ConfigMap and the Deployment for a validated integration.
pub fn build(valid: &Valid, poller: &PollerConfig) -> Desired {
    let name = poller_name(&valid.name);
    let manifest_yaml = valid.manifest.to_yaml();
    let config_hash = hash(&manifest_yaml);
    let labels = labels(&valid.name);
    let meta = |kind_labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(valid.namespace.clone()),
        labels: Some(kind_labels),
        owner_references: Some(vec![valid.owner.clone()]),
        ..ObjectMeta::default()
    };
    let config_map = ConfigMap {
        metadata: meta(labels.clone()),
        data: Some(BTreeMap::from([(SPEC_FILE.to_string(), manifest_yaml)])),
        ..ConfigMap::default()
    };
    let spec = &valid.manifest.spec;
    let replicas = if spec.suspend { 0 } else { i32::try_from(spec.replicas).unwrap_or(i32::MAX) };
    let deployment = Deployment {
        metadata: meta(labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector_labels(&valid.name)), ..LabelSelector::default() },
            revision_history_limit: Some(3),
            // Pollers hold task leases, so an extra pod during a rollout is safe; a missing one is not needed.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH.to_string(), config_hash.clone())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(valid, &name, poller)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    Desired { config_map, deployment, config_hash, replicas }
}

fn pod_spec(valid: &Valid, config_map: &str, poller: &PollerConfig) -> PodSpec {
    let auth = &valid.manifest.spec.api.auth;
    let mut volumes = vec![
        Volume {
            name: "spec".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.to_string(),
                items: Some(vec![KeyToPath { key: SPEC_FILE.into(), path: SPEC_FILE.into(), mode: None }]),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "spec".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    if let Some(secret) = &auth.secret_ref {
        // Only the referenced key, readable by the pod's group (fsGroup), at {SECRETS_DIR}/{name}/{key}.
        volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath { key: secret.key.clone(), path: secret.key.clone(), mode: None }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: format!("{SECRETS_DIR}/{}", secret.name),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let env_value = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    let mut env = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
                ..EnvVarSource::default()
            }),
        },
        EnvVar {
            name: "AGGREGATOR_DATABASE_URL".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: poller.database_secret.clone(),
                    key: poller.database_secret_key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        },
        env_value("LOG_FORMAT", "json".into()),
    ];
    if let Some(level) = &poller.log_level {
        env.push(env_value("RUST_LOG", level.clone()));
    }
    if let Some(endpoint) = poller.otlp_endpoint.as_ref().filter(|e| !e.is_empty()) {
        env.push(env_value(platform::telemetry::OTLP_ENDPOINT, endpoint.clone()));
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container = Container {
        name: "poller".into(),
        image: Some(poller.image.clone()),
        image_pull_policy: poller.image_pull_policy.clone(),
        command: Some(vec!["/usr/local/bin/aggregator".into()]),
        args: Some(vec![
            "poller".into(),
            "--spec".into(),
            format!("{CONFIG_DIR}/{SPEC_FILE}"),
            "--secrets-dir".into(),
            SECRETS_DIR.into(),
            "--listen".into(),
            format!("0.0.0.0:{}", poller.port),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(poller.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/healthz", 2, 30)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: Some(poller.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        // Pollers never call the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        image_pull_secrets: (!poller.image_pull_secrets.is_empty()).then(|| {
            poller.image_pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

/// A poller is mostly waiting on the network: little CPU, a modest memory cap.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".into(), q("50m")), ("memory".into(), q("64Mi"))])),
        limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

fn hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{AuthType, InsurerIntegrationSpec, SecretRef};
    use k8s_openapi::api::core::v1::PodSpec;

    const ALFA: &str = "
apiVersion: osago.io/v1alpha1
kind: InsurerIntegration
metadata: {name: alfa, namespace: insurers, uid: 0b7c6f2e-1111-2222-3333-444455556666, generation: 3}
spec:
  displayName: АльфаСтрахование
  replicas: 4
  api:
    baseUrl: http://insurer.example:9101/alfa
    style: create-poll
    auth: {type: bearer, secretRef: {name: alfa-api, key: token}}
  timeouts: {connect: 2s, request: 5s, quote: 60s}
  rateLimit: {requestsPerSecond: 40, burst: 80, maxConcurrent: 32}
";

    /// A change to a resource, for table-driven tests.
    type Edit = fn(&mut InsurerIntegrationResource);
    /// A change to a spec, named by the field it touches.
    type SpecEdit = (&'static str, fn(&mut InsurerIntegrationSpec));

    fn resource() -> InsurerIntegrationResource {
        serde_yaml::from_str(ALFA).unwrap()
    }

    fn built(resource: &InsurerIntegrationResource) -> Desired {
        build(&validate(resource).unwrap(), &PollerConfig::default())
    }

    fn pod(desired: &Desired) -> PodSpec {
        desired.deployment.spec.clone().unwrap().template.spec.unwrap()
    }

    fn container(desired: &Desired) -> Container {
        pod(desired).containers.into_iter().next().unwrap()
    }

    fn env(desired: &Desired, name: &str) -> EnvVar {
        container(desired).env.unwrap().into_iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn validate_accepts_a_stored_object_and_refuses_what_cannot_be_built() {
        let valid = validate(&resource()).unwrap();
        assert_eq!((valid.name.as_str(), valid.namespace.as_str()), ("alfa", "insurers"));
        assert_eq!(valid.owner.uid, "0b7c6f2e-1111-2222-3333-444455556666");
        let cases: [(Edit, &str); 7] = [
            (|r| r.metadata.uid = None, "no uid"),
            (|r| r.metadata.namespace = None, "namespaced"),
            (|r| r.metadata.name = Some("Alfa".into()), "DNS label"),
            (|r| r.metadata.name = Some("a".repeat(57)), "at most 56"),
            (|r| r.spec.api.base_url = "ftp://x".into(), "http or https"),
            (|r| r.spec.api.auth.secret_ref = None, "secretRef is required"),
            (
                // The API server cannot check a template; the operator does, before anything is built.
                |r| {
                    let renins = include_str!("../../examples/insurers/renins.yaml");
                    r.spec.api = InsurerIntegration::from_yaml(renins).unwrap().spec.api;
                    r.spec.api.mapping.as_mut().unwrap().create.body = Some("{{ request.owner".into());
                },
                "api.mapping.create.body: syntax error",
            ),
        ];
        for (break_it, expected) in cases {
            let mut r = resource();
            break_it(&mut r);
            let err = validate(&r).unwrap_err();
            assert!(err.0.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn names_labels_and_owner_references() {
        let desired = built(&resource());
        for meta in [&desired.config_map.metadata, &desired.deployment.metadata] {
            assert_eq!(meta.name.as_deref(), Some("alfa-poller"));
            assert_eq!(meta.namespace.as_deref(), Some("insurers"));
            let labels = meta.labels.clone().unwrap();
            for (k, v) in [
                ("app.kubernetes.io/name", "osago-poller"),
                ("app.kubernetes.io/instance", "alfa"),
                ("app.kubernetes.io/component", "poller"),
                ("app.kubernetes.io/part-of", "osago"),
                ("app.kubernetes.io/managed-by", "osago-operator"),
                ("osago.io/insurer", "alfa"),
            ] {
                assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
            }
            let owners = meta.owner_references.clone().unwrap();
            assert_eq!(owners.len(), 1);
            let owner = &owners[0];
            assert_eq!(
                (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str()),
                ("osago.io/v1alpha1", "InsurerIntegration", "alfa")
            );
            assert_eq!(owner.uid, "0b7c6f2e-1111-2222-3333-444455556666");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(owner.block_owner_deletion, Some(true));
        }
        let spec = desired.deployment.spec.clone().unwrap();
        assert_eq!(spec.selector.match_labels, Some(selector_labels("alfa")));
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(selector_labels("alfa").iter().all(|(k, v)| template_labels.get(k) == Some(v)));
        assert_eq!(selector_string("alfa"), "app.kubernetes.io/instance=alfa,app.kubernetes.io/name=osago-poller");
    }

    #[test]
    fn the_config_map_holds_the_manifest_the_poller_reads() {
        let r = resource();
        let desired = built(&r);
        let yaml = &desired.config_map.data.as_ref().unwrap()[SPEC_FILE];
        let manifest = InsurerIntegration::from_yaml(yaml).unwrap();
        assert_eq!(manifest.name(), "alfa");
        assert_eq!(manifest.metadata.namespace.as_deref(), Some("insurers"));
        // The whole spec, replicas included: each poller divides the rate limit by spec.replicas.
        assert_eq!(manifest.spec, r.spec);
        assert_eq!(manifest.spec.replicas, 4);
        assert_eq!(manifest.spec.rate_limit.requests_per_second, 40);
    }

    #[test]
    fn every_spec_field_changes_the_config_hash() {
        let base = built(&resource()).config_hash;
        assert_eq!(base.len(), 16);
        assert_eq!(built(&resource()).config_hash, base, "the hash is deterministic");
        let changes: Vec<SpecEdit> = vec![
            ("displayName", |s| s.display_name = "Альфа".into()),
            ("suspend", |s| s.suspend = true),
            ("replicas", |s| s.replicas = 5),
            ("api.baseUrl", |s| s.api.base_url = "https://insurer.example/alfa".into()),
            ("api.style", |s| s.api.style = crds::ApiStyle::Operation),
            ("api.auth.type", |s| s.api.auth.kind = AuthType::Basic),
            ("api.auth.secretRef", |s| {
                s.api.auth.secret_ref = Some(SecretRef { name: "alfa-v2".into(), key: "token".into() })
            }),
            ("api.auth.header", |s| {
                s.api.auth.kind = AuthType::Header;
                s.api.auth.header = Some("X-Key".into());
            }),
            ("timeouts.connect", |s| s.timeouts.connect = crds::Duration::secs(3)),
            ("timeouts.request", |s| s.timeouts.request = crds::Duration::secs(6)),
            ("timeouts.quote", |s| s.timeouts.quote = crds::Duration::secs(90)),
            ("retry.maxAttempts", |s| s.retry.max_attempts = 5),
            ("retry.initialBackoff", |s| s.retry.initial_backoff = crds::Duration::millis(300)),
            ("retry.maxBackoff", |s| s.retry.max_backoff = crds::Duration::secs(6)),
            ("retry.multiplier", |s| s.retry.multiplier = 3.0),
            ("circuitBreaker.failureRateThreshold", |s| s.circuit_breaker.failure_rate_threshold = 60),
            ("circuitBreaker.windowSize", |s| s.circuit_breaker.window_size = 30),
            ("circuitBreaker.halfOpenCalls", |s| s.circuit_breaker.half_open_calls = 4),
            ("circuitBreaker.openDuration", |s| s.circuit_breaker.open_duration = crds::Duration::secs(10)),
            ("circuitBreaker.slowCallDuration", |s| s.circuit_breaker.slow_call_duration = crds::Duration::secs(1)),
            ("rateLimit.requestsPerSecond", |s| s.rate_limit.requests_per_second = 41),
            ("rateLimit.burst", |s| s.rate_limit.burst = 81),
            ("rateLimit.maxConcurrent", |s| s.rate_limit.max_concurrent = 33),
            ("polling.initialDelay", |s| s.polling.initial_delay = crds::Duration::secs(1)),
            ("polling.interval", |s| s.polling.interval = crds::Duration::secs(2)),
            ("polling.maxInterval", |s| s.polling.max_interval = crds::Duration::secs(9)),
        ];
        for (field, change) in changes {
            let mut r = resource();
            change(&mut r.spec);
            let desired = built(&r);
            assert_ne!(desired.config_hash, base, "{field}");
            let annotations = desired.deployment.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
            assert_eq!(annotations[CONFIG_HASH], desired.config_hash, "{field}");
            let yaml = &desired.config_map.data.unwrap()[SPEC_FILE];
            assert_eq!(InsurerIntegration::from_yaml(yaml).unwrap().spec, r.spec, "{field}");
        }
    }

    #[test]
    fn replicas_follow_spec_and_suspend() {
        let mut r = resource();
        assert_eq!(built(&r).replicas, 4);
        assert_eq!(built(&r).deployment.spec.unwrap().replicas, Some(4));
        r.spec.suspend = true;
        assert_eq!(built(&r).replicas, 0);
        assert_eq!(built(&r).deployment.spec.unwrap().replicas, Some(0));
        r.spec.suspend = false;
        r.spec.replicas = 0;
        assert_eq!(built(&r).deployment.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn the_poller_container() {
        let desired = built(&resource());
        let c = container(&desired);
        assert_eq!(c.image.as_deref(), Some("osago:0.1.0"));
        assert_eq!(c.command, Some(vec!["/usr/local/bin/aggregator".to_string()]));
        assert_eq!(
            c.args.unwrap(),
            [
                "poller",
                "--spec",
                "/etc/osago/poller/insurer.yaml",
                "--secrets-dir",
                "/var/run/secrets/osago",
                "--listen",
                "0.0.0.0:8090"
            ]
        );
        let port = &c.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("http"), 8090));
        for (probe, path) in
            [(c.liveness_probe, "/healthz"), (c.readiness_probe, "/readyz"), (c.startup_probe, "/healthz")]
        {
            let get = probe.unwrap().http_get.unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String("http".into()));
        }
        let pod_name = env(&desired, "POD_NAME").value_from.unwrap().field_ref.unwrap();
        assert_eq!(pod_name.field_path, "metadata.name");
        let db = env(&desired, "AGGREGATOR_DATABASE_URL").value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((db.name.as_str(), db.key.as_str()), ("aggregator-database", "url"));
        assert_eq!(env(&desired, "LOG_FORMAT").value.as_deref(), Some("json"));
        assert_eq!(c.resources, Some(default_resources()));
    }

    #[test]
    fn poller_config_reaches_the_pod() {
        let poller = PollerConfig {
            image: "registry.example/osago:1.2.3".into(),
            image_pull_policy: Some("IfNotPresent".into()),
            image_pull_secrets: vec!["regcred".into()],
            database_secret: "pg".into(),
            database_secret_key: "dsn".into(),
            port: 9000,
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
                ..ResourceRequirements::default()
            }),
            log_level: Some("debug".into()),
            otlp_endpoint: Some("http://otel-collector:4318".into()),
        };
        let desired = build(&validate(&resource()).unwrap(), &poller);
        let c = container(&desired);
        assert_eq!(c.image.as_deref(), Some("registry.example/osago:1.2.3"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(c.ports.unwrap()[0].container_port, 9000);
        assert!(c.args.unwrap().contains(&"0.0.0.0:9000".to_string()));
        assert_eq!(c.resources, poller.resources);
        let db = env(&desired, "AGGREGATOR_DATABASE_URL").value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((db.name.as_str(), db.key.as_str()), ("pg", "dsn"));
        assert_eq!(env(&desired, "RUST_LOG").value.as_deref(), Some("debug"));
        assert_eq!(env(&desired, "OTEL_EXPORTER_OTLP_ENDPOINT").value.as_deref(), Some("http://otel-collector:4318"));
        assert_eq!(pod(&desired).image_pull_secrets.unwrap()[0].name, "regcred");
        // The configuration of the operator is not the insurer's: the hash of the spec stays.
        assert_eq!(desired.config_hash, built(&resource()).config_hash);
    }

    #[test]
    fn the_secret_is_mounted_where_the_poller_reads_it() {
        let desired = built(&resource());
        let pod = pod(&desired);
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "credentials").unwrap();
        let secret = volume.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("alfa-api"));
        let items = secret.items.unwrap();
        assert_eq!((items[0].key.as_str(), items[0].path.as_str()), ("token", "token"));
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let mount = mounts.iter().find(|m| m.name == "credentials").unwrap();
        // {secrets dir}/{secretRef.name}/{secretRef.key}, as aggregator/src/clients/credentials.rs reads it.
        assert_eq!(format!("{}/{}", mount.mount_path, items[0].path), "/var/run/secrets/osago/alfa-api/token");
        assert_eq!(mount.read_only, Some(true));
        let spec = mounts.iter().find(|m| m.name == "spec").unwrap();
        assert_eq!(spec.mount_path, CONFIG_DIR);

        let mut open = resource();
        open.spec.api.auth = crds::Auth::default();
        let pod = super::tests::pod(&built(&open));
        assert!(pod.volumes.unwrap().iter().all(|v| v.secret.is_none()), "no secret without auth");
    }

    #[test]
    fn non_root_read_only_and_no_api_token() {
        let desired = built(&resource());
        let pod = pod(&desired);
        let psc = pod.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!((psc.run_as_user, psc.run_as_group, psc.fs_group), (Some(65532), Some(65532), Some(65532)));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }
}
