//! The aggregator's schema on the real local Postgres: migrations apply, the intake's
//! one-transaction write is atomic, idempotency keys are unique per partner, and
//! `FOR UPDATE SKIP LOCKED` hands concurrent pollers disjoint tasks.

use aggregator::db::MIGRATOR;
use sqlx::{PgPool, Row};
use uuid::Uuid;

async fn migrated() -> PgPool {
    let (pool, _) = testkit::fresh_database("agg").await;
    MIGRATOR.run(&pool).await.expect("migrations apply");
    pool
}

async fn insert_application(
    tx: &mut sqlx::PgConnection,
    partner: &str,
    key: Option<&str>,
    insurers: &[&str],
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO applications (id, partner, idempotency_key, request_hash, request, deadline)
         VALUES ($1, $2, $3, $4, '{}'::jsonb, now() + interval '60 seconds')",
    )
    .bind(id)
    .bind(partner)
    .bind(key)
    .bind(vec![1u8, 2, 3])
    .execute(&mut *tx)
    .await?;
    for insurer in insurers {
        sqlx::query(
            "INSERT INTO tasks (application_id, insurer, deadline) VALUES ($1, $2, now() + interval '60 seconds')",
        )
        .bind(id)
        .bind(insurer)
        .execute(&mut *tx)
        .await?;
    }
    Ok(id)
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap().get(0)
}

#[tokio::test]
async fn migrations_apply_once_and_create_the_schema() {
    let pool = migrated().await;
    MIGRATOR.run(&pool).await.expect("a second run is a no-op");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tables, ["_sqlx_migrations", "applications", "insurers", "outbox", "tasks"]);
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
}

#[tokio::test]
async fn an_application_and_its_tasks_are_written_atomically() {
    let pool = migrated().await;
    let mut tx = pool.begin().await.unwrap();
    insert_application(&mut tx, "web", None, &["alfa", "reso"]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!((count(&pool, "applications").await, count(&pool, "tasks").await), (0, 0));

    let mut tx = pool.begin().await.unwrap();
    let id = insert_application(&mut tx, "web", None, &["alfa", "reso"]).await.unwrap();
    tx.commit().await.unwrap();
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status::text FROM tasks WHERE application_id = $1")
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["pending", "pending"]);

    // A task for an application that does not exist is refused by the foreign key.
    let orphan = sqlx::query("INSERT INTO tasks (application_id, insurer, deadline) VALUES ($1, 'x', now())")
        .bind(Uuid::now_v7())
        .execute(&pool)
        .await;
    assert!(orphan.unwrap_err().as_database_error().unwrap().is_foreign_key_violation());
}

#[tokio::test]
async fn idempotency_keys_are_unique_per_partner() {
    let pool = migrated().await;
    let mut conn = pool.acquire().await.unwrap();
    insert_application(&mut conn, "web", Some("k1"), &["alfa"]).await.unwrap();
    let duplicate = insert_application(&mut conn, "web", Some("k1"), &["alfa"]).await;
    assert!(duplicate.unwrap_err().as_database_error().unwrap().is_unique_violation());
    insert_application(&mut conn, "partner-b", Some("k1"), &["alfa"]).await.expect("another partner may reuse a key");
    insert_application(&mut conn, "web", None, &["alfa"]).await.expect("no key, no uniqueness");
    insert_application(&mut conn, "web", None, &["alfa"]).await.expect("no key, no uniqueness");
}

#[tokio::test]
async fn skip_locked_gives_concurrent_pollers_disjoint_tasks() {
    let pool = migrated().await;
    let mut conn = pool.acquire().await.unwrap();
    for _ in 0..10 {
        insert_application(&mut conn, "web", None, &["alfa"]).await.unwrap();
    }
    drop(conn);
    let claim =
        "SELECT application_id FROM tasks WHERE insurer = 'alfa' AND status = 'pending' AND next_poll_at <= now()
                 ORDER BY next_poll_at LIMIT 6 FOR UPDATE SKIP LOCKED";
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    let a: Vec<Uuid> = sqlx::query_scalar(claim).fetch_all(&mut *first).await.unwrap();
    let b: Vec<Uuid> = sqlx::query_scalar(claim).fetch_all(&mut *second).await.unwrap();
    assert_eq!((a.len(), b.len()), (6, 4), "the second poller gets what the first did not lock");
    assert!(a.iter().all(|id| !b.contains(id)), "no task is claimed twice");
    first.commit().await.unwrap();
    second.commit().await.unwrap();
}

#[tokio::test]
async fn analyze_keeps_no_statistics_of_the_json_payloads() {
    // An autovacuum's ANALYZE of them was most of its CPU, in a burst (0008).
    let pool = migrated().await;
    let mut conn = pool.acquire().await.unwrap();
    insert_application(&mut conn, "core-app", None, &["alfa"]).await.unwrap();
    sqlx::query("INSERT INTO outbox (event_id, message_key, payload) VALUES ($1, 'k', '{}')")
        .bind(Uuid::now_v7())
        .execute(&mut *conn)
        .await
        .unwrap();
    let columns = testkit::analyzed_columns(&pool, "applications").await;
    assert!(columns.contains(&"partner".to_string()), "{columns:?}");
    assert!(!columns.contains(&"request".to_string()), "{columns:?}");
    let columns = testkit::analyzed_columns(&pool, "outbox").await;
    assert!(columns.contains(&"message_key".to_string()), "{columns:?}");
    assert!(!columns.contains(&"payload".to_string()) && !columns.contains(&"headers".to_string()), "{columns:?}");
}
