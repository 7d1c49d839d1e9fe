//! `bench-sandbox`: the insurer sandbox exactly as `sandbox` serves it (same library, same
//! routers), plus a recorder that tells the benchmark when each calculation became ready.
//!
//! The sandbox decides every outcome up front (`Calculation.started + decision.ready_after`),
//! so "the offer became ready" is a known instant, not a guess. The recorder notes, per
//! calculation: the VIN of its application at create time (the only field the benchmark can
//! map back to its quote for every API style), and at the first poll that found it ready the
//! ready instant and the instant that poll was answered. `GET /_bench/records` hands the
//! records over (and forgets them).

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use sandbox::config::Config;
use sandbox::control::{self, Insurers};
use sandbox::state::Insurer;
use sandbox::styles;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
struct Args {
    /// Personalities file (TOML), as for `sandbox`.
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    listen: SocketAddr,
}

/// A calculation was created for the application with this VIN.
#[derive(Serialize, Clone)]
struct CreateRecord {
    insurer: String,
    calc: String,
    vin: String,
}

/// The first poll that found the calculation ready.
#[derive(Serialize, Clone)]
struct ReadyRecord {
    insurer: String,
    calc: String,
    /// When the outcome became visible to polls (µs since the epoch).
    ready_us: i64,
    /// When the poll that saw it was answered (µs since the epoch).
    served_us: i64,
}

#[derive(Default, Serialize)]
struct Records {
    creates: Vec<CreateRecord>,
    ready: Vec<ReadyRecord>,
}

struct Recorder {
    insurers: Insurers,
    records: Mutex<Records>,
    seen: Mutex<HashSet<(String, String)>>,
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)?;
    let config = Config::from_toml(&text).map_err(anyhow::Error::msg)?;
    let insurers: BTreeMap<String, Arc<Insurer>> =
        config.insurers.into_iter().map(|p| (p.name.clone(), Arc::new(Insurer::new(p, config.seed)))).collect();
    let insurers: Insurers = Arc::new(insurers);
    let recorder = Arc::new(Recorder { insurers: insurers.clone(), records: Mutex::default(), seen: Mutex::default() });
    let router = insurers
        .iter()
        .fold(control::router(insurers.clone()), |router, (name, ins)| {
            router.nest(&format!("/{name}"), styles::router(ins.clone()))
        })
        .layer(middleware::from_fn_with_state(recorder.clone(), record))
        .merge(Router::new().route("/_bench/records", get(take)).with_state(recorder));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

async fn take(State(recorder): State<Arc<Recorder>>) -> Json<Records> {
    Json(std::mem::take(&mut *recorder.records.lock().expect("records")))
}

/// What a request is, for the recorder.
enum Kind {
    /// A create whose calculation id is known from the request (create-poll, operation).
    CreateKnown(String),
    /// A create whose calculation id is in the response (`contract_id`, offers-list).
    CreateContract,
    /// A poll of this calculation.
    Poll(String),
    Other,
}

fn classify(req: &Request) -> (String, Kind) {
    let path = req.uri().path();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let insurer = parts.next().unwrap_or_default().to_string();
    let rest = format!("/{}", parts.next().unwrap_or_default());
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_string)
    };
    let kind = match (req.method(), rest.as_str()) {
        (&Method::POST, "/v1/calculate") => Kind::CreateKnown(String::new()),
        (&Method::POST, "/api/quotes") => match req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()) {
            Some(key) => Kind::CreateKnown(format!("op-{:016x}", sandbox::kbm::fnv1a(key.as_bytes()))),
            None => Kind::Other,
        },
        (&Method::POST, "/contracts") => Kind::CreateContract,
        (&Method::GET, "/v1/calculate") => param("request_id").map_or(Kind::Other, Kind::Poll),
        (&Method::GET, "/api/operations") => param("id").map_or(Kind::Other, Kind::Poll),
        (&Method::GET, r) if r.starts_with("/contracts/") && r.ends_with("/offers") => {
            Kind::Poll(r.trim_start_matches("/contracts/").trim_end_matches("/offers").to_string())
        }
        _ => Kind::Other,
    };
    (insurer, kind)
}

/// The fields of a create's body the recorder reads, borrowed where the text allows: the
/// whole body as a `serde_json::Value` was a twentieth of the sandbox's CPU.
#[derive(Deserialize, Default)]
struct CreateBody<'a> {
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    application: Option<Application<'a>>,
    #[serde(borrow)]
    vehicle: Option<Vehicle<'a>>,
}

#[derive(Deserialize)]
struct Application<'a> {
    #[serde(borrow)]
    vehicle: Option<Vehicle<'a>>,
}

#[derive(Deserialize)]
struct Vehicle<'a> {
    #[serde(borrow)]
    vin: Option<Cow<'a, str>>,
}

/// The answer of an offers-list create.
#[derive(Deserialize, Default)]
struct ContractAnswer<'a> {
    #[serde(borrow)]
    contract_id: Option<Cow<'a, str>>,
}

impl CreateBody<'_> {
    /// The application's VIN, whether the application is the body or wrapped in it.
    fn vin(&self) -> Option<String> {
        let vehicle = match &self.application {
            Some(app) => app.vehicle.as_ref(),
            None => self.vehicle.as_ref(),
        };
        vehicle.and_then(|v| v.vin.as_deref()).map(str::to_string)
    }
}

async fn record(State(rec): State<Arc<Recorder>>, req: Request, next: Next) -> Response {
    let (insurer, kind) = classify(&req);
    match kind {
        Kind::Other => next.run(req).await,
        Kind::CreateKnown(id) => {
            let (parts, body) = req.into_parts();
            let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
            let json: CreateBody = serde_json::from_slice(&bytes).unwrap_or_default();
            let calc = if id.is_empty() { json.request_id.as_deref().unwrap_or_default().to_string() } else { id };
            let vin = json.vin();
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            if let Some(vin) = vin
                && response.status().is_success()
            {
                rec.records.lock().expect("records").creates.push(CreateRecord { insurer, calc, vin });
            }
            response
        }
        Kind::CreateContract => {
            let (parts, body) = req.into_parts();
            let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
            let vin = serde_json::from_slice::<CreateBody>(&bytes).unwrap_or_default().vin();
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            if !response.status().is_success() {
                return response;
            }
            let (parts, body) = response.into_parts();
            let out = to_bytes(body, 1 << 20).await.unwrap_or_default();
            let answer: ContractAnswer = serde_json::from_slice(&out).unwrap_or_default();
            if let (Some(vin), Some(calc)) = (vin, answer.contract_id) {
                let calc = calc.into_owned();
                rec.records.lock().expect("records").creates.push(CreateRecord { insurer, calc, vin });
            }
            Response::from_parts(parts, Body::from(out))
        }
        Kind::Poll(calc) => {
            let response = next.run(req).await;
            // One reading of both clocks per poll: the two stamps are exact against each
            // other, and on the wall clock of now (an anchor taken at start drifted 2.3 ms a
            // second on a VM just forked, which the report read as the poller's latency).
            let (now, now_us) = (Instant::now(), now_us());
            let served_us = now_us;
            let Some(ins) = rec.insurers.get(&insurer) else { return response };
            let Some(calculation) = ins.get(&calc) else { return response };
            let Some(started) = calculation.started else { return response };
            let ready_at = started + calculation.decision.ready_after;
            if ready_at <= now && rec.seen.lock().expect("seen").insert((insurer.clone(), calc.clone())) {
                let ready_us = now_us - now.duration_since(ready_at).as_micros() as i64;
                rec.records.lock().expect("records").ready.push(ReadyRecord { insurer, calc, ready_us, served_us });
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creates_vin_is_read_from_the_application_bare_or_wrapped() {
        let bare = r#"{"vehicle": {"make": "LADA", "vin": "XTAGFL110KY123456"}, "drivers": [{"a": [1, {}]}]}"#;
        let wrapped = r#"{"request_id": "calc-\u0031", "application": {"vehicle": {"vin": "XTAGFL110KY123456"}}}"#;
        let bare: CreateBody = serde_json::from_str(bare).unwrap();
        let wrapped: CreateBody = serde_json::from_str(wrapped).unwrap();
        assert_eq!(bare.vin().as_deref(), Some("XTAGFL110KY123456"));
        assert_eq!(wrapped.vin().as_deref(), Some("XTAGFL110KY123456"));
        assert_eq!(wrapped.request_id.as_deref(), Some("calc-1"), "an escaped id is read, not borrowed");
        let none: CreateBody = serde_json::from_str(r#"{"vehicle": {}}"#).unwrap();
        assert_eq!(none.vin(), None);
    }
}
