//! A JSON-RPC 2.0 partner API unlike the three built-in styles, so that only the `mapped`
//! style can talk to it: one endpoint `POST /rpc`, methods `Osago.StartCalculation` and
//! `Osago.GetCalculation`; its own field names (`insurant`, `car`, `multidrive`), dates as
//! `DD.MM.YYYY`, passport and licence split into series and number; numeric states
//! (10 calculating, 20 priced, 30 refused, 40 failed); premiums in whole kopecks with the
//! numeric currency code `643`; and errors inside HTTP 200 answers, as JSON-RPC does.
//!
//! A start is idempotent by `params.externalId`: the ticket is derived from it.

use super::{new_calculation, parse_application};
use crate::config::ApiStyle;
use crate::engine::{self, Outcome};
use crate::state::{Calculation, Insurer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::Rng;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

const STYLE: ApiStyle = ApiStyle::Rpc;
/// JSON-RPC 2.0 error codes, and the API's own "no such ticket".
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const TICKET_NOT_FOUND: i64 = -32004;

/// Routes of this style.
pub fn router() -> Router<Arc<Insurer>> {
    Router::new().route("/rpc", post(rpc))
}

async fn rpc(State(ins): State<Arc<Insurer>>, body: Bytes) -> Response {
    let Ok(call) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(&Value::Null, PARSE_ERROR, "Parse error");
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    if call.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !call["params"].is_object() {
        return rpc_error(&id, INVALID_REQUEST, "Invalid Request: jsonrpc 2.0 with object params expected");
    }
    match call["method"].as_str() {
        Some("Osago.StartCalculation") => start(&ins, &id, &call["params"]).await,
        Some("Osago.GetCalculation") => match call["params"]["ticket"].as_str() {
            Some(ticket) => match ins.get(ticket) {
                Some(calculation) => result(&id, calculation_body(ticket, &calculation)),
                None => rpc_error(&id, TICKET_NOT_FOUND, "Ticket not found"),
            },
            None => rpc_error(&id, INVALID_PARAMS, "Invalid params: ticket is required"),
        },
        _ => rpc_error(&id, METHOD_NOT_FOUND, "Method not found"),
    }
}

async fn start(ins: &Insurer, id: &Value, params: &Value) -> Response {
    let Some(external_id) = params["externalId"].as_str().filter(|s| (1..=128).contains(&s.len())) else {
        return rpc_error(id, INVALID_PARAMS, "Invalid params: externalId must be 1–128 characters");
    };
    let request = match parse_application(STYLE, canonical(params).to_string().as_bytes()) {
        Ok(request) => request,
        Err(body) => return answer_error(id, INVALID_PARAMS, body),
    };
    let ticket = ticket(ins, external_id);
    let calculation = match ins.get(&ticket) {
        Some(existing) => existing,
        None => {
            let calculation = new_calculation(ins, external_id, &request, true);
            tokio::time::sleep(calculation.decision.create_delay).await;
            ins.insert(ticket.clone(), calculation.clone());
            calculation
        }
    };
    result(id, calculation_body(&ticket, &calculation))
}

/// The ticket of the calculation started with `external_id`: the same for a repeated start.
fn ticket(ins: &Insurer, external_id: &str) -> String {
    let mut rng = engine::rng_for(ins.seed, &ins.personality.name, &format!("ticket:{external_id}"));
    format!("T{:016X}", rng.random::<u64>())
}

fn calculation_body(ticket: &str, calculation: &Calculation) -> Value {
    match calculation.ready(Instant::now()) {
        None => json!({"ticket": ticket, "state": 10, "stateText": "Расчёт выполняется"}),
        Some(Outcome::Offer { quote, reference, valid_for }) => {
            let b = &quote.breakdown;
            json!({
                "ticket": ticket,
                "state": 20,
                "stateText": "Рассчитано",
                "draftNumber": reference,
                "premium": {"amountKop": (quote.premium.amount() * Decimal::ONE_HUNDRED).to_i64(), "currencyCode": "643"},
                "tariffFactors": {"TB": b.tb.to_string(), "KT": b.kt.to_string(), "KBM": b.kbm.to_string(),
                                  "KVS": b.kvs.to_string(), "KO": b.ko.to_string(), "KM": b.km.to_string(),
                                  "KS": b.ks.to_string(), "KN": b.kn.to_string(), "KP": b.kp.to_string()},
                "expiresAt": calculation.valid_until(*valid_for),
            })
        }
        Some(Outcome::Declined { reason }) => json!({"ticket": ticket, "state": 30, "stateText": reason}),
        Some(Outcome::Error { message }) => json!({"ticket": ticket, "state": 40, "stateText": message}),
    }
}

fn result(id: &Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// A JSON-RPC error: HTTP 200, like the real thing.
fn rpc_error(id: &Value, code: i64, message: &str) -> Response {
    answer_error(id, code, super::error_body(STYLE, "", message, &[]))
}

fn answer_error(id: &Value, code: i64, mut body: Value) -> Response {
    body["id"] = id.clone();
    body["error"]["code"] = json!(code);
    (StatusCode::OK, Json(body)).into_response()
}

/// The request in the platform's own shape, so the sandbox validates and prices it like every
/// other style; what the caller left out stays out and is reported by the validation.
fn canonical(params: &Value) -> Value {
    let person = |p: &Value| {
        json!({
            "last_name": p["surname"], "first_name": p["name"], "middle_name": p["patronymic"],
            "birth_date": iso_date(&p["birthDate"]),
        })
    };
    let mut owner = person(&params["insurant"]);
    owner["passport"] = series_number(&params["insurant"]["passport"]);
    owner["region"] = params["insurant"]["regionCode"].clone();
    owner["city"] = params["insurant"]["city"].clone();
    let drivers: Vec<Value> = params["drivers"]
        .as_array()
        .map(|drivers| {
            drivers
                .iter()
                .map(|d| {
                    let mut driver = person(d);
                    driver["licence"] = series_number(&d["license"]);
                    driver["experience_since"] = iso_date(&d["experienceFrom"]);
                    driver["kbm_class"] = d["kbmClass"].clone();
                    driver
                })
                .collect()
        })
        .unwrap_or_default();
    let car = &params["car"];
    json!({
        "vehicle": {"category": car["category"], "make": car["brand"], "model": car["model"], "year": car["year"],
                    "power_hp": car["powerHp"], "vin": car["vin"], "plate": car["regNumber"], "purpose": car["usage"]},
        "owner": owner,
        "drivers": drivers,
        "unlimited_drivers": params["multidrive"],
        "policy": {"start_date": iso_date(&params["period"]["from"]), "period_months": params["period"]["months"]},
    })
}

/// `01.12.2026` → `2026-12-01`; anything else as it came, for the validation to report.
fn iso_date(value: &Value) -> Value {
    value
        .as_str()
        .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%d.%m.%Y").ok())
        .map_or_else(|| value.clone(), |d| json!(d.format("%Y-%m-%d").to_string()))
}

/// `{series, number}` → `"series number"`.
fn series_number(document: &Value) -> Value {
    match (document["series"].as_str(), document["number"].as_str()) {
        (Some(series), Some(number)) => json!(format!("{series} {number}")),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_params_become_the_platform_request() {
        let params = json!({
            "externalId": "renins-1",
            "period": {"from": "01.12.2026", "months": 12},
            "car": {"category": "B", "brand": "Lada", "model": "Vesta", "year": 2019, "powerHp": 106,
                    "vin": "XTAGFL110KY123456", "regNumber": "А123ВС77", "usage": "personal"},
            "insurant": {"surname": "Иванов", "name": "Иван", "patronymic": null, "birthDate": "15.03.1985",
                         "passport": {"series": "4510", "number": "123456"}, "regionCode": "77", "city": null},
            "multidrive": false,
            "drivers": [{"surname": "Иванов", "name": "Иван", "patronymic": null, "birthDate": "15.03.1985",
                         "license": {"series": "7700", "number": "123456"}, "experienceFrom": "01.06.2005", "kbmClass": null}],
        });
        let canonical = canonical(&params);
        assert_eq!(canonical["owner"]["passport"], "4510 123456");
        assert_eq!(canonical["owner"]["birth_date"], "1985-03-15");
        assert_eq!(canonical["drivers"][0]["licence"], "7700 123456");
        assert_eq!(canonical["policy"]["start_date"], "2026-12-01");
        let raw: domain::request::RawQuoteRequest = serde_json::from_value(canonical).unwrap();
        let request = domain::request::QuoteRequest::try_from(raw).unwrap();
        assert_eq!(request.vehicle.power_hp, 106);
    }

    #[test]
    fn unparseable_dates_pass_through_for_the_validation() {
        assert_eq!(iso_date(&json!("2026-12-01")), json!("2026-12-01"));
        assert_eq!(iso_date(&json!(null)), json!(null));
    }
}
