//! Reading an insurer's answer through the mapping's JSON pointers. Errors name the pointer and
//! what was wrong, never the value found there: answers echo personal data.

use crate::AnswerError;
use crate::spec::{AnswerMapping, Outcome, PremiumUnit};
use chrono::{DateTime, Utc};
use domain::events::Offer;
use domain::money;
use domain::tariff::Breakdown;
use rust_decimal::Decimal;
use serde_json::Value;

/// Longest reference accepted from an insurer (it is stored and sent back in polls).
const MAX_REFERENCE: usize = 256;
/// Longest message kept from an insurer.
const MAX_MESSAGE: usize = 1000;

/// What an answer says about the calculation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Still calculating.
    Pending,
    /// Priced.
    Offer(Offer),
    /// Refused, with the insurer's reason.
    Declined(String),
    /// The insurer's calculation failed, with its message.
    Failed(String),
}

/// Parses an answer body as JSON without ever quoting it.
pub fn parse(body: &[u8]) -> Result<Value, AnswerError> {
    serde_json::from_slice(body)
        .map_err(|e| AnswerError::Protocol(format!("answer is not JSON (line {} column {})", e.line(), e.column())))
}

/// The calculation's state in `answer`. `create` tolerates a missing status (taken as pending).
pub fn read(
    mapping: &AnswerMapping,
    answer: &Value,
    reference: &str,
    create: bool,
    now: DateTime<Utc>,
) -> Result<Reading, AnswerError> {
    let status = match found(answer, &mapping.status) {
        None if create => return Ok(Reading::Pending),
        None => return Err(missing(&mapping.status, "status")),
        Some(value) => scalar_text(value).ok_or_else(|| shape(&mapping.status, "a string or number"))?,
    };
    let Some(outcome) = mapping.status_map.get(&status) else {
        return Err(AnswerError::Protocol(format!("unknown status {}", token(&status))));
    };
    let message =
        || mapping.message.as_deref().and_then(|p| found(answer, p)).and_then(scalar_text).map(cut).unwrap_or_default();
    Ok(match outcome {
        Outcome::Pending => Reading::Pending,
        Outcome::Declined => Reading::Declined(message()),
        Outcome::Failed => Reading::Failed(message()),
        Outcome::Offer => Reading::Offer(offer(mapping, answer, reference, now)?),
    })
}

fn offer(mapping: &AnswerMapping, answer: &Value, reference: &str, now: DateTime<Utc>) -> Result<Offer, AnswerError> {
    let amount = decimal_at(answer, &mapping.premium, "premium")?;
    let amount = match mapping.premium_unit {
        PremiumUnit::Rubles => amount,
        PremiumUnit::Kopecks if amount.fract().is_zero() => amount / Decimal::ONE_HUNDRED,
        PremiumUnit::Kopecks => return Err(shape(&mapping.premium, "whole kopecks")),
    };
    let currency = match &mapping.currency {
        Some(pointer) => found(answer, pointer).and_then(scalar_text).ok_or_else(|| missing(pointer, "currency"))?,
        None => "RUB".to_string(),
    };
    let premium = money::premium_in_roubles(amount, &currency).map_err(AnswerError::Protocol)?;
    let insurer_reference = match &mapping.offer_reference {
        Some(pointer) => reference_at(answer, pointer)?,
        None => reference.to_string(),
    };
    let valid_until = match &mapping.valid_until {
        None => now + chrono::Duration::hours(24),
        Some(pointer) => {
            let text = found(answer, pointer).and_then(Value::as_str).ok_or_else(|| missing(pointer, "validUntil"))?;
            DateTime::parse_from_rfc3339(text)
                .map_err(|_| shape(pointer, "an RFC 3339 date and time"))?
                .with_timezone(&Utc)
        }
    };
    let b = &mapping.breakdown;
    let coefficient = |pointer: &str, name: &str| decimal_at(answer, pointer, name);
    let breakdown = Breakdown {
        tb: coefficient(&b.tb, "breakdown.tb")?,
        kt: coefficient(&b.kt, "breakdown.kt")?,
        kbm: coefficient(&b.kbm, "breakdown.kbm")?,
        kvs: coefficient(&b.kvs, "breakdown.kvs")?,
        ko: coefficient(&b.ko, "breakdown.ko")?,
        km: coefficient(&b.km, "breakdown.km")?,
        ks: coefficient(&b.ks, "breakdown.ks")?,
        kn: coefficient(&b.kn, "breakdown.kn")?,
        kp: coefficient(&b.kp, "breakdown.kp")?,
    };
    Ok(Offer { premium, insurer_reference, valid_until, breakdown })
}

/// The insurer's id at `pointer`: a non-empty string or an integer, at most 256 characters.
pub fn reference_at(answer: &Value, pointer: &str) -> Result<String, AnswerError> {
    let value = found(answer, pointer).ok_or_else(|| missing(pointer, "reference"))?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return Err(shape(pointer, "a string or an integer")),
    };
    if text.is_empty() || text.chars().count() > MAX_REFERENCE || text.chars().any(char::is_control) {
        return Err(shape(pointer, "1–256 printable characters"));
    }
    Ok(text)
}

/// The error message at `pointer`, if the answer carries one (null counts as none).
pub fn error_at(answer: &Value, pointer: &str) -> Option<String> {
    match found(answer, pointer)? {
        Value::String(s) => Some(cut(s.clone())),
        Value::Object(_) | Value::Array(_) => Some("error".into()),
        other => scalar_text(other).map(cut),
    }
}

/// The value at `pointer`, treating JSON null as absent.
fn found<'a>(answer: &'a Value, pointer: &str) -> Option<&'a Value> {
    answer.pointer(pointer).filter(|v| !v.is_null())
}

/// Strings as they are, numbers and booleans as JSON writes them.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A decimal from a JSON number (read from its text, not through `f64`) or a decimal string
/// (a decimal comma is accepted: `13318,79`).
fn decimal_at(answer: &Value, pointer: &str, what: &str) -> Result<Decimal, AnswerError> {
    let decimal = match found(answer, pointer).ok_or_else(|| missing(pointer, what))? {
        Value::Number(n) => money::decimal_from_json_number(n),
        Value::String(s) => s.trim().replace(',', ".").parse::<Decimal>().ok(),
        _ => None,
    };
    decimal.ok_or_else(|| shape(pointer, "a number"))
}

fn missing(pointer: &str, what: &str) -> AnswerError {
    AnswerError::Protocol(format!("{what} not found at {}", token(pointer)))
}

fn shape(pointer: &str, expected: &str) -> AnswerError {
    AnswerError::Protocol(format!("value at {} is not {expected}", token(pointer)))
}

/// A token fit to appear in an error: at most 40 characters, quoted.
fn token(text: &str) -> String {
    format!("{:?}", text.chars().take(40).collect::<String>())
}

fn cut(text: String) -> String {
    if text.chars().count() <= MAX_MESSAGE { text } else { text.chars().take(MAX_MESSAGE).collect() }
}
