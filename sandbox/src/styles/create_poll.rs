//! The aggregator-driven calculate/poll protocol: the caller names the calculation with its
//! own `request_id`, then polls `GET /v1/calculate?request_id=` until the status is final.
//!
//! Statuses: `PARTNER_CALCULATION_IN_PROGRESS`, `CALCULATION_READY`,
//! `NO_CALCULATION_AVAILABLE` (declined, with `message`), `CALCULATION_ERROR`.
//! Creating twice with the same `request_id` is idempotent.

use super::{bad_request, error, error_body, new_calculation, parse_application};
use crate::config::ApiStyle;
use crate::engine::Outcome;
use crate::state::{Calculation, Insurer};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

const STYLE: ApiStyle = ApiStyle::CreatePoll;

/// Routes of this style.
pub fn router() -> Router<Arc<Insurer>> {
    Router::new().route("/v1/calculate", post(create).get(poll))
}

#[derive(Deserialize)]
struct Envelope {
    request_id: String,
    application: Value,
}

async fn create(State(ins): State<Arc<Insurer>>, body: Bytes) -> Response {
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return error(
                STYLE,
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("expected {{request_id, application}}: {e}"),
                &[],
            );
        }
    };
    if envelope.request_id.is_empty() || envelope.request_id.len() > 128 {
        return error(STYLE, StatusCode::BAD_REQUEST, "BAD_REQUEST", "request_id must be 1–128 characters", &[]);
    }
    let request = match parse_application(STYLE, envelope.application.to_string().as_bytes()) {
        Ok(r) => r,
        Err(mut body) => {
            body["request_id"] = json!(envelope.request_id);
            return bad_request(body);
        }
    };
    let calculation = match ins.get(&envelope.request_id) {
        Some(existing) => existing,
        None => {
            let calculation = new_calculation(&ins, &envelope.request_id, &request, true);
            tokio::time::sleep(calculation.decision.create_delay).await;
            ins.insert(envelope.request_id.clone(), calculation.clone());
            calculation
        }
    };
    (StatusCode::OK, Json(body_of(&envelope.request_id, &calculation))).into_response()
}

#[derive(Deserialize)]
struct PollQuery {
    request_id: String,
}

async fn poll(State(ins): State<Arc<Insurer>>, Query(q): Query<PollQuery>) -> Response {
    match ins.get(&q.request_id) {
        Some(calculation) => Json(body_of(&q.request_id, &calculation)).into_response(),
        None => {
            let mut body = error_body(STYLE, "NOT_FOUND", "unknown request_id", &[]);
            body["request_id"] = json!(q.request_id);
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

fn body_of(request_id: &str, calculation: &Calculation) -> Value {
    match calculation.ready(Instant::now()) {
        None => json!({"request_id": request_id, "status": "PARTNER_CALCULATION_IN_PROGRESS", "offers": []}),
        Some(Outcome::Offer { quote, reference, valid_for }) => json!({
            "request_id": request_id,
            "status": "CALCULATION_READY",
            "offers": [{
                "calculation_id": reference,
                "price": quote.premium.amount().to_string(),
                "currency": "RUB",
                "message": "Итоговая стоимость полиса",
                "valid_until": calculation.valid_until(*valid_for),
                "payment_url": format!("https://pay.example/{reference}"),
                "coefficients": quote.breakdown,
            }],
        }),
        Some(Outcome::Declined { reason }) => {
            json!({"request_id": request_id, "status": "NO_CALCULATION_AVAILABLE", "message": reason, "offers": []})
        }
        Some(Outcome::Error { message }) => {
            json!({"request_id": request_id, "status": "CALCULATION_ERROR", "message": message, "offers": []})
        }
    }
}
