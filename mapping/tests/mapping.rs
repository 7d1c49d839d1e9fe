//! The mapped style's pure core, on the shipped example (examples/insurers/renins.yaml) and on
//! small mappings written to break it.

use chrono::{TimeZone, Utc};
use domain::request::QuoteRequest;
use mapping::{AnswerError, Mapped, Mapping, Method, Reading};
use serde_json::{Value, json};

fn example() -> Mapping {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/insurers/renins.yaml");
    let manifest: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(manifest["spec"]["api"]["mapping"].clone()).unwrap()
}

fn request(middle_name: Option<&str>, drivers: usize) -> QuoteRequest {
    let driver = json!({"last_name": "Петрова", "first_name": "Анна", "birth_date": "1990-02-03",
                        "licence": "77АВ 654321", "experience_since": "2010-05-06", "kbm_class": "5"});
    let mut body = json!({
        "vehicle": {"category": "B", "make": "LADA", "model": "VESTA", "year": 2019, "power_hp": 106,
                    "vin": "XTAGFL110KY123456", "plate": "А123ВС77", "purpose": "personal"},
        "owner": {"last_name": "Римский-Корсаков", "first_name": "O'Neil", "birth_date": "1985-04-12",
                  "passport": "4510 123456", "region": "77"},
        "drivers": (0..drivers).map(|i| {
            let mut d = driver.clone();
            d["licence"] = json!(format!("77АВ 65432{i}"));
            d
        }).collect::<Vec<_>>(),
        "unlimited_drivers": drivers == 0,
        "policy": {"start_date": "2026-12-10", "period_months": 12}
    });
    if let Some(name) = middle_name {
        body["owner"]["middle_name"] = json!(name);
    }
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    QuoteRequest::from_json(body.to_string().as_bytes(), today).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

#[test]
fn the_example_renders_the_insurers_own_request() {
    let mapped = Mapped::new(&example()).unwrap();
    let call = mapped.create_call("renins-42", &request(None, 2)).unwrap();
    assert_eq!((call.method, call.path.as_str(), call.idempotent), (Method::Post, "rpc", true));
    let body = call.body.unwrap();
    assert_eq!(body["id"], "renins-42");
    assert_eq!(body["method"], "Osago.StartCalculation");
    let params = &body["params"];
    assert_eq!(params["period"], json!({"from": "10.12.2026", "months": 12}));
    assert_eq!(params["insurant"]["surname"], "Римский-Корсаков");
    assert_eq!(params["insurant"]["name"], "O'Neil");
    assert_eq!(params["insurant"]["patronymic"], Value::Null, "absent middle name is null, not an error");
    assert_eq!(params["insurant"]["passport"], json!({"series": "4510", "number": "123456"}));
    assert_eq!(params["insurant"]["birthDate"], "12.04.1985");
    assert_eq!(params["car"]["year"], 2019, "numbers stay numbers");
    assert_eq!(params["multidrive"], false);
    let drivers = params["drivers"].as_array().unwrap();
    assert_eq!(drivers.len(), 2);
    assert_eq!(drivers[0]["license"], json!({"series": "77АВ", "number": "654320"}));
    assert_eq!(drivers[1]["experienceFrom"], "06.05.2010");
    assert_eq!(drivers[1]["kbmClass"], "5");

    let with_middle = mapped.create_call("k", &request(Some("Иванович"), 0)).unwrap().body.unwrap();
    assert_eq!(with_middle["params"]["insurant"]["patronymic"], "Иванович");
    assert_eq!(with_middle["params"]["drivers"], json!([]), "an unlimited policy lists no drivers");

    let poll = mapped.poll_call("T00FF").unwrap();
    assert_eq!(poll.body.unwrap()["params"], json!({"ticket": "T00FF"}));
}

#[test]
fn printed_values_cannot_change_the_calls_shape() {
    let mut mapping = example();
    mapping.create.body = Some(r#"{"id": {{ key }}}"#.into());
    mapping.poll.path = "quotes/{{ reference }}/status".into();
    mapping.poll.body = None;
    let mapped = Mapped::new(&mapping).unwrap();
    let hostile = r#"x", "admin": true, "y": "</script>"#;
    let body = mapped.create_call(hostile, &request(None, 1)).unwrap().body.unwrap();
    assert_eq!(body, json!({"id": hostile}), "one field holding the whole string");
    let poll = mapped.poll_call("../../admin?x=1&y=2 #").unwrap();
    assert_eq!(poll.path, "quotes/..%2F..%2Fadmin%3Fx%3D1%26y%3D2%20%23/status");
    assert_eq!(poll.body, None);
}

#[test]
fn broken_mappings_are_refused_with_the_field() {
    type Breakage = (fn(&mut Mapping), &'static str);
    let cases: Vec<Breakage> = vec![
        (|m| m.create.body = Some("{{ request.owner".into()), "api.mapping.create.body: syntax error"),
        (|m| m.poll.path = "{% for x in %}".into(), "api.mapping.poll.path: syntax error"),
        (|m| m.reference = "result/ticket".into(), "api.mapping.reference: 'result/ticket' is not a JSON pointer"),
        (|m| m.answer.breakdown.kp = "/a~2b".into(), "api.mapping.answer.breakdown.kp"),
        (|m| m.error = Some("error".into()), "api.mapping.error"),
        (|m| m.answer.status_map.clear(), "api.mapping.answer.statusMap: lists no status"),
        (|m| m.answer.status_map.retain(|_, o| *o != mapping::Outcome::Offer), "maps no status to offer"),
    ];
    let nested = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    let mut deep = example();
    deep.create.body = Some(nested);
    let error = Mapped::new(&deep).unwrap_err().to_string();
    assert!(
        error.starts_with("api.mapping.create.body: syntax error"),
        "nesting is bounded, not a stack overflow: {error}"
    );
    for (breaks, expected) in cases {
        let mut mapping = example();
        breaks(&mut mapping);
        let error = Mapped::new(&mapping).unwrap_err().to_string();
        assert!(error.starts_with(expected) || error.contains(expected), "{expected}: got {error}");
    }
}

#[test]
fn rendering_failures_are_errors_that_never_quote_the_request() {
    let cases = [
        ("{{ request.owner.passprot }}", "undefined value"),
        ("{{ request.owner.last_name | ru_date }}", "ru_date expects"),
        ("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", "fuel"),
        ("{{ request.owner.last_name }} trailing", "did not render json"),
    ];
    for (template, expected) in cases {
        let mut mapping = example();
        mapping.create.body = Some(template.into());
        let mapped = Mapped::new(&mapping).unwrap();
        let error = mapped.create_call("k", &request(None, 1)).unwrap_err().to_string();
        assert!(error.starts_with("create.body"), "{template}: {error}");
        assert!(error.to_lowercase().contains(expected), "{template}: {error}");
        assert!(!error.contains("Римский") && !error.contains("4510"), "{template}: {error}");
    }
}

fn priced() -> Value {
    json!({"jsonrpc": "2.0", "id": "T1", "result": {
        "ticket": "T1", "state": 20, "stateText": "Рассчитано", "draftNumber": "RENINS-00AB",
        "premium": {"amountKop": 1331879, "currencyCode": "643"},
        "tariffFactors": {"TB": "8665.00", "KT": 1.8, "KBM": "0,83", "KVS": "0.93", "KO": "1", "KM": "1.1",
                          "KS": "1", "KN": "1", "KP": "1"},
        "expiresAt": "2026-12-01T10:00:00Z"}})
}

#[test]
fn answers_read_through_the_pointers() {
    let mapped = Mapped::new(&example()).unwrap();
    let read = |answer: Value| mapped.read_polled(answer.to_string().as_bytes(), "T1", now());
    let with = |pointer: &str, value: Value| {
        let mut answer = priced();
        *answer.pointer_mut(pointer).unwrap() = value;
        answer
    };
    let Reading::Offer(offer) = read(priced()).unwrap() else { panic!() };
    assert_eq!(offer.premium.amount().to_string(), "13318.79", "kopecks become roubles");
    assert_eq!(offer.insurer_reference, "RENINS-00AB");
    assert_eq!(offer.valid_until, Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap());
    assert_eq!(offer.breakdown.kbm.to_string(), "0.83", "a decimal comma reads");
    assert_eq!(offer.breakdown.kt.to_string(), "1.8");

    let protocol = |text: &str| Err(AnswerError::Protocol(text.into()));
    let cases: Vec<(Value, Result<Reading, AnswerError>)> = vec![
        (json!({"result": {"ticket": "T1", "state": 10}}), Ok(Reading::Pending)),
        (
            json!({"result": {"state": 30, "stateText": "taxis are not insured"}}),
            Ok(Reading::Declined("taxis are not insured".into())),
        ),
        (json!({"result": {"state": 40}}), Ok(Reading::Failed(String::new()))),
        (json!({"result": {"state": 99}}), protocol("unknown status \"99\"")),
        (json!({"result": {"ticket": "T1"}}), protocol("status not found at \"/result/state\"")),
        (json!({"result": {"state": [20]}}), protocol("value at \"/result/state\" is not a string or number")),
        (
            json!({"error": {"code": -32004, "message": "Ticket not found"}, "result": null}),
            Err(AnswerError::Rejected("Ticket not found".into())),
        ),
        (with("/result/premium/currencyCode", json!("840")), protocol("premium currency \"840\" is not roubles")),
        (
            with("/result/premium/amountKop", json!(1331879.5)),
            protocol("value at \"/result/premium/amountKop\" is not whole kopecks"),
        ),
        (with("/result/premium/amountKop", json!(0)), protocol("premium is not positive")),
        (
            with("/result/premium/amountKop", json!("много")),
            protocol("value at \"/result/premium/amountKop\" is not a number"),
        ),
        (
            with("/result/tariffFactors/KP", Value::Null),
            protocol("breakdown.kp not found at \"/result/tariffFactors/KP\""),
        ),
        (
            with("/result/expiresAt", json!("завтра")),
            protocol("value at \"/result/expiresAt\" is not an RFC 3339 date and time"),
        ),
        (
            with("/result/draftNumber", json!({"id": 1})),
            protocol("value at \"/result/draftNumber\" is not a string or an integer"),
        ),
    ];
    for (answer, expected) in cases {
        assert_eq!(read(answer.clone()), expected, "{answer}");
    }
    assert_eq!(
        mapped.read_polled(b"<html>Bad gateway</html>", "T1", now()),
        protocol("answer is not JSON (line 1 column 1)")
    );
}

#[test]
fn a_create_answer_gives_the_reference_and_may_omit_the_status() {
    let mapped = Mapped::new(&example()).unwrap();
    let created = |answer: Value| mapped.read_created(answer.to_string().as_bytes(), now());
    assert_eq!(created(json!({"result": {"ticket": "T9"}})), Ok(("T9".into(), Reading::Pending)));
    assert_eq!(created(json!({"result": {"ticket": 42, "state": 10}})), Ok(("42".into(), Reading::Pending)));
    let (reference, reading) = created(priced()).unwrap();
    assert_eq!(reference, "T1");
    assert!(matches!(reading, Reading::Offer(_)), "priced at once");
    assert_eq!(
        created(json!({"result": {"ticket": ""}})),
        Err(AnswerError::Protocol("value at \"/result/ticket\" is not 1–256 printable characters".into()))
    );
    assert_eq!(
        created(json!({"result": {}})),
        Err(AnswerError::Protocol("reference not found at \"/result/ticket\"".into()))
    );
    let rejected = json!({"jsonrpc": "2.0", "id": "k", "error": {"code": -32602, "message": "Invalid params: policy.start_date: in the past"}});
    assert_eq!(
        created(rejected.clone()),
        Err(AnswerError::Rejected("Invalid params: policy.start_date: in the past".into()))
    );
    assert_eq!(
        mapped.error_message(rejected.to_string().as_bytes()).as_deref(),
        Some("Invalid params: policy.start_date: in the past")
    );
}

#[test]
fn without_optional_pointers_the_defaults_apply() {
    let mut mapping = example();
    mapping.answer.offer_reference = None;
    mapping.answer.valid_until = None;
    mapping.answer.currency = None;
    mapping.answer.premium_unit = mapping::PremiumUnit::Rubles;
    mapping.answer.premium = "/result/price".into();
    let mapped = Mapped::new(&mapping).unwrap();
    let mut answer = priced();
    answer["result"]["price"] = json!("13318.794");
    let Reading::Offer(offer) = mapped.read_polled(answer.to_string().as_bytes(), "T1", now()).unwrap() else {
        panic!()
    };
    assert_eq!(offer.insurer_reference, "T1", "the calculation's reference");
    assert_eq!(offer.valid_until, now() + chrono::Duration::hours(24));
    assert_eq!(offer.premium.amount().to_string(), "13318.79");
}
