//! Test helpers for integration tests against the real local infrastructure started by
//! `make infra-up` (`scripts/infra.sh`): every test gets its own database or topic, so
//! tests run in parallel and leave nothing behind that another test could see.

pub mod otlp;
pub mod sse;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The role URL of the local cluster; the role may create databases.
pub fn pg_url() -> String {
    std::env::var("OSAGO_PG_URL").unwrap_or_else(|_| "postgres://osago:osago@127.0.0.1:55432/osago".into())
}

/// The cluster's superuser URL (`scripts/infra.sh env` exports it), for what only a superuser
/// may do: load an extension, set a superuser-only setting.
pub fn pg_admin_url() -> String {
    std::env::var("OSAGO_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:55432/postgres".into())
}

/// The Kafka bootstrap servers of the local broker.
pub fn kafka_brokers() -> String {
    std::env::var("OSAGO_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:59092".into())
}

/// A name no other test uses: `prefix_` and 12 hex digits.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A free TCP port on 127.0.0.1 for a process a test is about to start. It is taken from below
/// the kernel's ephemeral range (32768 and up by default): a port that `bind(0)` hands out can
/// go to an outgoing connection before the child binds it, which then fails with "Address
/// already in use".
pub fn free_port() -> u16 {
    const LOW: u128 = 20_000;
    const SPAN: u128 = 12_000;
    loop {
        let port = (LOW + uuid::Uuid::new_v4().as_u128() % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A new, empty database on the local cluster, and a pool connected to it. It is named
/// `t<unix seconds>_<prefix>_<hex>` and kept after the test, to look at when one fails; the
/// first test of a later process drops those of earlier runs (see [`drop_test_databases`]).
///
/// Panics with a pointer to `make infra-up` when the cluster is not running: these tests
/// are meant to fail loudly, not to skip, when their infrastructure is missing.
pub async fn fresh_database(prefix: &str) -> (PgPool, String) {
    let url = pg_url();
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Postgres at {url}: {e}; start it with `make infra-up`"));
    static PRUNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !PRUNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        drop_test_databases(&mut admin, LEFT_OVER_AFTER).await;
    }
    let name = unique_name(&format!("t{}_{prefix}", unix_now().as_secs()));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let options = PgConnectOptions::from_str(&url).expect("OSAGO_PG_URL").database(&name);
    let db_url = options.to_url_lossy().to_string();
    let pool = platform::db::pool_options(8).connect_with(options).await.expect("connect to the new database");
    (pool, db_url)
}

/// A test database older than this was left by an earlier run: no test runs this long.
const LEFT_OVER_AFTER: Duration = Duration::from_secs(30 * 60);

/// Drops the test databases created more than `older_than` ago, and says how many went.
/// Left to pile up, they cost more than disk: the autovacuum launcher visits every database
/// once a minute, each visit a new backend, and on a cluster with two thousand of them that
/// was a steady fifth of a core under the benchmarks. A database still in use refuses the
/// drop, and is left.
pub async fn drop_test_databases(admin: &mut sqlx::PgConnection, older_than: Duration) -> usize {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname ~ '^t[0-9]+_'")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(older_than).as_secs();
    let old: Vec<String> = names.into_iter().filter(|n| created_at(n).is_some_and(|at| at <= cutoff)).collect();
    if old.is_empty() {
        return 0;
    }
    eprintln!("testkit: dropping {} test databases left by earlier runs", old.len());
    let mut dropped = 0;
    for name in old {
        if sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut *admin).await.is_ok() {
            dropped += 1;
        }
    }
    dropped
}

/// When a test database was created, from its name.
fn created_at(name: &str) -> Option<u64> {
    name.strip_prefix('t')?.split('_').next()?.parse().ok()
}

fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// A new topic with `partitions` partitions on the local broker.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    let brokers = kafka_brokers();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("admin client");
    let name = unique_name(prefix);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))], &options)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Kafka at {brokers}: {e}; start it with `make infra-up`"));
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic}: {code}"));
    }
    name
}

/// Polls `check` every 50 ms until it holds; panics after `limit`. Returns the time it took.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The columns of `table` that `ANALYZE` keeps statistics of, after analysing it now.
pub async fn analyzed_columns(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query(&format!("ANALYZE {table}")).execute(pool).await.expect("analyze");
    sqlx::query_scalar("SELECT attname::text FROM pg_stats WHERE schemaname = 'public' AND tablename = $1 ORDER BY 1")
        .bind(table)
        .fetch_all(pool)
        .await
        .expect("pg_stats")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_test_databases_name_tells_its_age() {
        assert_eq!(super::created_at("t1764535000_agg_0123456789ab"), Some(1_764_535_000));
        assert_eq!(super::created_at("agg_0123456789ab"), None);
        assert_eq!(super::created_at("tasks_x"), None);
    }
}
