//! The "202 + operation" style: `POST /api/quotes` answers 202 with an operation `href`
//! (or 201 with the quote when it is ready at once); the caller polls the operation until
//! `done`. Retrying a create is safe only with an `Idempotency-Key` header. Premiums are
//! JSON numbers in roubles, as this kind of API sends them.

use super::{bad_request, error, new_calculation, parse_application, retry_after};
use crate::config::ApiStyle;
use crate::engine::Outcome;
use crate::state::{Calculation, Insurer};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STYLE: ApiStyle = ApiStyle::Operation;

/// Routes of this style.
pub fn router() -> Router<Arc<Insurer>> {
    Router::new().route("/api/quotes", post(create)).route("/api/operations", get(operation))
}

async fn create(State(ins): State<Arc<Insurer>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match parse_application(STYLE, &body) {
        Ok(r) => r,
        Err(body) => return bad_request(body),
    };
    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let id = match &idempotency_key {
        Some(key) => format!("op-{:016x}", crate::kbm::fnv1a(key.as_bytes())),
        None => format!("op-{}", uuid::Uuid::new_v4().simple()),
    };
    let calculation = match ins.get(&id) {
        Some(existing) => existing,
        None => {
            // The outcome follows the body, so a retried create without a key prices the same.
            let key = idempotency_key.unwrap_or_else(|| format!("body:{:016x}", crate::kbm::fnv1a(&body)));
            let calculation = new_calculation(&ins, &key, &request, true);
            tokio::time::sleep(calculation.decision.create_delay).await;
            ins.insert(id.clone(), calculation.clone());
            calculation
        }
    };
    if calculation.decision.ready_after == Duration::ZERO {
        return (StatusCode::CREATED, Json(operation_body(&id, &calculation))).into_response();
    }
    let href = format!("/{}/api/operations?id={id}", ins.personality.name);
    let mut response = (StatusCode::ACCEPTED, Json(json!({"id": id, "href": href}))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, href.parse().expect("ascii href"));
    headers.insert(header::RETRY_AFTER, retry_after(calculation.remaining(Instant::now())));
    response
}

#[derive(Deserialize)]
struct OperationQuery {
    id: String,
}

async fn operation(State(ins): State<Arc<Insurer>>, Query(q): Query<OperationQuery>) -> Response {
    let Some(calculation) = ins.get(&q.id) else {
        return error(STYLE, StatusCode::NOT_FOUND, "NOT_FOUND", "no such operation", &[]);
    };
    let mut response = Json(operation_body(&q.id, &calculation)).into_response();
    if calculation.ready(Instant::now()).is_none() {
        response.headers_mut().insert(header::RETRY_AFTER, retry_after(calculation.remaining(Instant::now())));
    }
    response
}

fn operation_body(id: &str, calculation: &Calculation) -> Value {
    match calculation.ready(Instant::now()) {
        None => json!({"id": id, "done": false}),
        Some(Outcome::Offer { quote, reference, valid_for }) => json!({
            "id": id,
            "done": true,
            "response": {
                "quote_id": reference,
                "status": "ISSUED",
                "premium": {"value": quote.premium.amount().to_f64(), "currency": "RUR"},
                "coefficients": quote.breakdown,
                "expires_at": calculation.valid_until(*valid_for),
            }
        }),
        Some(Outcome::Declined { reason }) => json!({
            "id": id, "done": true, "response": {"status": "REFUSED", "refusal_reason": reason}
        }),
        Some(Outcome::Error { message }) => json!({
            "id": id, "done": true, "error": {"code": "CALCULATION_FAILED", "message": message}
        }),
    }
}
