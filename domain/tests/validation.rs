//! Table-driven validation cases: each mutates a valid request and names the field paths
//! that must be reported.

use chrono::NaiveDate;
use domain::request::{QuoteRequest, RequestError};
use serde_json::{Value, json};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
}

/// The example request (`domain::example`), starting on a fixed date.
fn valid() -> Value {
    domain::example::request(NaiveDate::from_ymd_opt(2026, 12, 20).unwrap())
}

/// Sets `value` at a JSON pointer, creating nothing: the pointer must exist up to its parent.
fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match body.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            if value.is_null() {
                map.remove(key);
            } else {
                map.insert(key.to_string(), value);
            }
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{pointer}: parent is not a container"),
    }
    body
}

fn errors_of(body: &Value) -> Vec<String> {
    match QuoteRequest::from_json(body.to_string().as_bytes(), today()) {
        Ok(_) => vec![],
        Err(RequestError::Invalid(e)) => e.errors().iter().map(|e| e.field.clone()).collect(),
        Err(RequestError::Syntax(s)) => panic!("syntax error for a JSON body: {s}"),
    }
}

fn driver(birth: &str, since: &str, licence: &str) -> Value {
    json!({"last_name": "Петров", "first_name": "Пётр", "birth_date": birth, "licence": licence, "experience_since": since})
}

#[test]
fn the_contract_example_is_valid_and_round_trips() {
    let request = QuoteRequest::from_json(valid().to_string().as_bytes(), today()).expect("valid");
    assert_eq!(request.vehicle.vin.as_str(), "XTAGFL110KY123456");
    assert_eq!(serde_json::to_value(&request).unwrap(), valid());
    let again: QuoteRequest = serde_json::from_value(valid()).unwrap();
    assert_eq!(again, request);
}

#[test]
fn each_broken_field_is_reported_with_its_path() {
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("short VIN", with(valid(), "/vehicle/vin", json!("XTAGFL110KY12345")), vec!["vehicle.vin"]),
        ("VIN with O", with(valid(), "/vehicle/vin", json!("XTAGFL11OKY123456")), vec!["vehicle.vin"]),
        ("bad plate", with(valid(), "/vehicle/plate", json!("Ж123ВС77")), vec!["vehicle.plate"]),
        ("plate 000", with(valid(), "/vehicle/plate", json!("А000ВС77")), vec!["vehicle.plate"]),
        ("no plate is fine", with(valid(), "/vehicle/plate", Value::Null), vec![]),
        ("Latin plate is fine", with(valid(), "/vehicle/plate", json!("a123bc77")), vec![]),
        ("unknown category", with(valid(), "/vehicle/category", json!("Z")), vec!["vehicle.category"]),
        ("unknown purpose", with(valid(), "/vehicle/purpose", json!("racing")), vec!["vehicle.purpose"]),
        ("power 0", with(valid(), "/vehicle/power_hp", json!(0)), vec!["vehicle.power_hp"]),
        ("power 2001", with(valid(), "/vehicle/power_hp", json!(2001)), vec!["vehicle.power_hp"]),
        ("power 1", with(valid(), "/vehicle/power_hp", json!(1)), vec![]),
        ("year 1949", with(valid(), "/vehicle/year", json!(1949)), vec!["vehicle.year"]),
        ("year 1950", with(valid(), "/vehicle/year", json!(1950)), vec![]),
        ("year after start+1", with(valid(), "/vehicle/year", json!(2028)), vec!["vehicle.year"]),
        ("next model year", with(valid(), "/vehicle/year", json!(2027)), vec![]),
        ("empty make", with(valid(), "/vehicle/make", json!("  ")), vec!["vehicle.make"]),
        ("missing model", with(valid(), "/vehicle/model", Value::Null), vec!["vehicle.model"]),
        ("bad passport", with(valid(), "/owner/passport", json!("45 10 12345")), vec!["owner.passport"]),
        ("bad region", with(valid(), "/owner/region", json!("7")), vec!["owner.region"]),
        ("region 00", with(valid(), "/owner/region", json!("00")), vec!["owner.region"]),
        ("3-digit region", with(valid(), "/owner/region", json!("177")), vec![]),
        ("name with digits", with(valid(), "/owner/first_name", json!("Иван2")), vec!["owner.first_name"]),
        ("owner birth not a date", with(valid(), "/owner/birth_date", json!("12.04.1985")), vec!["owner.birth_date"]),
        ("owner under 18", with(valid(), "/owner/birth_date", json!("2010-01-01")), vec!["owner.birth_date"]),
        ("start in the past", with(valid(), "/policy/start_date", json!("2026-11-29")), vec!["policy.start_date"]),
        ("start today", with(valid(), "/policy/start_date", json!("2026-11-30")), vec![]),
        ("start +60 days", with(valid(), "/policy/start_date", json!("2027-01-29")), vec![]),
        ("start +61 days", with(valid(), "/policy/start_date", json!("2027-01-30")), vec!["policy.start_date"]),
        ("period 2", with(valid(), "/policy/period_months", json!(2)), vec!["policy.period_months"]),
        ("period 3", with(valid(), "/policy/period_months", json!(3)), vec![]),
        ("period 13", with(valid(), "/policy/period_months", json!(13)), vec!["policy.period_months"]),
        ("driver just 18", with(valid(), "/drivers/0", driver("2008-12-20", "2024-12-20", "7700 123456")), vec![]),
        (
            "driver 17 at start",
            with(valid(), "/drivers/0", driver("2008-12-21", "2024-12-21", "7700 123456")),
            vec!["drivers[0].birth_date"],
        ),
        (
            "experience at 15",
            with(valid(), "/drivers/0", driver("1985-04-12", "2001-04-11", "7700 123456")),
            vec!["drivers[0].experience_since"],
        ),
        ("experience at 16", with(valid(), "/drivers/0", driver("1985-04-12", "2001-04-12", "7700 123456")), vec![]),
        (
            "experience after start",
            with(valid(), "/drivers/0", driver("1985-04-12", "2027-01-01", "7700 123456")),
            vec!["drivers[0].experience_since"],
        ),
        (
            "leap-day birth, a day early",
            with(valid(), "/drivers/0", driver("1988-02-29", "2004-02-28", "7700 123456")),
            vec!["drivers[0].experience_since"],
        ),
        (
            "leap-day birth, 16th birthday",
            with(valid(), "/drivers/0", driver("1988-02-29", "2004-02-29", "7700 123456")),
            vec![],
        ),
        ("bad licence", with(valid(), "/drivers/0/licence", json!("77 123456")), vec!["drivers[0].licence"]),
        ("old licence with letters", with(valid(), "/drivers/0/licence", json!("77АВ 123456")), vec![]),
        ("bad kbm class", with(valid(), "/drivers/0/kbm_class", json!("14")), vec!["drivers[0].kbm_class"]),
        ("kbm class M", with(valid(), "/drivers/0/kbm_class", json!("M")), vec![]),
        ("no drivers", with(valid(), "/drivers", json!([])), vec!["drivers"]),
        (
            "no drivers but unlimited",
            with(with(valid(), "/drivers", json!([])), "/unlimited_drivers", json!(true)),
            vec![],
        ),
        (
            "six drivers",
            with(
                valid(),
                "/drivers",
                json!(
                    (0..6).map(|i| driver("1980-01-01", "2000-01-01", &format!("770{i} 123456"))).collect::<Vec<_>>()
                ),
            ),
            vec!["drivers"],
        ),
        (
            "same licence twice",
            with(
                valid(),
                "/drivers",
                json!([
                    driver("1980-01-01", "2000-01-01", "7700 123456"),
                    driver("1981-01-01", "2001-01-01", "7700123456")
                ]),
            ),
            vec!["drivers[1].licence"],
        ),
        ("missing vehicle", with(valid(), "/vehicle", Value::Null), vec!["vehicle"]),
        ("missing policy", with(valid(), "/policy", Value::Null), vec!["policy"]),
    ];
    let mut failures = vec![];
    for (name, body, expected) in &cases {
        let got = errors_of(body);
        if got != *expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_error_is_reported_at_once() {
    let mut body = with(valid(), "/vehicle/vin", json!("BAD"));
    body = with(body, "/vehicle/power_hp", json!(0));
    body = with(body, "/owner/passport", json!("x"));
    body = with(body, "/drivers/0/birth_date", json!("2015-01-01"));
    body = with(body, "/policy/period_months", json!(1));
    body = with(body, "/policy/start_date", json!("2020-01-01"));
    let got = errors_of(&body);
    for field in [
        "vehicle.vin",
        "vehicle.power_hp",
        "owner.passport",
        "drivers[0].experience_since",
        "policy.period_months",
        "policy.start_date",
    ] {
        assert!(got.contains(&field.to_string()), "{field} missing from {got:?}");
    }
}

#[test]
fn type_mismatches_and_unknown_fields_name_their_path() {
    let body = with(valid(), "/vehicle/year", json!("2019"));
    assert_eq!(errors_of(&body), vec!["vehicle.year"]);
    let body = with(valid(), "/vehicle/colour", json!("red"));
    assert_eq!(errors_of(&body), vec!["vehicle.colour"]);
    let body = with(valid(), "/drivers/0/licence", json!(7700123456u64));
    assert_eq!(errors_of(&body), vec!["drivers[0].licence"]);
}

#[test]
fn broken_json_is_a_syntax_error() {
    assert!(matches!(QuoteRequest::from_json(b"{\"vehicle\": ", today()), Err(RequestError::Syntax(_))));
    assert!(matches!(QuoteRequest::from_json(b"[1,2]", today()), Err(RequestError::Invalid(_))));
}

#[test]
fn messages_are_human() {
    let body = with(valid(), "/drivers/0", driver("2008-12-21", "2024-12-21", "7700 123456"));
    let Err(RequestError::Invalid(e)) = QuoteRequest::from_json(body.to_string().as_bytes(), today()) else { panic!() };
    assert_eq!(e.errors()[0].message, "a driver must be at least 18 on the policy start date, this one is 17");
}
