//! The `mapped` style's pure core (crate `mapping`), fed what the two untrusted parties write:
//! InsurerIntegration authors write templates and pointers, insurers write answers.
//!
//! The input is split at its first newline: the first part is used as a template, a key and a
//! pointer; the rest as an insurer's answer. Properties:
//! - compiling, rendering and reading never panic, and rendering is bounded (fuel): a template
//!   that loops ends with an error within libFuzzer's timeout;
//! - a body that renders is JSON (the client never sends a broken body);
//! - a printed value is one JSON value whatever it holds: `{"v": {{ key }}}` renders to an
//!   object whose only field is the key, unchanged (no injection through customer data);
//! - a path value is percent-encoded: the rendered path has no `/`, `?` or `#` of the value's;
//! - an answer read as an offer has a positive premium in kopecks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mapping::{Mapped, Mapping, Reading};
use std::sync::OnceLock;

const EXAMPLE: &str = include_str!("../../examples/insurers/renins.yaml");

fn example() -> &'static Mapping {
    static MAPPING: OnceLock<Mapping> = OnceLock::new();
    MAPPING.get_or_init(|| {
        let manifest: serde_json::Value = serde_yaml::from_str(EXAMPLE).expect("the example is YAML");
        serde_json::from_value(manifest["spec"]["api"]["mapping"].clone()).expect("the example's mapping")
    })
}

fn request() -> &'static domain::request::QuoteRequest {
    static REQUEST: OnceLock<domain::request::QuoteRequest> = OnceLock::new();
    REQUEST.get_or_init(|| {
        let body = br#"{"vehicle": {"category": "B", "make": "LADA", "model": "VESTA", "year": 2019, "power_hp": 106,
            "vin": "XTAGFL110KY123456", "plate": "A123BC77", "purpose": "personal"},
            "owner": {"last_name": "Ivanov", "first_name": "Ivan", "birth_date": "1985-04-12",
                      "passport": "4510 123456", "region": "77"},
            "drivers": [{"last_name": "Ivanov", "first_name": "Ivan", "birth_date": "1985-04-12",
                         "licence": "7700 123456", "experience_since": "2005-06-01", "kbm_class": "3"}],
            "unlimited_drivers": false, "policy": {"start_date": "2026-12-10", "period_months": 12}}"#;
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
        domain::request::QuoteRequest::from_json(body, today).expect("the sample request is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else { return };
    let answer = data.get(split + 1..).unwrap_or_default();
    let now = chrono::DateTime::from_timestamp(1_796_000_000, 0).expect("a moment");

    // 1. The text as an author's body template.
    let mut mapping = example().clone();
    mapping.create.body = Some(text.to_string());
    if let Ok(mapped) = Mapped::new(&mapping)
        && let Ok(call) = mapped.create_call("k", request())
    {
        assert!(call.body.is_some(), "a body template renders a body");
    }

    // 2. The text as a value printed into a body and a path.
    let mut mapping = example().clone();
    mapping.create.body = Some(r#"{"v": {{ key }}}"#.into());
    mapping.poll.path = "calc/{{ reference }}/state".into();
    let mapped = Mapped::new(&mapping).expect("a fixed, valid mapping");
    let body = mapped.create_call(text, request()).expect("any key renders").body.expect("a body");
    assert_eq!(body, serde_json::json!({"v": text}), "the key stays one string");
    let path = mapped.poll_call(text).expect("any reference renders").path;
    let value = &path["calc/".len()..path.len() - "/state".len()];
    assert!(!value.contains(['/', '?', '#']), "{path}");

    // 3. The text as a pointer, the rest as an answer.
    let mut mapping = example().clone();
    mapping.answer.premium = text.to_string();
    mapping.reference = text.to_string();
    if let Ok(mapped) = Mapped::new(&mapping) {
        for reading in [mapped.read_created(answer, now).map(|(_, r)| r), mapped.read_polled(answer, "T1", now)] {
            if let Ok(Reading::Offer(offer)) = reading {
                assert!(offer.premium.amount() > rust_decimal::Decimal::ZERO, "a premium that is not positive");
            }
        }
        let _ = mapped.error_message(answer);
    }
});
