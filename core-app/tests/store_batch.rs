//! Quotes created together are stored together (group commit): one transaction for a batch,
//! each quote still stored whole, a repeated key refused, and a quote whose arrival lock is
//! busy stored on its own after its batch-mates were committed.

use core_app::store::{self, Applied, NewQuote, Stored};
use domain::events::{InsurerOutcome, QuoteEvent};
use domain::intake::{Accepted, AssignedInsurer};
use sqlx::PgPool;
use std::time::Duration;

async fn fresh_pool() -> PgPool {
    let (pool, _) = testkit::fresh_database("store_batch").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    pool
}

fn new_quote(key: Option<&str>, insurers: &[&str]) -> NewQuote {
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(60);
    NewQuote {
        accepted: Accepted {
            id: uuid::Uuid::new_v4(),
            insurers: insurers
                .iter()
                .map(|name| AssignedInsurer { name: name.to_string(), display_name: name.to_uppercase() })
                .collect(),
            deadline,
        },
        key: key.map(str::to_string),
        request_hash: b"h".to_vec(),
        expires_at: deadline,
        trace: None,
    }
}

/// `store::create_all`, each quote's answer unwrapped.
async fn create_all(pool: &PgPool, quotes: &[NewQuote]) -> Vec<Stored> {
    store::create_all(pool, quotes).await.unwrap().into_iter().map(Result::unwrap).collect()
}

async fn insurers_of(pool: &PgPool, quote: &NewQuote) -> Vec<String> {
    sqlx::query_scalar("SELECT insurer FROM quote_insurers WHERE quote_id = $1 ORDER BY insurer")
        .bind(quote.accepted.id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_stores_each_quote_with_its_own_insurers_and_refuses_a_taken_key() {
    let pool = fresh_pool().await;
    let before = new_quote(Some("k0"), &["alfa"]);
    assert_eq!(create_all(&pool, std::slice::from_ref(&before)).await, [Stored::New]);
    let batch = [
        new_quote(Some("k2"), &["alfa", "vsk"]),
        new_quote(None, &["reso"]),
        new_quote(Some("k1"), &["ingos", "reso", "vsk"]),
        before.clone(),
        new_quote(Some("k2"), &["alfa"]),
        new_quote(Some("k0"), &["alfa"]),
    ];
    let stored = create_all(&pool, &batch).await;
    // The first "k2" in key order wins (the sort is stable: the one given first).
    let (won, lost) = (0, 4);
    assert_eq!(stored[won], Stored::New);
    assert_eq!(stored[lost], Stored::KeyTaken);
    assert_eq!(stored[1..4], [Stored::New, Stored::New, Stored::Before]);
    assert_eq!(stored[5], Stored::KeyTaken, "k0 belongs to the quote stored before");
    assert_eq!(insurers_of(&pool, &batch[1]).await, ["reso"]);
    assert_eq!(insurers_of(&pool, &batch[2]).await, ["ingos", "reso", "vsk"]);
    assert_eq!(insurers_of(&pool, &batch[3]).await, ["alfa"]);
    assert!(insurers_of(&pool, &batch[lost]).await.is_empty());
    assert!(insurers_of(&pool, &batch[5]).await.is_empty());
    let quotes: i64 = sqlx::query_scalar("SELECT count(*) FROM quotes").fetch_one(&pool).await.unwrap();
    assert_eq!(quotes, 4);
}

#[tokio::test]
async fn quotes_created_together_share_a_commit() {
    let pool = fresh_pool().await;
    let writer = store::writer(pool.clone());
    // On this single-threaded runtime all 48 are queued before the writer first runs.
    let writes = (0..48).map(|n| writer.write(new_quote(Some(&format!("k{n}")), &["alfa", "vsk"])));
    let stored = futures::future::join_all(writes).await;
    assert!(stored.iter().all(|s| matches!(s, Ok(Stored::New))), "{stored:?}");
    let (quotes, insurers, transactions): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), (SELECT count(*) FROM quote_insurers), count(DISTINCT xmin::text) FROM quotes",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((quotes, insurers), (48, 96));
    assert!(transactions <= 4, "48 quotes in {transactions} transactions");
}

/// A consumer round that stored an early event of a quote holds its arrival lock until it
/// commits: the quote's batch-mates are committed meanwhile, the quote is stored once the round
/// commits, and the early event is then applied to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_whose_arrival_lock_is_busy_waits_alone_and_gets_its_early_event() {
    let pool = fresh_pool().await;
    let (free, busy) = (new_quote(None, &["alfa"]), new_quote(None, &["alfa"]));
    let mut round = pool.begin().await.unwrap();
    let event = QuoteEvent::new(
        busy.accepted.id,
        "alfa",
        1,
        InsurerOutcome::Declined { reason: "no".into() },
        chrono::Utc::now(),
    );
    assert_eq!(store::apply_all(&mut *round, &[&event]).await.unwrap(), [Applied::Early]);
    let creating = tokio::spawn({
        let (pool, batch) = (pool.clone(), [free.clone(), busy.clone()]);
        async move { create_all(&pool, &batch).await }
    });
    let waited = tokio::time::Instant::now();
    while status(&pool, &free).await.is_none() {
        assert!(waited.elapsed() < Duration::from_secs(10), "the free quote was held up by the busy one");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!creating.is_finished(), "the busy quote waits for its lock");
    assert_eq!(status(&pool, &busy).await, None);
    round.commit().await.unwrap();
    assert_eq!(creating.await.unwrap(), [Stored::New, Stored::New]);
    assert_eq!(status(&pool, &busy).await.as_deref(), Some("declined"), "the early event was applied");
    assert_eq!(status(&pool, &free).await.as_deref(), Some("pending"));
}

/// A quote given again while a consumer round updates its row (uncommitted): the batch answers
/// at once from what is committed, instead of waiting for the round, which may be waiting for
/// an arrival lock the batch holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_given_again_while_its_row_is_being_updated_is_answered_without_waiting() {
    let pool = fresh_pool().await;
    let stored = new_quote(Some("k"), &["alfa"]);
    assert_eq!(create_all(&pool, std::slice::from_ref(&stored)).await, [Stored::New]);
    let mut round = pool.begin().await.unwrap();
    sqlx::query("UPDATE quotes SET next_seq = next_seq + 1 WHERE id = $1")
        .bind(stored.accepted.id)
        .execute(&mut *round)
        .await
        .unwrap();
    let batch = [stored.clone(), new_quote(Some("k"), &["alfa"]), new_quote(None, &["alfa"])];
    let answered = tokio::time::timeout(Duration::from_secs(5), create_all(&pool, &batch)).await;
    assert_eq!(
        answered.expect("answered while the row's update is uncommitted"),
        [Stored::Before, Stored::KeyTaken, Stored::New]
    );
    round.rollback().await.unwrap();
}

/// The pending or final status of the quote's (one) insurer; `None` when it is not stored.
async fn status(pool: &PgPool, quote: &NewQuote) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM quote_insurers WHERE quote_id = $1")
        .bind(quote.accepted.id)
        .fetch_optional(pool)
        .await
        .unwrap()
}
