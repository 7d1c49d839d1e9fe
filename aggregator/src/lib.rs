//! The aggregator: partner intake API, per-insurer pollers, and the transactional outbox
//! relay to Kafka.

pub mod app;
pub mod clients;
pub mod db;
pub mod intake;
pub mod outbox;
pub mod partners;
pub mod poller;
pub mod registry;
pub mod relay;
pub mod retention;
