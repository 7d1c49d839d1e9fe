//! W3C Trace Context (`traceparent`), carried in HTTP headers and Kafka message headers, so
//! one quote is one trace from the browser's request to the SSE stream: every service logs
//! within a span holding the quote's `trace_id`, and passes a child `traceparent` on.
//!
//! Only ids travel: nothing of the request's content is in a trace.
//!
//! With OTLP export on ([`crate::telemetry`]), [`span_in`] makes each of these spans an exported
//! span of the quote's trace, and the `traceparent` passed on names it, so a trace viewer shows
//! the hops as one tree.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use std::convert::Infallible;
use std::fmt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (HTTP) and message header (Kafka) name.
pub const HEADER: &str = "traceparent";

/// One `traceparent`: the trace, the caller's span in it, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    sampled: bool,
}

impl TraceParent {
    /// A new trace (random ids), sampled.
    pub fn root() -> Self {
        let mut rng = rand::rng();
        TraceParent {
            trace_id: rng.random_range(1..=u128::MAX),
            parent_id: rng.random_range(1..=u64::MAX),
            sampled: true,
        }
    }

    /// The trace stored with some work, else — for work stored without one — a trace whose id is the
    /// work's `id` (say, a quote's UUID), so that every step of that work shares one trace. An id of 0,
    /// which is not a valid trace id, gets a new trace.
    pub fn of_work(stored: Option<Self>, id: u128) -> Self {
        stored.unwrap_or_else(|| if id == 0 { Self::root() } else { TraceParent { trace_id: id, ..Self::root() } })
    }

    /// The `traceparent` a callee gets: same trace, a new span id for this hop.
    pub fn child(&self) -> Self {
        TraceParent { parent_id: rand::rng().random_range(1..=u64::MAX), ..*self }
    }

    /// Parses a header value by the W3C rules: version `00` exactly as specified; a later version
    /// may append fields; `ff`, upper-case hex and all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex(version, 2)
            || version == "ff"
            || !lower_hex(trace, 32)
            || !lower_hex(parent, 16)
            || !lower_hex(flags, 2)
        {
            return None;
        }
        if version == "00" && (parts.next().is_some() || value.len() != 55) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let parent_id = u64::from_str_radix(parent, 16).ok().filter(|id| *id != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent { trace_id, parent_id, sampled: flags & 1 == 1 })
    }

    /// The trace's id as 32 lower-case hex digits (what logs carry).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The incoming value if it is valid, else a new trace.
    pub fn from_header(value: Option<&str>) -> Self {
        value.and_then(Self::parse).unwrap_or_else(Self::root)
    }

    /// The `traceparent` of an HTTP request's headers, else a new trace.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::from_header(headers.get(HEADER).and_then(|v| v.to_str().ok()))
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.parent_id, u8::from(self.sampled))
    }
}

/// Puts `span` in `incoming`'s trace, as a child of the span `incoming` names, and returns the
/// `traceparent` to pass on from within `span`: the exported span's own id when OTLP export is
/// on, else a new child id of `incoming`.
pub fn span_in(span: &tracing::Span, incoming: &TraceParent) -> TraceParent {
    let flags = if incoming.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let remote = SpanContext::new(
        TraceId::from_bytes(incoming.trace_id.to_be_bytes()),
        SpanId::from_bytes(incoming.parent_id.to_be_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    // Without the OpenTelemetry layer both calls do nothing and the context is invalid.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote.clone()));
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() && own.trace_id() == remote.trace_id() {
        TraceParent {
            trace_id: incoming.trace_id,
            parent_id: u64::from_be_bytes(own.span_id().to_bytes()),
            sampled: own.is_sampled(),
        }
    } else {
        incoming.child()
    }
}

/// Probes and scrapes: frequent, about no quote, and not worth a trace each.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Middleware: each request runs in a `request` span with its `trace_id` (the caller's trace, or a
/// new one), which handlers get by taking a [`TraceParent`] argument: the one to pass on. Probes
/// and metric scrapes run untraced.
pub async fn layer(mut request: Request, next: Next) -> Response {
    if UNTRACED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let incoming = TraceParent::of(request.headers());
    let trace_id = incoming.trace_id();
    let span =
        tracing::info_span!("request", trace_id = %trace_id, method = %request.method(), path = %request.uri().path());
    let trace = span_in(&span, &incoming);
    request.extensions_mut().insert(trace);
    let mut response = next.run(request).instrument(span).await;
    // Not a standard response header, but it lets a caller find the trace of a request it did not trace.
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}

/// A handler's trace, to pass on: the one [`layer`] chose, or — on a router without the layer — a
/// child of the request's own `traceparent`, or a new trace.
impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<TraceParent>().copied().unwrap_or_else(|| TraceParent::of(&parts.headers).child()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_the_w3c_rules() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parsed.sampled);
        assert_eq!(parsed.to_string(), valid, "round trip");
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-next";
        assert!(!TraceParent::parse(future).unwrap().sampled, "later versions may add fields");
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
    }

    #[tokio::test]
    async fn requests_are_traced_and_answer_their_trace_id_but_probes_are_not() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/api", axum::routing::get(|trace: TraceParent| async move { trace.to_string() }))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(layer));
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = Request::get("/api").header(HEADER, incoming).body(axum::body::Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let passed_on = TraceParent::parse(std::str::from_utf8(&body).unwrap()).unwrap();
        assert_eq!(passed_on.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "the handler continues the trace");
        assert_ne!(passed_on.to_string(), incoming, "with a span of its own");
        let probe = app.oneshot(Request::get("/healthz").body(axum::body::Body::empty()).unwrap()).await.unwrap();
        assert!(probe.headers().get("x-trace-id").is_none(), "probes run untraced");
    }

    #[test]
    fn children_keep_the_trace_and_change_the_span() {
        let root = TraceParent::root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.to_string(), root.to_string());
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
        assert_ne!(TraceParent::root().trace_id(), root.trace_id());
        assert_eq!(TraceParent::from_header(Some("junk")).to_string().len(), 55, "junk starts a new trace");
        let quote = TraceParent::of_work(None, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(quote.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "untraced work is traced by its id");
        assert_eq!(TraceParent::of_work(Some(root), 1), root, "a stored trace wins");
        assert_ne!(TraceParent::of_work(None, 0).trace_id(), format!("{:032x}", 0), "0 is no trace id");
    }
}
