//! An event that races its quote's arrival: the consumer may get an insurer's result while
//! the quote is being stored. Whichever commits first, the result must be applied — never
//! stranded in early_events.

use core_app::store::{self, Applied};
use domain::events::{InsurerOutcome, QuoteEvent};
use domain::intake::{Accepted, AssignedInsurer};

#[tokio::test]
async fn an_event_racing_its_quotes_arrival_is_applied_either_way() {
    let (pool, _) = testkit::fresh_database("arrival").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    let mut early = 0;
    for _ in 0..200 {
        let quote = uuid::Uuid::new_v4();
        let accepted = Accepted {
            id: quote,
            insurers: vec![AssignedInsurer { name: "alfa".into(), display_name: "Альфа".into() }],
            deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
        };
        let event =
            QuoteEvent::new(quote, "alfa", 1, InsurerOutcome::Declined { reason: "no".into() }, chrono::Utc::now());
        let (p1, p2) = (pool.clone(), pool.clone());
        let creating =
            tokio::spawn(
                async move { store::create(&p1, &accepted, None, b"h", chrono::Duration::zero(), None).await },
            );
        let applying = tokio::spawn(async move { store::apply(&p2, &event).await });
        creating.await.unwrap().unwrap();
        if applying.await.unwrap().unwrap() == Applied::Early {
            early += 1;
        }
        let (status, completed): (String, bool) = sqlx::query_as(
            "SELECT i.status, q.completed_at IS NOT NULL FROM quote_insurers i JOIN quotes q ON q.id = i.quote_id
             WHERE i.quote_id = $1",
        )
        .bind(quote)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((status.as_str(), completed), ("declined", true), "quote {quote}: the result was applied");
    }
    let stranded: i64 = sqlx::query_scalar("SELECT count(*) FROM early_events").fetch_one(&pool).await.unwrap();
    assert_eq!(stranded, 0, "no event left waiting for a quote that exists");
    eprintln!("{early} of 200 events arrived before their quote");
}

/// Two deliveries of one event applied at the same moment (a rebalance hands a partition over
/// mid-batch): one is stored, the other sees it — through the lock, not a snapshot.
#[tokio::test]
async fn one_event_applied_twice_at_once_is_stored_once() {
    let (pool, _) = testkit::fresh_database("twice").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    for _ in 0..100 {
        let quote = uuid::Uuid::new_v4();
        let accepted = Accepted {
            id: quote,
            insurers: vec![
                AssignedInsurer { name: "alfa".into(), display_name: "Альфа".into() },
                AssignedInsurer { name: "vsk".into(), display_name: "ВСК".into() },
            ],
            deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
        };
        store::create(&pool, &accepted, None, b"h", chrono::Duration::zero(), None).await.unwrap();
        let event =
            QuoteEvent::new(quote, "alfa", 1, InsurerOutcome::Declined { reason: "no".into() }, chrono::Utc::now());
        let (p1, p2, e1, e2) = (pool.clone(), pool.clone(), event.clone(), event.clone());
        let first = tokio::spawn(async move { store::apply(&p1, &e1).await });
        let second = tokio::spawn(async move { store::apply(&p2, &e2).await });
        let results = [first.await.unwrap().unwrap(), second.await.unwrap().unwrap()];
        let stored = results.iter().filter(|r| matches!(r, Applied::Stored { .. })).count();
        assert_eq!(stored, 1, "{results:?}");
        assert!(results.iter().any(|r| matches!(r, Applied::Duplicate | Applied::Stale)), "{results:?}");
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM quote_events WHERE quote_id = $1")
            .bind(quote)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(events, 1, "one status event, no completion (vsk is pending)");
    }
}

/// A create that stopped after storing its quote (the process died before it applied the
/// events waiting for it) leaves them in early_events: the deadline loop's sweep applies them,
/// once the quote is old enough that no live create is still on its way to them.
#[tokio::test]
async fn early_events_a_stopped_create_left_are_applied_by_the_sweep() {
    let (pool, _) = testkit::fresh_database("orphans").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    let quote = uuid::Uuid::new_v4();
    let event = QuoteEvent::new(quote, "alfa", 1, InsurerOutcome::Declined { reason: "no".into() }, chrono::Utc::now());
    assert_eq!(store::apply(&pool, &event).await.unwrap(), Applied::Early);
    // `create`'s first statement alone, as if the process had died right after it.
    let waiting: Vec<i64> = sqlx::query_scalar(
        "SELECT create_quotes(ARRAY[$1::uuid], ARRAY[NULL::text], ARRAY['h'::bytea], ARRAY[now() + interval '1 minute'],
                              ARRAY[now() + interval '1 minute'], ARRAY[NULL::text], ARRAY[7::bigint], ARRAY[1],
                              ARRAY['alfa'], ARRAY['Альфа'], true)",
    )
    .bind(quote)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(waiting, [1], "the stored quote's early event is counted");
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM quote_insurers WHERE quote_id = $1")
            .bind(quote)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(store::adopt_orphans(&pool, 100).await.unwrap(), 0, "a quote just stored is left to its create");
    assert_eq!(status().await, "pending");
    sqlx::query("UPDATE quotes SET created_at = now() - interval '1 minute' WHERE id = $1")
        .bind(quote)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(store::adopt_orphans(&pool, 100).await.unwrap(), 1);
    assert_eq!(status().await, "declined");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM early_events").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0);
    assert_eq!(store::adopt_orphans(&pool, 100).await.unwrap(), 0, "nothing is applied twice");
}

/// Storing a quote twice is a no-op the second time.
#[tokio::test]
async fn a_quote_stored_twice_is_stored_once() {
    let (pool, _) = testkit::fresh_database("twice_created").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    let accepted = Accepted {
        id: uuid::Uuid::new_v4(),
        insurers: vec![AssignedInsurer { name: "alfa".into(), display_name: "Альфа".into() }],
        deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
    };
    for expected in [store::Stored::New, store::Stored::Before] {
        let stored = store::create(&pool, &accepted, Some("k"), b"h", chrono::Duration::zero(), None).await.unwrap();
        assert_eq!(stored, expected);
    }
    let rows: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM quotes), (SELECT count(*) FROM quote_insurers)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, (1, 1));
}
