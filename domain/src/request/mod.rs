//! The quote request: the JSON contract partners send, and its parsed form.
//!
//! [`RawQuoteRequest`] mirrors the JSON with every field optional and loosely typed, so
//! that [`QuoteRequest::validate`] can report *every* problem at once with its field path.
//! [`QuoteRequest`] can only hold a valid request.

mod fields;
mod parse;
mod tariff_input;

pub use fields::{Licence, Passport, PersonName, Plate, Vin};

use crate::tariff::KbmClass;
use crate::vehicle::{Purpose, VehicleCategory};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A valid quote request, serialising to the contract's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "RawQuoteRequest")]
pub struct QuoteRequest {
    pub vehicle: Vehicle,
    pub owner: Owner,
    pub drivers: Vec<Driver>,
    pub unlimited_drivers: bool,
    pub policy: Policy,
}

/// The insured vehicle.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vehicle {
    pub category: VehicleCategory,
    pub make: String,
    pub model: String,
    pub year: u16,
    pub power_hp: u16,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "XTAGFL110KY123456"))]
    pub vin: Vin,
    /// Absent for a new car that is not registered yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "А123ВС77"))]
    pub plate: Option<Plate>,
    pub purpose: Purpose,
}

/// The vehicle's owner (the policy holder).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Owner {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub last_name: PersonName,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub first_name: PersonName,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub middle_name: Option<PersonName>,
    pub birth_date: NaiveDate,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "4510 123456"))]
    pub passport: Passport,
    /// 2–3 digit code of the Russian region of registration.
    pub region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// A driver listed on the policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Driver {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub last_name: PersonName,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub first_name: PersonName,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub middle_name: Option<PersonName>,
    pub birth_date: NaiveDate,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "7700 123456"))]
    pub licence: Licence,
    pub experience_since: NaiveDate,
    /// Bonus-malus class when the caller knows it; insurers otherwise look it up by licence.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "3"))]
    pub kbm_class: Option<KbmClass>,
}

/// The requested policy period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    pub start_date: NaiveDate,
    pub period_months: u8,
}

/// The request as received (no `Debug`: it holds unchecked personal data): every field optional so that missing ones are reported
/// together with all other problems instead of failing deserialisation at the first.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuoteRequest {
    pub vehicle: Option<RawVehicle>,
    pub owner: Option<RawOwner>,
    pub drivers: Option<Vec<RawDriver>>,
    pub unlimited_drivers: Option<bool>,
    pub policy: Option<RawPolicy>,
}

/// `vehicle` as received.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVehicle {
    pub category: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub year: Option<i64>,
    pub power_hp: Option<i64>,
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub purpose: Option<String>,
}

/// `owner` as received.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOwner {
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub birth_date: Option<String>,
    pub passport: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
}

/// One of `drivers` as received.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDriver {
    pub last_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub birth_date: Option<String>,
    pub licence: Option<String>,
    pub experience_since: Option<String>,
    pub kbm_class: Option<String>,
}

/// `policy` as received.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub start_date: Option<String>,
    pub period_months: Option<i64>,
}

impl TryFrom<RawQuoteRequest> for QuoteRequest {
    type Error = crate::ValidationErrors;

    /// Checks everything that does not depend on today's date, so that a stored request
    /// stays readable after its start date has passed.
    fn try_from(raw: RawQuoteRequest) -> Result<Self, Self::Error> {
        parse::parse(&raw)
    }
}

impl QuoteRequest {
    /// Parses a request received on `today`: every rule, all problems at once.
    pub fn validate(raw: &RawQuoteRequest, today: NaiveDate) -> Result<Self, crate::ValidationErrors> {
        let mut errors = parse::check_purchase_date(raw, today);
        match parse::parse(raw) {
            Ok(request) => errors.into_result(request),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Parses a JSON body received on `today`; a type mismatch is reported with its path.
    pub fn from_json(body: &[u8], today: NaiveDate) -> Result<Self, RequestError> {
        let raw = parse_raw_json(body)?;
        Self::validate(&raw, today).map_err(RequestError::Invalid)
    }

    /// Listed drivers, or none for an unlimited-drivers policy.
    pub fn listed_drivers(&self) -> &[Driver] {
        if self.unlimited_drivers { &[] } else { &self.drivers }
    }
}

/// Why a request body could not become a [`QuoteRequest`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON at all (a 400 in HTTP terms).
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not a valid request (a 422).
    #[error("{0}")]
    Invalid(crate::ValidationErrors),
}

/// Deserialises the raw request, turning a type mismatch or unknown field into a field error.
pub fn parse_raw_json(body: &[u8]) -> Result<RawQuoteRequest, RequestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = match serde_path::deserialize(&mut de) {
        Ok(raw) => raw,
        Err((path, e)) if e.is_data() => {
            let mut errors = crate::ValidationErrors::default();
            errors.push(if path.is_empty() { "$".to_string() } else { path }, clean_serde_message(&e));
            return Err(RequestError::Invalid(errors));
        }
        Err((_, e)) => return Err(RequestError::Syntax(e.to_string())),
    };
    // One JSON document: nothing but whitespace may follow it.
    de.end().map_err(|e| RequestError::Syntax(e.to_string()))?;
    let errors = positional_objects(body);
    if !errors.is_empty() {
        return Err(RequestError::Invalid(errors));
    }
    Ok(raw)
}

/// serde also reads a struct from an array of its fields in declaration order; the contract
/// has objects only, so each object of the request given as an array is a field error.
/// Called on a body the typed parse accepted, so each object is a JSON object or array.
/// The objects are borrowed as their text, not read into values: building a
/// `serde_json::Value` of the whole body cost as much as the typed parse itself.
fn positional_objects(body: &[u8]) -> crate::ValidationErrors {
    use serde_json::value::RawValue;
    /// The request's objects as they appear in the body.
    #[derive(Deserialize)]
    struct Objects<'a> {
        #[serde(borrow)]
        vehicle: Option<&'a RawValue>,
        #[serde(borrow)]
        owner: Option<&'a RawValue>,
        #[serde(borrow)]
        policy: Option<&'a RawValue>,
        #[serde(borrow)]
        drivers: Option<Vec<&'a RawValue>>,
    }
    let is_array = |text: &str| text.trim_start().starts_with('[');
    let mut errors = crate::ValidationErrors::default();
    let Ok(text) = std::str::from_utf8(body) else { return errors };
    if is_array(text) {
        errors.push("$", "the request must be a JSON object");
        return errors;
    }
    let Ok(objects) = serde_json::from_str::<Objects>(text) else { return errors };
    for (key, value) in [("vehicle", objects.vehicle), ("owner", objects.owner), ("policy", objects.policy)] {
        if value.is_some_and(|v| is_array(v.get())) {
            errors.push(key, "must be a JSON object, not an array");
        }
    }
    for (i, driver) in objects.drivers.unwrap_or_default().iter().enumerate() {
        if is_array(driver.get()) {
            errors.push(format!("drivers[{i}]"), "must be a JSON object, not an array");
        }
    }
    errors
}

/// serde's messages end with " at line 1 column 42", useless next to a field path.
fn clean_serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

mod serde_path {
    //! Tracks the field path while deserialising, so type errors name their field.
    use super::RawQuoteRequest;

    pub(super) fn deserialize<'de, D>(de: D) -> Result<RawQuoteRequest, (String, serde_json::Error)>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        serde_path_to_error::deserialize(de).map_err(|e| (render(e.path()), e.into_inner()))
    }

    /// `drivers[0].licence` as serde_path_to_error writes it, except that a key which is not
    /// a plain name (an unknown field such as `" "` or `"vehicle.vin"`) is quoted, `[" "]`,
    /// so that no path is blank or names another field. Empty for the document itself.
    fn render(path: &serde_path_to_error::Path) -> String {
        use serde_path_to_error::Segment;
        let mut out = String::new();
        for segment in path {
            let name = match segment {
                Segment::Seq { index } => {
                    out.push_str(&format!("[{index}]"));
                    continue;
                }
                Segment::Map { key } | Segment::Enum { variant: key } => key.as_str(),
                Segment::Unknown => "?",
            };
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '?') {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            } else {
                out.push_str(&format!("[{}]", serde_json::Value::from(name)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
    }

    const SAMPLE: &str = r#"{"vehicle": {"category": "B", "make": "LADA", "model": "VESTA", "year": 2019,
        "power_hp": 106, "vin": "XTAGFL110KY123456", "plate": "А123ВС77", "purpose": "personal"},
      "owner": {"last_name": "Иванов", "first_name": "Иван", "birth_date": "1985-04-12",
        "passport": "4510 123456", "region": "77"},
      "drivers": [{"last_name": "Иванов", "first_name": "Иван", "birth_date": "1985-04-12",
        "licence": "7700 123456", "experience_since": "2005-06-01"}],
      "policy": {"start_date": "2026-12-20", "period_months": 12}}"#;

    fn fields(result: Result<QuoteRequest, RequestError>) -> Vec<String> {
        match result {
            Err(RequestError::Invalid(e)) => e.errors().iter().map(|e| e.field.clone()).collect(),
            other => panic!("expected field errors, got {:?}", other.map(|_| "a request")),
        }
    }

    #[test]
    fn the_sample_parses() {
        QuoteRequest::from_json(SAMPLE.as_bytes(), today()).expect("valid");
        QuoteRequest::from_json(format!(" {SAMPLE}\n\t").as_bytes(), today()).expect("whitespace around is fine");
    }

    /// Fuzzing finding: a valid request followed by anything (`{…}J`, two documents) was accepted.
    #[test]
    fn anything_after_the_document_is_a_syntax_error() {
        for tail in ["J", " {}", SAMPLE, ","] {
            let body = format!("{SAMPLE}{tail}");
            let result = QuoteRequest::from_json(body.as_bytes(), today());
            assert!(matches!(result, Err(RequestError::Syntax(_))), "{tail:?} after the request was accepted");
        }
    }

    /// Found next to the above: serde reads a struct from an array of its fields in order,
    /// so a request without a single field name was accepted.
    #[test]
    fn objects_given_as_arrays_are_field_errors() {
        let sample: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        // Each object's fields in declaration order, as serde reads them from an array.
        let positional = |v: &serde_json::Value, keys: &[&str]| {
            serde_json::Value::Array(keys.iter().map(|k| v.get(k).cloned().unwrap_or_default()).collect())
        };
        let vehicle = positional(
            &sample["vehicle"],
            &["category", "make", "model", "year", "power_hp", "vin", "plate", "purpose"],
        );
        let owner = positional(
            &sample["owner"],
            &["last_name", "first_name", "middle_name", "birth_date", "passport", "region", "city"],
        );
        let driver = positional(
            &sample["drivers"][0],
            &["last_name", "first_name", "middle_name", "birth_date", "licence", "experience_since", "kbm_class"],
        );
        let policy = positional(&sample["policy"], &["start_date", "period_months"]);

        let mut one = sample.clone();
        one["vehicle"] = vehicle.clone();
        one["drivers"][0] = driver.clone();
        let result = QuoteRequest::from_json(one.to_string().as_bytes(), today());
        assert_eq!(fields(result), ["vehicle", "drivers[0]"]);

        let all = serde_json::json!([vehicle, owner, [driver], false, policy]);
        assert_eq!(fields(QuoteRequest::from_json(all.to_string().as_bytes(), today())), ["$"]);
    }

    /// Fuzzing finding: an unknown field's path is its key, so `{" ": 1}` had the blank path
    /// `" "`, and `{"vehicle.vin": 1}` blamed the field `vehicle.vin`.
    #[test]
    fn unknown_keys_that_are_not_names_are_quoted_in_the_path() {
        let cases = [
            (r#"{" ": 1}"#, r#"[" "]"#),
            (r#"{"": 1}"#, r#"[""]"#),
            (r#"{"vehicle.vin": 1}"#, r#"["vehicle.vin"]"#),
            (r#"{"vehicle": {"a\"b": 1}}"#, r#"vehicle["a\"b"]"#),
            (r#"{"drivers": [{"licence": 7700}]}"#, "drivers[0].licence"),
            (r#"{"vehicle": {"colour": "red"}}"#, "vehicle.colour"),
        ];
        for (body, path) in cases {
            assert_eq!(fields(QuoteRequest::from_json(body.as_bytes(), today())), [path], "{body}");
        }
    }
}
