//! The "contract, then offers" style: `POST /contracts` creates a draft contract,
//! `POST /contracts/{id}/offers` starts the calculation, `GET /contracts/{id}/offers` lists
//! `[{code, price, status, error}]`. Errors look like `{errors: [{code, field?, message}]}`.
//!
//! **No idempotency.** `POST /contracts` takes no key of ours, so a create whose answer was
//! lost (timeout, reset, a replica killed before it stored the contract id) is retried — by
//! the poller's next step, never within a step — as a *new* contract: the insurer keeps an
//! orphan draft — visible in its back office, perhaps counted against our quota — but we
//! only ever poll the contract we stored, so the customer still gets exactly one result.
//! (Within a step it is repeated only when it cannot have arrived: no connection, or a 429.) The two create calls run back to back in
//! one step; when the second fails transiently the contract is kept and the first poll,
//! seeing an empty list (offers never requested), requests them again — that request
//! is safe to repeat, it does not restart a running calculation.

use super::http::{Answer, Http};
use super::resilience::{Call, CallContext, Resilience};
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
use std::sync::Arc;
use std::time::Duration;

/// `POST /contracts`: no key of ours, a repeat is a second contract — never repeated once it
/// may have reached the insurer.
const CREATE: Call = Call::not_idempotent("create");
/// `POST /contracts/{id}/offers`: repeating it does not restart a running calculation.
const REQUEST_OFFERS: Call = Call::idempotent("request_offers");
const POLL: Call = Call::idempotent("poll");

/// An offers-list insurer.
#[derive(Debug)]
pub struct OffersList {
    http: Http,
}

impl OffersList {
    pub fn new(
        spec: &InsurerIntegrationSpec,
        credentials: Credentials,
        guard: Arc<Resilience>,
    ) -> Result<Self, ClientError> {
        Ok(OffersList { http: Http::new(spec, credentials, error_message, guard)? })
    }

    async fn request_offers(&self, contract: &str, ctx: &CallContext) -> Result<(), CallError> {
        let url = self.http.url_with_segments(&["contracts", contract, "offers"]);
        self.http.send(REQUEST_OFFERS, self.http.request(Method::POST, url), ctx).await.map(drop)
    }
}

impl InsurerApi for OffersList {
    fn create<'a>(
        &'a self,
        _key: &'a str,
        request: &'a QuoteRequest,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Created, CallError>> {
        Box::pin(async move {
            let call = self.http.request(Method::POST, self.http.url("contracts")).json(request);
            let Answer { body, .. } = self.http.send(CREATE, call, ctx).await?;
            let reference = map_contract(&body)?;
            let status = match self.request_offers(&reference, ctx).await {
                Ok(()) => Polled::PENDING,
                // Keep the contract; the first poll requests the offers again.
                Err(e) if e.is_transient() => Polled::Pending { retry_after: e.retry_after() },
                Err(e) => return Err(e),
            };
            Ok(Created { reference, status })
        })
    }

    fn poll<'a>(&'a self, reference: &'a str, ctx: &'a CallContext) -> BoxFuture<'a, Result<Polled, CallError>> {
        Box::pin(async move {
            let url = self.http.url_with_segments(&["contracts", reference, "offers"]);
            let Answer { body, retry_after, .. } =
                self.http.send(POLL, self.http.request(Method::GET, url), ctx).await?;
            match map_offers(&body, retry_after)? {
                OffersState::NotRequested => {
                    self.request_offers(reference, ctx).await?;
                    Ok(Polled::PENDING)
                }
                OffersState::Known(polled) => Ok(polled),
            }
        })
    }

    fn breaker(&self) -> Option<Arc<Breaker>> {
        Some(self.http.guard().breaker().clone())
    }
}

/// What the offers list says.
#[derive(Debug, Clone, PartialEq)]
pub enum OffersState {
    /// An empty list: the offers were never requested for this contract.
    NotRequested,
    Known(Polled),
}

/// The contract id from `POST /contracts`.
pub fn map_contract(body: &[u8]) -> Result<String, CallError> {
    #[derive(Deserialize)]
    struct Contract {
        contract_id: String,
    }
    let contract: Contract = wire::parse("contract", body)?;
    if contract.contract_id.is_empty() {
        return Err(CallError::Protocol("empty contract_id".into()));
    }
    Ok(contract.contract_id)
}

#[derive(Deserialize)]
struct WireOffer {
    status: String,
    #[serde(default)]
    offer_id: Option<String>,
    #[serde(default)]
    price: Option<Decimal>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    coefficients: Option<Breakdown>,
}

/// The offers list as [`OffersState`]: the cheapest `success` wins; otherwise still
/// `pending` while any entry is; otherwise the first `declined`, then the first `error`.
pub fn map_offers(body: &[u8], retry_after: Option<Duration>) -> Result<OffersState, CallError> {
    let offers: Vec<WireOffer> = wire::parse("offers", body)?;
    if offers.is_empty() {
        return Ok(OffersState::NotRequested);
    }
    if let Some(unknown) =
        offers.iter().find(|o| !["success", "pending", "declined", "error"].contains(&o.status.as_str()))
    {
        return Err(CallError::Protocol(format!("unknown offer status {}", token(&unknown.status))));
    }
    let with = |status: &'static str| offers.iter().filter(move |o| o.status == status);
    let mut successes = Vec::new();
    for offer in with("success") {
        let missing = |field: &str| CallError::Protocol(format!("successful offer without {field}"));
        let price = offer.price.ok_or_else(|| missing("price"))?;
        successes.push(Offer {
            premium: wire::premium(price, "RUB")?,
            insurer_reference: offer.offer_id.clone().ok_or_else(|| missing("offer_id"))?,
            valid_until: offer.valid_until.ok_or_else(|| missing("valid_until"))?,
            breakdown: offer.coefficients.ok_or_else(|| missing("coefficients"))?,
        });
    }
    let polled = if let Some(cheapest) = successes.into_iter().min_by_key(|o| o.premium.amount()) {
        Polled::Offer(cheapest)
    } else if with("pending").next().is_some() {
        Polled::Pending { retry_after }
    } else if let Some(declined) = with("declined").next() {
        Polled::Declined(declined.error.clone().unwrap_or_default())
    } else {
        Polled::Failed(with("error").next().and_then(|o| o.error.clone()).unwrap_or_default())
    };
    Ok(OffersState::Known(polled))
}

/// `field: message; …` from `{errors: [{code, field?, message}]}`.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        field: Option<String>,
        #[serde(default)]
        message: String,
    }
    let Body { errors } = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let text = if e.message.is_empty() { e.code } else { e.message };
            match e.field {
                Some(field) => format!("{field}: {text}"),
                None => text,
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::money::Money;
    use std::str::FromStr;

    const COEFFICIENTS: &str = r#"{"tb":"7919.40","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}"#;

    fn success(id: &str, price: &str) -> String {
        format!(
            r#"{{"code":"RESO","offer_id":"{id}","price":"{price}","status":"success","error":null,
                "valid_until":"2026-12-01T10:00:03Z","coefficients":{COEFFICIENTS}}}"#
        )
    }

    fn offer(id: &str, price: &str) -> OffersState {
        OffersState::Known(Polled::Offer(Offer {
            premium: Money::rub(Decimal::from_str(price).unwrap()),
            insurer_reference: id.into(),
            valid_until: "2026-12-01T10:00:03Z".parse().unwrap(),
            breakdown: serde_json::from_str(COEFFICIENTS).unwrap(),
        }))
    }

    #[test]
    fn offers_lists_map_to_a_state() {
        let one = Some(Duration::from_secs(1));
        let pending = r#"{"code":"RESO","price":null,"status":"pending","error":null}"#;
        let declined = r#"{"code":"RESO","price":null,"status":"declined","error":"taxis are not insured"}"#;
        let error = r#"{"code":"RESO","price":null,"status":"error","error":"calculation service unavailable, try again later"}"#;
        let cases: Vec<(String, Result<OffersState, CallError>)> = vec![
            ("[]".into(), Ok(OffersState::NotRequested)),
            (format!("[{pending}]"), Ok(OffersState::Known(Polled::Pending { retry_after: one }))),
            (format!("[{}]", success("RESO-00C0FFEE0001", "12155.20")), Ok(offer("RESO-00C0FFEE0001", "12155.20"))),
            (
                format!("[{},{pending},{}]", success("A", "12155.20"), success("B", "11999.99")),
                Ok(offer("B", "11999.99")),
            ),
            (format!("[{declined}]"), Ok(OffersState::Known(Polled::Declined("taxis are not insured".into())))),
            (format!("[{declined},{pending}]"), Ok(OffersState::Known(Polled::Pending { retry_after: one }))),
            (
                format!("[{error}]"),
                Ok(OffersState::Known(Polled::Failed("calculation service unavailable, try again later".into()))),
            ),
            (format!("[{error},{declined}]"), Ok(OffersState::Known(Polled::Declined("taxis are not insured".into())))),
            (
                r#"[{"code":"RESO","status":"success","price":"100.00"}]"#.into(),
                Err(CallError::Protocol("successful offer without offer_id".into())),
            ),
            (
                r#"[{"code":"RESO","status":"archived"}]"#.into(),
                Err(CallError::Protocol("unknown offer status \"archived\"".into())),
            ),
            (r#"{"offers":[]}"#.into(), Err(CallError::Protocol("offers: unexpected shape at line 1 column 0".into()))),
        ];
        for (body, expected) in cases {
            let actual = map_offers(body.as_bytes(), one);
            match (&actual, &expected) {
                // Where serde stops on a wrong shape is its business; the prefix is ours.
                (Err(CallError::Protocol(a)), Err(CallError::Protocol(e))) if e.contains("unexpected shape") => {
                    assert!(a.starts_with("offers: unexpected shape"), "{a}")
                }
                _ => assert_eq!(actual, expected, "{body}"),
            }
        }
    }

    #[test]
    fn contract_ids_are_required() {
        assert_eq!(map_contract(br#"{"contract_id":"7d1c","status":"DRAFT"}"#), Ok("7d1c".to_string()));
        assert_eq!(map_contract(br#"{"contract_id":""}"#), Err(CallError::Protocol("empty contract_id".into())));
        assert_eq!(
            map_contract(br#"{"status":"DRAFT"}"#),
            Err(CallError::Protocol("contract: missing field `contract_id`".into()))
        );
    }

    #[test]
    fn error_bodies_give_the_insurers_message() {
        let cases = [
            (
                r#"{"errors":[{"code":"VALIDATION","field":"policy.start_date","message":"the policy cannot start in the past"},{"code":"VALIDATION","field":"vehicle.vin","message":"bad"}]}"#,
                Some("policy.start_date: the policy cannot start in the past; vehicle.vin: bad"),
            ),
            (r#"{"errors":[{"code":"CONTRACT_NOT_FOUND","message":"no such contract"}]}"#, Some("no such contract")),
            (r#"{"errors":[]}"#, None),
            ("not json", None),
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(body.as_bytes()).as_deref(), expected, "{body}");
        }
    }
}
