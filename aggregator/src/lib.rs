//! The aggregator: partner intake API, per-insurer pollers, and the transactional outbox
//! relay to Kafka. This crate holds its database schema today; the quote-flow issue adds
//! the services.

pub mod db;
