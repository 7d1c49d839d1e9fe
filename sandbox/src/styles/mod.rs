//! The partner API styles. Each style is an axum router mounted under `/{insurer}`, behind
//! [`guard`], which applies the insurer's faults, auth and rate limit the way real APIs do.

pub mod create_poll;
pub mod offers_list;
pub mod operation;
pub mod rpc;

use crate::config::{ApiStyle, Auth};
use crate::engine::{self, Decision};
use crate::state::{Calculation, Insurer};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use domain::FieldError;
use domain::request::{QuoteRequest, RequestError};
use rand::Rng;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A hung call sleeps this long, far beyond any sane client timeout.
const HANG: Duration = Duration::from_secs(3600);

/// The router of `insurer`'s API, guarded by its faults, auth and rate limit.
pub fn router(insurer: Arc<Insurer>) -> Router {
    let api = match insurer.personality.style {
        ApiStyle::CreatePoll => create_poll::router(),
        ApiStyle::Operation => operation::router(),
        ApiStyle::OffersList => offers_list::router(),
        ApiStyle::Rpc => rpc::router(),
    };
    api.route_layer(middleware::from_fn_with_state(insurer.clone(), guard)).with_state(insurer)
}

/// Counts the call, then plays the insurer's faults in the order a real outage shows them:
/// hang, outage, auth, rate limit, random server errors.
async fn guard(State(ins): State<Arc<Insurer>>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().map_or(req.uri().path(), MatchedPath::as_str);
    let endpoint = format!("{} {}", req.method(), path.trim_start_matches(&format!("/{}", ins.personality.name)));
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    ins.counters.arrived(&endpoint, traceparent);
    let response = faults_then(&ins, req, next).await;
    ins.counters.answered(response.status().as_u16());
    response
}

async fn faults_then(ins: &Insurer, req: Request, next: Next) -> Response {
    let style = ins.personality.style;
    let faults = ins.faults();
    if faults.hang {
        tokio::time::sleep(HANG).await;
        return error(style, StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", "upstream timed out", &[]);
    }
    if faults.outage {
        return error(style, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "service temporarily unavailable", &[]);
    }
    if !authorized(&ins.personality.auth, req.headers()) {
        return error(style, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "missing or invalid credentials", &[]);
    }
    if let Err(wait) = ins.check_rate() {
        let mut response = error(style, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "too many requests", &[]);
        response.headers_mut().insert(header::RETRY_AFTER, retry_after(wait));
        return response;
    }
    let call = ins.next_call();
    if faults.error_rate > 0.0
        && engine::rng_for(ins.seed, &ins.personality.name, &format!("call:{call}")).random_bool(faults.error_rate)
    {
        return error(style, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error", &[]);
    }
    next.run(req).await
}

fn authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match auth {
        Auth::None => true,
        Auth::Bearer { token } => {
            value("authorization").and_then(|v| v.strip_prefix("Bearer ")) == Some(token.as_str())
        }
        Auth::Header { header, key } => value(header) == Some(key.as_str()),
    }
}

/// An error in the style's own format; real partners each have theirs.
pub fn error(style: ApiStyle, status: StatusCode, code: &str, message: &str, fields: &[FieldError]) -> Response {
    (status, axum::Json(error_body(style, code, message, fields))).into_response()
}

/// The JSON body of [`error`].
pub fn error_body(style: ApiStyle, code: &str, message: &str, fields: &[FieldError]) -> serde_json::Value {
    match style {
        ApiStyle::CreatePoll => json!({
            "request_id": null,
            "message": message,
            "properties": fields.iter().map(|f| json!({"property": f.field, "message": f.message})).collect::<Vec<_>>(),
        }),
        ApiStyle::Operation => json!({
            "error": {"code": code, "message": message,
                      "details": fields.iter().map(|f| json!({"field": f.field, "issue": f.message})).collect::<Vec<_>>()}
        }),
        ApiStyle::OffersList => {
            let mut errors: Vec<_> =
                fields.iter().map(|f| json!({"code": "VALIDATION", "field": f.field, "message": f.message})).collect();
            if errors.is_empty() {
                errors.push(json!({"code": code, "message": message}));
            }
            json!({ "errors": errors })
        }
        ApiStyle::Rpc => {
            let details: Vec<String> = fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
            let message =
                if details.is_empty() { message.to_string() } else { format!("{message}: {}", details.join("; ")) };
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message, "data": {"reason": code}}})
        }
    }
}

/// Parses an application the way an insurer would: today's rules, every problem reported.
/// The error is the style's 400 body.
pub fn parse_application(style: ApiStyle, body: &[u8]) -> Result<QuoteRequest, serde_json::Value> {
    let today = chrono::Utc::now().date_naive();
    QuoteRequest::from_json(body, today).map_err(|e| match e {
        RequestError::Syntax(msg) => error_body(style, "BAD_REQUEST", &msg, &[]),
        RequestError::Invalid(errors) => error_body(style, "VALIDATION", "validation failed", errors.errors()),
    })
}

/// A 400 with a body from [`parse_application`].
pub fn bad_request(body: serde_json::Value) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Decides a new calculation; its clock starts now when `start` is set.
pub fn new_calculation(ins: &Insurer, request_key: &str, request: &QuoteRequest, start: bool) -> Calculation {
    let decision: Decision = engine::decide(&ins.personality, &ins.faults(), ins.seed, request_key, request);
    let now = Instant::now();
    Calculation {
        started: start.then_some(now),
        created: now,
        created_at: chrono::Utc::now(),
        decision,
        request_key: request_key.to_string(),
    }
}

/// A `Retry-After` header value in whole seconds, at least one.
pub fn retry_after(wait: Duration) -> HeaderValue {
    HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64)
}
