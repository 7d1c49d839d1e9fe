//! core-app's client of the aggregator intake: one partner token, a timeout, retries with
//! the same Idempotency-Key (so a retried submission cannot create two applications), and
//! a circuit breaker (`platform::breaker`), so that while the aggregator is down quotes are
//! refused at once (503 + Retry-After) instead of each waiting out its timeouts. An
//! aggregator that sheds load (a 429, or its `overloaded` 503) is up and protecting itself:
//! its answer goes back to the caller with its delay, neither retried nor held against it.

use domain::intake::Accepted;
use platform::breaker::{Breaker, BreakerSettings, Verdict};
use platform::problem::{OVERLOADED, OVERLOADED_RETRY, type_uri};
use platform::trace::TraceParent;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Why the aggregator could not take the application.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Down or failing for now; try again after the delay.
    #[error("aggregator unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Duration },
    /// Up, but shedding load; try again after the delay it asked for.
    #[error("aggregator overloaded")]
    Overloaded { retry_after: Duration },
    /// The breaker is open: the aggregator failed repeatedly and is not called for a while.
    #[error("aggregator circuit open")]
    CircuitOpen { retry_after: Duration },
    /// The aggregator saw a conflict (key reused with another body).
    #[error("aggregator rejected the application: {0}")]
    Rejected(String),
}

impl SubmitError {
    /// How the breaker counts it: only the aggregator's own failures are failures; a rejected
    /// request says nothing of its health, and neither does its shedding load.
    fn verdict(&self) -> Verdict {
        match self {
            SubmitError::Unavailable { .. } => Verdict::Failure,
            SubmitError::Rejected(_) => Verdict::Success,
            SubmitError::Overloaded { .. } | SubmitError::CircuitOpen { .. } => Verdict::Ignored,
        }
    }
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
    breaker: Arc<Breaker>,
}

/// Calls judged by the breaker: the last this many.
const BREAKER_WINDOW: usize = 10;
/// How long the breaker stays open before trial calls.
const BREAKER_OPEN: Duration = Duration::from_secs(5);
/// Trial calls in half-open; all must succeed to close it.
const BREAKER_TRIALS: u32 = 2;

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
        // The request timeout lives inside each admitted call, so a timed-out call is a recorded
        // failure; a call cannot be slower than it, so it is the slow-call limit too.
        let breaker = Breaker::new(
            "aggregator",
            "intake",
            BreakerSettings {
                failure_rate: 0.5,
                window: BREAKER_WINDOW,
                half_open_calls: BREAKER_TRIALS,
                open_duration: BREAKER_OPEN,
                slow_call: timeout,
            },
        );
        Ok(AggregatorClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            breaker,
        })
    }

    /// Submits an application (the normalised request JSON).
    pub async fn submit(
        &self,
        request: &serde_json::Value,
        idempotency_key: &str,
        trace: &TraceParent,
    ) -> Result<Accepted, SubmitError> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
            let permit = match self.breaker.admit() {
                Ok(permit) => permit,
                Err(rejected) => {
                    metrics::counter!("aggregator_client_rejected_total").increment(1);
                    return Err(SubmitError::CircuitOpen { retry_after: rejected.retry_in });
                }
            };
            let outcome = self.submit_once(request, idempotency_key, trace).await;
            permit.record(outcome.as_ref().map_or_else(SubmitError::verdict, |_| Verdict::Success));
            match outcome {
                Ok(accepted) => return Ok(accepted),
                Err(e @ SubmitError::Unavailable { .. }) if attempt + 1 < ATTEMPTS => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(SubmitError::Unavailable {
            reason: "no attempt made".into(),
            retry_after: Duration::from_secs(1),
        }))
    }

    async fn submit_once(
        &self,
        request: &serde_json::Value,
        key: &str,
        trace: &TraceParent,
    ) -> Result<Accepted, SubmitError> {
        let response = self
            .http
            .post(format!("{}/internal/v1/applications", self.base_url))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .header(platform::trace::HEADER, trace.to_string())
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
            StatusCode::TOO_MANY_REQUESTS => {
                Err(SubmitError::Overloaded { retry_after: retry_after.unwrap_or(OVERLOADED_RETRY) })
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let problem: serde_json::Value = response.json().await.unwrap_or_default();
                if problem["type"].as_str() == Some(&type_uri(OVERLOADED)) {
                    Err(SubmitError::Overloaded { retry_after: retry_after.unwrap_or(OVERLOADED_RETRY) })
                } else {
                    Err(unavailable(format!("answered {status}"), retry_after))
                }
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
