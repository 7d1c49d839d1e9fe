//! OTLP export against a collector of our own on loopback: spans arrive over OTLP/HTTP in the
//! quote's W3C trace, each hop the child of the one before, under the service's name.

use platform::trace::{TraceParent, span_in};
use std::sync::{Arc, Mutex};
use testkit::otlp::ExportedSpan;

/// The trace id and span id of a `traceparent`, in hex.
fn ids(trace: &TraceParent) -> (String, String) {
    let text = trace.to_string();
    let mut parts = text.split('-').skip(1).map(str::to_string);
    (parts.next().unwrap(), parts.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_in_the_quotes_trace_one_hop_under_the_other() {
    let received: Arc<Mutex<Vec<ExportedSpan>>> = Arc::default();
    let sink = received.clone();
    let collector = testkit::otlp::collector(move |spans| sink.lock().unwrap().extend(spans));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, collector).await });
    let telemetry = platform::telemetry::init_with("otlp-test", Some(&format!("http://{addr}/")));

    let incoming = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let request = tracing::info_span!("request", trace_id = %incoming.trace_id());
    let passed_on = span_in(&request, &incoming);
    request.in_scope(|| tracing::info!("request handled"));
    let task = tracing::info_span!(parent: None, "task", trace_id = %passed_on.trace_id());
    let passed_on_again = span_in(&task, &passed_on);
    drop((request, task));
    // Shutting the exporter down sends what it holds; it blocks, so not on a runtime thread.
    tokio::task::spawn_blocking(move || drop(telemetry)).await.unwrap();

    let spans = received.lock().unwrap().clone();
    let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {spans:?}"));
    let (request, task) = (find("request"), find("task"));
    assert_eq!(request.service, "otlp-test", "spans carry the service's name");
    let (trace_id, caller) = ids(&incoming);
    assert_eq!(request.trace_id, trace_id, "the caller's trace");
    assert_eq!(request.parent_span_id, caller, "a child of the caller's span");
    assert_eq!(request.span_id, ids(&passed_on).1, "the traceparent passed on names the exported span");
    assert_eq!(task.trace_id, trace_id);
    assert_eq!(task.parent_span_id, request.span_id, "the next hop is a child of the request");
    assert_eq!(task.span_id, ids(&passed_on_again).1);
    assert!(request.events.iter().any(|e| e == "request handled"), "log lines are span events: {:?}", request.events);
    let shape = testkit::otlp::check_tree(&spans, &trace_id, &["otlp-test"], &["request", "task"]).unwrap();
    assert_eq!(shape.spans, 2);
}
