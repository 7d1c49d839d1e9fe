//! core-app's client of the aggregator intake: one partner token, a timeout, and retries
//! with the same Idempotency-Key (so a retried submission cannot create two applications).

use domain::intake::Accepted;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why the aggregator could not take the application.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Down, overloaded or refusing for now; try again after the delay.
    #[error("aggregator unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Duration },
    /// The aggregator saw a conflict (key reused with another body).
    #[error("aggregator rejected the application: {0}")]
    Rejected(String),
}

/// An active insurer as the aggregator lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Insurer {
    pub name: String,
    pub display_name: String,
}

/// The intake client.
#[derive(Clone)]
pub struct AggregatorClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
}

impl std::fmt::Debug for AggregatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatorClient").field("base_url", &self.base_url).field("token", &"<redacted>").finish()
    }
}

/// Attempts per submission; each reuses the Idempotency-Key.
const ATTEMPTS: u32 = 3;

impl AggregatorClient {
    /// A client of the aggregator at `base_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(2)).build()?;
        Ok(AggregatorClient { http, base_url: base_url.trim_end_matches('/').to_string(), token: token.to_string() })
    }

    /// Submits an application (the normalised request JSON).
    pub async fn submit(&self, request: &serde_json::Value, idempotency_key: &str) -> Result<Accepted, SubmitError> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
            match self.submit_once(request, idempotency_key).await {
                Ok(accepted) => return Ok(accepted),
                Err(e @ SubmitError::Rejected(_)) => return Err(e),
                Err(e @ SubmitError::Unavailable { .. }) if attempt + 1 == ATTEMPTS => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(SubmitError::Unavailable {
            reason: "no attempt made".into(),
            retry_after: Duration::from_secs(1),
        }))
    }

    async fn submit_once(&self, request: &serde_json::Value, key: &str) -> Result<Accepted, SubmitError> {
        let response = self
            .http
            .post(format!("{}/internal/v1/applications", self.base_url))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(request)
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {e}"), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            s if s.is_success() => {
                response.json::<Accepted>().await.map_err(|e| unavailable(format!("unreadable answer: {e}"), None))
            }
            StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
                Err(SubmitError::Rejected(response.text().await.unwrap_or_default()))
            }
            s => Err(unavailable(format!("answered {s}"), retry_after)),
        }
    }

    /// Insurers that can take work now.
    pub async fn insurers(&self) -> Result<Vec<Insurer>, SubmitError> {
        let response = self
            .http
            .get(format!("{}/internal/v1/insurers", self.base_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {e}"), None))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status()), None));
        }
        response.json().await.map_err(|e| unavailable(format!("unreadable answer: {e}"), None))
    }
}

fn unavailable(reason: String, retry_after: Option<Duration>) -> SubmitError {
    SubmitError::Unavailable { reason, retry_after: retry_after.unwrap_or(Duration::from_secs(2)) }
}
