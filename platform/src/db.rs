//! Postgres pools, opened the same way by every service (and by the tests that run them).

use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

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
