//! The "contract, then offers" style: `POST /contracts` creates a draft contract,
//! `POST /contracts/{id}/offers` asks for offers (the calculation starts only then), and
//! `GET /contracts/{id}/offers` returns `[{code, price, status, error}]`.

use super::{bad_request, error, new_calculation, parse_application};
use crate::config::ApiStyle;
use crate::engine::Outcome;
use crate::state::{Calculation, Insurer};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

const STYLE: ApiStyle = ApiStyle::OffersList;

/// Routes of this style.
pub fn router() -> Router<Arc<Insurer>> {
    Router::new()
        .route("/contracts", post(create_contract))
        .route("/contracts/{id}/offers", post(request_offers).get(list_offers))
}

async fn create_contract(State(ins): State<Arc<Insurer>>, body: Bytes) -> Response {
    let request = match parse_application(STYLE, &body) {
        Ok(r) => r,
        Err(body) => return bad_request(body),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let key = format!("body:{:016x}", crate::kbm::fnv1a(&body));
    let calculation = new_calculation(&ins, &key, &request, false);
    tokio::time::sleep(calculation.decision.create_delay).await;
    ins.insert(id.clone(), calculation);
    (StatusCode::CREATED, Json(json!({"contract_id": id, "status": "DRAFT"}))).into_response()
}

async fn request_offers(State(ins): State<Arc<Insurer>>, Path(id): Path<String>) -> Response {
    let started = ins.update(&id, |c| {
        c.started.get_or_insert_with(Instant::now);
    });
    if started {
        (StatusCode::ACCEPTED, Json(json!({"contract_id": id, "status": "CALCULATING"}))).into_response()
    } else {
        error(STYLE, StatusCode::NOT_FOUND, "CONTRACT_NOT_FOUND", "no such contract", &[])
    }
}

async fn list_offers(State(ins): State<Arc<Insurer>>, Path(id): Path<String>) -> Response {
    match ins.get(&id) {
        Some(calculation) => Json(offers(&ins.personality.name, &calculation)).into_response(),
        None => error(STYLE, StatusCode::NOT_FOUND, "CONTRACT_NOT_FOUND", "no such contract", &[]),
    }
}

fn offers(insurer: &str, calculation: &Calculation) -> Value {
    let code = insurer.to_uppercase();
    if calculation.started.is_none() {
        return json!([]);
    }
    let offer = match calculation.ready(Instant::now()) {
        None => json!({"code": code, "price": null, "status": "pending", "error": null}),
        Some(Outcome::Offer { quote, reference, valid_for }) => json!({
            "code": code,
            "offer_id": reference,
            "price": quote.premium.amount().to_string(),
            "status": "success",
            "error": null,
            "valid_until": calculation.valid_until(*valid_for),
            "coefficients": quote.breakdown,
        }),
        Some(Outcome::Declined { reason }) => {
            json!({"code": code, "price": null, "status": "declined", "error": reason})
        }
        Some(Outcome::Error { message }) => json!({"code": code, "price": null, "status": "error", "error": message}),
    };
    json!([offer])
}
