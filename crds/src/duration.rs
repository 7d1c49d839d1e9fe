//! Durations written the Kubernetes way (`500ms`, `2s`, `1m`) in specs.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// What the CRD accepts: one or more `<digits><unit>` with units ms, s, m, h — both this
/// parser (humantime) and the API server's CEL `duration()` read these the same way.
pub const PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// A positive duration that reads and writes as a Kubernetes-style string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    /// Milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    /// The standard-library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
    /// Parses `500ms`, `2s`, `1m30s`; zero is refused (every duration here is a limit or a wait).
    pub fn parse(text: &str) -> Result<Self, String> {
        if !matches_pattern(text) {
            return Err(format!("'{text}' is not a duration like 500ms, 2s, 1m or 1m30s"));
        }
        let d = humantime::parse_duration(text)
            .map_err(|e| format!("'{text}' is not a duration like 500ms, 2s or 1m: {e}"))?;
        if d.is_zero() {
            return Err(format!("'{text}' must be positive"));
        }
        Ok(Duration(d))
    }
}

/// Whether `text` matches [`PATTERN`] (no regex engine for one pattern).
fn matches_pattern(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h"].into_iter().find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// The shortest exact Kubernetes-style form: `1m`, `90s`, `1500ms`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match (ms % 1000, (ms / 1000) % 60) {
            (0, 0) if ms > 0 => write!(f, "{}m", ms / 60_000),
            (0, _) => write!(f, "{}s", ms / 1000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string with [`PATTERN`] and a CEL rule that it is positive.
impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be a positive duration like 500ms, 2s or 1m",
            }],
        })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_style_strings() {
        assert_eq!(Duration::parse("500ms").unwrap(), Duration::millis(500));
        assert_eq!(Duration::parse("2s").unwrap(), Duration::secs(2));
        assert_eq!(Duration::parse("1m").unwrap(), Duration::secs(60));
        assert_eq!(Duration::parse("1m30s").unwrap(), Duration::secs(90));
        assert!(Duration::parse("0s").is_err());
        assert!(Duration::parse("soon").is_err());
        assert!(Duration::parse("-1s").is_err());
        for outside_the_crd_pattern in ["", "1", "s", "1.5s", "1 s", "2min", " 2s", "1d", "1m30"] {
            assert!(Duration::parse(outside_the_crd_pattern).is_err(), "{outside_the_crd_pattern:?}");
        }
        assert_eq!(Duration::parse("1h").unwrap(), Duration::secs(3600));
        assert_eq!(Duration::millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::secs(90).to_string(), "90s");
        assert_eq!(Duration::secs(120).to_string(), "2m");
        assert_eq!(Duration::parse(&Duration::millis(1500).to_string()).unwrap(), Duration::millis(1500));
    }
}
