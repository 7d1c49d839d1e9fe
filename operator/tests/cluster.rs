//! The CRD and the operator against a real kube-apiserver + etcd (`scripts/k8s.sh up`).
//! There is no kube-controller-manager: no ReplicaSets, no pods, no garbage collection; tests
//! play the Deployment controller by writing Deployment status themselves.

mod support;

use crds::{BreakerState, InsurerIntegration, InsurerIntegrationResource};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn integrations(client: &Client, ns: &str) -> Api<InsurerIntegrationResource> {
    Api::namespaced(client.clone(), ns)
}

async fn create(client: &Client, ns: &str, object: &InsurerIntegrationResource) -> InsurerIntegrationResource {
    integrations(client, ns).create(&PostParams::default(), object).await.unwrap()
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(&format!("Deployment {name}"), WAIT, || async { api.get_opt(name).await.ok().flatten() }).await
}

fn template_hash(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
        [operator::build::CONFIG_HASH]
        .clone()
}

async fn patch_spec(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    integrations(client, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&serde_json::json!({ "spec": spec })))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_crd_is_established_and_every_example_is_accepted() {
    install().await;
    let client = admin().await;
    let ns = namespace("examples").await;
    let dir = repo().join("examples/insurers");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let stored = create(&client, &ns, &example(&name)).await;
        // The API server's defaults fill what the example leaves out, exactly like the Rust defaults.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(stored.spec, InsurerIntegration::from_yaml(&text).unwrap().spec, "{name}");
        names.push(name);
    }
    assert!(names.len() >= 6);
    // Short names and printer columns, through the real kubectl.
    for resource in ["insurer", "insurers", "ii", "insurerintegrations"] {
        let (ok, out) = kubectl(&["-n", &ns, "get", resource]);
        assert!(ok, "kubectl get {resource}: {out}");
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "REPLICAS", "BREAKER", "LAST", "OFFER", "AGE"], "{resource}");
        assert!(names.iter().all(|n| out.contains(n.as_str())), "{out}");
    }
    let (ok, out) = kubectl(&["explain", "insurer.spec.retry.maxBackoff"]);
    assert!(ok && out.contains("Longest wait between retries"), "{out}");
}

/// What is broken, how, and what the API server must say.
type Breakage = (&'static str, fn(&mut serde_json::Value), &'static str);

#[tokio::test]
async fn invalid_resources_are_rejected_with_the_cel_messages() {
    install().await;
    let client = admin().await;
    let ns = namespace("invalid").await;
    let api = integrations(&client, &ns);
    let base = serde_json::to_value(example("ingos")).unwrap();
    let cases: Vec<Breakage> = vec![
        (
            "ftp URL",
            |v| v["spec"]["api"]["baseUrl"] = "ftp://insurer.example/x".into(),
            "api.baseUrl must be an http or https URL",
        ),
        ("not a URL", |v| v["spec"]["api"]["baseUrl"] = "insurer".into(), "api.baseUrl must be an http or https URL"),
        (
            "no secretRef",
            |v| v["spec"]["api"]["auth"] = serde_json::json!({"type": "bearer"}),
            "api.auth.secretRef is required when api.auth.type is not none",
        ),
        (
            "header type without header",
            |v| {
                v["spec"]["api"]["auth"] = serde_json::json!({"type": "header", "secretRef": {"name": "a", "key": "b"}})
            },
            "api.auth.header names the header",
        ),
        (
            "backoff backwards",
            |v| v["spec"]["retry"] = serde_json::json!({"initialBackoff": "2s", "maxBackoff": "1s"}),
            "retry.maxBackoff must be at least retry.initialBackoff",
        ),
        (
            "polling backwards",
            |v| v["spec"]["polling"] = serde_json::json!({"interval": "5s", "maxInterval": "1s"}),
            "polling.maxInterval must be at least polling.interval",
        ),
        ("zero duration", |v| v["spec"]["timeouts"]["request"] = "0s".into(), "must be a positive duration"),
        ("not a duration", |v| v["spec"]["timeouts"]["quote"] = "soon".into(), "should match"),
        (
            "threshold 0",
            |v| v["spec"]["circuitBreaker"]["failureRateThreshold"] = 0.into(),
            "should be greater than or equal to 1",
        ),
        (
            "threshold 101",
            |v| v["spec"]["circuitBreaker"]["failureRateThreshold"] = 101.into(),
            "should be less than or equal to 100",
        ),
        (
            "mapping without mapped",
            |v| v["spec"]["api"]["mapping"] = serde_json::to_value(example("renins").spec.api.mapping).unwrap(),
            "api.mapping is required exactly when api.style is mapped",
        ),
        (
            "mapped without mapping",
            |v| v["spec"]["api"]["style"] = "mapped".into(),
            "api.mapping is required exactly when api.style is mapped",
        ),
        (
            "mapping pointer not a pointer",
            |v| {
                v["spec"]["api"]["style"] = "mapped".into();
                let mut mapping = serde_json::to_value(example("renins").spec.api.mapping).unwrap();
                mapping["reference"] = "result.ticket".into();
                v["spec"]["api"]["mapping"] = mapping;
            },
            "spec.api.mapping.reference: Invalid value",
        ),
        ("unknown style", |v| v["spec"]["api"]["style"] = "smoke-signals".into(), "Unsupported value"),
        (
            "no baseUrl",
            |v| {
                v["spec"]["api"].as_object_mut().unwrap().remove("baseUrl");
            },
            "Required value",
        ),
        ("name too long", |v| v["metadata"]["name"] = "a".repeat(57).into(), "metadata.name must be a DNS label"),
    ];
    for (i, (what, break_it, expected)) in cases.into_iter().enumerate() {
        let mut object = base.clone();
        if object["metadata"]["name"] == "ingos" {
            object["metadata"]["name"] = format!("case-{i}").into();
        }
        break_it(&mut object);
        let object: InsurerIntegrationResource = match serde_json::from_value(object.clone()) {
            Ok(o) => o,
            // Shapes the Rust type cannot hold go through the dynamic API.
            Err(_) => {
                let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &ns,
                    &kube::api::ApiResource::erase::<InsurerIntegrationResource>(&()),
                );
                let err =
                    raw.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.unwrap_err();
                assert!(err.to_string().contains(expected), "{what}: {err}");
                continue;
            }
        };
        let err = api.create(&PostParams::default(), &object).await.expect_err(what);
        let kube::Error::Api(status) = &err else { panic!("{what}: {err}") };
        assert_eq!(status.code, 422, "{what}: {err}");
        assert!(status.message.contains(expected), "{what}: expected {expected:?} in {}", status.message);
    }
    // The same object unbroken is accepted: the cases fail for the reason they name.
    let fine: InsurerIntegrationResource = serde_json::from_value(base).unwrap();
    api.create(&PostParams::default(), &fine).await.unwrap();
}

#[tokio::test]
async fn the_operator_creates_the_config_map_and_deployment_with_owner_references() {
    let ns = namespace("owned").await;
    let client = admin().await;
    let _operator = Operator::start(&ns, None).await;
    let stored = create(&client, &ns, &example("alfa")).await;
    let uid = stored.uid().unwrap();

    let d = deployment(&client, &ns, "alfa-poller").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = cms.get("alfa-poller").await.unwrap();
    for meta in [&d.metadata, &cm.metadata] {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("InsurerIntegration", "alfa", uid.as_str())
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "osago-operator");
        // Written by server-side apply, under the operator's field manager.
        assert!(meta.managed_fields.as_ref().unwrap().iter().any(|f| f.manager.as_deref() == Some("osago-operator")));
    }
    let manifest = InsurerIntegration::from_yaml(&cm.data.unwrap()["insurer.yaml"]).unwrap();
    assert_eq!(manifest.spec, stored.spec);
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));

    // Status follows the generation; not Ready while no replica is available.
    let api = integrations(&client, &ns);
    wait_ready(&api, "alfa", "False", "Unavailable").await;
    let status = api.get_status("alfa").await.unwrap().status.unwrap();
    assert_eq!(status.selector.as_deref(), Some("app.kubernetes.io/instance=alfa,app.kubernetes.io/name=osago-poller"));

    // Events on the InsurerIntegration.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("a Created event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Created")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("alfa")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_spec_change_rolls_the_pods_and_suspend_scales_to_zero() {
    let ns = namespace("changes").await;
    let client = admin().await;
    let _operator = Operator::start(&ns, None).await;
    let api = integrations(&client, &ns);
    create(&client, &ns, &example("ingos")).await;
    let first = template_hash(&deployment(&client, &ns, "ingos-poller").await);

    patch_spec(&client, &ns, "ingos", serde_json::json!({"timeouts": {"request": "7s"}})).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let second = eventually("a new pod-template hash", WAIT, || async {
        let hash = template_hash(&deployments.get("ingos-poller").await.ok()?);
        (hash != first).then_some(hash)
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = cms.get("ingos-poller").await.unwrap();
    let manifest = InsurerIntegration::from_yaml(&cm.data.unwrap()["insurer.yaml"]).unwrap();
    assert_eq!(manifest.spec.timeouts.request, crds::Duration::secs(7));
    let generation = api.get("ingos").await.unwrap().metadata.generation;
    eventually("observedGeneration to follow", WAIT, || async {
        (api.get("ingos").await.ok()?.status?.observed_generation == generation).then_some(())
    })
    .await;

    // The scale subresource changes spec.replicas (and so the per-replica rate: a new hash).
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    api.patch_scale("ingos", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    eventually("3 replicas", WAIT, || async {
        let d = deployments.get("ingos-poller").await.ok()?;
        (d.spec.as_ref()?.replicas == Some(3) && template_hash(&d) != second).then_some(())
    })
    .await;

    patch_spec(&client, &ns, "ingos", serde_json::json!({"suspend": true})).await;
    eventually("0 replicas", WAIT, || async {
        (deployments.get("ingos-poller").await.ok()?.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    wait_ready(&api, "ingos", "False", "Suspended").await;
    patch_spec(&client, &ns, "ingos", serde_json::json!({"suspend": false})).await;
    eventually("3 replicas again", WAIT, || async {
        (deployments.get("ingos-poller").await.ok()?.spec?.replicas == Some(3)).then_some(())
    })
    .await;
}

/// A stand-in for the aggregator's `GET /internal/v1/insurers`, answering what the test sets.
async fn fake_aggregator(list: Arc<Mutex<serde_json::Value>>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/internal/v1/insurers",
        axum::routing::get(move |headers: HeaderMap| {
            let list = list.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer operator-token") {
                    return Err(StatusCode::UNAUTHORIZED);
                }
                Ok(axum::Json(list.lock().unwrap().clone()))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn ready_needs_available_pollers_and_a_breaker_that_is_not_open() {
    let ns = namespace("ready").await;
    let client = admin().await;
    let insurers = Arc::new(Mutex::new(serde_json::json!([])));
    let url = fake_aggregator(insurers.clone()).await;
    let _operator = Operator::start(&ns, Some(url)).await;
    let api = integrations(&client, &ns);
    create(&client, &ns, &example("sogaz")).await;
    deployment(&client, &ns, "sogaz-poller").await;
    wait_ready(&api, "sogaz", "False", "Unavailable").await;

    make_available(&client, &ns, "sogaz-poller").await;
    // Available, but no poller registered with the aggregator yet.
    wait_ready(&api, "sogaz", "False", "NotRegistered").await;

    *insurers.lock().unwrap() =
        serde_json::json!([{"name": "sogaz", "display_name": "СОГАЗ", "breaker_state": "open"}]);
    wait_ready(&api, "sogaz", "False", "BreakerOpen").await;
    let status = api.get("sogaz").await.unwrap().status.unwrap();
    assert_eq!(status.breaker, Some(BreakerState::Open));
    assert_eq!(status.condition(crds::DEGRADED).unwrap().reason, "BreakerOpen");

    *insurers.lock().unwrap() = serde_json::json!([{"name": "sogaz", "display_name": "СОГАЗ",
        "breaker_state": "closed", "last_offer_at": "2026-11-30T10:00:00Z"}]);
    wait_ready(&api, "sogaz", "True", "Available").await;
    let status = api.get("sogaz").await.unwrap().status.unwrap();
    assert_eq!(status.breaker, Some(BreakerState::Closed));
    assert_eq!((status.replicas, status.ready_replicas), (1, 1));
    assert_eq!(status.last_offer_time.unwrap().0.to_string(), "2026-11-30T10:00:00Z");

    // What a platform team sees.
    let (ok, out) = kubectl(&["-n", &ns, "get", "insurers", "sogaz"]);
    assert!(ok, "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["sogaz", "True", "1", "closed"], "{out}");

    // A spec change: not Ready again until the new template is rolled out.
    patch_spec(&client, &ns, "sogaz", serde_json::json!({"displayName": "СОГАЗ (новый)"})).await;
    wait_ready(&api, "sogaz", "False", "RollingOut").await;
    make_available(&client, &ns, "sogaz-poller").await;
    wait_ready(&api, "sogaz", "True", "Available").await;
}

#[tokio::test]
async fn without_an_aggregator_the_breaker_is_unknown_and_does_not_block_ready() {
    let ns = namespace("unknown").await;
    let client = admin().await;
    let _operator = Operator::start(&ns, None).await;
    let api = integrations(&client, &ns);
    create(&client, &ns, &example("vsk")).await;
    deployment(&client, &ns, "vsk-poller").await;
    make_available(&client, &ns, "vsk-poller").await;
    wait_ready(&api, "vsk", "True", "Available").await;
    assert_eq!(api.get("vsk").await.unwrap().status.unwrap().breaker, Some(BreakerState::Unknown));
}

async fn can(client: &Client, user: &str, verb: &str, group: &str, resource: &str, ns: Option<&str>) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: ns.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed
}

/// The tests above run the operator as its ServiceAccount, so each permission it needs is proven
/// by use; this one proves it has nothing more, and that impersonation does take rights away.
#[tokio::test]
async fn the_operator_service_account_has_exactly_the_rbac_of_deploy_rbac() {
    install().await;
    let client = admin().await;
    let ns = namespace("rbac").await;
    let sa = OPERATOR_SA;
    for (verb, group, resource) in [
        ("watch", "osago.io", "insurerintegrations"),
        ("patch", "osago.io", "insurerintegrations/status"),
        ("patch", "apps", "deployments"),
        ("patch", "", "configmaps"),
        ("create", "events.k8s.io", "events"),
    ] {
        assert!(can(&client, sa, verb, group, resource, Some(&ns)).await, "{verb} {resource}");
    }
    for (verb, group, resource, namespace) in [
        ("get", "", "secrets", Some(ns.as_str())),
        ("list", "", "secrets", Some(ns.as_str())),
        ("delete", "apps", "deployments", Some(ns.as_str())),
        ("delete", "", "configmaps", Some(ns.as_str())),
        ("get", "", "configmaps", Some(ns.as_str())),
        ("update", "osago.io", "insurerintegrations", Some(ns.as_str())),
        ("delete", "osago.io", "insurerintegrations", Some(ns.as_str())),
        ("create", "", "pods", Some(ns.as_str())),
        ("update", "coordination.k8s.io", "leases", Some(ns.as_str())),
        ("create", "apiextensions.k8s.io", "customresourcedefinitions", None),
    ] {
        assert!(!can(&client, sa, verb, group, resource, namespace).await, "{sa} must not {verb} {resource}");
    }
    assert!(can(&client, sa, "update", "coordination.k8s.io", "leases", Some(OPERATOR_NAMESPACE)).await);

    // A ServiceAccount without the bindings gets nowhere: the operator's own runs are really restricted.
    let nobody = "system:serviceaccount:osago-system:nobody";
    let operator = Operator::start_as(nobody, &ns, None, &format!("nobody-{ns}"), "nobody").await;
    create(&client, &ns, &example("zetta")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deployments.get_opt("zetta-poller").await.unwrap().is_none(), "an unbound account reconciled");
    drop(operator);
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_successor_takes_over() {
    let ns = namespace("leader").await;
    let client = admin().await;
    let lease_name = format!("lease-{ns}");
    let first = Operator::start_as(OPERATOR_SA, &ns, None, &lease_name, "first").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let holder = |leases: Api<Lease>, name: String| async move {
        leases.get_opt(&name).await.ok().flatten()?.spec?.holder_identity
    };
    eventually("the first to lead", WAIT, || async {
        (holder(leases.clone(), lease_name.clone()).await? == format!("first-{ns}")).then_some(())
    })
    .await;
    let second = Operator::start_as(OPERATOR_SA, &ns, None, &lease_name, "second").await;
    create(&client, &ns, &example("rgs")).await;
    deployment(&client, &ns, "rgs-poller").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(holder(leases.clone(), lease_name.clone()).await.unwrap(), format!("first-{ns}"), "the lease moved");

    // The leader stops (and releases the lease): the other one takes over and reconciles.
    assert_eq!(first.stop().await, operator::Exit::Shutdown);
    eventually("the second to lead", WAIT, || async {
        (holder(leases.clone(), lease_name.clone()).await? == format!("second-{ns}")).then_some(())
    })
    .await;
    create(&client, &ns, &example("reso")).await;
    deployment(&client, &ns, "reso-poller").await;
    drop(second);
}

#[tokio::test]
async fn the_operator_binary_runs_with_only_kubeconfig_and_serves_health_and_metrics() {
    install().await;
    let ns = namespace("binary").await;
    let client = admin().await;
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .env("KUBECONFIG", kubeconfig())
        .env("WATCH_NAMESPACES", &ns)
        .env("OPERATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEASE_NAME", format!("binary-{ns}"))
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    create(&client, &ns, &example("alfa")).await;
    deployment(&client, &ns, "alfa-poller").await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let answer = http.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
        assert!(answer.status().is_success(), "{path}");
    }
    // The counter moves when the reconcile ends, a little after the Deployment appears.
    let metrics = eventually("reconcile metrics", WAIT, || async {
        let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
        text.contains("operator_reconciliations_total{result=\"ok\"}").then_some(text)
    })
    .await;
    assert!(metrics.contains("operator_leader 1"), "{metrics}");
    child.kill().await.unwrap();
}
