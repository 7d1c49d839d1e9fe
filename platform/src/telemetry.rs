//! Logging and trace export. Logs are human-readable on a terminal, JSON lines otherwise (or
//! with `LOG_FORMAT=json`). With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported
//! over OTLP/HTTP (protobuf) to that collector, in the W3C trace of the quote they serve
//! (see [`crate::trace`]); the standard `OTEL_*` variables for headers, timeout and batch sizes
//! apply. Without it nothing is exported and nothing is spent on it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The variable that switches OTLP export on: the collector's base URL.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the exporter alive; dropping it sends the spans still buffered.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace export: {error}");
        }
    }
}

/// Initialises the global subscriber; `RUST_LOG` filters (default `info`); exports spans when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init(service: &str) -> Telemetry {
    let endpoint = std::env::var(OTLP_ENDPOINT).ok().filter(|e| !e.trim().is_empty());
    init_with(service, endpoint.as_deref())
}

/// [`init`] with the collector's base URL given (`/v1/traces` is appended), or no export.
pub fn init_with(service: &str, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("LOG_FORMAT") {
        Ok(v) => v == "json",
        Err(_) => !std::io::stdout().is_terminal(),
    };
    let fmt = if json {
        json_lines(std::io::stdout).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(false).boxed()
    };
    let (provider, export_error) = match otlp_endpoint.map(|base| exporter(service, base)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_string())));
    let result = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    if result.is_ok() {
        tracing::info!(service, otlp = provider.is_some(), "logging initialised");
        if let Some(error) = export_error {
            tracing::warn!(%error, "trace export is off: the OTLP exporter could not be built");
        }
    }
    Telemetry { provider }
}

/// The JSON log layer: one line per event, its fields at the top level and the current span's
/// fields (the quote, the `trace_id`) under `span`. Every span of ours is a root (`request`,
/// `task`, `event`, `stream`), so the list of enclosing spans would only repeat `span`, a third
/// of each line; a span nested in another would need it back to show its parent's fields.
fn json_lines<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_target(false)
        .json()
        .flatten_event(true)
        .with_span_list(false)
        .with_writer(writer)
}

/// A tracer provider exporting in batches over OTLP/HTTP to the collector at `base`.
fn exporter(service: &str, base: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_carries_the_event_and_its_span_once() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::registry().with(json_lines(move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("event", quote = "q-1", trace_id = "4bf92f3577b34da6a3ce929d0e0e4736");
            let _entered = span.enter();
            tracing::info!(insurer = "alfa", version = 2, "event applied");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["message"], "event applied");
        assert_eq!(line["insurer"], "alfa");
        assert_eq!(line["version"], 2);
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span"]["quote"], "q-1");
        assert!(line.get("spans").is_none(), "the span list repeats the span: {line}");
        assert_eq!(lines[0].matches("4bf92f3577b34da6a3ce929d0e0e4736").count(), 1, "{line}");
    }
}
