//! The state of a stack's tables around a phase: dead rows and autovacuum runs.
//!
//! A stack driven past its limit leaves a backlog of dead row versions behind; a phase that
//! follows on the same stack pays for them (longer index scans, autovacuum's CPU). Recording
//! them tells a phase that broke on its own from one that inherited a mess.

use serde::{Deserialize, Serialize};
use sqlx::Connection;

/// How the report names core-app's database.
pub const CORE_DB: &str = "core-app database";
/// How the report names the aggregator's database.
pub const AGGREGATOR_DB: &str = "aggregator database";

/// One database's user tables, summed, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    pub live_rows: i64,
    pub dead_rows: i64,
    /// Autovacuum and autoanalyze runs so far (they count from the database's creation).
    pub autovacuums: i64,
}

/// What a phase left in one database: the state at its end, and autovacuum runs during it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Left {
    pub live_rows: i64,
    pub dead_rows: i64,
    pub autovacuums: i64,
}

impl Left {
    /// From the states before and after a phase.
    pub fn between(before: Tables, after: Tables) -> Left {
        Left {
            live_rows: after.live_rows,
            dead_rows: after.dead_rows,
            autovacuums: (after.autovacuums - before.autovacuums).max(0),
        }
    }
}

/// The database at `url`'s tables now; `None` when it cannot be read (the phase goes on without).
pub async fn read(url: &str) -> Option<Tables> {
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    // Statistics reach the shared counters at most a second late; this reads what is there.
    let row: (i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(n_live_tup), 0)::int8, coalesce(sum(n_dead_tup), 0)::int8,
                coalesce(sum(autovacuum_count + autoanalyze_count), 0)::int8
         FROM pg_stat_user_tables",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    Some(Tables { live_rows: row.0, dead_rows: row.1, autovacuums: row.2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_counts_the_autovacuum_runs_it_saw_and_keeps_the_rows_it_left() {
        let before = Tables { live_rows: 10, dead_rows: 400, autovacuums: 3 };
        let after = Tables { live_rows: 900, dead_rows: 50, autovacuums: 5 };
        assert_eq!(Left::between(before, after), Left { live_rows: 900, dead_rows: 50, autovacuums: 2 });
        // Counters reset (a statistics reset) read as no runs, not a negative count.
        assert_eq!(Left::between(after, before).autovacuums, 0);
    }
}
