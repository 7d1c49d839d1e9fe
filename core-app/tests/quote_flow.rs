//! The quote flow end to end over HTTP and SSE, on real Postgres, Kafka and sandbox
//! insurers: the public API contract, replay, two-replica fan-out, duplicate delivery,
//! the deadline, and an unavailable aggregator.

mod support;

use domain::events::{InsurerOutcome, QuoteEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use support::{Stack, sample};
use testkit::sse;

async fn create(base: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{base}/api/v1/quotes")).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

async fn follow(base: &str, events_url: &str) -> sse::Received {
    read(&format!("{base}{events_url}"), None, Duration::from_secs(30)).await
}

/// `sse_streams_open` is one gauge per process: a test that waits for it to count its own stream
/// holds this exclusively, and every other stream is read holding it shared.
static STREAMS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A stream read to its end ([`sse::read`]), in turn with a test reading the gauge.
async fn read(url: &str, last_event_id: Option<&str>, within: Duration) -> sse::Received {
    let _turn = STREAMS.read().await;
    sse::read(url, last_event_id, within).await
}

#[tokio::test]
async fn a_quote_streams_every_insurer_result_then_completes() {
    let stack = Stack::start("20s").await;
    let response = create(&stack.core_url, &sample(), None).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/quotes/{id}"));
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["insurers"], json!(["alfa", "ingos", "reso"]));
    assert_eq!(created["events_url"], format!("/api/v1/quotes/{id}/events"));
    assert!(created["deadline"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().is_ok());

    let stream = follow(&stack.core_url, created["events_url"].as_str().unwrap()).await;
    assert_eq!(stream.status, 200);
    assert!(stream.content_type.starts_with("text/event-stream"));
    assert_eq!(stream.retry, Some(2000), "the stream sets the reconnect delay");
    assert!(stream.closed_by_server, "the server closes after complete");
    let ids: Vec<i64> = stream.events.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let (last, results) = stream.events.split_last().unwrap();
    assert_eq!(last.event, "complete");
    assert_eq!(last.json()["status"], "complete");

    let by_insurer: HashMap<String, Value> =
        results.iter().map(|e| (e.json()["insurer"].as_str().unwrap().to_string(), e.json())).collect();
    assert_eq!(results.len(), 3, "one final result per insurer, exactly once");
    for insurer in ["alfa", "ingos"] {
        let offer = &by_insurer[insurer];
        assert_eq!(offer["status"], "offer");
        let premium = &offer["offer"]["premium"];
        assert_eq!(premium["currency"], "RUB");
        assert!(premium["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().is_ok());
        for k in ["tb", "kt", "kbm", "kvs", "ko", "km", "ks", "kn", "kp"] {
            assert!(offer["offer"]["breakdown"][k].is_string(), "{insurer} breakdown lacks {k}");
        }
        assert!(offer["offer"]["insurer_reference"].as_str().unwrap().starts_with(&insurer.to_uppercase()));
        assert!(offer["offer"]["valid_until"].is_string());
    }
    assert_eq!(by_insurer["reso"]["status"], "declined");
    assert_eq!(by_insurer["reso"]["reason"], "vehicles older than 3 years are not insured");
    let names: Vec<&str> = results.iter().map(|e| e.event.as_str()).collect();
    assert!(names.iter().all(|n| *n == "offer" || *n == "status"), "{names:?}");

    let quote: Value = reqwest::get(format!("{}{location}", stack.core_url)).await.unwrap().json().await.unwrap();
    assert_eq!(quote["status"], "complete");
    let cheapest = ["alfa", "ingos"]
        .into_iter()
        .min_by_key(|i| {
            by_insurer[*i]["offer"]["premium"]["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap()
        })
        .unwrap();
    assert_eq!(quote["best_offer"]["insurer"], cheapest, "alfa prices at 0.9 of the corridor, ingos at 1.0");
    assert_eq!(quote["insurers"].as_array().unwrap().len(), 3);

    // Resuming after the second event replays only what followed it; after the last, nothing.
    let resumed =
        read(&format!("{}/api/v1/quotes/{id}/events", stack.core_url), Some("2"), Duration::from_secs(5)).await;
    let resumed_ids: Vec<i64> = resumed.events.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect();
    assert_eq!(resumed_ids, ids[2..].to_vec());
    let last_id = ids.last().unwrap().to_string();
    let over =
        read(&format!("{}/api/v1/quotes/{id}/events", stack.core_url), Some(&last_id), Duration::from_secs(5)).await;
    assert_eq!(over.status, 204, "a finished stream tells the browser not to reconnect");
}

/// A quote stored straight into core-app's database (not through the aggregator), with
/// `insurers`, so that a test delivers their results itself.
async fn store_directly(pool: &sqlx::PgPool, insurers: &[&str]) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    let accepted = domain::intake::Accepted {
        id,
        insurers: insurers
            .iter()
            .map(|name| domain::intake::AssignedInsurer { name: name.to_string(), display_name: name.to_string() })
            .collect(),
        deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
    };
    core_app::store::create(pool, &accepted, None, b"h", chrono::Duration::seconds(1), None).await.unwrap();
    id
}

/// The stream gauge on core-app's /metrics.
async fn streams_open(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("sse_streams_open ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn an_event_id_past_the_latest_resumes_after_the_latest() {
    let stack = Stack::start("20s").await;
    // A quote stored directly, with alfa's result in (event 1) and ingos's to come.
    let quote = store_directly(&stack.core_pool, &["alfa", "ingos"]).await;
    let alfa = QuoteEvent::new(quote, "alfa", 1, InsurerOutcome::Declined { reason: "no".into() }, chrono::Utc::now());
    core_app::store::apply(&stack.core_pool, &alfa).await.unwrap();

    // A made-up id (i64::MAX, which once overflowed the stream's arithmetic) on the live quote:
    // opened before the quote completes, which the gauge shows once no other test's stream counts.
    let _gauge = STREAMS.write().await;
    let url = format!("{}/api/v1/quotes/{quote}/events", stack.core_url);
    let beyond =
        tokio::spawn(async move { sse::read(&url, Some(&i64::MAX.to_string()), Duration::from_secs(30)).await });
    while streams_open(&stack.core_url).await < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingos =
        QuoteEvent::new(quote, "ingos", 1, InsurerOutcome::Failed { reason: "down".into() }, chrono::Utc::now());
    core_app::store::apply(&stack.core_pool, &ingos).await.unwrap();

    let beyond = beyond.await.unwrap();
    assert_eq!(beyond.status, 200);
    assert!(beyond.closed_by_server, "the stream ends with the quote");
    let seen: Vec<(&str, &str)> = beyond.events.iter().map(|e| (e.id.as_deref().unwrap(), e.event.as_str())).collect();
    assert_eq!(seen, [("2", "status"), ("3", "complete")], "what followed the latest event, and only that");
}

#[tokio::test]
async fn bad_requests_get_clear_problems() {
    let stack = Stack::start("20s").await;
    let base = &stack.core_url;
    let http = reqwest::Client::new();

    let broken = http
        .post(format!("{base}/api/v1/quotes"))
        .body("{\"vehicle\": ")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    assert_eq!(broken.headers()["content-type"], "application/problem+json");

    let mut invalid = sample();
    invalid["vehicle"]["vin"] = json!("SHORT");
    invalid["drivers"][0]["birth_date"] = json!("2015-01-01");
    invalid["policy"]["period_months"] = json!(1);
    let response = create(base, &invalid, None).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for f in ["vehicle.vin", "drivers[0].experience_since", "policy.period_months"] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }

    let huge = json!({"vehicle": {"make": "x".repeat(100_000)}});
    assert_eq!(create(base, &huge, None).await.status(), 413);

    let unknown = reqwest::get(format!("{base}/api/v1/quotes/{}", uuid::Uuid::new_v4())).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.headers()["content-type"], "application/problem+json");
    assert_eq!(reqwest::get(format!("{base}/api/v1/quotes/not-a-uuid")).await.unwrap().status(), 404);
    assert_eq!(
        reqwest::get(format!("{base}/api/v1/quotes/{}/events", uuid::Uuid::new_v4())).await.unwrap().status(),
        404
    );

    // Same key + same body → the same quote; same key + another body → a conflict.
    let first: Value = create(base, &sample(), Some("key-1")).await.json().await.unwrap();
    let again = create(base, &sample(), Some("key-1")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let mut other = sample();
    other["policy"]["period_months"] = json!(6);
    assert_eq!(create(base, &other, Some("key-1")).await.status(), 409);
    let applications: i64 =
        sqlx::query_scalar("SELECT count(*) FROM applications").fetch_one(&stack.aggregator_pool).await.unwrap();
    assert_eq!(applications, 1, "one key, one application at the aggregator");

    let insurers: Value = reqwest::get(format!("{base}/api/v1/insurers")).await.unwrap().json().await.unwrap();
    assert_eq!(insurers[0]["name"], "alfa");
    assert_eq!(insurers[0]["display_name"], "alfa");

    let openapi: Value = reqwest::get(format!("{base}/openapi.json")).await.unwrap().json().await.unwrap();
    assert!(openapi["paths"]["/api/v1/quotes"]["post"].is_object());
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(reqwest::get(format!("{base}{path}")).await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test]
async fn two_replicas_both_stream_every_event() {
    let stack = Stack::start("20s").await;
    let second = stack.start_core_app(&stack.aggregator_url).await;
    let created: Value = create(&stack.core_url, &sample(), None).await.json().await.unwrap();
    let events_url = created["events_url"].as_str().unwrap();
    let (a, b) = tokio::join!(follow(&stack.core_url, events_url), follow(&second, events_url));
    let names = |r: &sse::Received| r.events.iter().map(|e| (e.id.clone(), e.event.clone())).collect::<Vec<_>>();
    assert_eq!(a.events.last().unwrap().event, "complete");
    assert_eq!(names(&a), names(&b), "both replicas stream the same events");
    assert_eq!(a.events.len(), 4);
}

#[tokio::test]
async fn a_duplicate_or_stale_kafka_event_changes_nothing() {
    let stack = Stack::start("20s").await;
    let created: Value = create(&stack.core_url, &sample(), None).await.json().await.unwrap();
    let stream = follow(&stack.core_url, created["events_url"].as_str().unwrap()).await;
    assert_eq!(stream.events.last().unwrap().event, "complete");
    let quote_id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();

    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", testkit::kafka_brokers()).create().unwrap();
    let send = |event: QuoteEvent| {
        let producer = producer.clone();
        let topic = stack.topic.clone();
        async move {
            let payload = serde_json::to_vec(&event).unwrap();
            producer
                .send(
                    FutureRecord::to(&topic).key(&event.quote_id.to_string()).payload(&payload),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
        }
    };
    // A quote stored directly with two insurers; alfa's result is delivered twice, then a
    // stale one, then ingos's result. One key, one partition: ingos's result (which completes
    // the quote) is consumed after the duplicate and the stale event.
    let other = store_directly(&stack.core_pool, &["alfa", "ingos"]).await;
    let declined =
        QuoteEvent::new(other, "alfa", 2, InsurerOutcome::Declined { reason: "no".into() }, chrono::Utc::now());
    send(declined.clone()).await;
    send(declined.clone()).await;
    send(QuoteEvent::new(other, "alfa", 1, InsurerOutcome::Failed { reason: "old".into() }, chrono::Utc::now())).await;
    send(QuoteEvent::new(other, "ingos", 1, InsurerOutcome::Failed { reason: "down".into() }, chrono::Utc::now()))
        .await;

    let replay = follow(&stack.core_url, &format!("/api/v1/quotes/{other}/events")).await;
    let seen: Vec<(String, String)> = replay
        .events
        .iter()
        .map(|e| (e.event.clone(), e.json()["reason"].as_str().unwrap_or("").to_string()))
        .collect();
    let expected =
        [("status", "no"), ("status", "down"), ("complete", "")].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(seen, expected, "the duplicate and the stale event were not stored");

    // A real event of the finished quote, as the relay published it, delivered again.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("group.id", testkit::unique_name("replay"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&stack.topic]).unwrap();
    let real = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await.unwrap().unwrap();
        let event: QuoteEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
        if event.quote_id == quote_id {
            break event;
        }
    };
    let applied = core_app::store::apply(&stack.core_pool, &real).await.unwrap();
    assert_eq!(applied, core_app::store::Applied::Duplicate);
    let finished = follow(&stack.core_url, created["events_url"].as_str().unwrap()).await;
    assert_eq!(finished.events.len(), stream.events.len(), "the finished quote is unchanged");
}

#[tokio::test]
async fn the_deadline_expires_insurers_that_did_not_answer() {
    let stack = Stack::start("3s").await;
    reqwest::Client::new()
        .patch(format!("{}/_control/insurers/ingos/faults", stack.sandbox_url))
        .json(&json!({"hang": true}))
        .send()
        .await
        .unwrap();
    let created: Value = create(&stack.core_url, &sample(), None).await.json().await.unwrap();
    let stream = follow(&stack.core_url, created["events_url"].as_str().unwrap()).await;
    let ingos: Vec<Value> = stream.events.iter().map(|e| e.json()).filter(|d| d["insurer"] == "ingos").collect();
    assert_eq!(ingos.len(), 1);
    assert_eq!(ingos[0]["status"], "expired");
    assert_eq!(stream.events.last().unwrap().event, "complete");
}

#[tokio::test]
async fn an_unavailable_aggregator_is_a_503_with_retry_after() {
    let stack = Stack::start("20s").await;
    let dead = stack.start_core_app("http://127.0.0.1:9").await;
    let response = create(&dead, &sample(), None).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_quote_overdue_while_core_app_was_down_completes_at_start() {
    let stack = Stack::start("20s").await;
    // Stored as if core-app had crashed before the deadline and come back after it.
    let overdue = domain::intake::Accepted {
        id: uuid::Uuid::new_v4(),
        insurers: vec![domain::intake::AssignedInsurer { name: "alfa".into(), display_name: "Альфа".into() }],
        deadline: chrono::Utc::now() - chrono::Duration::seconds(30),
    };
    core_app::store::create(&stack.core_pool, &overdue, None, b"h", chrono::Duration::seconds(1), None).await.unwrap();
    let stream = follow(&stack.core_url, &format!("/api/v1/quotes/{}/events", overdue.id)).await;
    let names: Vec<(String, String)> =
        stream.events.iter().map(|e| (e.event.clone(), e.json()["status"].as_str().unwrap().to_string())).collect();
    assert_eq!(
        names,
        [("status".to_string(), "expired".to_string()), ("complete".to_string(), "complete".to_string())]
    );
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let stack = Stack::start("20s").await;
    let api = core_app::api::ApiSettings { client_rate: (1, 3), ..core_app::api::ApiSettings::default() };
    let limited = stack.start_core_app_with(&stack.aggregator_url, api).await;
    let mut statuses = vec![];
    for _ in 0..5 {
        let r = reqwest::get(format!("{limited}/api/v1/insurers")).await.unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(reqwest::get(format!("{limited}/healthz")).await.unwrap().status(), 200, "probes are not limited");
}

/// An aggregator intake on a random port that answers every submission with `answer()`;
/// its URL and how many submissions it got.
async fn fake_intake<R: axum::response::IntoResponse + 'static>(
    answer: fn() -> R,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let intake = axum::Router::new().route(
        "/internal/v1/applications",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { answer() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, intake).await });
    (url, hits)
}

#[tokio::test]
async fn an_overloaded_aggregator_is_neither_retried_nor_held_against_it() {
    use std::sync::atomic::Ordering;
    let stack = Stack::start("20s").await;
    // An aggregator shedding load: every submission gets its `overloaded` 503, Retry-After 3.
    let (shedding_url, hits) = fake_intake(|| {
        platform::Problem::overloaded("too many requests are waiting; please retry", Duration::from_secs(3))
    })
    .await;
    let core = stack.start_core_app(&shedding_url).await;

    for i in 0..12 {
        let response = create(&core, &sample(), None).await;
        assert_eq!(response.status(), 503, "quote {i}");
        assert_eq!(response.headers()["retry-after"], "3", "the aggregator's own delay, quote {i}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:osago:problem:overloaded", "quote {i}: {problem}");
    }
    // With the breaker counting these, it would have opened after 10 and the rest refused
    // without a call; with retries, each quote would have made three.
    assert_eq!(hits.load(Ordering::SeqCst), 12, "one call per quote, every quote called");
}

#[tokio::test]
async fn a_failing_aggregator_trips_the_breaker_and_quotes_are_refused_at_once() {
    use std::sync::atomic::Ordering;
    let stack = Stack::start("20s").await;
    // An aggregator that answers every submission with a 500.
    let (failing_url, hits) = fake_intake(|| axum::http::StatusCode::INTERNAL_SERVER_ERROR).await;
    let core = stack.start_core_app(&failing_url).await;

    let mut refused_fast = 0;
    for _ in 0..12 {
        let started = std::time::Instant::now();
        let response = create(&core, &sample(), None).await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        if started.elapsed() < Duration::from_millis(50) {
            refused_fast += 1;
        }
    }
    let calls = hits.load(Ordering::SeqCst);
    eprintln!("breaker: {calls} calls reached the failing aggregator for 12 quotes; {refused_fast} refused at once");
    assert!(calls <= 12, "the breaker stopped calling after its window of 10 failures, saw {calls}");
    assert!(refused_fast >= 8, "open breaker refuses at once, {refused_fast} of 12 were fast");
}

#[tokio::test]
async fn cors_answers_only_allow_listed_origins() {
    let stack = Stack::start("20s").await;
    let api = core_app::api::ApiSettings {
        cors_origins: vec!["https://partner.example".into()],
        client_rate: (1000, 1000),
        ..core_app::api::ApiSettings::default()
    };
    let core = stack.start_core_app_with(&stack.aggregator_url, api).await;
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{core}/api/v1/quotes"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,idempotency-key")
            .send()
    };
    let allowed = preflight("https://partner.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://partner.example");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let page = reqwest::get(format!("{core}/")).await.unwrap();
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
}
