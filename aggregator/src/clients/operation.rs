//! The "202 + operation" style: `POST /api/quotes` answers 202 with an operation `href`
//! (and `Location`, `Retry-After`), or 201 with the finished operation; `GET href` until
//! `done`. Premiums are JSON numbers.
//!
//! Every create carries `Idempotency-Key: <task key>`, so a create whose answer was lost
//! is retried safely: the insurer answers with the same operation. Errors look like
//! `{error: {code, message, details: [{field, issue}]}}`.

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
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// `POST /api/quotes` with our `Idempotency-Key`: a repeat is the same operation.
const CREATE: Call = Call::idempotent("create");
const POLL: Call = Call::idempotent("poll");

/// An operation-style insurer.
#[derive(Debug)]
pub struct Operation {
    http: Http,
}

impl Operation {
    pub fn new(
        spec: &InsurerIntegrationSpec,
        credentials: Credentials,
        guard: Arc<Resilience>,
    ) -> Result<Self, ClientError> {
        Ok(Operation { http: Http::new(spec, credentials, error_message, guard)? })
    }
}

impl InsurerApi for Operation {
    fn create<'a>(
        &'a self,
        key: &'a str,
        request: &'a QuoteRequest,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Created, CallError>> {
        Box::pin(async move {
            let call = self
                .http
                .request(Method::POST, self.http.url("api/quotes"))
                .header("Idempotency-Key", key)
                .json(request);
            let Answer { status, retry_after, location, body } = self.http.send(CREATE, call, ctx).await?;
            map_created(status, location.as_deref(), &body, retry_after)
        })
    }

    fn poll<'a>(&'a self, reference: &'a str, ctx: &'a CallContext) -> BoxFuture<'a, Result<Polled, CallError>> {
        Box::pin(async move {
            let url = self.http.resolve(reference)?;
            let Answer { body, retry_after, .. } =
                self.http.send(POLL, self.http.request(Method::GET, url), ctx).await?;
            map_operation(&body, retry_after)
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
struct WireOperation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    href: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    response: Option<QuoteResponse>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct QuoteResponse {
    status: String,
    #[serde(default)]
    quote_id: Option<String>,
    #[serde(default)]
    premium: Option<Premium>,
    #[serde(default)]
    coefficients: Option<Breakdown>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    refusal_reason: Option<String>,
}

#[derive(Deserialize)]
struct Premium {
    value: serde_json::Number,
    currency: String,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The create's answer: 202 → pending at the operation's `href` (or `Location`); 200/201
/// with a finished operation → its result right away.
pub fn map_created(
    status: u16,
    location: Option<&str>,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Created, CallError> {
    let operation: WireOperation = wire::parse("operation", body)?;
    let href = operation.href.clone().or_else(|| location.map(str::to_string));
    if status == 202 || !operation.done {
        let reference = href.ok_or_else(|| CallError::Protocol("accepted without an operation href".into()))?;
        return Ok(Created { reference, status: Polled::Pending { retry_after } });
    }
    let reference = href
        .or_else(|| operation.id.clone())
        .ok_or_else(|| CallError::Protocol("finished operation without an id".into()))?;
    Ok(Created { reference, status: map_finished(operation, retry_after)? })
}

/// An operation body from a poll as [`Polled`].
pub fn map_operation(body: &[u8], retry_after: Option<Duration>) -> Result<Polled, CallError> {
    map_finished(wire::parse("operation", body)?, retry_after)
}

fn map_finished(operation: WireOperation, retry_after: Option<Duration>) -> Result<Polled, CallError> {
    if !operation.done {
        return Ok(Polled::Pending { retry_after });
    }
    if let Some(error) = operation.error {
        let message = if error.message.is_empty() { error.code } else { error.message };
        return Ok(Polled::Failed(message));
    }
    let response = operation.response.ok_or_else(|| CallError::Protocol("done without response or error".into()))?;
    match response.status.as_str() {
        "ISSUED" => {
            let missing = |field: &str| CallError::Protocol(format!("ISSUED quote without {field}"));
            let premium = response.premium.ok_or_else(|| missing("premium"))?;
            Ok(Polled::Offer(Offer {
                premium: wire::premium(wire::decimal_from_number(&premium.value)?, &premium.currency)?,
                insurer_reference: response.quote_id.ok_or_else(|| missing("quote_id"))?,
                valid_until: response.expires_at.ok_or_else(|| missing("expires_at"))?,
                breakdown: response.coefficients.ok_or_else(|| missing("coefficients"))?,
            }))
        }
        "REFUSED" => Ok(Polled::Declined(response.refusal_reason.unwrap_or_default())),
        other => Err(CallError::Protocol(format!("unknown quote status {}", token(other)))),
    }
}

/// `message: field: issue; …` from `{error: {code, message, details}}`.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Error,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: Vec<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        field: String,
        #[serde(default)]
        issue: String,
    }
    let Body { error } = serde_json::from_slice(body).ok()?;
    let head = if error.message.is_empty() { error.code } else { error.message };
    let details: Vec<String> = error.details.iter().map(|d| format!("{}: {}", d.field, d.issue)).collect();
    Some(if details.is_empty() { head } else { format!("{head}: {}", details.join("; ")) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::money::Money;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const COEFFICIENTS: &str = r#"{"tb":"8533.92","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}"#;

    fn offer(premium: &str) -> Polled {
        Polled::Offer(Offer {
            premium: Money::rub(Decimal::from_str(premium).unwrap()),
            insurer_reference: "INGOS-00F00DBEEF01".into(),
            valid_until: "2026-12-01T10:00:02Z".parse().unwrap(),
            breakdown: serde_json::from_str(COEFFICIENTS).unwrap(),
        })
    }

    fn issued(value: &str, currency: &str) -> String {
        format!(
            r#"{{"id":"op-1f2e3d4c5b6a7988","done":true,"response":{{"quote_id":"INGOS-00F00DBEEF01","status":"ISSUED",
               "premium":{{"value":{value},"currency":"{currency}"}},"coefficients":{COEFFICIENTS},"expires_at":"2026-12-01T10:00:02Z"}}}}"#
        )
    }

    #[test]
    fn operation_bodies_map_to_polled() {
        let three = Some(Duration::from_secs(3));
        let cases: Vec<(String, Result<Polled, CallError>)> = vec![
            (r#"{"id":"op-1f2e3d4c5b6a7988","done":false}"#.into(), Ok(Polled::Pending { retry_after: three })),
            (issued("13117.1", "RUR"), Ok(offer("13117.10"))),
            (issued("13117.099999999999", "RUB"), Ok(offer("13117.10"))),
            (
                r#"{"id":"op-1","done":true,"response":{"status":"REFUSED","refusal_reason":"drivers younger than 22 are not insured"}}"#
                    .into(),
                Ok(Polled::Declined("drivers younger than 22 are not insured".into())),
            ),
            (
                r#"{"id":"op-1","done":true,"error":{"code":"CALCULATION_FAILED","message":"calculation service unavailable, try again later"}}"#
                    .into(),
                Ok(Polled::Failed("calculation service unavailable, try again later".into())),
            ),
            (
                r#"{"id":"op-1","done":true,"error":{"code":"CALCULATION_FAILED"}}"#.into(),
                Ok(Polled::Failed("CALCULATION_FAILED".into())),
            ),
            (
                r#"{"id":"op-1","done":true}"#.into(),
                Err(CallError::Protocol("done without response or error".into())),
            ),
            (
                r#"{"id":"op-1","done":true,"response":{"status":"ISSUED","quote_id":"Q"}}"#.into(),
                Err(CallError::Protocol("ISSUED quote without premium".into())),
            ),
            (
                r#"{"id":"op-1","done":true,"response":{"status":"PENDING_REVIEW"}}"#.into(),
                Err(CallError::Protocol("unknown quote status \"PENDING_REVIEW\"".into())),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(map_operation(body.as_bytes(), three), expected, "{body}");
        }
        // A premium as a string is not this style's shape; where serde stops is its business.
        let wrong = map_operation(issued("\"13117.10\"", "RUB").as_bytes(), three);
        assert!(
            matches!(&wrong, Err(CallError::Protocol(m)) if m.starts_with("operation: unexpected shape")),
            "{wrong:?}"
        );
    }

    #[test]
    fn creates_map_to_a_reference_and_a_first_status() {
        let href = "/ingos/api/operations?id=op-1f2e3d4c5b6a7988";
        let accepted = format!(r#"{{"id":"op-1f2e3d4c5b6a7988","href":"{href}"}}"#);
        let three = Some(Duration::from_secs(3));
        let pending =
            |reference: &str| Created { reference: reference.into(), status: Polled::Pending { retry_after: three } };
        type Case = (u16, Option<&'static str>, String, Result<Created, CallError>);
        let cases: Vec<Case> = vec![
            (202, Some(href), accepted.clone(), Ok(pending(href))),
            (202, None, accepted, Ok(pending(href))),
            (
                202,
                Some("/ingos/api/operations?id=from-location"),
                r#"{"id":"x"}"#.into(),
                Ok(pending("/ingos/api/operations?id=from-location")),
            ),
            (202, None, r#"{"id":"x"}"#.into(), Err(CallError::Protocol("accepted without an operation href".into()))),
            (
                201,
                None,
                issued("13117.1", "RUR"),
                Ok(Created { reference: "op-1f2e3d4c5b6a7988".into(), status: offer("13117.10") }),
            ),
        ];
        for (status, location, body, expected) in cases {
            assert_eq!(map_created(status, location, body.as_bytes(), three), expected, "{status} {body}");
        }
    }

    #[test]
    fn error_bodies_give_the_insurers_message() {
        let cases = [
            (
                r#"{"error":{"code":"VALIDATION","message":"validation failed","details":[{"field":"policy.start_date","issue":"the policy cannot start in the past"}]}}"#,
                Some("validation failed: policy.start_date: the policy cannot start in the past"),
            ),
            (
                r#"{"error":{"code":"UNAUTHORIZED","message":"missing or invalid credentials","details":[]}}"#,
                Some("missing or invalid credentials"),
            ),
            (r#"{"error":{"code":"NOT_FOUND"}}"#, Some("NOT_FOUND")),
            (r#"{"message":"other shape"}"#, None),
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(body.as_bytes()).as_deref(), expected, "{body}");
        }
    }
}
