//! The sandbox over real HTTP: each API style end to end, auth, the control API, faults,
//! rate limits and determinism under a seed.

use reqwest::StatusCode;
use sandbox::App;
use sandbox::config::Config;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
seed = 7

[[insurer]]
name = "calc"
display_name = "Calc"
style = "create-poll"
auth = { type = "bearer", token = "t0ken" }
base_rate_position = 1.0
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "150ms", p99 = "150ms" }

[[insurer]]
name = "op"
display_name = "Op"
style = "operation"
auth = { type = "header", header = "X-Api-Key", key = "k3y" }
base_rate_position = 0.5
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "150ms", p99 = "150ms" }
decline = { min_driver_age = 22 }

[[insurer]]
name = "list"
display_name = "List"
style = "offers-list"
base_rate_position = 0.0
create_latency = { median = "5ms", p99 = "5ms" }
offer_latency = { median = "150ms", p99 = "150ms" }
"#;

async fn start(config: &str) -> (String, Config) {
    let config = Config::from_toml(config).expect("config");
    let addr = App::build(config.clone()).spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    (format!("http://{addr}"), config)
}

fn application() -> Value {
    let mut request = domain::example::request_in(10);
    request["drivers"][0]["kbm_class"] = json!("3");
    request
}

/// The premium the tariff gives at `position` for [`application`], as the wire string.
fn expected_price(config: &Config, insurer: &str) -> String {
    let request: domain::request::QuoteRequest = serde_json::from_value(application()).unwrap();
    let personality = config.insurers.iter().find(|p| p.name == insurer).unwrap();
    sandbox::engine::price(personality, &request).unwrap().premium.amount().to_string()
}

async fn poll_until<F: Fn(&Value) -> bool>(req: impl Fn() -> reqwest::RequestBuilder, done: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body: Value = req().send().await.unwrap().json().await.unwrap();
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "not done in time: {body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn create_poll_style_prices_with_the_tariff() {
    let (base, config) = start(CONFIG).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/calc/v1/calculate");

    let unauth = http.post(&url).json(&json!({"request_id": "r1", "application": application()})).send().await.unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);

    let created: Value = http
        .post(&url)
        .bearer_auth("t0ken")
        .json(&json!({"request_id": "r1", "application": application()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["status"], "PARTNER_CALCULATION_IN_PROGRESS");

    let ready = poll_until(
        || http.get(&url).bearer_auth("t0ken").query(&[("request_id", "r1")]),
        |b| b["status"] != "PARTNER_CALCULATION_IN_PROGRESS",
    )
    .await;
    assert_eq!(ready["status"], "CALCULATION_READY", "{ready}");
    let offer = &ready["offers"][0];
    assert_eq!(offer["price"], expected_price(&config, "calc"));
    assert_eq!(offer["coefficients"]["tb"], "8665.00", "position 1.0 is the corridor's ceiling");
    assert_eq!(offer["coefficients"]["kt"], "1.80");
    assert!(offer["calculation_id"].as_str().unwrap().starts_with("CALC-"));

    // The same request id again is the same calculation, not a new one.
    let again: Value = http
        .post(&url)
        .bearer_auth("t0ken")
        .json(&json!({"request_id": "r1", "application": application()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["offers"][0]["calculation_id"], offer["calculation_id"]);

    let missing = http.get(&url).bearer_auth("t0ken").query(&[("request_id", "nope")]).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["request_id"], "nope");

    let mut bad = application();
    bad["vehicle"]["vin"] = json!("SHORT");
    let invalid = http
        .post(&url)
        .bearer_auth("t0ken")
        .json(&json!({"request_id": "r2", "application": bad}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(body["request_id"], "r2");
    assert_eq!(body["properties"][0]["property"], "vehicle.vin");
}

#[tokio::test]
async fn operation_style_answers_202_then_done() {
    let (base, config) = start(CONFIG).await;
    let http = reqwest::Client::new();
    let create = || http.post(format!("{base}/op/api/quotes")).header("X-Api-Key", "k3y").json(&application());

    assert_eq!(http.post(format!("{base}/op/api/quotes")).json(&application()).send().await.unwrap().status(), 401);

    let response = create().header("Idempotency-Key", "abc").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().contains_key("retry-after"));
    let href = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["href"], href);
    let retried: Value = create().header("Idempotency-Key", "abc").send().await.unwrap().json().await.unwrap();
    assert_eq!(retried["id"], body["id"], "same Idempotency-Key → same operation");

    let done = poll_until(|| http.get(format!("{base}{href}")).header("X-Api-Key", "k3y"), |b| b["done"] == true).await;
    assert_eq!(done["response"]["status"], "ISSUED", "{done}");
    let value = done["response"]["premium"]["value"].as_f64().unwrap();
    assert_eq!(format!("{value:.2}"), expected_price(&config, "op"));

    let mut young = application();
    young["drivers"][0]["birth_date"] = json!("2005-01-01");
    young["drivers"][0]["experience_since"] = json!("2023-01-01");
    let response = create().json(&young).send().await.unwrap();
    let href = response.headers()["location"].to_str().unwrap().to_string();
    let done = poll_until(|| http.get(format!("{base}{href}")).header("X-Api-Key", "k3y"), |b| b["done"] == true).await;
    assert_eq!(done["response"]["status"], "REFUSED");
    assert_eq!(done["response"]["refusal_reason"], "drivers younger than 22 are not insured");
}

#[tokio::test]
async fn offers_list_style_starts_calculating_when_offers_are_requested() {
    let (base, config) = start(CONFIG).await;
    let http = reqwest::Client::new();
    let created = http.post(format!("{base}/list/contracts")).json(&application()).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["contract_id"].as_str().unwrap().to_string();
    let offers_url = format!("{base}/list/contracts/{id}/offers");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let before: Value = http.get(&offers_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(before, json!([]), "no offers until they are requested");

    assert_eq!(http.post(&offers_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let pending: Value = http.get(&offers_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(pending[0]["status"], "pending");
    let done = poll_until(|| http.get(&offers_url), |b| b[0]["status"] != "pending").await;
    assert_eq!(done[0]["status"], "success", "{done}");
    assert_eq!(done[0]["code"], "LIST");
    assert_eq!(done[0]["price"], expected_price(&config, "list"));
    assert_eq!(done[0]["coefficients"]["tb"], "1399.00", "position 0.0 is the corridor's floor");

    let missing = http.get(format!("{base}/list/contracts/nope/offers")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["errors"][0]["code"], "CONTRACT_NOT_FOUND");
}

#[tokio::test]
async fn faults_change_at_run_time_through_the_control_api() {
    let (base, _) = start(CONFIG).await;
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let faults = |insurer: &str| format!("{base}/_control/insurers/{insurer}/faults");
    let contracts = format!("{base}/list/contracts");

    let set = http.patch(faults("list")).json(&json!({"outage": true})).send().await.unwrap();
    assert_eq!(set.status(), 200);
    assert_eq!(set.json::<Value>().await.unwrap()["outage"], true);
    let down = http.post(&contracts).json(&application()).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json::<Value>().await.unwrap()["errors"][0]["code"], "UNAVAILABLE");

    http.patch(faults("list")).json(&json!({"outage": false, "error_rate": 1.0})).send().await.unwrap();
    assert_eq!(http.post(&contracts).json(&application()).send().await.unwrap().status(), 500);

    http.patch(faults("list")).json(&json!({"error_rate": 0.0, "hang": true})).send().await.unwrap();
    let hung = http.post(&contracts).json(&application()).send().await;
    assert!(hung.unwrap_err().is_timeout(), "a hanging insurer never answers");

    let rejected = http.patch(faults("list")).json(&json!({"error_rate": 2.0})).send().await.unwrap();
    assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let reset = http.post(format!("{base}/_control/insurers/list/reset")).send().await.unwrap();
    assert_eq!(reset.json::<Value>().await.unwrap()["faults"]["hang"], false);
    assert_eq!(http.post(&contracts).json(&application()).send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_counters_see_every_request() {
    let (base, _) = start(CONFIG).await;
    let http = reqwest::Client::new();
    http.patch(format!("{base}/_control/insurers/list/faults"))
        .json(&json!({"rate_limit_rps": 5, "rate_limit_burst": 5}))
        .send()
        .await
        .unwrap();
    let mut statuses = vec![];
    let mut retry_after = None;
    for _ in 0..12 {
        let r = http.get(format!("{base}/list/contracts/x/offers")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));

    let view: Value = http.get(format!("{base}/_control/insurers/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["counters"]["requests_total"], 12);
    assert_eq!(view["counters"]["by_status"]["429"], 7);
    assert_eq!(view["counters"]["by_endpoint"]["GET /contracts/{id}/offers"], 12);
    assert_eq!(view["counters"]["max_requests_per_second"], 12);

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sandbox_responses_total{insurer="list",status="429"} 7"#), "{metrics}");
}

#[tokio::test]
async fn outcomes_are_deterministic_under_a_seed() {
    async fn reference(config: &str) -> String {
        let (base, _) = start(config).await;
        let http = reqwest::Client::new();
        let url = format!("{base}/calc/v1/calculate");
        http.post(&url)
            .bearer_auth("t0ken")
            .json(&json!({"request_id": "same", "application": application()}))
            .send()
            .await
            .unwrap();
        let done = poll_until(
            || http.get(&url).bearer_auth("t0ken").query(&[("request_id", "same")]),
            |b| b["status"] != "PARTNER_CALCULATION_IN_PROGRESS",
        )
        .await;
        done["offers"][0]["calculation_id"].as_str().unwrap().to_string()
    }
    let first = reference(CONFIG).await;
    assert_eq!(first, reference(CONFIG).await);
    assert_ne!(first, reference(&CONFIG.replace("seed = 7", "seed = 8")).await);
}

#[test]
fn the_shipped_configuration_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sandbox.toml")).unwrap();
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(config.insurers.len(), 8);
    for style in ["create-poll", "operation", "offers-list"] {
        assert!(text.contains(&format!("style = \"{style}\"")), "{style} not shipped");
    }
    assert!(Config::from_toml(&text.replace("name = \"rgs\"", "name = \"alfa\"")).unwrap_err().contains("twice"));
}
