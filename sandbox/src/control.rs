//! The control API (`/_control`): inspect insurers, change their faults at run time, read
//! and reset their counters. Plus health, readiness and Prometheus metrics.

use crate::config::Faults;
use crate::state::{CounterSnapshot, Insurer};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// Every insurer by name.
pub type Insurers = Arc<BTreeMap<String, Arc<Insurer>>>;

/// Routes of the control API and the operational endpoints.
pub fn router(insurers: Insurers) -> Router {
    Router::new()
        .route("/_control/insurers", get(list))
        .route("/_control/insurers/{name}", get(show))
        .route("/_control/insurers/{name}/faults", get(faults).patch(patch_faults).put(put_faults))
        .route("/_control/insurers/{name}/reset", post(reset_one))
        .route("/_control/reset", post(reset_all))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .with_state(insurers)
}

/// What the control API shows of one insurer.
#[derive(Serialize)]
struct View {
    name: String,
    display_name: String,
    style: crate::config::ApiStyle,
    faults: Faults,
    counters: CounterSnapshot,
}

fn view(ins: &Insurer) -> View {
    View {
        name: ins.personality.name.clone(),
        display_name: ins.personality.display_name.clone(),
        style: ins.personality.style,
        faults: ins.faults(),
        counters: ins.counters.snapshot(),
    }
}

fn not_found(name: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": format!("no insurer named '{name}'")}))).into_response()
}

async fn list(State(all): State<Insurers>) -> Json<Vec<View>> {
    Json(all.values().map(|i| view(i)).collect())
}

async fn show(State(all): State<Insurers>, Path(name): Path<String>) -> Response {
    all.get(&name).map_or_else(|| not_found(&name), |i| Json(view(i)).into_response())
}

async fn faults(State(all): State<Insurers>, Path(name): Path<String>) -> Response {
    all.get(&name).map_or_else(|| not_found(&name), |i| Json(i.faults()).into_response())
}

/// Merges the given fields into the current faults (JSON merge patch semantics).
async fn patch_faults(State(all): State<Insurers>, Path(name): Path<String>, Json(patch): Json<Value>) -> Response {
    let Some(ins) = all.get(&name) else { return not_found(&name) };
    let mut current = serde_json::to_value(ins.faults()).expect("faults serialise");
    let (Value::Object(target), Value::Object(fields)) = (&mut current, patch) else {
        return invalid("the body must be a JSON object of fault fields".into());
    };
    target.extend(fields);
    apply(ins, current)
}

/// Replaces the faults; omitted fields take their defaults (no faults).
async fn put_faults(State(all): State<Insurers>, Path(name): Path<String>, Json(body): Json<Value>) -> Response {
    let Some(ins) = all.get(&name) else { return not_found(&name) };
    apply(ins, body)
}

fn apply(ins: &Insurer, value: Value) -> Response {
    let faults: Faults = match serde_json::from_value(value) {
        Ok(f) => f,
        Err(e) => return invalid(e.to_string()),
    };
    if let Err(e) = faults.check() {
        return invalid(e);
    }
    tracing::info!(insurer = %ins.personality.name, ?faults, "faults changed");
    ins.set_faults(faults.clone());
    Json(faults).into_response()
}

fn invalid(message: String) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": message}))).into_response()
}

async fn reset_one(State(all): State<Insurers>, Path(name): Path<String>) -> Response {
    let Some(ins) = all.get(&name) else { return not_found(&name) };
    ins.reset();
    Json(view(ins)).into_response()
}

async fn reset_all(State(all): State<Insurers>) -> StatusCode {
    all.values().for_each(|i| i.reset());
    StatusCode::NO_CONTENT
}

/// Prometheus text format, rendered from the same counters the control API shows.
async fn metrics(State(all): State<Insurers>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP sandbox_requests_total Requests received by a sandbox insurer, by endpoint.\n");
    out.push_str("# TYPE sandbox_requests_total counter\n");
    let snapshots: Vec<(&String, CounterSnapshot)> = all.iter().map(|(n, i)| (n, i.counters.snapshot())).collect();
    for (name, s) in &snapshots {
        for (endpoint, n) in &s.by_endpoint {
            let _ = writeln!(out, "sandbox_requests_total{{insurer=\"{name}\",endpoint=\"{endpoint}\"}} {n}");
        }
    }
    out.push_str("# HELP sandbox_responses_total Responses sent by a sandbox insurer, by HTTP status.\n");
    out.push_str("# TYPE sandbox_responses_total counter\n");
    for (name, s) in &snapshots {
        for (status, n) in &s.by_status {
            let _ = writeln!(out, "sandbox_responses_total{{insurer=\"{name}\",status=\"{status}\"}} {n}");
        }
    }
    out.push_str("# HELP sandbox_max_requests_per_second Most requests received within any one-second window.\n");
    out.push_str("# TYPE sandbox_max_requests_per_second gauge\n");
    for (name, s) in &snapshots {
        let _ = writeln!(out, "sandbox_max_requests_per_second{{insurer=\"{name}\"}} {}", s.max_requests_per_second);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
