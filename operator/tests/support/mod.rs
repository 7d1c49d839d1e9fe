//! A real API server for the operator's tests: `scripts/k8s.sh up` (a no-op when `make k8s-up`
//! already ran), the CRD and `deploy/rbac/` installed once, a fresh namespace per test, and the
//! operator running in-process as its own ServiceAccount (impersonated), so that it has exactly
//! the permissions the Helm chart grants.

#![allow(dead_code)]

use crds::{InsurerIntegrationResource, READY};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, oneshot};

pub const OPERATOR_NAMESPACE: &str = "osago-system";
pub const OPERATOR_SA: &str = "system:serviceaccount:osago-system:osago-operator";
const ADMIN: &str = "osago-test-admin";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The admin kubeconfig of the test API server, starting it when it is not running.
pub fn kubeconfig() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = std::process::Command::new(repo().join("scripts/k8s.sh"))
            .arg("up")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running scripts/k8s.sh up");
        assert!(out.status.success(), "scripts/k8s.sh up failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let last = stdout.lines().last().expect("k8s.sh up prints the export line last");
        PathBuf::from(last.strip_prefix("export KUBECONFIG=").expect("an export line"))
    })
    .clone()
}

pub async fn config() -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).unwrap();
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap()
}

/// A client with the admin's rights (system:masters).
pub async fn admin() -> Client {
    Client::try_from(config().await).unwrap()
}

/// A client acting as `user` (impersonation: RBAC decides exactly as for that user).
pub async fn as_user(user: &str) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

/// Installs the CRD (waiting until Established) and the operator's RBAC, once per test binary.
pub async fn install() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let client = admin().await;
        let params = PatchParams::apply(ADMIN).force();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd = crds::crd();
        let name = "insurerintegrations.osago.io";
        crds.patch(name, &params, &Patch::Apply(typed(&crd, "apiextensions.k8s.io/v1", "CustomResourceDefinition")))
            .await
            .unwrap();
        eventually("the CRD to be Established", Duration::from_secs(30), || async {
            let crd = crds.get(name).await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
        ensure_namespace(&client, OPERATOR_NAMESPACE).await;
        apply_rbac(&client).await;
    })
    .await;
}

/// Server-side applies every object of `deploy/rbac/*.yaml`.
async fn apply_rbac(client: &Client) {
    let params = PatchParams::apply(ADMIN).force();
    let dir = repo().join("deploy/rbac");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
            if value.is_null() {
                continue;
            }
            let name = value["metadata"]["name"].as_str().unwrap().to_string();
            let ns = value["metadata"]["namespace"].as_str().unwrap_or(OPERATOR_NAMESPACE).to_string();
            let patch = Patch::Apply(&value);
            let result = match value["kind"].as_str().unwrap() {
                "ServiceAccount" => {
                    Api::<ServiceAccount>::namespaced(client.clone(), &ns).patch(&name, &params, &patch).await.map(drop)
                }
                "ClusterRole" => Api::<ClusterRole>::all(client.clone()).patch(&name, &params, &patch).await.map(drop),
                "ClusterRoleBinding" => {
                    Api::<ClusterRoleBinding>::all(client.clone()).patch(&name, &params, &patch).await.map(drop)
                }
                "Role" => Api::<Role>::namespaced(client.clone(), &ns).patch(&name, &params, &patch).await.map(drop),
                "RoleBinding" => {
                    Api::<RoleBinding>::namespaced(client.clone(), &ns).patch(&name, &params, &patch).await.map(drop)
                }
                other => panic!("{}: unexpected kind {other}", file.display()),
            };
            result.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

use serde::Deserialize;

pub async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// A fresh namespace for one test.
pub async fn namespace(prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ensure_namespace(&admin().await, &name).await;
    name
}

/// A Kubernetes object as JSON with `apiVersion` and `kind`, for server-side apply.
pub fn typed<T: serde::Serialize>(object: &T, api_version: &str, kind: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    value
}

/// The example manifest `examples/insurers/{name}.yaml` as a resource.
pub fn example(name: &str) -> InsurerIntegrationResource {
    let text = std::fs::read_to_string(repo().join(format!("examples/insurers/{name}.yaml"))).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Polls `probe` until it returns `Some`, or panics after `limit` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator, running in-process as `user` over one namespace until dropped.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<operator::Exit>>>,
}

impl Operator {
    /// As its own ServiceAccount, with the given aggregator URL (for breakers) if any.
    pub async fn start(namespace: &str, aggregator: Option<String>) -> Operator {
        Operator::start_as(OPERATOR_SA, namespace, aggregator, &format!("osago-operator-{namespace}"), "test").await
    }

    pub async fn start_as(user: &str, namespace: &str, aggregator: Option<String>, lease: &str, id: &str) -> Operator {
        install().await;
        let mut config = operator_config(namespace, lease, id);
        config.aggregator_url = aggregator;
        config.aggregator_token = Some("operator-token".into());
        let client = as_user(user).await;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(operator::run(config, client, None, async move {
            let _ = rx.await;
        }));
        Operator { stop: Some(tx), handle: Some(handle) }
    }

    /// Stops it (releasing the lease) and returns how the run ended.
    pub async fn stop(mut self) -> operator::Exit {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn operator_config(namespace: &str, lease: &str, id: &str) -> operator::Config {
    use clap::Parser;
    let mut config = operator::Config::try_parse_from(["operator"]).unwrap();
    config.watch_namespaces = vec![namespace.to_string()];
    config.lease_name = lease.to_string();
    config.lease_namespace = Some(OPERATOR_NAMESPACE.to_string());
    config.identity = Some(format!("{id}-{namespace}"));
    config.lease_duration = Duration::from_secs(3);
    config.breaker_resync = Duration::from_millis(500);
    config
}

/// The Ready condition's status and reason, once the operator observed the current generation.
pub async fn ready_of(api: &Api<InsurerIntegrationResource>, name: &str) -> Option<(String, String)> {
    let object = api.get(name).await.ok()?;
    let status = object.status?;
    if status.observed_generation != object.metadata.generation {
        return None;
    }
    let ready = status.condition(READY)?;
    Some((format!("{:?}", ready.status), ready.reason.clone()))
}

/// Waits until Ready has this status and reason for the current generation.
pub async fn wait_ready(api: &Api<InsurerIntegrationResource>, name: &str, status: &str, reason: &str) {
    eventually(&format!("{name} Ready={status} ({reason})"), Duration::from_secs(30), || async {
        (ready_of(api, name).await? == (status.to_string(), reason.to_string())).then_some(())
    })
    .await
}

/// Plays the Deployment controller (there is none here): all desired replicas updated and available.
pub async fn make_available(client: &Client, namespace: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = api.get(name).await.unwrap();
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = serde_json::json!({"status": {
        "observedGeneration": deployment.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// Runs the test server's kubectl with the admin kubeconfig.
pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(repo().join(".tools/bin/kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("running .tools/bin/kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
