//! `otlp-sink`: a trace collector for local runs and tests. `serve` writes every span it
//! receives over OTLP/HTTP as a JSON line; `check` reads those lines and verifies that one
//! trace is a single tree across the given services.
//!
//!   otlp-sink serve --listen 127.0.0.1:4318 --out spans.jsonl
//!   otlp-sink check --file spans.jsonl --trace <32 hex> --services core-app,poller --spans request,task

use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use testkit::otlp::{ExportedSpan, check_tree, collector};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive spans and append them to a file, one JSON object per line.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        out: PathBuf,
    },
    /// Exit 0 when `trace` is one tree with spans of every service.
    Check {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        trace: String,
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// Span names that must be in the trace.
        #[arg(long, value_delimiter = ',')]
        spans: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { listen, out } => {
            let file = Arc::new(Mutex::new(std::fs::File::create(&out)?));
            let sink = move |spans: Vec<ExportedSpan>| {
                let mut file = file.lock().expect("sink file");
                for span in spans {
                    if let Ok(line) = serde_json::to_string(&span) {
                        let _ = writeln!(file, "{line}");
                    }
                }
            };
            let listener = tokio::net::TcpListener::bind(listen).await?;
            eprintln!("otlp-sink: collecting on http://{}/v1/traces into {}", listener.local_addr()?, out.display());
            axum::serve(listener, collector(sink)).await?;
            Ok(())
        }
        Command::Check { file, trace, services, spans: names } => {
            let spans: Vec<ExportedSpan> =
                std::fs::read_to_string(&file)?.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
            let services: Vec<&str> = services.iter().map(String::as_str).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let shape = check_tree(&spans, &trace, &services, &names).map_err(anyhow::Error::msg)?;
            let names: Vec<&str> = shape.names.iter().map(String::as_str).collect();
            let services: Vec<&str> = shape.services.iter().map(String::as_str).collect();
            println!(
                "trace {trace}: one tree of {} spans ({}) from {}",
                shape.spans,
                names.join(", "),
                services.join(", ")
            );
            Ok(())
        }
    }
}
