//! Personal data past retention is erased while the anonymous statistics stay; the clock is
//! the test's: the purge takes the cut-off as an argument.

use chrono::{Duration, Utc};
use sqlx::Row;
use uuid::Uuid;

#[tokio::test]
async fn requests_past_retention_are_erased_and_task_statistics_kept() {
    let (pool, _) = testkit::fresh_database("retention").await;
    aggregator::db::MIGRATOR.run(&pool).await.unwrap();
    let request = serde_json::json!({"owner": {"passport": "4510 123456", "last_name": "Иванов"}});
    let mut ids = vec![];
    for age_days in [40, 31, 29, 1] {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO applications (id, partner, idempotency_key, request_hash, request, created_at, deadline)
             VALUES ($1, 'web', $2, '\\x01', $3, now() - make_interval(days => $4), now())",
        )
        .bind(id)
        .bind(format!("key-{age_days}"))
        .bind(&request)
        .bind(age_days)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO tasks (application_id, insurer, status, version, deadline) VALUES ($1, 'alfa', 'offer', 1, now())")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        ids.push(id);
    }
    let retention = Duration::days(30);
    assert_eq!(aggregator::retention::purge(&pool, Utc::now() - retention).await.unwrap(), 2);
    assert_eq!(aggregator::retention::purge(&pool, Utc::now() - retention).await.unwrap(), 0, "idempotent");

    for (id, erased) in ids.iter().zip([true, true, false, false]) {
        let row = sqlx::query("SELECT request, idempotency_key, purged_at FROM applications WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        let request: Option<serde_json::Value> = row.get("request");
        assert_eq!(request.is_none(), erased, "{id}");
        assert_eq!(row.get::<Option<String>, _>("idempotency_key").is_none(), erased);
        assert_eq!(row.get::<Option<chrono::DateTime<Utc>>, _>("purged_at").is_some(), erased);
    }
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(coalesce(request::text, ''), ',') FROM applications WHERE purged_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!dump.contains("4510"), "no passport left in purged rows");
    let offers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'offer'").fetch_one(&pool).await.unwrap();
    assert_eq!(offers, 4, "statistics stay");
}
