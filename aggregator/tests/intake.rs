//! The partner intake over HTTP on the real local Postgres: authentication, per-partner
//! rate limits, idempotency, the one-transaction write, and refusing doomed work.

use aggregator::intake::writer::{self, NewApplication, Writer};
use aggregator::partners::Partners;
use aggregator::registry;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;

const PARTNERS: &str = "web:web-token-123,flood:flood-token-123";

/// A fresh aggregator database.
async fn fresh_pool() -> PgPool {
    let (pool, _) = testkit::fresh_database("intake").await;
    aggregator::db::MIGRATOR.run(&pool).await.unwrap();
    pool
}

async fn start(rate: (u32, u32)) -> (String, PgPool) {
    let pool = fresh_pool().await;
    let router = aggregator::app::router(pool.clone(), Partners::parse(PARTNERS).unwrap(), rate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, pool)
}

async fn register(pool: &PgPool, name: &str, breaker: &str) {
    registry::heartbeat(pool, name, &name.to_uppercase(), false, breaker, Duration::from_secs(60)).await.unwrap();
}

fn application() -> Value {
    domain::example::request_in(7)
}

async fn submit(url: &str, token: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().post(format!("{url}/internal/v1/applications")).bearer_auth(token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_application_gets_a_task_per_live_insurer_in_one_go() {
    let (url, pool) = start((100, 100)).await;
    register(&pool, "alfa", "closed").await;
    register(&pool, "reso", "closed").await;
    registry::heartbeat(&pool, "paused", "P", true, "closed", Duration::from_secs(60)).await.unwrap();
    sqlx::query("INSERT INTO insurers (name, display_name, quote_timeout_ms, heartbeat_at) VALUES ('gone', 'G', 60000, now() - interval '5 minutes')")
        .execute(&pool)
        .await
        .unwrap();

    let response = submit(&url, "web-token-123", None, &application()).await;
    assert_eq!(response.status(), 201);
    let accepted: Value = response.json().await.unwrap();
    let names: Vec<&str> =
        accepted["insurers"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alfa", "reso"], "suspended and silent insurers get no task");
    assert_eq!(accepted["insurers"][0]["display_name"], "ALFA");
    let id: uuid::Uuid = accepted["id"].as_str().unwrap().parse().unwrap();
    let tasks: Vec<String> = sqlx::query_scalar("SELECT insurer FROM tasks WHERE application_id = $1 ORDER BY insurer")
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(tasks, ["alfa", "reso"]);
    let stored: Value =
        sqlx::query_scalar("SELECT request FROM applications WHERE id = $1").bind(id).fetch_one(&pool).await.unwrap();
    assert_eq!(stored["vehicle"]["vin"], "XTAGFL110KY123456");
}

#[tokio::test]
async fn partners_are_authenticated_and_requests_checked() {
    let (url, pool) = start((100, 100)).await;
    register(&pool, "alfa", "closed").await;
    let anonymous = reqwest::Client::new()
        .post(format!("{url}/internal/v1/applications"))
        .json(&application())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");
    assert_eq!(submit(&url, "wrong-token-123", None, &application()).await.status(), 401);

    let mut invalid = application();
    invalid["vehicle"]["vin"] = json!("BAD");
    let response = submit(&url, "web-token-123", None, &invalid).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["errors"][0]["field"], "vehicle.vin");
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let (url, pool) = start((100, 100)).await;
    register(&pool, "alfa", "closed").await;
    let first = submit(&url, "web-token-123", Some("k1"), &application()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = submit(&url, "web-token-123", Some("k1"), &application()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let mut other = application();
    other["policy"]["period_months"] = json!(6);
    assert_eq!(submit(&url, "web-token-123", Some("k1"), &other).await.status(), 409);
    assert_eq!(submit(&url, "flood-token-123", Some("k1"), &application()).await.status(), 201, "keys are per partner");

    // Ten concurrent submissions with one new key make one application.
    let body = application();
    let racers = (0..10).map(|_| submit(&url, "web-token-123", Some("race"), &body));
    let statuses: Vec<u16> = futures::future::join_all(racers).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 201), "{statuses:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM applications WHERE idempotency_key = 'race'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn one_partners_flood_does_not_slow_another() {
    let (url, pool) = start((5, 5)).await;
    register(&pool, "alfa", "closed").await;
    let body = application();
    let flood = (0..30).map(|_| submit(&url, "flood-token-123", None, &body));
    let statuses: Vec<reqwest::Response> = futures::future::join_all(flood).await;
    let limited: Vec<&reqwest::Response> = statuses.iter().filter(|r| r.status() == 429).collect();
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(limited.len(), 25, "burst 5 passes, the rest is refused: {codes:?}");
    assert!(limited[0].headers().contains_key("retry-after"));
    let started = std::time::Instant::now();
    assert_eq!(submit(&url, "web-token-123", None, &application()).await.status(), 201, "web is not limited by flood");
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn no_insurer_able_to_work_means_503_at_once() {
    let (url, pool) = start((100, 100)).await;
    let nobody = submit(&url, "web-token-123", None, &application()).await;
    assert_eq!(nobody.status(), 503);
    assert!(nobody.headers().contains_key("retry-after"));

    register(&pool, "alfa", "open").await;
    register(&pool, "reso", "open").await;
    let started = std::time::Instant::now();
    assert_eq!(submit(&url, "web-token-123", None, &application()).await.status(), 503, "every breaker is open");
    assert!(started.elapsed() < Duration::from_millis(500));
    let apps: i64 = sqlx::query_scalar("SELECT count(*) FROM applications").fetch_one(&pool).await.unwrap();
    assert_eq!(apps, 0, "nothing doomed was accepted");

    register(&pool, "reso", "half_open").await;
    assert_eq!(submit(&url, "web-token-123", None, &application()).await.status(), 201, "one insurer can work again");
}

fn new_application(partner: &str, key: Option<&str>, n: u8) -> NewApplication {
    NewApplication {
        id: uuid::Uuid::new_v4(),
        partner: partner.into(),
        key: key.map(Into::into),
        hash: vec![n],
        request: json!({ "n": n }),
        trace: String::new(),
    }
}

#[tokio::test]
async fn a_batch_stores_each_application_whole_and_a_key_given_twice_once() {
    let pool = fresh_pool().await;
    register(&pool, "alfa", "closed").await;
    register(&pool, "reso", "closed").await;
    let batch = [
        new_application("web", Some("k"), 1),
        new_application("web", None, 2),
        new_application("web", Some("k"), 3),
        new_application("flood", Some("k"), 4),
    ];
    let stored = writer::store(&pool, &batch).await.unwrap();
    let got: Vec<bool> = stored.iter().map(Option::is_some).collect();
    assert_eq!(got, [true, true, false, true], "the key's second use in the batch is left to replay");
    for created in stored.iter().flatten() {
        let names: Vec<&str> = created.insurers.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["alfa", "reso"]);
        assert_eq!(created.insurers[1].display_name, "RESO");
    }
    // Each application is stored with its own request and its own tasks.
    for (application, created) in batch.iter().zip(&stored) {
        let row: Option<(Value, i64)> = sqlx::query_as(
            "SELECT a.request, (SELECT count(*) FROM tasks t WHERE t.application_id = a.id) FROM applications a WHERE a.id = $1",
        )
        .bind(application.id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        match created {
            Some(_) => assert_eq!(row, Some((application.request.clone(), 2))),
            None => assert_eq!(row, None),
        }
    }
}

#[tokio::test]
async fn applications_arriving_together_share_a_commit() {
    let pool = fresh_pool().await;
    register(&pool, "alfa", "closed").await;
    let writer = Writer::start(pool.clone());
    // On this single-threaded runtime all 48 are queued before the writer first runs.
    let writes = (0..48).map(|n| writer.write(new_application("web", None, n)));
    let created = futures::future::join_all(writes).await;
    assert!(created.iter().all(|c| matches!(c, Ok(Some(_)))));
    let (applications, tasks, transactions): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), (SELECT count(*) FROM tasks), count(DISTINCT xmin::text) FROM applications")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((applications, tasks), (48, 48));
    assert!(transactions <= 4, "48 applications in {transactions} transactions");
}

#[tokio::test]
async fn an_application_whose_caller_gave_up_while_queued_is_not_stored() {
    use futures::FutureExt;
    let pool = fresh_pool().await;
    register(&pool, "alfa", "closed").await;
    let writer = Writer::start(pool.clone());
    let abandoned = new_application("web", None, 1);
    // Polled once: queued, then dropped before the writer (on this single-threaded runtime)
    // first runs.
    assert!(writer.write(abandoned.clone()).now_or_never().is_none());
    let kept = new_application("web", None, 2);
    assert!(writer.write(kept.clone()).await.unwrap().is_some());
    let stored: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM applications").fetch_all(&pool).await.unwrap();
    assert_eq!(stored, [kept.id]);
}

#[tokio::test]
async fn an_application_queued_too_long_is_refused_not_stored() {
    let pool = fresh_pool().await;
    register(&pool, "alfa", "closed").await;
    // Every application has been queued for at least no time at all.
    let writer = Writer::with_max_queued(pool.clone(), Duration::ZERO);
    let refused = writer.write(new_application("web", None, 1)).await.unwrap_err();
    assert_eq!(refused.status, 503);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM applications").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 0);
}
