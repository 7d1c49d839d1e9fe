//! `osago quote`: submits the sample quote (or a JSON file) to core-app, follows the event
//! stream to `complete`, and prints the offers cheapest first. `make demo-smoke` uses it.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use comfy_table::Table;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Client of a running OSAGO platform.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Base URL of core-app.
    #[arg(long, env = "OSAGO_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a quote and follow it to the end.
    Quote {
        /// Request JSON file; the built-in sample when omitted.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Fail unless at least this many offers arrive.
        #[arg(long, default_value_t = 0)]
        expect_offers: usize,
        /// Give up after this long.
        #[arg(long, default_value = "120s", value_parser = humantime_secs)]
        timeout: Duration,
    },
}

fn humantime_secs(text: &str) -> Result<Duration, String> {
    let secs = text.trim_end_matches('s').parse::<u64>().map_err(|e| e.to_string())?;
    Ok(Duration::from_secs(secs))
}

/// The sample driver of the web page: the example request, starting in a week.
fn sample() -> Value {
    domain::example::request_in(7)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Quote { file, expect_offers, timeout } => {
            let body = match file {
                Some(path) => serde_json::from_str(&std::fs::read_to_string(&path)?)?,
                None => sample(),
            };
            tokio::time::timeout(timeout, quote(&cli.url, &body, expect_offers))
                .await
                .with_context(|| format!("no complete event within {timeout:?}"))?
        }
    }
}

async fn quote(base: &str, body: &Value, expect_offers: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let response = http.post(format!("{base}/api/v1/quotes")).json(body).send().await.context("POST /api/v1/quotes")?;
    let status = response.status();
    let trace = response.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let created: Value = response.json().await?;
    if status != 201 {
        bail!("quote not created ({status}): {created}");
    }
    let id = created["id"].as_str().context("id")?.to_string();
    let insurers: Vec<String> = created["insurers"]
        .as_array()
        .context("insurers")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    println!("quote {id}: sent to {} insurers ({})", insurers.len(), insurers.join(", "));
    if let Some(trace) = trace {
        println!("trace {trace}");
    }

    let events_url = format!("{base}{}", created["events_url"].as_str().context("events_url")?);
    let mut stream = http.get(&events_url).send().await?.bytes_stream().eventsource();
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    let mut first_offer = None;
    while let Some(event) = stream.next().await {
        let event = event.context("reading the event stream")?;
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let at = started.elapsed();
        match event.event.as_str() {
            "offer" => {
                first_offer.get_or_insert(at);
                let amount = data["offer"]["premium"]["amount"].as_str().unwrap_or("?");
                println!(
                    "  {:>6.2}s  offer     {:<10} {amount} ₽",
                    at.as_secs_f64(),
                    data["insurer"].as_str().unwrap_or("?")
                );
                results.insert(data["insurer"].as_str().unwrap_or("?").to_string(), data);
            }
            "status" => {
                let reason = data["reason"].as_str().unwrap_or("");
                println!(
                    "  {:>6.2}s  {:<9} {:<10} {reason}",
                    at.as_secs_f64(),
                    data["status"].as_str().unwrap_or("?"),
                    data["insurer"].as_str().unwrap_or("?")
                );
                results.insert(data["insurer"].as_str().unwrap_or("?").to_string(), data);
            }
            "complete" => {
                println!("  {:>6.2}s  complete", at.as_secs_f64());
                return report(&insurers, &results, first_offer, at, expect_offers);
            }
            _ => {}
        }
    }
    bail!("the stream ended before complete")
}

fn report(
    insurers: &[String],
    results: &BTreeMap<String, Value>,
    first_offer: Option<Duration>,
    complete: Duration,
    expect_offers: usize,
) -> anyhow::Result<()> {
    let mut offers: Vec<&Value> = results.values().filter(|v| v["status"] == "offer").collect();
    offers.sort_by_key(|v| {
        v["offer"]["premium"]["amount"].as_str().and_then(|a| a.parse::<rust_decimal::Decimal>().ok())
    });
    let mut table = Table::new();
    table.set_header(["#", "insurer", "premium, ₽", "КБМ", "КВС", "ТБ", "reference"]);
    for (i, o) in offers.iter().enumerate() {
        let b = &o["offer"]["breakdown"];
        table.add_row([
            (i + 1).to_string(),
            o["display_name"].as_str().unwrap_or("?").to_string(),
            o["offer"]["premium"]["amount"].as_str().unwrap_or("?").to_string(),
            b["kbm"].as_str().unwrap_or("").to_string(),
            b["kvs"].as_str().unwrap_or("").to_string(),
            b["tb"].as_str().unwrap_or("").to_string(),
            o["offer"]["insurer_reference"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{table}");
    let unanswered: Vec<&String> = insurers.iter().filter(|i| !results.contains_key(*i)).collect();
    println!(
        "offers: {}, first offer after {}, complete after {:.2}s",
        offers.len(),
        first_offer.map_or("—".into(), |d| format!("{:.2}s", d.as_secs_f64())),
        complete.as_secs_f64()
    );
    if !unanswered.is_empty() {
        bail!("insurers without a final status: {unanswered:?}");
    }
    if offers.len() < expect_offers {
        bail!("expected at least {expect_offers} offers, got {}", offers.len());
    }
    Ok(())
}
