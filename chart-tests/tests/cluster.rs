//! The chart on the real test API server of `make k8s-up` (etcd + kube-apiserver, no kubelet and no
//! controller-manager: objects are stored, admitted and authorised for real, but no pod runs).
//!
//! One scenario in a fresh namespace under Pod Security "restricted": a server-side dry run, the
//! install (every object accepted and stored, the sample insurers created by the post-install
//! hook), the pods of every workload admitted as "restricted", the operator's ServiceAccount
//! allowed exactly what it needs, an upgrade that keeps every generated secret, the operator —
//! run here, impersonating the chart's ServiceAccount — reconciling the sample insurers into poller
//! Deployments, and an uninstall that keeps the CRD and the data volumes' secrets.
//!
//! Skipped (with a note) when no API server answers: `make k8s-up` starts one.

use chart_tests::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CRD: &str = "insurerintegrations.osago.io";

struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    namespace: String,
    release: String,
    scratch: PathBuf,
}

impl Cluster {
    /// The test API server, when one answers: `$KUBECONFIG`, else `.infra/k8s/kubeconfig`.
    fn connect() -> Option<Cluster> {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .or_else(|| Some(repo_root().join(".infra/k8s/kubeconfig")).filter(|p| p.exists()))?;
        let kubectl = repo_root().join(".tools/bin/kubectl");
        if !kubectl.exists() {
            eprintln!("note: {} is missing (make k8s-up builds it): cluster tests skipped", kubectl.display());
            return None;
        }
        let probe = Command::new(&kubectl)
            .args(["--kubeconfig", kubeconfig.to_str()?, "get", "--raw", "/readyz", "--request-timeout=5s"])
            .output()
            .ok()?;
        if !probe.status.success() {
            eprintln!(
                "note: no API server answers for {} ({}): cluster tests skipped; `make k8s-up` starts one",
                kubeconfig.display(),
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return None;
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let suffix = format!("{:x}", (nanos ^ u128::from(std::process::id())) & 0xff_ffff);
        let scratch = std::env::temp_dir().join(format!("osago-chart-test-{suffix}"));
        std::fs::create_dir_all(&scratch).unwrap();
        Some(Cluster {
            kubeconfig,
            kubectl,
            namespace: format!("chart-test-{suffix}"),
            release: format!("ct{suffix}"),
            scratch,
        })
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = vec!["--kubeconfig", self.kubeconfig.to_str().unwrap()];
        all.extend(args);
        run(&self.kubectl, &all)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// `kubectl create --dry-run=server -f -` of one object; Err carries stderr.
    fn admit(&self, object: &Value) -> Result<String, String> {
        let mut child = Command::new(&self.kubectl)
            .args(["--kubeconfig", self.kubeconfig.to_str().unwrap(), "create", "--dry-run=server", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() && !stderr.contains("Warning") { Ok(stderr) } else { Err(stderr) }
    }

    fn helm(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", self.kubeconfig.to_str().unwrap(), "--namespace", &self.namespace]);
        helm(&all)
    }

    fn helm_ok(&self, args: &[&str]) -> String {
        let out = self.helm(args);
        assert!(out.status.success(), "helm {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn name(&self, component: &str) -> String {
        format!("{}-osago-{component}", self.release)
    }

    fn service_account(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name("operator"))
    }

    fn secret_data(&self, name: &str) -> Value {
        self.kubectl_json(&["-n", &self.namespace, "get", "secret", name])["data"].clone()
    }

    /// Removes what the scenario left: hooks, kept Secrets, the operator's Deployments, the namespace.
    fn clean_up(&self) {
        let ns = self.namespace.as_str();
        let _ = self.helm(&["uninstall", &self.release, "--wait=false"]);
        // The kept CRD goes back to being nobody's: no stale release in its ownership metadata
        // (another release, or the operator's tests, may take it next).
        let release_name = "meta.helm.sh/release-name-";
        let release_namespace = "meta.helm.sh/release-namespace-";
        let _ = self.kubectl(&["annotate", "crd", CRD, release_name, release_namespace]);
        let _ = self.kubectl(&["label", "crd", CRD, "app.kubernetes.io/managed-by-", "app.kubernetes.io/instance-"]);
        let _ = self.kubectl(&["-n", ns, "delete", "insurerintegrations", "--all", "--wait=false"]);
        let _ = self.kubectl(&["-n", ns, "delete", "deployments,configmaps,secrets,leases", "--all", "--wait=false"]);
        // Without a controller-manager the namespace stays Terminating; it is empty and harmless.
        let _ = self.kubectl(&["delete", "namespace", ns, "--wait=false"]);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Runs the scenario's clean-up even when an assertion fails.
struct CleanUp<'a>(&'a Cluster);

impl Drop for CleanUp<'_> {
    fn drop(&mut self) {
        self.0.clean_up();
    }
}

/// Stops the operator this test started (by its own handle) when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step(what: &str) {
    eprintln!("--- {what}");
}

#[test]
fn install_upgrade_reconcile_and_uninstall_on_the_test_api_server() {
    let Some(cluster) = Cluster::connect() else { return };
    let _cleanup = CleanUp(&cluster);
    let c = &cluster;
    let ns = c.namespace.as_str();
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();

    step(&format!("namespace {ns} under Pod Security \"restricted\""));
    c.kubectl_ok(&["create", "namespace", ns]);
    c.kubectl_ok(&["label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted"]);

    // The CRD is cluster-wide and may exist already (the operator's tests apply it): hand it to this
    // release, as one does when a chart takes over a resource installed by hand.
    if c.kubectl(&["get", "crd", CRD]).status.success() {
        step("adopting the existing CRD");
        let release_name = format!("meta.helm.sh/release-name={}", c.release);
        let release_namespace = format!("meta.helm.sh/release-namespace={ns}");
        let annotated = c.kubectl(&["annotate", "--overwrite", "crd", CRD, &release_name, &release_namespace]);
        let labelled = c.kubectl(&["label", "--overwrite", "crd", CRD, "app.kubernetes.io/managed-by=Helm"]);
        // Another suite sharing the API server may have just deleted it: then the install creates it.
        let failed = [annotated, labelled].into_iter().find(|o| !o.status.success());
        if let Some(out) = failed {
            let still_there = c.kubectl(&["get", "crd", CRD]).status.success();
            assert!(!still_there, "cannot adopt the CRD: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    step("helm install --dry-run=server");
    let dry = c.helm_ok(&["install", &c.release, chart, "--dry-run=server"]);
    assert!(dry.contains("http://localhost/"), "NOTES say how to open the page:\n{dry}");

    step("helm install");
    let installed = c.helm_ok(&["install", &c.release, chart]);
    for expected in
        ["STATUS: deployed", &format!("kubectl -n {ns} get insurers"), &format!("helm test {} -n {ns}", c.release)]
    {
        assert!(installed.contains(expected), "install output lacks «{expected}»:\n{installed}");
    }

    step("every object of the release is stored");
    let manifest = c.helm_ok(&["get", "manifest", &c.release]);
    let objects = parse_manifests(&manifest);
    assert!(objects.len() > 30, "{} objects", objects.len());
    let manifest_file = c.scratch.join("manifest.yaml");
    std::fs::write(&manifest_file, &manifest).unwrap();
    let stored = c.kubectl_ok(&["get", "-f", manifest_file.to_str().unwrap(), "-o", "name"]);
    assert_eq!(stored.lines().count(), objects.len(), "stored: {stored}");
    let crd = c.kubectl_json(&["get", "crd", CRD]);
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");

    step("the sample insurers of the post-install hook");
    let insurers = c.kubectl_json(&["-n", ns, "get", "insurerintegrations"]);
    let mut names: Vec<&str> =
        insurers["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["alfa", "ingos", "renins", "reso", "sogaz", "vsk", "zetta"]);
    for item in insurers["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        let url = format!("http://{}.{ns}.svc:9100/{name}", c.name("sandbox"));
        assert_eq!(item["spec"]["api"]["baseUrl"], url.as_str());
    }
    // The short names of the CRD work (what the README and NOTES use).
    assert_eq!(c.kubectl_ok(&["-n", ns, "get", "insurers", "-o", "name"]).lines().count(), 7);

    step("every pod the chart describes is admitted under \"restricted\"");
    let hooks = parse_manifests(&c.helm_ok(&["get", "hooks", &c.release]));
    let mut all = objects.clone();
    all.extend(hooks);
    let pods = pod_specs(&all);
    assert!(pods.len() >= 7, "{} pod specs", pods.len());
    for (workload, spec) in pods {
        // A StatefulSet's claims become volumes of its pods: stand in an emptyDir for each.
        let mut spec = spec.clone();
        if let Some(set) = all.iter().find(|o| id(o) == workload && o["kind"] == "StatefulSet") {
            for claim in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
                let volume = json!({"name": claim["metadata"]["name"], "emptyDir": {}});
                spec["volumes"].as_array_mut().unwrap().push(volume);
            }
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "psa-check", "namespace": ns},
            "spec": spec,
        });
        if let Err(e) = c.admit(&pod) {
            panic!("the pod of {workload} is not admitted as restricted:\n{e}");
        }
    }

    step("the operator's ServiceAccount may do what it needs, and nothing else");
    let sa = c.service_account();
    let can = |args: &[&str]| -> bool {
        let mut all = vec!["auth", "can-i", "--as", &sa];
        all.extend(args);
        String::from_utf8_lossy(&c.kubectl(&all).stdout).trim() == "yes"
    };
    let allowed: &[&[&str]] = &[
        &["watch", "insurerintegrations.osago.io", "--all-namespaces"],
        &["patch", "insurerintegrations.osago.io", "--subresource=status", "-n", ns],
        &["create", "deployments.apps", "-n", "default"],
        &["patch", "configmaps", "-n", ns],
        &["create", "events.events.k8s.io", "-n", ns],
        &["update", "leases.coordination.k8s.io", "-n", ns],
    ];
    for args in allowed {
        assert!(can(args), "{sa} may not {args:?}");
    }
    let denied: &[&[&str]] = &[
        &["get", "secrets", "-n", ns],
        &["create", "pods", "-n", ns],
        &["delete", "deployments.apps", "-n", ns],
        &["update", "insurerintegrations.osago.io", "-n", ns],
        &["update", "leases.coordination.k8s.io", "-n", "default"],
        &["create", "clusterroles.rbac.authorization.k8s.io"],
        &["list", "nodes"],
    ];
    for args in denied {
        assert!(!can(args), "{sa} may {args:?}");
    }

    step("helm upgrade keeps every generated secret");
    let secrets = ["postgresql", "core-app", "aggregator", "kafka", "operator"].map(|s| c.name(s));
    let before: Vec<Value> = secrets.iter().map(|s| c.secret_data(s)).collect();
    let template_of = |name: &str| c.kubectl_json(&["-n", ns, "get", "deployment", name])["spec"]["template"].clone();
    let core_before = template_of(&c.name("core-app"));
    c.helm_ok(&["upgrade", &c.release, chart]);
    let after: Vec<Value> = secrets.iter().map(|s| c.secret_data(s)).collect();
    for (i, name) in secrets.iter().enumerate() {
        assert_eq!(before[i], after[i], "Secret {name} changed on upgrade");
    }
    let core_after = template_of(&c.name("core-app"));
    assert!(core_after["metadata"]["annotations"]["checksum/secrets"].is_string(), "pods roll when a secret changes");
    assert_eq!(core_before, core_after, "an upgrade with the same values must not roll core-app's pods");

    reconcile_with_the_operator(c, &objects);

    step("helm uninstall keeps the CRD and the secrets of the data volumes");
    c.helm_ok(&["uninstall", &c.release]);
    assert!(c.kubectl(&["get", "crd", CRD]).status.success(), "the CRD is kept");
    for kept in ["postgresql", "kafka"] {
        assert!(c.kubectl(&["-n", ns, "get", "secret", &c.name(kept)]).status.success(), "Secret {kept} is kept");
    }
    for gone in [format!("deployment/{}", c.name("core-app")), format!("secret/{}", c.name("core-app"))] {
        assert!(!c.kubectl(&["-n", ns, "get", &gone]).status.success(), "{gone} is still there");
    }
}

/// Runs the workspace's operator binary with the chart's settings, impersonating the chart's
/// ServiceAccount, and waits for a poller Deployment per sample insurer.
fn reconcile_with_the_operator(c: &Cluster, objects: &[Value]) {
    if !repo_root().join("operator/src/main.rs").exists() {
        eprintln!("note: the operator has no binary yet: the reconcile step is skipped");
        return;
    }
    let binary = operator_binary();
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build -p operator`, or make build)",
        binary.display()
    );
    let ns = c.namespace.as_str();

    step("the operator, impersonating the chart's ServiceAccount, reconciles the sample insurers");
    // The admin kubeconfig, with every request made as the ServiceAccount.
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&c.kubeconfig).unwrap()).unwrap();
    for user in kubeconfig["users"].as_sequence_mut().unwrap() {
        user["user"]["as"] = serde_yaml::Value::String(c.service_account());
    }
    kubeconfig["contexts"][0]["context"]["namespace"] = serde_yaml::Value::String(ns.to_string());
    let impersonating = c.scratch.join("operator.kubeconfig");
    std::fs::write(&impersonating, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();

    // The operator Deployment's environment, as the chart renders it.
    let deployment = find(objects, "Deployment", &c.name("operator"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut command = Command::new(&binary);
    command.env_clear().env("KUBECONFIG", &impersonating).env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        if let Some(value) = e["value"].as_str() {
            command.env(name, value);
        }
    }
    let token = c.secret_data(&c.name("operator"))["aggregator-token"].as_str().unwrap().to_string();
    command
        .env("POD_NAMESPACE", ns)
        .env("POD_NAME", "chart-test-operator")
        .env("AGGREGATOR_TOKEN", token)
        // Only this test's namespace: other tests' integrations are none of its business (the
        // ClusterRole of the default values would allow every namespace).
        .env("WATCH_NAMESPACES", ns)
        .env("OPERATOR_LISTEN", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.scratch.join("operator.log")).unwrap());
    let mut operator = Running(command.spawn().unwrap());

    let env = |name: &str| -> String {
        container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let insurers = ["alfa", "ingos", "renins", "reso", "sogaz", "vsk", "zetta"];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<&str> = insurers.to_vec();
    while !missing.is_empty() {
        let log = std::fs::read_to_string(c.scratch.join("operator.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "no poller Deployment for {missing:?} after 90 s; operator log:\n{log}");
        if let Ok(Some(status)) = operator.0.try_wait() {
            panic!("the operator exited ({status}); its log:\n{log}");
        }
        missing.retain(|i| !c.kubectl(&["-n", ns, "get", "deployment", &format!("{i}-poller")]).status.success());
        std::thread::sleep(Duration::from_millis(500));
    }
    for insurer in insurers {
        let d = c.kubectl_json(&["-n", ns, "get", "deployment", &format!("{insurer}-poller")]);
        let pod = &d["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], env("POLLER_IMAGE").as_str(), "{insurer}: the chart's poller image");
        assert_eq!(container["imagePullPolicy"], env("POLLER_IMAGE_PULL_POLICY").as_str());
        let db = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "AGGREGATOR_DATABASE_URL");
        let db = &db.unwrap_or_else(|| panic!("{insurer}: no AGGREGATOR_DATABASE_URL in {container}"))["valueFrom"];
        assert_eq!(db["secretKeyRef"]["name"], c.name("aggregator").as_str(), "{insurer}: database Secret");
        assert_eq!(db["secretKeyRef"]["key"], "database-url");
        // The labels the chart's NetworkPolicies let into PostgreSQL and the sandbox.
        let labels = &pod["metadata"]["labels"];
        let np = find(objects, "NetworkPolicy", &c.name("postgresql"));
        let poller_peer = &np["spec"]["ingress"][0]["from"][2]["podSelector"]["matchLabels"];
        for (k, v) in poller_peer.as_object().unwrap() {
            assert_eq!(&labels[k], v, "{insurer}: poller pods must carry {k}={v} for the NetworkPolicies");
        }
        // Its pods are admitted in the restricted namespace too.
        let check = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "psa-check", "namespace": ns}, "spec": pod["spec"]});
        if let Err(e) = c.admit(&check) {
            panic!("the poller pod of {insurer} is not admitted as restricted:\n{e}");
        }
    }
    // Status is reported (no kubelet: the pollers never become ready, which is what it must say).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alfa = c.kubectl_json(&["-n", ns, "get", "insurerintegration", "alfa"]);
        let conditions = alfa["status"]["conditions"].as_array().cloned().unwrap_or_default();
        if let Some(ready) = conditions.iter().find(|c| c["type"] == "Ready") {
            assert_ne!(ready["status"], "True", "Ready=True while no poller pod runs: {ready}");
            break;
        }
        assert!(Instant::now() < deadline, "no Ready condition on alfa after 30 s: {}", alfa["status"]);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(operator);
}

/// The operator binary of this workspace's build: beside this test's `deps/` folder.
fn operator_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("operator")
}
