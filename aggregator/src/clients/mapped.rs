//! The `mapped` style: an API described in the manifest instead of in code. The `mapping`
//! crate renders each call from its templates and reads each answer through its JSON
//! pointers; this is the HTTP shell around it, with the same protections as every style.
//!
//! A create is retried after a lost answer only when the mapping declares it idempotent.

use super::http::{Answer, Http};
use super::resilience::{Call, CallContext, Resilience};
use super::{Breaker, CallError, ClientError, Created, Credentials, InsurerApi, Polled};
use crds::InsurerIntegrationSpec;
use domain::request::QuoteRequest;
use futures::future::BoxFuture;
use mapping::{AnswerError, Mapped as Compiled, Method, Reading, RenderedCall};
use reqwest::Method as HttpMethod;
use std::sync::Arc;
use std::time::Duration;

/// An insurer spoken to through its manifest's mapping.
#[derive(Debug)]
pub struct Mapped {
    http: Http,
    mapping: Arc<Compiled>,
}

impl Mapped {
    pub fn new(
        spec: &InsurerIntegrationSpec,
        credentials: Credentials,
        guard: Arc<Resilience>,
    ) -> Result<Self, ClientError> {
        let declared =
            spec.api.mapping.as_ref().ok_or_else(|| ClientError::Mapping("api.mapping is missing".into()))?;
        let mapping = Arc::new(Compiled::new(declared).map_err(|e| ClientError::Mapping(e.to_string()))?);
        let messages = mapping.clone();
        let http = Http::new(spec, credentials, move |body: &[u8]| messages.error_message(body), guard)?;
        Ok(Mapped { http, mapping })
    }

    /// Sends a rendered call through the protections.
    async fn send(&self, name: &'static str, call: RenderedCall, ctx: &CallContext) -> Result<Answer, CallError> {
        let method = match call.method {
            Method::Get => HttpMethod::GET,
            Method::Post => HttpMethod::POST,
            Method::Put => HttpMethod::PUT,
        };
        let url = self.http.resolve(&call.path)?;
        let mut request = self.http.request(method, url);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let kind = if call.idempotent { Call::idempotent(name) } else { Call::not_idempotent(name) };
        self.http.send(kind, request, ctx).await
    }
}

impl InsurerApi for Mapped {
    fn create<'a>(
        &'a self,
        key: &'a str,
        request: &'a QuoteRequest,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Created, CallError>> {
        Box::pin(async move {
            let call = self.mapping.create_call(key, request).map_err(|e| CallError::Protocol(e.to_string()))?;
            let Answer { status, retry_after, body, .. } = self.send("create", call, ctx).await?;
            let (reference, reading) =
                self.mapping.read_created(&body, chrono::Utc::now()).map_err(|e| answer_error(status, e))?;
            Ok(Created { reference, status: polled(reading, retry_after) })
        })
    }

    fn poll<'a>(&'a self, reference: &'a str, ctx: &'a CallContext) -> BoxFuture<'a, Result<Polled, CallError>> {
        Box::pin(async move {
            let call = self.mapping.poll_call(reference).map_err(|e| CallError::Protocol(e.to_string()))?;
            let Answer { status, retry_after, body, .. } = self.send("poll", call, ctx).await?;
            let reading =
                self.mapping.read_polled(&body, reference, chrono::Utc::now()).map_err(|e| answer_error(status, e))?;
            Ok(polled(reading, retry_after))
        })
    }

    fn breaker(&self) -> Option<Arc<Breaker>> {
        Some(self.http.guard().breaker().clone())
    }

    fn create_is_idempotent(&self) -> bool {
        self.mapping.create_is_idempotent()
    }
}

fn polled(reading: Reading, retry_after: Option<Duration>) -> Polled {
    match reading {
        Reading::Pending => Polled::Pending { retry_after },
        Reading::Offer(offer) => Polled::Offer(offer),
        Reading::Declined(reason) => Polled::Declined(reason),
        Reading::Failed(message) => Polled::Failed(message),
    }
}

/// An error inside a 2xx answer is the insurer refusing the call, like a 4xx.
fn answer_error(status: u16, error: AnswerError) -> CallError {
    match error {
        AnswerError::Rejected(message) => CallError::Client { status, message },
        AnswerError::Protocol(detail) => CallError::Protocol(detail),
    }
}
