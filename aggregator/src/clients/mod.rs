//! Clients of the insurers' partner APIs: one per API style (three built in, and `mapped`,
//! declared in the manifest), all behind [`InsurerApi`], so
//! the poller only ever sees "create", "poll" and their typed results.
//!
//! Each client is an imperative shell (HTTP, auth) around pure mapping functions — insurer
//! body in, [`Polled`] out — that are tested with real sample bodies. Every HTTP call goes
//! through the insurer's [`Resilience`]: retry with a budget, circuit breaker, rate limit,
//! bulkhead and timeout, all from the manifest.
//!
//! Nothing here logs request or response bodies: applications carry personal data and
//! insurers' error messages may echo it. [`CallError`]'s `Display` is safe to log.

mod credentials;
mod http;
mod wire;

pub mod breaker;
pub mod create_poll;
pub mod mapped;
pub mod offers_list;
pub mod operation;
pub mod resilience;
pub mod retry;

pub use breaker::{Breaker, BreakerState};
pub use credentials::{Credentials, CredentialsError};
pub use resilience::{CallContext, Resilience};

use crds::{ApiStyle, InsurerIntegration};
use domain::events::Offer;
use domain::request::QuoteRequest;
use futures::future::BoxFuture;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// One insurer's partner API, whatever its style.
///
/// Object-safe (futures are boxed) so that the poller holds an `Arc<dyn InsurerApi>`
/// chosen from the manifest at start-up. Each method gets the step's [`CallContext`]: the
/// deadline its calls and retries must keep, and where they are counted.
pub trait InsurerApi: Send + Sync + fmt::Debug {
    /// Starts a calculation of `request` for the task named `key` (see [`task_key`]).
    ///
    /// Where the style allows it, a repeated create with the same key is the same
    /// calculation at the insurer, so a create whose answer was lost is safe to retry.
    fn create<'a>(
        &'a self,
        key: &'a str,
        request: &'a QuoteRequest,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Created, CallError>>;

    /// Asks how the calculation `reference` (from [`Created::reference`]) is doing.
    fn poll<'a>(&'a self, reference: &'a str, ctx: &'a CallContext) -> BoxFuture<'a, Result<Polled, CallError>>;

    /// The circuit breaker over these calls, when there is one (the poller reports its state).
    fn breaker(&self) -> Option<Arc<Breaker>> {
        None
    }

    /// Whether a repeated create with the same key is the same calculation at the insurer.
    /// Then the poller need not store the reference before the outcome: a replica that takes
    /// the task over after a crash creates again and is given the same calculation.
    fn create_is_idempotent(&self) -> bool {
        false
    }
}

/// A calculation the insurer accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// What [`InsurerApi::poll`] needs to find the calculation again; stored as the task's
    /// `insurer_ref`.
    pub reference: String,
    /// Its state right after the create: usually pending, final when the insurer answered at once.
    pub status: Polled,
}

/// The state of a calculation at the insurer.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// Still calculating; the insurer may say how long to wait before asking again.
    Pending { retry_after: Option<Duration> },
    /// Priced.
    Offer(Offer),
    /// The insurer refuses the risk; its reason, meant for the customer.
    Declined(String),
    /// The insurer's calculation failed; its message.
    Failed(String),
}

impl Polled {
    /// Pending without a hint.
    pub const PENDING: Polled = Polled::Pending { retry_after: None };
}

/// Why a call to an insurer did not produce an answer we can use.
#[derive(Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No connection could be made (refused, DNS, connect timeout): the request was never sent.
    #[error("could not connect: {0}")]
    Connect(String),
    /// Sending or receiving failed on a connection (reset, closed): the request may have arrived.
    #[error("transport error: {0}")]
    Transport(String),
    /// No complete answer within the request timeout (or the connect timeout).
    #[error("timed out")]
    Timeout,
    /// HTTP 429.
    #[error("rate limited by the insurer{}", hint(*retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 5xx.
    #[error("insurer server error HTTP {status}{}", hint(*retry_after))]
    Server { status: u16, retry_after: Option<Duration> },
    /// HTTP 4xx other than 408 and 429: the insurer refuses the call itself. `message` is the
    /// insurer's own text; it may echo the application, so `Display` leaves it out.
    #[error("insurer rejected the call with HTTP {status}")]
    Client { status: u16, message: String },
    /// The insurer answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Our circuit breaker did not let the call through: open, or half-open with every trial
    /// slot taken. Nothing was sent; asking again after `retry_in` may succeed.
    #[error("circuit breaker {}, retry in {}ms", if *half_open { "half-open" } else { "open" }, retry_in.as_millis())]
    CircuitOpen { half_open: bool, retry_in: Duration },
}

fn hint(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!(", retry after {}ms", d.as_millis())).unwrap_or_default()
}

/// Like `Display`, but says how long the redacted insurer message was (it is never printed).
impl fmt::Debug for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Client { status, message } => {
                write!(f, "Client {{ status: {status}, message: <{} chars> }}", message.chars().count())
            }
            other => write!(f, "{other}"),
        }
    }
}

impl CallError {
    /// True when asking again later may succeed: connect, transport, timeout, 429, 5xx, an
    /// open circuit.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::Connect(_)
                | CallError::Transport(_)
                | CallError::Timeout
                | CallError::RateLimited { .. }
                | CallError::Server { .. }
                | CallError::CircuitOpen { .. }
        )
    }

    /// When to ask again: the insurer's `Retry-After`, or the breaker's wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::RateLimited { retry_after } | CallError::Server { retry_after, .. } => *retry_after,
            CallError::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// The error's kind in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Connect(_) => "connect",
            CallError::Transport(_) => "transport",
            CallError::Timeout => "timeout",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Server { .. } => "server_error",
            CallError::Client { .. } => "client_error",
            CallError::Protocol(_) => "protocol",
            CallError::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// The `reason` of a `failed` event when this error ends a task: a code, then details.
    /// Includes the insurer's message (the customer sees it; logs never do).
    pub fn failure_reason(&self) -> String {
        match self {
            CallError::Client { status, message } if message.is_empty() => format!("rejected: HTTP {status}"),
            CallError::Client { status, message } => format!("rejected: HTTP {status}: {message}"),
            CallError::Protocol(detail) => format!("protocol_error: {detail}"),
            CallError::Timeout => "timeout".into(),
            CallError::Connect(detail) | CallError::Transport(detail) => format!("transport_error: {detail}"),
            CallError::CircuitOpen { .. } => "circuit_open".into(),
            CallError::RateLimited { .. } => "rate_limited".into(),
            CallError::Server { status, .. } => format!("insurer_unavailable: HTTP {status}"),
        }
    }
}

/// Why a client could not be built from a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("api.baseUrl '{0}' is not a usable URL: {1}")]
    BaseUrl(String, String),
    #[error("api.baseUrl '{0}' is https, but this build of the aggregator has no TLS support")]
    NoTls(String),
    #[error("building the HTTP client: {0}")]
    Http(String),
    #[error("{0}")]
    Mapping(String),
}

/// Our name of one task at an insurer: the create-poll `request_id` and the operation
/// style's `Idempotency-Key`. Stable across retries and replicas, unique per insurer name
/// (two integrations of one insurer's API never collide), at most 100 characters.
pub fn task_key(insurer: &str, application_id: Uuid) -> String {
    format!("{insurer}-{application_id}")
}

/// The client the manifest asks for, with credentials read from
/// `{secrets_dir}/{secretRef.name}/{secretRef.key}` (a mounted Kubernetes Secret) and the
/// protections its spec describes (a new [`Resilience`], so a new circuit breaker).
pub fn for_manifest(manifest: &InsurerIntegration, secrets_dir: &Path) -> Result<Arc<dyn InsurerApi>, ClientError> {
    let spec = &manifest.spec;
    let credentials = Credentials::load(&spec.api.auth, secrets_dir)?;
    let guard = Resilience::new(manifest.name(), spec);
    Ok(match spec.api.style {
        ApiStyle::CreatePoll => Arc::new(create_poll::CreatePoll::new(spec, credentials, guard)?),
        ApiStyle::Operation => Arc::new(operation::Operation::new(spec, credentials, guard)?),
        ApiStyle::OffersList => Arc::new(offers_list::OffersList::new(spec, credentials, guard)?),
        ApiStyle::Mapped => Arc::new(mapped::Mapped::new(spec, credentials, guard)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_classify_and_never_print_the_insurer_message() {
        let secret = "Иванов Иван, паспорт 4510 123456";
        let cases: [(CallError, bool, Option<Duration>, &str); 8] = [
            (CallError::Connect("connection refused".into()), true, None, "transport_error: connection refused"),
            (CallError::Transport("connection reset".into()), true, None, "transport_error: connection reset"),
            (CallError::Timeout, true, None, "timeout"),
            (
                CallError::RateLimited { retry_after: Some(Duration::from_secs(2)) },
                true,
                Some(Duration::from_secs(2)),
                "rate_limited",
            ),
            (CallError::Server { status: 503, retry_after: None }, true, None, "insurer_unavailable: HTTP 503"),
            (
                CallError::Client { status: 400, message: secret.into() },
                false,
                None,
                "rejected: HTTP 400: Иванов Иван, паспорт 4510 123456",
            ),
            (CallError::Protocol("unknown status".into()), false, None, "protocol_error: unknown status"),
            (
                CallError::CircuitOpen { half_open: false, retry_in: Duration::from_millis(800) },
                true,
                Some(Duration::from_millis(800)),
                "circuit_open",
            ),
        ];
        for (error, transient, retry_after, reason) in cases {
            assert_eq!(error.is_transient(), transient, "{error}");
            assert_eq!(error.retry_after(), retry_after, "{error}");
            assert_eq!(error.failure_reason(), reason);
            assert!(!error.to_string().contains("4510"), "{error}");
            assert!(!format!("{error:?}").contains("4510"), "{error:?}");
        }
    }

    #[test]
    fn task_keys_fit_every_style() {
        let key = task_key("a-very-long-insurer-name-of-sixty-three-characters-at-most-xxxxx", Uuid::nil());
        assert!(key.len() <= 128, "create-poll request_id is 1–128 characters");
        assert_eq!(task_key("alfa", Uuid::nil()), "alfa-00000000-0000-0000-0000-000000000000");
    }
}
