//! Helpers for the tests of the Helm chart `helm/osago`: running the helm (and kubectl) built by
//! the project's scripts, reading rendered manifests as JSON values, and golden files.
//!
//! helm comes from `make helm` (`scripts/helm.sh tools` → `.tools/bin/helm`); the tests fail with
//! that hint when it is missing rather than skipping. The cluster tests need the test API server
//! of `make k8s-up` (`scripts/k8s.sh`) and run only when it answers.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("chart-tests sits in the workspace").to_path_buf()
}

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    repo_root().join("helm/osago")
}

/// A tool built into `.tools/bin/` by the project's scripts.
pub fn tool(name: &str, how: &str) -> PathBuf {
    let path = repo_root().join(".tools/bin").join(name);
    assert!(path.exists(), "{} is missing: run `{how}` first (it builds {name} from Go modules)", path.display());
    path
}

/// The helm binary of `make helm`.
pub fn helm_bin() -> PathBuf {
    tool("helm", "make helm")
}

/// Runs a command, returning its output (never panics on a non-zero exit).
pub fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Runs helm with these arguments.
pub fn helm(args: &[&str]) -> Output {
    run(&helm_bin(), args)
}

/// Runs helm and returns its stdout, panicking with its stderr when it fails.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// Values files of the chart: the defaults, kind, and external dependencies.
pub const VALUE_SETS: [(&str, Option<&str>); 3] = [
    ("default", None),
    ("kind", Some("helm/osago/values-kind.yaml")),
    ("external", Some("helm/osago/values-external.yaml")),
];

/// `helm template` of the chart as release `osago` in namespace `osago`, with a values file and
/// extra arguments, parsed into one JSON value per object.
pub fn render(values: Option<&str>, extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let mut args = vec!["template", "osago", chart, "--namespace", "osago"];
    if let Some(file) = values {
        args.extend(["--values", file]);
    }
    args.extend(extra);
    parse_manifests(&helm_ok(&args))
}

/// Splits a multi-document YAML stream into objects (empty documents dropped).
pub fn parse_manifests(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML maps to JSON"))
        .collect()
}

/// `kind/name` of an object.
pub fn id(object: &Value) -> String {
    format!("{}/{}", str_at(object, "/kind"), str_at(object, "/metadata/name"))
}

/// A string at a JSON pointer ("" when absent).
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Every object of a kind.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The object of a kind and name; panics listing what there is when it is missing.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} among: {}", objects.iter().map(id).collect::<Vec<_>>().join(", ")))
}

/// Pod specs of every workload (Deployment, StatefulSet, Pod), with the workload's id.
pub fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter_map(|o| match o["kind"].as_str()? {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => Some((id(o), &o["spec"]["template"]["spec"])),
            "Pod" => Some((id(o), &o["spec"])),
            _ => None,
        })
        .collect()
}

/// Compares a value with `chart-tests/golden/<name>.yaml`. With `OSAGO_UPDATE_GOLDEN=1` the file is
/// (re)written instead; a missing golden file is written and the test fails, asking for a review.
pub fn assert_golden(name: &str, actual: &Value) {
    let path = repo_root().join("chart-tests/golden").join(format!("{name}.yaml"));
    let header = "# Golden file of chart-tests: what the chart renders for these objects.\n\
                  # Regenerate after an intended change: OSAGO_UPDATE_GOLDEN=1 cargo test -p chart-tests, then review the diff.\n";
    let rendered = format!("{header}{}", serde_yaml::to_string(actual).expect("serialises"));
    if std::env::var_os("OSAGO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, rendered).expect("write golden file");
        return;
    }
    let Ok(expected_text) = std::fs::read_to_string(&path) else {
        std::fs::write(&path, &rendered).expect("write golden file");
        panic!("{} did not exist and was written now: review it and run the tests again", path.display());
    };
    let expected: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&expected_text).expect("golden file is YAML"))
            .expect("JSON");
    if &expected != actual {
        let actual_path = std::env::temp_dir().join(format!("osago-chart-golden-{name}.actual.yaml"));
        std::fs::write(&actual_path, &rendered).expect("write actual");
        panic!(
            "the chart's {name} objects differ from {}; what it renders now is in {} \
             (diff them; if the change is intended: OSAGO_UPDATE_GOLDEN=1 cargo test -p chart-tests)",
            path.display(),
            actual_path.display()
        );
    }
}

/// The operator's permissions as sorted `(namespaced?, apiGroup, resource, verb)` lines, from every
/// Role and ClusterRole among `objects` (resourceNames, when present, are appended to the resource).
pub fn rbac_triples(objects: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for role in objects {
        let scope = if role["kind"] == "ClusterRole" { "cluster" } else { "namespace" };
        for rule in role["rules"].as_array().into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                rule[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
            };
            let names = strings("resourceNames");
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        let resource = if names.is_empty() { resource.clone() } else { format!("{resource}{names:?}") };
                        let group = if group.is_empty() { "core".to_string() } else { group.clone() };
                        out.push(format!("{scope} {group} {resource} {verb}"));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
