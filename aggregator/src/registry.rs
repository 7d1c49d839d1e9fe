//! The registry of insurers with a live poller: pollers register and renew a heartbeat;
//! intake assigns tasks only to insurers alive within [`ALIVE_WITHIN`] and not suspended.

use serde::Serialize;
use sqlx::PgPool;
use std::sync::LazyLock;
use std::time::Duration;

/// How often a poller renews its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A poller silent for longer than this is taken for dead.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(30);
/// NOTIFY channel intake signals with an insurer's name when it has new tasks.
pub const TASKS_CHANNEL: &str = "osago_tasks";

/// An insurer as intake and the insurers API see it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ActiveInsurer {
    pub name: String,
    pub display_name: String,
    pub breaker_state: String,
    /// When this insurer last made an offer (the operator shows it in `kubectl get insurers`).
    pub last_offer_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip)]
    pub quote_timeout_ms: i32,
}

/// Registers the insurer or renews its heartbeat, with its current settings.
pub async fn heartbeat(
    pool: &PgPool,
    name: &str,
    display_name: &str,
    suspended: bool,
    breaker_state: &str,
    quote_timeout: Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO insurers (name, display_name, suspended, breaker_state, quote_timeout_ms, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (name) DO UPDATE SET display_name = EXCLUDED.display_name, suspended = EXCLUDED.suspended,
             breaker_state = EXCLUDED.breaker_state, quote_timeout_ms = EXCLUDED.quote_timeout_ms, heartbeat_at = now()",
    )
    .bind(name)
    .bind(display_name)
    .bind(suspended)
    .bind(breaker_state)
    .bind(i32::try_from(quote_timeout.as_millis()).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// The condition on `insurers` rows that can take work: not suspended, heard from within
/// [`ALIVE_WITHIN`]. Intake writes it into its own statement.
pub static ALIVE: LazyLock<String> = LazyLock::new(|| {
    format!("NOT suspended AND heartbeat_at > now() - interval '{} milliseconds'", ALIVE_WITHIN.as_millis())
});

/// Insurers that can take work now, by name.
pub async fn active<'e>(db: impl sqlx::PgExecutor<'e>) -> sqlx::Result<Vec<ActiveInsurer>> {
    let sql = format!(
        "SELECT name, display_name, breaker_state, quote_timeout_ms,
                (SELECT max(t.updated_at) FROM tasks t
                 WHERE t.insurer = insurers.name AND t.status = 'offer') AS last_offer_at
         FROM insurers WHERE {} ORDER BY name",
        *ALIVE
    );
    sqlx::query_as(&sql).fetch_all(db).await
}
