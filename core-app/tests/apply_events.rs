//! A consumer round is applied in one transaction, its writes in one statement: each event gets
//! the answer it would get alone, in the order given, and every stored event is pushed to the
//! streams as the text the replay log keeps.

use core_app::store::{self, Applied, NewQuote, Stored};
use domain::events::{InsurerOutcome, Offer, QuoteEvent};
use domain::intake::{Accepted, AssignedInsurer};
use domain::money::Money;
use rust_decimal::Decimal;
use sqlx::postgres::PgConnectOptions;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

async fn fresh_pool() -> (PgPool, String) {
    let (pool, url) = testkit::fresh_database("apply_events").await;
    core_app::MIGRATOR.run(&pool).await.unwrap();
    (pool, url)
}

async fn stored_quote(pool: &PgPool, insurers: &[&str]) -> Uuid {
    quote_expiring_in(pool, insurers, chrono::Duration::seconds(60)).await
}

async fn quote_expiring_in(pool: &PgPool, insurers: &[&str], expires_in: chrono::Duration) -> Uuid {
    let deadline = chrono::Utc::now() + expires_in;
    let id = Uuid::new_v4();
    let insurers =
        insurers.iter().map(|name| AssignedInsurer { name: name.to_string(), display_name: name.to_uppercase() });
    let quote = NewQuote {
        accepted: Accepted { id, insurers: insurers.collect(), deadline },
        key: None,
        request_hash: b"h".to_vec(),
        expires_at: deadline,
        trace: None,
    };
    assert_eq!(store::create_all(pool, &[quote]).await.unwrap().remove(0).unwrap(), Stored::New);
    id
}

fn offer(reference: &str) -> InsurerOutcome {
    let breakdown = r#"{"tb":"8665.00","kt":"1.80","kbm":"0.83","kvs":"0.93","ko":"1.00","km":"1.10","ks":"1.00","kn":"1.00","kp":"1.00"}"#;
    InsurerOutcome::Offer {
        offer: Offer {
            premium: Money::rub(Decimal::new(1331879, 2)),
            insurer_reference: reference.into(),
            valid_until: chrono::Utc::now() + chrono::Duration::days(1),
            breakdown: serde_json::from_str(breakdown).unwrap(),
        },
    }
}

fn event(quote: Uuid, insurer: &str, version: u32, outcome: InsurerOutcome) -> QuoteEvent {
    QuoteEvent::new(quote, insurer, version, outcome, chrono::Utc::now())
}

#[tokio::test]
async fn a_round_answers_each_event_as_alone_in_the_order_given() {
    let (pool, _) = fresh_pool().await;
    let quote = stored_quote(&pool, &["alfa", "vsk"]).await;
    let not_stored = Uuid::new_v4();
    let first = event(quote, "alfa", 1, offer("ALFA-1"));
    let mut replayed = first.clone();
    replayed.occurred_at += chrono::Duration::seconds(1);
    let round = [
        first.clone(),
        replayed,                                              // the same event id again
        event(quote, "alfa", 1, InsurerOutcome::Pending),      // a new id, an old version
        event(quote, "reso", 1, InsurerOutcome::Pending),      // not one of the quote's
        event(not_stored, "alfa", 1, InsurerOutcome::Pending), // its quote comes later
        event(quote, "vsk", 1, InsurerOutcome::Declined { reason: "no".into() }),
        event(quote, "alfa", 2, InsurerOutcome::Failed { reason: "late".into() }), // after complete
        event(quote, "reso", 2, InsurerOutcome::Pending),                          // nor one of its insurers
    ];
    let applied = store::apply_all(&pool, &round.iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(
        applied,
        [
            Applied::Stored { seq: 1, completed: false },
            Applied::Duplicate,
            Applied::Stale,
            Applied::UnknownInsurer,
            Applied::Early,
            Applied::Stored { seq: 2, completed: true },
            Applied::Late,
            Applied::Late,
        ]
    );
    let log: Vec<(i64, String)> =
        store::events_after(&pool, quote, 0, 10).await.unwrap().into_iter().map(|e| (e.seq, e.name)).collect();
    assert_eq!(log, [(1, "offer".into()), (2, "status".into()), (3, "complete".into())]);
    let (next_seq, completed): (i64, bool) =
        sqlx::query_as("SELECT next_seq, completed_at IS NOT NULL FROM quotes WHERE id = $1")
            .bind(quote)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((next_seq, completed), (4, true));
    let view = store::view(&pool, quote).await.unwrap().unwrap();
    let states: Vec<&str> = view.insurers.iter().map(|i| i.status.as_str()).collect();
    assert_eq!(states, ["offer", "declined"], "the stale and late events changed nothing");
    let early: Vec<Uuid> = sqlx::query_scalar("SELECT quote_id FROM early_events").fetch_all(&pool).await.unwrap();
    assert_eq!(early, [not_stored]);
}

#[tokio::test]
async fn a_stored_event_is_pushed_as_the_log_keeps_it_and_a_large_one_as_the_quote_alone() {
    let (pool, url) = fresh_pool().await;
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen(store::CHANNEL).await.unwrap();
    let quote = stored_quote(&pool, &["alfa", "vsk"]).await;
    let large = "R".repeat(9000);
    let round = [event(quote, "alfa", 1, offer("ALFA-1")), event(quote, "vsk", 1, offer(&large))];
    store::apply_all(&pool, &round.iter().collect::<Vec<_>>()).await.unwrap();
    let mut pushed = Vec::new();
    while pushed.len() < 3 {
        let note = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        pushed.push(store::parse_push(note.payload()).unwrap());
    }
    let log = store::events_after(&pool, quote, 0, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(pushed[0], (quote, Some(log[0].clone())), "the offer's text is the log's");
    assert_eq!(pushed[1], (quote, None), "too large for a notification: streams read the log");
    assert!(log[1].data.contains(&large));
    assert_eq!(pushed[2], (quote, Some(log[2].clone())), "then complete");
    let offer: serde_json::Value = serde_json::from_str(&log[0].data).unwrap();
    assert_eq!(offer["insurer"], "alfa");
    assert_eq!(offer["display_name"], "ALFA");
    assert_eq!(offer["offer"]["insurer_reference"], "ALFA-1");
    assert!(offer.get("reason").is_none());
    let complete: serde_json::Value = serde_json::from_str(&log[2].data).unwrap();
    assert_eq!((complete["offers"].as_i64(), complete["insurers"].as_i64()), (Some(2), Some(2)));
}

#[tokio::test]
async fn a_round_numbers_each_quotes_events_in_order_and_completes_the_finished_ones() {
    let (pool, url) = fresh_pool().await;
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen(store::CHANNEL).await.unwrap();
    let open = stored_quote(&pool, &["alfa", "reso", "vsk"]).await;
    let done = stored_quote(&pool, &["alfa", "vsk"]).await;
    // Two quotes' events interleaved, as a consumer round gets them from several partitions.
    let round = [
        event(open, "alfa", 1, offer("A-1")),
        event(done, "vsk", 1, InsurerOutcome::Declined { reason: "no".into() }),
        event(open, "vsk", 1, InsurerOutcome::Pending),
        event(done, "alfa", 1, offer("A-2")),
        event(open, "reso", 2, InsurerOutcome::Failed { reason: "down".into() }),
    ];
    let applied = store::apply_all(&pool, &round.iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(
        applied,
        [
            Applied::Stored { seq: 1, completed: false },
            Applied::Stored { seq: 1, completed: false },
            Applied::Stored { seq: 2, completed: false },
            Applied::Stored { seq: 2, completed: true },
            Applied::Stored { seq: 3, completed: false },
        ]
    );
    let names = |events: Vec<store::StoredEvent>| events.into_iter().map(|e| (e.seq, e.name)).collect::<Vec<_>>();
    let open_log = store::events_after(&pool, open, 0, 10).await.unwrap();
    assert_eq!(names(open_log.clone()), [(1, "offer".into()), (2, "status".into()), (3, "status".into())]);
    let done_log = store::events_after(&pool, done, 0, 10).await.unwrap();
    assert_eq!(names(done_log.clone()), [(1, "status".into()), (2, "offer".into()), (3, "complete".into())]);
    let complete: serde_json::Value = serde_json::from_str(&done_log[2].data).unwrap();
    let counts = (complete["quote_id"].as_str(), complete["offers"].as_i64(), complete["insurers"].as_i64());
    assert_eq!(
        counts,
        (Some(done.to_string().as_str()), Some(1), Some(2)),
        "as a round of one event makes it: {complete}"
    );
    let view = store::view(&pool, open).await.unwrap().unwrap();
    let states: Vec<&str> = view.insurers.iter().map(|i| i.status.as_str()).collect();
    assert_eq!(states, ["offer", "failed", "pending"], "alfa, reso, vsk");
    assert_eq!(view.status, "in_progress");
    assert_eq!(store::view(&pool, done).await.unwrap().unwrap().status, "complete");
    // Every event is pushed as the log keeps it, in order within its quote.
    let mut pushed: Vec<store::StoredEvent> = Vec::new();
    while pushed.len() < 6 {
        let note = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        let (quote, event) = store::parse_push(note.payload()).unwrap();
        let event = event.unwrap();
        let log = if quote == open { &open_log } else { &done_log };
        assert_eq!(Some(&event), log.iter().find(|e| e.seq == event.seq));
        assert!(pushed.iter().all(|p| !(log.contains(p) && p.seq > event.seq)), "pushed out of order");
        pushed.push(event);
    }
    // A later round against what this one stored: the versions it set stop an older event.
    let again = [event(open, "reso", 1, InsurerOutcome::Pending), event(open, "vsk", 2, offer("V-1"))];
    let applied = store::apply_all(&pool, &again.iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(applied, [Applied::Stale, Applied::Stored { seq: 4, completed: true }]);
}

#[tokio::test]
async fn expiry_numbers_a_status_for_each_pending_insurer_then_completes() {
    let (pool, _) = fresh_pool().await;
    let quote = quote_expiring_in(&pool, &["vsk", "alfa", "reso"], chrono::Duration::seconds(-1)).await;
    let offered = event(quote, "alfa", 1, offer("A-1"));
    assert_eq!(store::apply(&pool, &offered).await.unwrap(), Applied::Stored { seq: 1, completed: false });
    assert_eq!(store::expire_due(&pool, 10).await.unwrap(), [quote]);
    let log = store::events_after(&pool, quote, 0, 10).await.unwrap();
    let names: Vec<(i64, &str)> = log.iter().map(|e| (e.seq, e.name.as_str())).collect();
    assert_eq!(names, [(1, "offer"), (2, "status"), (3, "status"), (4, "complete")]);
    let expired: Vec<serde_json::Value> = log[1..3].iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert_eq!((expired[0]["insurer"].as_str(), expired[1]["insurer"].as_str()), (Some("reso"), Some("vsk")));
    assert!(expired.iter().all(|e| e["status"] == "expired" && e["reason"] == store::EXPIRED_REASON));
    let complete: serde_json::Value = serde_json::from_str(&log[3].data).unwrap();
    assert_eq!((complete["offers"].as_i64(), complete["insurers"].as_i64()), (Some(1), Some(3)));
    let next_seq: i64 =
        sqlx::query_scalar("SELECT next_seq FROM quotes WHERE id = $1").bind(quote).fetch_one(&pool).await.unwrap();
    assert_eq!(next_seq, 5);
    assert!(store::expire_due(&pool, 10).await.unwrap().is_empty(), "expired once");
    let late = event(quote, "vsk", 1, offer("V-1"));
    assert_eq!(store::apply(&pool, &late).await.unwrap(), Applied::Late);
}

/// The event's first look misses a quote being stored right now; it waits for the quote's
/// arrival lock, looks again, and takes the normal path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_waiting_for_its_quotes_arrival_lock_is_applied_once_the_quote_commits() {
    let (pool, _) = fresh_pool().await;
    let quote = Uuid::new_v4();
    let mut creating = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(store::arrival_lock(quote))
        .execute(&mut *creating)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO quotes (id, request_hash, deadline, expires_at)
         VALUES ($1, 'h', now() + interval '1 minute', now() + interval '1 minute')",
    )
    .bind(quote)
    .execute(&mut *creating)
    .await
    .unwrap();
    sqlx::query("INSERT INTO quote_insurers (quote_id, insurer, display_name) VALUES ($1, 'alfa', 'ALFA')")
        .bind(quote)
        .execute(&mut *creating)
        .await
        .unwrap();
    let applying = tokio::spawn({
        let (pool, offered) = (pool.clone(), event(quote, "alfa", 1, offer("A-1")));
        async move { store::apply(&pool, &offered).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!applying.is_finished(), "the event waits for the quote's arrival lock");
    creating.commit().await.unwrap();
    assert_eq!(applying.await.unwrap().unwrap(), Applied::Stored { seq: 1, completed: true });
    let early: i64 = sqlx::query_scalar("SELECT count(*) FROM early_events").fetch_one(&pool).await.unwrap();
    assert_eq!(early, 0, "not parked: the quote was there at the second look");
}

/// A session keeps the plans it makes at its first round, when a new database's tables are
/// nearly empty; there, a scan of a whole table or index looks as cheap as a lookup by key, and
/// the tables grow under the plan.
#[tokio::test]
async fn a_round_finds_its_rows_by_key_with_plans_made_while_the_tables_were_empty() {
    let (pool, url) = fresh_pool().await;
    // A new database, analysed while empty (and not again: autovacuum off).
    for table in ["quotes", "quote_insurers", "quote_events"] {
        let off = format!("ALTER TABLE {table} SET (autovacuum_enabled = false)");
        sqlx::query(&off).execute(&pool).await.unwrap();
    }
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    // A session as core-app's: its statements are planned once, at their first run, and kept.
    let options = core_app::store::session_options(PgConnectOptions::from_str(&url).unwrap());
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let insurers = ["alfa", "reso", "vsk", "sogaz", "ingos"];
    let quote = stored_quote(&pool, &insurers).await;
    // A round of four (decided as a set), then one of one (event by event): both paths plan.
    let round = |version| -> Vec<QuoteEvent> {
        insurers[..4].iter().map(|insurer| event(quote, insurer, version, InsurerOutcome::Pending)).collect()
    };
    let first = round(1);
    let applied = store::apply_all(&mut conn, &first.iter().collect::<Vec<_>>()).await.unwrap();
    assert!(applied.iter().all(|a| matches!(a, Applied::Stored { .. })), "{applied:?}");
    let alone = event(quote, "ingos", 1, InsurerOutcome::Pending);
    assert_eq!(store::apply_all(&mut conn, &[&alone]).await.unwrap(), [Applied::Stored { seq: 5, completed: false }]);
    // The tables grow (without an ANALYZE: autovacuum comes at its own time).
    for grow in [
        "INSERT INTO quote_events (quote_id, seq, event_id, name, data)
         SELECT $1, n, gen_random_uuid(), 'status', '{\"status\": \"pending\"}' FROM generate_series(6, 20005) n",
        "UPDATE quotes SET next_seq = 20006 WHERE id = $1",
        "INSERT INTO quotes (id, request_hash, deadline, expires_at)
         SELECT gen_random_uuid(), 'h', now() + interval '1 minute', now() + interval '1 minute'
         FROM generate_series(1, 20000) WHERE $1 IS NOT NULL",
        "INSERT INTO quote_insurers (quote_id, insurer, display_name)
         SELECT id, 'alfa', 'ALFA' FROM quotes WHERE id <> $1",
    ] {
        sqlx::query(grow).bind(quote).execute(&mut conn).await.unwrap();
    }

    let pages = "SELECT pg_stat_get_xact_blocks_fetched('quotes'::regclass)
                      + pg_stat_get_xact_blocks_fetched('quotes_pkey'::regclass)
                      + pg_stat_get_xact_blocks_fetched('quote_insurers'::regclass)
                      + pg_stat_get_xact_blocks_fetched('quote_insurers_pkey'::regclass)
                      + pg_stat_get_xact_blocks_fetched('quote_events'::regclass)
                      + pg_stat_get_xact_blocks_fetched('quote_events_pkey'::regclass)
                      + pg_stat_get_xact_blocks_fetched('quote_events_event_id_key'::regclass)";
    let next = round(2);
    let alone = event(quote, "ingos", 2, offer("INGOS-1"));
    let rounds: [(Vec<&QuoteEvent>, Vec<i64>); 2] =
        [(next.iter().collect(), vec![20006, 20007, 20008, 20009]), (vec![&alone], vec![20010])];
    for (events, seqs) in rounds {
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        let before: i64 = sqlx::query_scalar(pages).fetch_one(&mut *tx).await.unwrap();
        let applied = store::apply_all(&mut *tx, &events).await.unwrap();
        let reads = sqlx::query_scalar::<_, i64>(pages).fetch_one(&mut *tx).await.unwrap() - before;
        tx.commit().await.unwrap();
        assert_eq!(applied, seqs.iter().map(|&seq| Applied::Stored { seq, completed: false }).collect::<Vec<_>>());
        // By key, some tens of pages an event; a whole table or index read, thousands.
        let n = events.len() as i64;
        assert!(reads < 60 * n, "applying {n} events read {reads} pages of the quotes, their insurers and the log");
    }
}

#[tokio::test]
async fn a_services_session_plans_each_statement_of_a_round_once() {
    let (pool, url) = fresh_pool().await;
    // pg_stat_statements counts the plans of a function's statements for a session that asks
    // for it, and only a superuser may ask; the rounds run on that session, set up as core-app's.
    // (`create_quotes` runs on the tests' pool: only the rounds are counted.)
    let database = PgConnectOptions::from_str(&url).unwrap().get_database().unwrap().to_string();
    let admin = PgConnectOptions::from_str(&testkit::pg_admin_url()).unwrap().database(&database);
    let mut conn = PgConnection::connect_with(&core_app::store::session_options(admin)).await.unwrap();
    for setting in [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "SET pg_stat_statements.track = 'all'",
        "SET pg_stat_statements.track_planning = on",
    ] {
        sqlx::query(setting).execute(&mut conn).await.unwrap();
    }
    let quotes = 6;
    for _ in 0..quotes {
        let quote = stored_quote(&pool, &["alfa", "ingos", "reso", "sogaz", "vsk"]).await;
        // A round of one, event by event, then one of four, decided as a set, which completes
        // the quote.
        let alone = event(quote, "alfa", 1, offer("ALFA-1"));
        let rest = ["ingos", "reso", "sogaz", "vsk"].map(|insurer| event(quote, insurer, 1, offer("OFFER-1")));
        for round in [vec![&alone], rest.iter().collect()] {
            let applied = store::apply_all(&mut conn, &round).await.unwrap();
            assert!(applied.iter().all(|a| matches!(a, Applied::Stored { .. })), "{applied:?}");
        }
    }

    let statements: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT query, calls, plans FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_all(&mut conn)
    .await
    .expect("pg_stat_statements is preloaded by scripts/infra.sh");
    for write in ["WITH insurer AS", "WITH entry AS"] {
        let found = statements.iter().find(|(query, ..)| query.starts_with(write));
        let once_a_round_planned_once = found.is_some_and(|&(_, calls, plans)| calls == quotes && plans == 1);
        assert!(once_a_round_planned_once, "{write}…, run once a round, planned once: {statements:?}");
    }
    // PL/pgSQL's simple expressions are planned once each and never run as statements: every
    // literal `out_applied := ...` counts as one more plan of the same text.
    let replanned: Vec<_> = statements.iter().filter(|&&(_, calls, plans)| calls > 0 && plans > 1).collect();
    assert!(replanned.is_empty(), "statements planned more than once: {replanned:?}");
}

#[tokio::test]
async fn analyze_keeps_no_statistics_of_the_json_payloads() {
    // An autovacuum's ANALYZE of them was a third of a core for a second under load (0007).
    let (pool, _) = fresh_pool().await;
    let quote = stored_quote(&pool, &["alfa", "reso"]).await;
    let events = [event(quote, "alfa", 1, offer("A-1")), event(quote, "reso", 1, offer("R-1"))];
    store::apply_all(&mut *pool.acquire().await.unwrap(), &events.iter().collect::<Vec<_>>()).await.unwrap();
    let columns = testkit::analyzed_columns(&pool, "quote_events").await;
    assert!(columns.contains(&"quote_id".to_string()), "{columns:?}");
    assert!(!columns.contains(&"data".to_string()), "{columns:?}");
    let columns = testkit::analyzed_columns(&pool, "quote_insurers").await;
    assert!(columns.contains(&"insurer".to_string()), "{columns:?}");
    assert!(!columns.contains(&"offer".to_string()), "{columns:?}");
}
