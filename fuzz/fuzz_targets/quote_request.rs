//! The quote request JSON, as every service receives it (core-app from browsers and
//! partners, the aggregator and the sandbox from core-app, the poller from its database).
//!
//! Properties:
//! - `QuoteRequest::from_json` never panics;
//! - every error is a syntax error (a 400) or a non-empty list of field errors, each with
//!   a non-empty path and message (a 422);
//! - an accepted body is one JSON document (nothing trailing);
//! - the normalised JSON core-app forwards is accepted again, unchanged, both by
//!   `from_json` (the aggregator's intake, the sandbox) and by serde (the poller), so a
//!   request core-app took can never be refused downstream (a 500 for the user);
//! - no string in it has a control character (Postgres refuses U+0000 in jsonb).
#![no_main]

use chrono::NaiveDate;
use domain::request::{QuoteRequest, RequestError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A fixed "today" keeps findings reproducible; the seeds' policies start within 60 days of it.
    let today = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");

    // The poller's path: serde with `try_from`, no purchase-date rules. Must not panic.
    let _ = serde_json::from_slice::<QuoteRequest>(data);

    match QuoteRequest::from_json(data, today) {
        Err(RequestError::Syntax(message)) => assert!(!message.is_empty(), "a syntax error without a message"),
        Err(RequestError::Invalid(errors)) => {
            assert!(!errors.is_empty(), "an Invalid error with no field errors");
            for e in errors.errors() {
                assert!(!e.field.trim().is_empty(), "a field error without a path: {e:?}");
                assert!(!e.message.trim().is_empty(), "a field error without a message: {e:?}");
            }
        }
        Ok(request) => {
            assert!(
                serde_json::from_slice::<serde_json::Value>(data).is_ok(),
                "accepted a body that is not one JSON document"
            );
            let value = serde_json::to_value(&request).expect("a request serialises");
            assert!(!has_control_characters(&value), "a control character was accepted: {value}");
            let normalised = serde_json::to_vec(&value).expect("a request serialises");
            match QuoteRequest::from_json(&normalised, today) {
                Ok(again) => assert_eq!(again, request, "normalising changed the request"),
                Err(e) => panic!("the normalised request is refused downstream: {e}"),
            }
            match serde_json::from_slice::<QuoteRequest>(&normalised) {
                Ok(again) => assert_eq!(again, request, "serde round trip changed the request"),
                Err(e) => panic!("the normalised request does not deserialise: {e}"),
            }
        }
    }
});

fn has_control_characters(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.chars().any(char::is_control),
        serde_json::Value::Array(items) => items.iter().any(has_control_characters),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.chars().any(char::is_control) || has_control_characters(v))
        }
        _ => false,
    }
}
