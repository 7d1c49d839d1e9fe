//! The pool policy against the real local Postgres: a connection idle for longer than
//! `TRUSTED_FOR` is checked before it is handed out (a backend that died meanwhile costs no
//! failed statement); one used just now is handed out unchecked (no extra round trip). A
//! dedicated connection keeps its backend, and gets a new one after any failure.

use platform::db::{Dedicated, TRUSTED_FOR, pool_options};
use sqlx::PgPool;

/// A pool of one connection and that connection's backend pid.
async fn one_connection() -> (PgPool, i32) {
    let (_, url) = testkit::fresh_database("pool").await;
    let pool = pool_options(1).connect(&url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.unwrap();
    (pool, pid)
}

async fn kill(pid: i32) {
    let admin = sqlx::PgPool::connect(&testkit::pg_url()).await.unwrap();
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)").bind(pid).fetch_one(&admin).await.unwrap();
    assert!(killed);
}

#[tokio::test]
async fn an_idle_connection_is_checked_and_replaced_when_its_backend_died() {
    let (pool, pid) = one_connection().await;
    kill(pid).await;
    tokio::time::sleep(TRUSTED_FOR + TRUSTED_FOR / 2).await;
    let now: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.expect("a fresh connection");
    assert_ne!(now, pid, "the dead connection was replaced");
}

#[tokio::test]
async fn a_connection_used_just_now_is_handed_out_without_a_ping() {
    let (pool, _) = one_connection().await;
    // A busy machine may take longer than the window between the last use and the next:
    // such a try proves nothing, so it is repeated.
    for _ in 0..5 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.unwrap();
        let used = std::time::Instant::now();
        kill(pid).await;
        let first = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&pool).await;
        if used.elapsed() >= TRUSTED_FOR {
            continue;
        }
        // Within the window the dead connection is trusted: its statement fails (and the
        // connection is dropped), which is what saves the round trip on every other acquire.
        let Err(error) = first else { panic!("handed out unchecked: {first:?}") };
        // The statement failed because the server ended the connection: "retry", not "broken".
        let problem = platform::Problem::database(error);
        assert_eq!((problem.status, problem.retry_after.is_some()), (503, true), "{problem:?}");
        let next: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.expect("reconnected");
        assert_ne!(next, pid);
        return;
    }
    panic!("never got to use a connection within {TRUSTED_FOR:?} of its last use");
}

#[tokio::test]
async fn a_dedicated_connection_keeps_its_backend_and_replaces_it_after_a_failure() {
    let (pool, _) = one_connection().await;
    let dedicated = Dedicated::of(&pool);
    let pid = async |d: &Dedicated| {
        d.run(async |conn| sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(conn).await).await
    };
    let first = pid(&dedicated).await.unwrap();
    for _ in 0..3 {
        assert_eq!(pid(&dedicated).await.unwrap(), first, "one backend for every run");
    }
    kill(first).await;
    // Used just now, the dead connection is trusted and its statement fails; on a machine slow
    // enough to let it idle past `TRUSTED_FOR`, the ping finds it dead and the run gets a new one.
    if let Ok(now) = pid(&dedicated).await {
        assert_ne!(now, first, "checked after idling, and replaced");
    }
    let next = pid(&dedicated).await.expect("a new connection after the failure");
    assert_ne!(next, first);
    // A statement the server refuses drops the connection too; the next run works.
    let refused = dedicated.run(async |conn| sqlx::query("SELECT 1/0").execute(conn).await).await;
    assert!(refused.is_err());
    assert_ne!(pid(&dedicated).await.unwrap(), next);
}
