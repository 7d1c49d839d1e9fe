//! Timestamps of every insurer result along the pipeline, joined per (quote, insurer):
//!
//! | instant | source |
//! |---|---|
//! | ready    | sandbox: `Calculation.started + decision.ready_after` (bench-sandbox's recorder) |
//! | served   | sandbox: the first poll that found it ready was answered |
//! | occurred | `QuoteEvent.occurred_at`: the poller decided, inside the transaction that writes task + outbox row |
//! | kafka    | the broker's LogAppendTime of the message (the bench topic is created with it; ms precision) |
//! | picked   | core-app's `quote_events.created_at` (`now()` = start of the consumer's transaction) |
//! | commit   | the bench's own LISTEN on core-app's NOTIFY channel: delivered at commit |
//! | sse      | the load generator received the event on the quote's SSE stream |

use crate::load::QuoteRun;
use crate::stats::Summary;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Default, Deserialize)]
pub struct SandboxRecords {
    pub creates: Vec<CreateRecord>,
    pub ready: Vec<ReadyRecord>,
}

#[derive(Debug, Deserialize)]
pub struct CreateRecord {
    pub insurer: String,
    pub calc: String,
    pub vin: String,
}

#[derive(Debug, Deserialize)]
pub struct ReadyRecord {
    pub insurer: String,
    pub calc: String,
    pub ready_us: i64,
    pub served_us: i64,
}

/// Ready and served instants by (insurer, VIN), accumulated over a stack's life.
#[derive(Default)]
pub struct Detections {
    calc_vin: HashMap<(String, String), String>,
    pending: Vec<ReadyRecord>,
    pub by_vin: HashMap<(String, String), (i64, i64)>,
}

impl Detections {
    pub async fn fetch(&mut self, client: &reqwest::Client, sandbox: &str) -> anyhow::Result<()> {
        let records: SandboxRecords = client.get(format!("{sandbox}/_bench/records")).send().await?.json().await?;
        for c in records.creates {
            self.calc_vin.insert((c.insurer, c.calc), c.vin);
        }
        self.pending.extend(records.ready);
        let pending = std::mem::take(&mut self.pending);
        for r in pending {
            match self.calc_vin.get(&(r.insurer.clone(), r.calc.clone())) {
                Some(vin) => {
                    self.by_vin.insert((r.insurer, vin.clone()), (r.ready_us, r.served_us));
                }
                None => self.pending.push(r),
            }
        }
        Ok(())
    }
}

/// The bench's LISTEN on core-app's channel: (quote, event seq, received) in commit order.
/// core-app's payload is `<quote> <seq> <name> <data>` (a bare `<quote>` when the event was too
/// large to carry; those are not timed).
#[derive(Clone, Default)]
pub struct Tap(pub Arc<Mutex<Vec<(Uuid, i64, i64)>>>);

impl Tap {
    pub async fn start(url: &str) -> anyhow::Result<(Tap, tokio::task::JoinHandle<()>)> {
        let tap = Tap::default();
        let mut listener = PgListener::connect(url).await?;
        listener.listen("osago_quote_events").await?;
        let sink = tap.0.clone();
        let task = tokio::spawn(async move {
            while let Ok(n) = listener.recv().await {
                let at = crate::now_us();
                let mut parts = n.payload().splitn(3, ' ');
                let quote = parts.next().and_then(|q| q.parse::<Uuid>().ok());
                let seq = parts.next().and_then(|s| s.parse::<i64>().ok());
                if let (Some(quote), Some(seq)) = (quote, seq) {
                    sink.lock().expect("tap").push((quote, seq, at));
                }
            }
        });
        Ok((tap, task))
    }

    /// Per (quote, event seq), when its commit was notified.
    pub fn by_quote(&self) -> HashMap<(Uuid, i64), i64> {
        self.0.lock().expect("tap").iter().map(|(q, seq, at)| ((*q, *seq), *at)).collect()
    }
}

#[derive(Debug, Clone)]
pub struct KafkaEvent {
    pub quote: Uuid,
    pub insurer: String,
    pub occurred_us: i64,
    pub append_us: i64,
}

/// Every message of `topic`, read from the beginning to the high watermarks.
pub fn scan_topic(brokers: &str, topic: &str) -> anyhow::Result<HashMap<Uuid, KafkaEvent>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-scan-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in 0..6 {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
        remaining += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while remaining > 0 && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let Ok(m) = m else { continue };
        remaining -= 1;
        let append_us = match m.timestamp() {
            Timestamp::LogAppendTime(ms) | Timestamp::CreateTime(ms) => ms * 1000,
            Timestamp::NotAvailable => 0,
        };
        let Some(v) = m.payload().and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok()) else { continue };
        let (Some(id), Some(quote)) =
            (v["event_id"].as_str().and_then(|s| s.parse().ok()), v["quote_id"].as_str().and_then(|s| s.parse().ok()))
        else {
            continue;
        };
        let occurred_us = v["occurred_at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(0, |t| t.timestamp_micros());
        let insurer = v["insurer"].as_str().unwrap_or_default().to_string();
        out.insert(id, KafkaEvent { quote, insurer, occurred_us, append_us });
    }
    Ok(out)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CoreEvent {
    pub quote_id: Uuid,
    pub seq: i64,
    pub event_id: Option<Uuid>,
    pub name: String,
    pub created_us: i64,
}

pub async fn core_events(url: &str) -> anyhow::Result<Vec<CoreEvent>> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
    let rows = sqlx::query_as(
        "SELECT quote_id, seq, event_id, name, (EXTRACT(EPOCH FROM created_at) * 1000000)::int8 AS created_us
         FROM quote_events",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows)
}

/// One insurer result's instants (µs since the epoch).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trace {
    pub quote: Uuid,
    pub insurer: String,
    pub ready: Option<i64>,
    pub served: Option<i64>,
    pub occurred: Option<i64>,
    pub kafka: Option<i64>,
    pub picked: Option<i64>,
    pub commit: Option<i64>,
    pub sse: Option<i64>,
}

/// The hops reported, in pipeline order: name, from, to.
pub const HOPS: &[(&str, &str, &str)] = &[
    ("end to end: ready → SSE", "ready", "sse"),
    ("push: poll answered → SSE", "served", "sse"),
    ("1 poll detection: ready → poll answered", "ready", "served"),
    ("1b poller: poll answered → outbox tx", "served", "occurred"),
    ("2 outbox tx → in Kafka", "occurred", "kafka"),
    ("3 in Kafka → core-app commit", "kafka", "commit"),
    ("3a in Kafka → consumer tx start", "kafka", "picked"),
    ("4 core-app commit → SSE client", "commit", "sse"),
];

impl Trace {
    fn at(&self, name: &str) -> Option<i64> {
        match name {
            "ready" => self.ready,
            "served" => self.served,
            "occurred" => self.occurred,
            "kafka" => self.kafka,
            "picked" => self.picked,
            "commit" => self.commit,
            "sse" => self.sse,
            _ => None,
        }
    }

    pub fn hop_ms(&self, from: &str, to: &str) -> Option<f64> {
        Some((self.at(to)? - self.at(from)?) as f64 / 1000.0)
    }
}

/// Joins what the client saw with every other source.
pub fn join(
    runs: &[QuoteRun],
    detections: &Detections,
    kafka: &HashMap<Uuid, KafkaEvent>,
    core: &[CoreEvent],
    notifies: &HashMap<(Uuid, i64), i64>,
) -> Vec<Trace> {
    // core-app events of a quote: seq → (event id, created)
    let mut core_by: HashMap<(Uuid, i64), &CoreEvent> = HashMap::new();
    for e in core {
        core_by.insert((e.quote_id, e.seq), e);
    }
    let mut traces = Vec::new();
    for run in runs {
        let Some(quote) = run.quote else { continue };
        for ev in &run.events {
            let Some(insurer) = ev.insurer.clone() else { continue };
            if ev.name == "complete" {
                continue;
            }
            let mut t = Trace { quote, insurer: insurer.clone(), sse: Some(ev.recv_us), ..Trace::default() };
            if let Some((ready, served)) = detections.by_vin.get(&(insurer.clone(), run.vin.clone())) {
                t.ready = Some(*ready);
                t.served = Some(*served);
            }
            if let Some(ce) = core_by.get(&(quote, ev.seq)) {
                t.picked = Some(ce.created_us);
                if let Some(k) = ce.event_id.and_then(|id| kafka.get(&id)) {
                    t.occurred = Some(k.occurred_us);
                    t.kafka = Some(k.append_us);
                }
            }
            t.commit = notifies.get(&(quote, ev.seq)).copied();
            traces.push(t);
        }
    }
    traces
}

/// Every hop's distribution over `traces` (ms), with the raw values for plots.
pub fn hops(traces: &[Trace]) -> BTreeMap<String, (Summary, Vec<f64>)> {
    HOPS.iter()
        .map(|(name, from, to)| {
            let v: Vec<f64> = traces.iter().filter_map(|t| t.hop_ms(from, to)).collect();
            (name.to_string(), (Summary::of(&v), v))
        })
        .collect()
}

/// The push latency (poll answered → SSE) from the sandbox and the client alone; what the
/// load ramp decides on while the stack is still running.
pub fn push_ms(runs: &[QuoteRun], detections: &Detections) -> Vec<f64> {
    runs.iter()
        .flat_map(|run| {
            run.events.iter().filter_map(|ev| {
                let (_, served) = detections.by_vin.get(&(ev.insurer.clone()?, run.vin.clone()))?;
                Some((ev.recv_us - served) as f64 / 1000.0)
            })
        })
        .collect()
}
