//! Logging: human-readable on a terminal, JSON lines otherwise (or with `LOG_FORMAT=json`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Initialises the global subscriber; `RUST_LOG` filters (default `info`).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("LOG_FORMAT") {
        Ok(v) => v == "json",
        Err(_) => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    if result.is_ok() {
        tracing::info!(service, "logging initialised");
    }
}
