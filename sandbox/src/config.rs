//! The sandbox's configuration file: one `[[insurer]]` table per fake insurer ("personality").

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The whole sandbox: a seed and the insurers it plays.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Makes every sampled latency, error and reference reproducible.
    #[serde(default)]
    pub seed: u64,
    #[serde(rename = "insurer")]
    pub insurers: Vec<Personality>,
}

impl Config {
    /// Reads and checks a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for p in &self.insurers {
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                return Err(format!("insurer name '{}' must be lower-case letters, digits and hyphens", p.name));
            }
            if !names.insert(&p.name) {
                return Err(format!("insurer '{}' is configured twice", p.name));
            }
            if !(0.0..=1.0).contains(&p.base_rate_position) {
                return Err(format!("{}: base_rate_position must be within 0..=1", p.name));
            }
            p.faults.check().map_err(|e| format!("{}: {e}", p.name))?;
        }
        Ok(())
    }
}

/// One fake insurer: who it is, how its API looks, how it prices and misbehaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Personality {
    /// Path prefix and resource name, e.g. `alfa` → `http://sandbox/alfa/...`.
    pub name: String,
    pub display_name: String,
    pub style: ApiStyle,
    #[serde(default)]
    pub auth: Auth,
    /// Where this insurer sets its base rate within the Bank of Russia corridor (0 = floor, 1 = ceiling).
    pub base_rate_position: f64,
    /// How long the create call takes.
    #[serde(default = "Latency::fast")]
    pub create_latency: Latency,
    /// How long after creation the offer (or decline) is ready.
    #[serde(default = "Latency::typical_offer")]
    pub offer_latency: Latency,
    /// How long an offer's price holds.
    #[serde(default = "default_validity", with = "humantime_serde")]
    pub offer_validity: Duration,
    #[serde(default)]
    pub decline: DeclineRules,
    /// Initial faults; the control API changes them at run time.
    #[serde(default)]
    pub faults: Faults,
}

fn default_validity() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The partner API shapes: three seen in the wild (see OSAGO_REFERENCE.md), and one only `mapped` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiStyle {
    /// `POST /v1/calculate`, then `GET /v1/calculate?request_id=` with a calculation status enum.
    CreatePoll,
    /// `POST /api/quotes` → 202 with an operation `href`, polled until `done`.
    Operation,
    /// `POST /contracts`, `POST /contracts/{id}/offers`, then `GET /contracts/{id}/offers`.
    OffersList,
    /// JSON-RPC 2.0 at `POST /rpc`, unlike any built-in client: only the `mapped` style speaks it.
    Rpc,
}

/// How callers authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// A static key in a named header, e.g. `X-Api-Key`.
    Header { header: String, key: String },
}

/// A latency distribution: log-normal through `median` and `p99`, which is what service
/// latencies look like; `median == p99` gives a constant.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    #[serde(with = "humantime_serde")]
    pub median: Duration,
    #[serde(with = "humantime_serde")]
    pub p99: Duration,
}

impl Latency {
    /// A constant latency.
    pub fn constant(d: Duration) -> Self {
        Latency { median: d, p99: d }
    }
    fn fast() -> Self {
        Latency { median: Duration::from_millis(30), p99: Duration::from_millis(150) }
    }
    fn typical_offer() -> Self {
        Latency { median: Duration::from_millis(1500), p99: Duration::from_secs(6) }
    }
}

/// Underwriting rules: when this insurer refuses to quote.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeclineRules {
    /// Decline when any listed driver is younger (years at policy start).
    pub min_driver_age: Option<u32>,
    /// Decline when the car is older (years at policy start).
    pub max_vehicle_age: Option<u32>,
    /// Decline unlimited-drivers policies.
    #[serde(default)]
    pub unlimited_drivers: bool,
    /// Decline owners registered in these regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Decline taxis.
    #[serde(default)]
    pub taxi: bool,
}

/// Misbehaviour, changeable at run time through the control API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of calls (0..=1) answered with a 500 in the style's error format.
    pub error_rate: f64,
    /// Every call answers 503: the insurer is down.
    pub outage: bool,
    /// Every call hangs without answering until the caller gives up.
    pub hang: bool,
    /// Requests per second this insurer accepts before answering 429 with Retry-After.
    pub rate_limit_rps: Option<u32>,
    /// Burst allowed above the rate.
    pub rate_limit_burst: Option<u32>,
    /// Multiplies offer latency: 10 makes offers ten times slower.
    pub slowdown: f64,
    /// Share of calculations (0..=1) that end in a calculation error instead of an offer.
    pub calculation_error_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            outage: false,
            hang: false,
            rate_limit_rps: None,
            rate_limit_burst: None,
            slowdown: 1.0,
            calculation_error_rate: 0.0,
        }
    }
}

impl Faults {
    /// Rejects values that cannot mean anything.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) || !(0.0..=1.0).contains(&self.calculation_error_rate) {
            return Err("error rates must be within 0..=1".into());
        }
        if !(self.slowdown > 0.0 && self.slowdown.is_finite()) {
            return Err("slowdown must be a positive number".into());
        }
        if self.rate_limit_rps == Some(0) || self.rate_limit_burst == Some(0) {
            return Err("rate_limit_rps and rate_limit_burst must be positive".into());
        }
        Ok(())
    }
}
