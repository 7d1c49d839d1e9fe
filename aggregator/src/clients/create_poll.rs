//! The create-poll style: `POST /v1/calculate {request_id, application}` names the
//! calculation with *our* id, `GET /v1/calculate?request_id=` polls it.
//!
//! Our `request_id` is the task key, so a create whose answer was lost is retried with the
//! same id and the insurer answers with the same calculation: creates are idempotent.
//! Errors look like `{request_id, message, properties: [{property, message}]}`.

use super::http::{Answer, Http};
use super::resilience::{Call, CallContext, Resilience};
use super::retry::Idempotency;
use super::wire::{self, token};
use super::{Breaker, CallError, ClientError, Created, Credentials, InsurerApi, Polled};
use chrono::{DateTime, Utc};
use crds::InsurerIntegrationSpec;
use domain::events::Offer;
use domain::request::QuoteRequest;
use domain::tariff::Breakdown;
use futures::future::BoxFuture;
use reqwest::Method;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// `POST /v1/calculate`: idempotent, the insurer knows the calculation by our `request_id`.
const CREATE: Call = Call::idempotent("create");
const POLL: Call = Call::idempotent("poll");

/// A create-poll insurer.
#[derive(Debug)]
pub struct CreatePoll {
    http: Http,
}

impl CreatePoll {
    pub fn new(
        spec: &InsurerIntegrationSpec,
        credentials: Credentials,
        guard: Arc<Resilience>,
    ) -> Result<Self, ClientError> {
        Ok(CreatePoll { http: Http::new(spec, credentials, error_message, guard)? })
    }
}

impl InsurerApi for CreatePoll {
    fn create<'a>(
        &'a self,
        key: &'a str,
        request: &'a QuoteRequest,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Created, CallError>> {
        Box::pin(async move {
            let body = json!({"request_id": key, "application": request});
            let call = self.http.request(Method::POST, self.http.url("v1/calculate")).json(&body);
            let Answer { body, retry_after, .. } = self.http.send(CREATE, call, ctx).await?;
            let status = map_calculation(key, &body, retry_after)?;
            Ok(Created { reference: key.to_string(), status })
        })
    }

    fn poll<'a>(&'a self, reference: &'a str, ctx: &'a CallContext) -> BoxFuture<'a, Result<Polled, CallError>> {
        Box::pin(async move {
            let call =
                self.http.request(Method::GET, self.http.url("v1/calculate")).query(&[("request_id", reference)]);
            let Answer { body, retry_after, .. } = self.http.send(POLL, call, ctx).await?;
            map_calculation(reference, &body, retry_after)
        })
    }

    fn create_is_idempotent(&self) -> bool {
        CREATE.idempotency == Idempotency::Idempotent
    }

    fn breaker(&self) -> Option<Arc<Breaker>> {
        Some(self.http.guard().breaker().clone())
    }
}

#[derive(Deserialize)]
struct Calculation {
    #[serde(default)]
    request_id: Option<String>,
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    offers: Vec<WireOffer>,
}

#[derive(Deserialize)]
struct WireOffer {
    calculation_id: String,
    price: Decimal,
    currency: String,
    valid_until: DateTime<Utc>,
    coefficients: Breakdown,
}

/// A calculation body (from the create or a poll) as [`Polled`]. With several offers in one
/// answer, the cheapest is taken.
pub fn map_calculation(request_id: &str, body: &[u8], retry_after: Option<Duration>) -> Result<Polled, CallError> {
    let calculation: Calculation = wire::parse("calculation", body)?;
    if calculation.request_id.as_deref().is_some_and(|id| id != request_id) {
        return Err(CallError::Protocol("calculation answers for another request_id".into()));
    }
    let message = || calculation.message.clone().unwrap_or_default();
    match calculation.status.as_str() {
        "PARTNER_CALCULATION_IN_PROGRESS" => Ok(Polled::Pending { retry_after }),
        "CALCULATION_READY" => {
            let offer = calculation
                .offers
                .into_iter()
                .min_by_key(|o| o.price)
                .ok_or_else(|| CallError::Protocol("CALCULATION_READY without offers".into()))?;
            Ok(Polled::Offer(Offer {
                premium: wire::premium(offer.price, &offer.currency)?,
                insurer_reference: offer.calculation_id,
                valid_until: offer.valid_until,
                breakdown: offer.coefficients,
            }))
        }
        "NO_CALCULATION_AVAILABLE" => Ok(Polled::Declined(message())),
        "CALCULATION_ERROR" => Ok(Polled::Failed(message())),
        other => Err(CallError::Protocol(format!("unknown calculation status {}", token(other)))),
    }
}

/// `message: property: message; …` from `{request_id, message, properties}`.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        message: String,
        #[serde(default)]
        properties: Vec<Property>,
    }
    #[derive(Deserialize)]
    struct Property {
        property: String,
        message: String,
    }
    let error: Error = serde_json::from_slice(body).ok()?;
    let details: Vec<String> = error.properties.iter().map(|p| format!("{}: {}", p.property, p.message)).collect();
    Some(match (error.message.is_empty(), details.is_empty()) {
        (_, true) => error.message,
        (true, false) => details.join("; "),
        (false, false) => format!("{}: {}", error.message, details.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::money::Money;
    use std::str::FromStr;

    const ID: &str = "alfa-0197f6a2-0000-7000-8000-000000000001";

    fn breakdown() -> Breakdown {
        serde_json::from_str(
            r#"{"tb":"8665.00","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}"#,
        )
        .unwrap()
    }

    #[test]
    fn calculation_bodies_map_to_polled() {
        let ready = format!(
            r#"{{"request_id":"{ID}","status":"CALCULATION_READY","offers":[{{"calculation_id":"ALFA-00A1B2C3D4E5",
               "price":"13318.79","currency":"RUB","message":"Итоговая стоимость полиса","valid_until":"2026-12-01T10:00:00Z",
               "payment_url":"https://pay.example/ALFA-00A1B2C3D4E5",
               "coefficients":{{"tb":"8665.00","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}}}}]}}"#
        );
        let offer = Polled::Offer(Offer {
            premium: Money::rub(Decimal::from_str("13318.79").unwrap()),
            insurer_reference: "ALFA-00A1B2C3D4E5".into(),
            valid_until: "2026-12-01T10:00:00Z".parse().unwrap(),
            breakdown: breakdown(),
        });
        let two = Some(Duration::from_secs(2));
        let cases: Vec<(String, Result<Polled, CallError>)> = vec![
            (
                format!(r#"{{"request_id":"{ID}","status":"PARTNER_CALCULATION_IN_PROGRESS","offers":[]}}"#),
                Ok(Polled::Pending { retry_after: two }),
            ),
            (ready, Ok(offer)),
            (
                format!(
                    r#"{{"request_id":"{ID}","status":"NO_CALCULATION_AVAILABLE","message":"vehicles older than 25 years are not insured","offers":[]}}"#
                ),
                Ok(Polled::Declined("vehicles older than 25 years are not insured".into())),
            ),
            (
                format!(
                    r#"{{"request_id":"{ID}","status":"CALCULATION_ERROR","message":"calculation service unavailable, try again later","offers":[]}}"#
                ),
                Ok(Polled::Failed("calculation service unavailable, try again later".into())),
            ),
            (
                format!(r#"{{"request_id":"{ID}","status":"CALCULATION_READY","offers":[]}}"#),
                Err(CallError::Protocol("CALCULATION_READY without offers".into())),
            ),
            (
                r#"{"request_id":"someone-else","status":"PARTNER_CALCULATION_IN_PROGRESS","offers":[]}"#.into(),
                Err(CallError::Protocol("calculation answers for another request_id".into())),
            ),
            (
                format!(r#"{{"request_id":"{ID}","status":"THINKING"}}"#),
                Err(CallError::Protocol("unknown calculation status \"THINKING\"".into())),
            ),
            (r#"{"offers":[]}"#.into(), Err(CallError::Protocol("calculation: missing field `status`".into()))),
            (
                format!(
                    r#"{{"request_id":"{ID}","status":"CALCULATION_READY","offers":[{{"calculation_id":"X","price":"100.00","currency":"USD","valid_until":"2026-12-01T10:00:00Z","coefficients":{{"tb":"1","kt":"1","kbm":"1","kvs":"1","ko":"1","km":"1","ks":"1","kn":"1","kp":"1"}}}}]}}"#
                ),
                Err(CallError::Protocol("premium currency \"USD\" is not roubles".into())),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(map_calculation(ID, body.as_bytes(), two), expected, "{body}");
        }
    }

    #[test]
    fn the_cheapest_of_several_offers_is_taken() {
        let offer = |id: &str, price: &str| {
            format!(
                r#"{{"calculation_id":"{id}","price":"{price}","currency":"RUB","valid_until":"2026-12-01T10:00:00Z",
                    "coefficients":{{"tb":"8665.00","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}}}}"#
            )
        };
        let body = format!(
            r#"{{"status":"CALCULATION_READY","offers":[{},{},{}]}}"#,
            offer("A", "9000.00"),
            offer("B", "8999.99"),
            offer("C", "12000")
        );
        match map_calculation(ID, body.as_bytes(), None).unwrap() {
            Polled::Offer(offer) => assert_eq!(offer.insurer_reference, "B"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_bodies_give_the_insurers_message() {
        let cases = [
            (
                r#"{"request_id":"r2","message":"validation failed","properties":[{"property":"policy.start_date","message":"the policy cannot start in the past"}]}"#,
                Some("validation failed: policy.start_date: the policy cannot start in the past"),
            ),
            (
                r#"{"request_id":null,"message":"missing or invalid credentials","properties":[]}"#,
                Some("missing or invalid credentials"),
            ),
            (r#"{"properties":[{"property":"vehicle.vin","message":"bad"}]}"#, Some("vehicle.vin: bad")),
            ("<html>502</html>", None),
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(body.as_bytes()).as_deref(), expected, "{body}");
        }
    }
}
