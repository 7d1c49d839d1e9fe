//! Postgres pools, opened the same way by every service (and by the tests that run them).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};

/// A pooled connection used within this long is handed out without a ping (HikariCP's
/// `aliveBypassWindowMs` has the same idea and value).
pub const TRUSTED_FOR: Duration = Duration::from_millis(500);

/// Pool options with at most `max` connections. sqlx would ping every connection before
/// handing it out — one more round trip for each statement run on a pool, which on a busy
/// service is most of them. Only connections idle for longer than [`TRUSTED_FOR`] are
/// pinged here, so a restarted Postgres is still noticed before a request fails; a busy
/// connection that breaks fails its statement, which the callers retry or answer with 503.
pub fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max).test_before_acquire(false).before_acquire(|conn, meta| {
        Box::pin(async move {
            if meta.idle_for < TRUSTED_FOR {
                return Ok(true);
            }
            conn.ping().await.map(|()| true)
        })
    })
}

/// Session settings for a service whose statements find their rows by key or index, each planned
/// once per connection. (A migration that rewrites data row by row would want its own session.)
///
/// - `enable_seqscan = off`: a generic plan is kept until the next ANALYZE of its tables, and on
///   a new database one made while a table was a few pages read it whole — cheapest then, and
///   kept while the table grew by thousands of rows a second (the pollers' claims; core-app's
///   replay reads, its quote creation and foreign-key checks, each a sequential scan in one
///   profile at 140 quotes/s). A statement with no index to use still
///   gets its sequential scan.
/// - `plan_cache_mode = force_generic_plan`: left to itself, the plan cache plans a statement
///   anew at every run for as long as its generic plan is estimated dearer than the average of
///   the custom plans made so far, and it may never settle: the pollers' batch of outcomes
///   (its arrays' sizes made every custom plan look cheaper) and core-app's write of an event
///   (a quarter of its database's CPU in one profile, planning) were planned at every call.
pub fn planned_by_key(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("enable_seqscan", "off"), ("plan_cache_mode", "force_generic_plan")])
}

/// One connection to a pool's database, kept aside for a caller that runs one statement at a
/// time (a loop, a group commit with one batch in flight). sqlx pings every connection a pool
/// takes back, a round trip after each statement: 3–7 % of a poller's CPU and 5 % of
/// core-app's at 110 quotes/s. Its prepared statements live on one backend too, planned once
/// there instead of on each of the pool's connections.
pub struct Dedicated {
    pool: PgPool,
    /// The connection and when it was last used.
    conn: tokio::sync::Mutex<Option<(PgConnection, Instant)>>,
}

impl Dedicated {
    /// Takes its connection from `pool` at the first [`Dedicated::run`].
    pub fn of(pool: &PgPool) -> Self {
        Self { pool: pool.clone(), conn: tokio::sync::Mutex::new(None) }
    }

    /// Runs `work` on the connection. A new one is taken out of the pool (its acquire timeout,
    /// its retries while Postgres starts up, its check of an idle connection), and one idle for
    /// longer than [`TRUSTED_FOR`] is pinged first, as the pool would. A failed run drops the
    /// connection, so a broken one is never used twice (a statement cut off midway is not a
    /// failure: sqlx waits for its end before the next one).
    pub async fn run<T>(&self, work: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>) -> sqlx::Result<T> {
        let mut held = self.conn.lock().await;
        let mut conn = match held.take() {
            Some((mut conn, used)) if used.elapsed() >= TRUSTED_FOR => match conn.ping().await {
                Ok(()) => conn,
                Err(_) => self.pool.acquire().await?.detach(),
            },
            Some((conn, _)) => conn,
            None => self.pool.acquire().await?.detach(),
        };
        let result = work(&mut conn).await;
        if result.is_ok() {
            *held = Some((conn, Instant::now()));
        }
        result
    }
}
