//! The aggregator's database schema, applied by embedded sqlx migrations.

/// Every migration in `aggregator/migrations`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
