//! What each SQL statement costs per quote, from `pg_stat_statements` (`bench profile`).
//!
//! A flamegraph of a Postgres backend says which executor nodes burn CPU, not which of the
//! services' statements they belong to; this table does. `scripts/infra.sh` preloads the
//! module with tracking off, so the other benchmarks pay nothing for it; the profile turns
//! tracking on for its phase only (`ALTER SYSTEM`, so every backend of the stack follows).

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::fmt::Write;

/// Statements listed per database.
const TOP: i64 = 12;

/// Tracking turned on for one phase, until [`Tracking::turn_off`].
pub struct Tracking {
    admin: PgPool,
}

/// One database's statements, costliest first.
#[derive(sqlx::FromRow)]
struct Row {
    calls: i64,
    total_ms: f64,
    rows: i64,
    /// Shared buffers the statement touched, found in the cache or read.
    buffers: i64,
    wal_bytes: f64,
    /// Times the statement was planned, and the time that took: a statement planned at
    /// every call got custom plans (the plan cache found them cheaper than its generic one).
    plans: i64,
    plan_ms: f64,
    query: String,
    /// The database's executor time over all its statements.
    db_ms: f64,
}

impl Tracking {
    /// Clears the statistics and starts tracking top-level statements; `None` (with the
    /// reason) when the cluster was started without the module, e.g. before `scripts/infra.sh`
    /// preloaded it.
    pub async fn start(admin_url: &str) -> Result<Self, String> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .map_err(|e| format!("cannot connect as the superuser: {e}"))?;
        let preloaded: String = sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(&admin)
            .await
            .map_err(|e| e.to_string())?;
        if !preloaded.split(',').any(|l| l.trim() == "pg_stat_statements") {
            return Err("pg_stat_statements is not preloaded; restart Postgres with scripts/infra.sh".into());
        }
        let tracking = Self { admin };
        for sql in [
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
            "ALTER SYSTEM SET pg_stat_statements.track = 'top'",
            "ALTER SYSTEM SET pg_stat_statements.track_planning = on",
            "SELECT pg_reload_conf()",
            "SELECT pg_stat_statements_reset()",
        ] {
            if let Err(e) = sqlx::query(sql).execute(&tracking.admin).await {
                tracking.turn_off().await;
                return Err(format!("{sql}: {e}"));
            }
        }
        Ok(tracking)
    }

    /// Turns tracking off if a profile that was killed left it on (`ALTER SYSTEM` outlives
    /// the run, and `postgresql.auto.conf` overrides `scripts/infra.sh`'s setting).
    pub async fn ensure_off(admin_url: &str) {
        if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(admin_url).await {
            let on: Option<String> = sqlx::query_scalar("SELECT current_setting('pg_stat_statements.track', true)")
                .fetch_one(&admin)
                .await
                .ok()
                .flatten();
            if on.is_some_and(|track| track != "none") {
                eprintln!("==> turning off pg_stat_statements tracking a killed profile left on");
                Self { admin }.turn_off().await;
            }
        }
    }

    /// A Markdown table per database of `databases` (label, name): calls, executor time, buffers
    /// and WAL of its costliest statements. Buffers per call depend on the data, not on how busy
    /// the machine is, so they compare runs that CPU and time cannot.
    pub async fn report(&self, databases: &[(&str, &str)], quotes: usize) -> anyhow::Result<String> {
        let per_quote = 1.0 / quotes.max(1) as f64;
        let mut out = format!(
            "Executor time (not CPU: it includes waits, and leaves out parsing, planning, commits and \
             the protocol) per statement, over {quotes} quotes; planning counted apart.\n"
        );
        for (label, name) in databases {
            let rows: Vec<Row> = sqlx::query_as(
                "WITH s AS (
                     SELECT s.calls, s.total_exec_time AS total_ms, s.rows, s.wal_bytes::float8 AS wal_bytes,
                            s.shared_blks_hit + s.shared_blks_read AS buffers,
                            s.plans, s.total_plan_time AS plan_ms,
                            regexp_replace(s.query, '\\s+', ' ', 'g') AS query
                     FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                     WHERE d.datname = $1
                 )
                 SELECT s.*, sum(total_ms) OVER () AS db_ms FROM s ORDER BY total_ms DESC LIMIT $2",
            )
            .bind(name)
            .bind(TOP)
            .fetch_all(&self.admin)
            .await?;
            let db_ms = rows.first().map_or(0.0, |r| r.db_ms);
            writeln!(out, "\n### {label}: {:.2} executor-ms per quote\n", db_ms * per_quote)?;
            writeln!(
                out,
                "| calls/quote | µs/call | ms/quote | share | rows/call | buffers/call | WAL B/quote | plans/call | \
                 µs/plan | statement |"
            )?;
            writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
            for r in rows {
                let calls = r.calls.max(1) as f64;
                let query: String = r.query.chars().take(140).collect();
                writeln!(
                    out,
                    "| {:.2} | {:.0} | {:.3} | {:.1} % | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} | `{}` |",
                    r.calls as f64 * per_quote,
                    r.total_ms * 1000.0 / calls,
                    r.total_ms * per_quote,
                    100.0 * r.total_ms / db_ms.max(f64::EPSILON),
                    r.rows as f64 / calls,
                    r.buffers as f64 / calls,
                    r.wal_bytes * per_quote,
                    r.plans as f64 / calls,
                    r.plan_ms * 1000.0 / r.plans.max(1) as f64,
                    query.replace('|', "\\|").replace('`', "'"),
                )?;
            }
        }
        Ok(out)
    }

    /// Stops counting, keeping what was counted for [`Tracking::report`]; also how a profile
    /// that failed or a killed one's leftover is turned off.
    pub async fn turn_off(&self) {
        for sql in [
            "ALTER SYSTEM RESET pg_stat_statements.track",
            "ALTER SYSTEM RESET pg_stat_statements.track_planning",
            "SELECT pg_reload_conf()",
        ] {
            if let Err(e) = sqlx::query(sql).execute(&self.admin).await {
                eprintln!("warning: {sql}: {e}");
            }
        }
    }
}
