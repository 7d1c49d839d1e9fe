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
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = if json { fmt.json().flatten_event(true).boxed() } else { fmt.boxed() };
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
