//! Finished quotes past retention lose their replay log, idempotency key and request hash;
//! quotes and insurer results stay as anonymous statistics. The cut-off is the test's clock.

use chrono::{Duration, Utc};
use domain::events::{InsurerOutcome, QuoteEvent};
use domain::intake::{Accepted, AssignedInsurer};
use uuid::Uuid;

#[tokio::test]
async fn old_finished_quotes_are_minimised() {
    let (pool, _) = testkit::fresh_database("core_retention").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    let mut quotes = vec![];
    for (age_days, finished) in [(40, true), (40, false), (1, true)] {
        let id = Uuid::new_v4();
        let accepted = Accepted {
            id,
            insurers: vec![AssignedInsurer { name: "alfa".into(), display_name: "Альфа".into() }],
            deadline: Utc::now() + Duration::hours(1),
        };
        core_app::store::create(&pool, &accepted, Some(&format!("key-{id}")), b"hash", Duration::seconds(1), None)
            .await
            .unwrap();
        if finished {
            let event = QuoteEvent::new(id, "alfa", 1, InsurerOutcome::Declined { reason: "no".into() }, Utc::now());
            core_app::store::apply(&pool, &event).await.unwrap();
        }
        sqlx::query("UPDATE quotes SET created_at = now() - make_interval(days => $2) WHERE id = $1")
            .bind(id)
            .bind(age_days)
            .execute(&pool)
            .await
            .unwrap();
        quotes.push(id);
    }
    assert_eq!(core_app::retention::purge(&pool, Utc::now() - Duration::days(30)).await.unwrap(), 1);
    let events = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM quote_events WHERE quote_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(events(quotes[0]).await, 0, "the old finished quote's log is gone");
    assert_eq!(events(quotes[2]).await, 2, "a recent quote keeps its log");
    let key: Option<String> = sqlx::query_scalar("SELECT idempotency_key FROM quotes WHERE id = $1")
        .bind(quotes[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(key, None);
    let unfinished: Option<String> = sqlx::query_scalar("SELECT idempotency_key FROM quotes WHERE id = $1")
        .bind(quotes[1])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(unfinished.is_some(), "a quote still running is left alone");
    let status: String = sqlx::query_scalar("SELECT status FROM quote_insurers WHERE quote_id = $1")
        .bind(quotes[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "declined", "the insurer's result stays as a statistic");
}
