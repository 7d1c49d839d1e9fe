//! A collector of our own for OTLP/HTTP trace export (protobuf): what the services export,
//! reduced to what a test checks — which service, which span, and where it sits in its trace.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};

/// One exported span; ids in lower-case hex, as in `traceparent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// The messages of the log lines inside the span.
    pub events: Vec<String>,
    /// Every attribute of the span and of its events, as `key=value` (what a scan for personal
    /// data must read).
    pub attributes: Vec<String>,
}

/// The spans of one OTLP/HTTP protobuf export request.
pub fn decode(body: &[u8]) -> Result<Vec<ExportedSpan>, prost::DecodeError> {
    let request = ExportTraceServiceRequest::decode(body)?;
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .chain(span.events.iter().flat_map(|e| &e.attributes))
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(String::new(), text)
                    )
                })
                .collect();
            spans.push(ExportedSpan {
                service: service.clone(),
                name: span.name,
                trace_id: hex::encode(span.trace_id),
                span_id: hex::encode(span.span_id),
                parent_span_id: hex::encode(span.parent_span_id),
                events: span.events.into_iter().map(|e| e.name).collect(),
                attributes,
            });
        }
    }
    Ok(spans)
}

/// An attribute's value as text.
fn text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A collector answering `POST /v1/traces`, handing each request's spans to `sink`.
pub fn collector(sink: impl Fn(Vec<ExportedSpan>) + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                match decode(&body) {
                    Ok(spans) => {
                        sink(spans);
                        StatusCode::OK
                    }
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }
        }),
    )
}

/// What one trace looks like, for a check's message.
#[derive(Debug, PartialEq)]
pub struct TraceShape {
    pub spans: usize,
    pub services: BTreeSet<String>,
    pub names: BTreeSet<String>,
}

/// Checks that `trace` is one tree: its spans come from every one of `services`, and all but one
/// (the root, whose parent is the caller's) have their parent among them.
/// Spans named in `names` must be there too.
pub fn check_tree(
    spans: &[ExportedSpan],
    trace: &str,
    services: &[&str],
    names: &[&str],
) -> Result<TraceShape, String> {
    let spans: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let shape = TraceShape {
        spans: spans.len(),
        services: spans.iter().map(|s| s.service.clone()).collect(),
        names: spans.iter().map(|s| s.name.clone()).collect(),
    };
    if let Some(missing) = services.iter().find(|s| !shape.services.contains(**s)) {
        return Err(format!("trace {trace} has no span of {missing}: {shape:?}"));
    }
    if let Some(missing) = names.iter().find(|n| !shape.names.contains(**n)) {
        return Err(format!("trace {trace} has no {missing} span: {shape:?}"));
    }
    let roots: Vec<&&ExportedSpan> = spans.iter().filter(|s| !ids.contains(s.parent_span_id.as_str())).collect();
    if roots.len() != 1 {
        let roots: Vec<String> = roots.iter().map(|s| format!("{}/{}", s.service, s.name)).collect();
        return Err(format!("trace {trace} is not one tree: {} spans without a parent in it: {roots:?}", roots.len()));
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, id: &str, parent: &str) -> ExportedSpan {
        ExportedSpan {
            service: service.into(),
            name: "request".into(),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            events: vec![],
            attributes: vec![],
        }
    }

    #[test]
    fn a_trace_is_one_tree_over_every_service() {
        let tree = [span("core-app", "a", "caller"), span("aggregator", "b", "a"), span("poller", "c", "b")];
        let shape = check_tree(&tree, "t", &["core-app", "poller"], &["request"]).unwrap();
        assert_eq!(shape.spans, 3);
        let broken = [span("core-app", "a", "caller"), span("poller", "c", "lost")];
        assert!(check_tree(&broken, "t", &["core-app"], &[]).unwrap_err().contains("not one tree"));
        assert!(check_tree(&tree, "t", &["operator"], &[]).unwrap_err().contains("no span of operator"));
        assert!(check_tree(&tree, "t", &[], &["stream"]).unwrap_err().contains("no stream span"));
    }
}
