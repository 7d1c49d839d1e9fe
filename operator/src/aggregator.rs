//! Reads the pollers' circuit breakers from the aggregator's `GET /internal/v1/insurers`: the
//! pollers report their breaker there with every heartbeat, so it is the one place that knows.

use crate::status::Breaker;
use crds::BreakerState;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use std::time::Duration;

/// One entry of the aggregator's insurer list.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub name: String,
    pub breaker_state: String,
    /// When the insurer last returned an offer, if the aggregator reports it.
    #[serde(default, alias = "last_offer_time")]
    pub last_offer_at: Option<String>,
}

/// A client of the aggregator's internal API; without a URL every answer is "unknown".
#[derive(Clone)]
pub struct Aggregator {
    target: Option<(String, Option<String>)>,
    http: reqwest::Client,
}

impl Aggregator {
    pub fn new(url: Option<String>, token: Option<String>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("an HTTP client");
        Aggregator { target: url.map(|u| (u.trim_end_matches('/').to_string(), token)), http }
    }

    /// Whether an aggregator is configured at all.
    pub fn configured(&self) -> bool {
        self.target.is_some()
    }

    /// The breaker of `insurer` as its pollers last reported it.
    pub async fn breaker(&self, insurer: &str) -> Breaker {
        let Some((url, token)) = &self.target else {
            return Breaker::Unknown("no aggregator URL configured".into());
        };
        let mut request = self.http.get(format!("{url}/internal/v1/insurers"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = match request.send().await {
            Ok(r) if r.status().is_success() => r.json::<Vec<Entry>>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(entries) => of(&entries, insurer),
            Err(e) => {
                tracing::warn!(error = %e, "reading breakers from the aggregator failed");
                Breaker::Unknown(format!("the aggregator did not answer: {e}"))
            }
        }
    }
}

/// The breaker of `insurer` in the aggregator's list.
pub fn of(entries: &[Entry], insurer: &str) -> Breaker {
    match entries.iter().find(|e| e.name == insurer) {
        None => Breaker::NotRegistered,
        Some(e) => Breaker::Reported {
            state: BreakerState::from_aggregator(&e.breaker_state),
            last_offer: e.last_offer_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregator_list_reads_as_breakers() {
        let entries: Vec<Entry> = serde_json::from_str(
            r#"[{"name":"alfa","display_name":"А","breaker_state":"open"},
                {"name":"ingos","display_name":"И","breaker_state":"half_open","last_offer_at":"2026-11-30T10:00:00Z"}]"#,
        )
        .unwrap();
        assert_eq!(of(&entries, "alfa"), Breaker::Reported { state: BreakerState::Open, last_offer: None });
        assert_eq!(
            of(&entries, "ingos"),
            Breaker::Reported {
                state: BreakerState::HalfOpen,
                last_offer: Some("2026-11-30T10:00:00Z".parse().unwrap())
            }
        );
        assert_eq!(of(&entries, "vsk"), Breaker::NotRegistered);
    }
}
