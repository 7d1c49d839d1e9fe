//! The load generator: open-loop arrivals at a fixed rate (a quote is sent at its scheduled
//! instant whether or not earlier ones finished), one SSE connection per quote, bounded
//! concurrency (an arrival that finds every slot busy is counted as shed — an error, not a
//! wait). A closed-loop driver measures intake capacity; a stream holder measures fan-out.

use crate::now_us;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// One SSE event as the client received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Received {
    pub seq: i64,
    pub name: String,
    pub insurer: Option<String>,
    pub status: Option<String>,
    pub recv_us: i64,
}

/// One quote's life as the client saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuoteRun {
    pub vin: String,
    pub quote: Option<Uuid>,
    pub scheduled_us: i64,
    pub submit_us: i64,
    pub created_us: i64,
    pub http_status: u16,
    pub events: Vec<Received>,
    pub complete: bool,
    pub error: Option<String>,
}

/// A finished open-loop phase.
#[derive(Debug, Default)]
pub struct OpenLoop {
    pub runs: Vec<QuoteRun>,
    pub shed: usize,
    /// Arrivals the generator started more than 20 ms after their instant (it was the bottleneck).
    pub late: usize,
    /// Whether the pacer thread ran at the highest priority of a normal thread ([`open_loop`]).
    pub pacer_raised: bool,
}

/// A request body per VIN: the web page's sample driver, a different car each time.
pub fn request_body(vin: &str) -> Value {
    let start = (chrono::Utc::now().date_naive() + chrono::Days::new(7)).to_string();
    json!({
        "vehicle": {"category": "B", "make": "LADA", "model": "VESTA", "year": 2019, "power_hp": 106,
                    "vin": vin, "plate": "А123ВС77", "purpose": "personal"},
        "owner": {"last_name": "Иванов", "first_name": "Иван", "middle_name": "Иванович",
                  "birth_date": "1985-04-12", "passport": "4510 123456", "region": "77", "city": "Москва"},
        "drivers": [{"last_name": "Иванов", "first_name": "Иван", "birth_date": "1985-04-12",
                     "licence": "7700 123456", "experience_since": "2005-06-01"}],
        "unlimited_drivers": false,
        "policy": {"start_date": start, "period_months": 12}
    })
}

/// A unique valid VIN (17 characters, none of I, O, Q).
pub fn vin(n: u64) -> String {
    format!("XTAGFL110K{:07}", n % 10_000_000)
}

/// A client for many concurrent connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// Sends `rate` quotes per second for `duration` at `base`, follows each to `complete`.
///
/// The arrivals are paced, and each quote is submitted, on a thread of their own with its own
/// runtime and HTTP client: on the caller's runtime, a timer waits behind every task ready to
/// run, so with the streams of a busy step to read, arrivals went out late because the
/// generator was busy, not because the machine was. Only the streams are read on `client`'s
/// runtime (they start with a replay, so a late hand-over loses no event). The thread asks for
/// the highest priority of a normal thread, so that a start counted late here means even it
/// did not get the CPU in time.
pub async fn open_loop(
    client: &reqwest::Client,
    base: &str,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    vins: &AtomicU64,
    progress: &ProgressBar,
) -> OpenLoop {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let first_vin = vins.fetch_add(total as u64, Ordering::Relaxed);
    progress.set_length(total as u64);
    progress.set_position(0);
    let streams =
        Streams { client: client.clone(), base: base.to_string(), runtime: tokio::runtime::Handle::current() };
    let progress = progress.clone();
    let (done, paced) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            // The arrivals stand for drivers elsewhere, whose clocks a busy stack does not hold
            // back. At the default priority this thread waited behind the stack's threads on a
            // saturated machine, then let the arrivals it owed out at once: the ramp failed steps
            // on late starts (1 % of them 20 ms late) and fed the stack bursts no open loop makes.
            let raised = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Max).is_ok();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("pacer runtime");
            let mut out = runtime.block_on(pace(streams, rate, total, max_in_flight, first_vin, progress));
            out.pacer_raised = raised;
            let _ = done.send(out);
        })
        .expect("pacer thread");
    // A phase without its arrivals would read as one with no errors: fail loudly instead.
    paced.await.expect("the pacer thread ended without its arrivals")
}

/// Where the quotes' streams are read: the caller's client, on the caller's runtime.
struct Streams {
    client: reqwest::Client,
    base: String,
    runtime: tokio::runtime::Handle,
}

/// The pacer thread's loop: quote `i` is submitted at `start + i / rate`.
async fn pace(
    streams: Streams,
    rate: f64,
    total: usize,
    max_in_flight: usize,
    first_vin: u64,
    progress: ProgressBar,
) -> OpenLoop {
    let submitter = client();
    let streams = Arc::new(streams);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    let mut out = OpenLoop::default();
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        if tokio::time::Instant::now().duration_since(at) > Duration::from_millis(20) {
            out.late += 1;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            out.shed += 1;
            continue;
        };
        let vin = vin(first_vin + i as u64);
        let (submitter, streams, progress) = (submitter.clone(), streams.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let run = submit(&submitter, &streams.base, vin).await;
            let run = match run.quote {
                Some(id) if run.error.is_none() => {
                    let (reader, vin) = (streams.clone(), run.vin.clone());
                    let read =
                        streams.runtime.spawn(async move { follow_run(&reader.client, &reader.base, id, run).await });
                    read.await.unwrap_or_else(|e| QuoteRun {
                        vin,
                        quote: Some(id),
                        error: Some(format!("stream task: {e}")),
                        ..QuoteRun::default()
                    })
                }
                _ => run,
            };
            progress.inc(1);
            drop(permit);
            run
        }));
    }
    // Drain: every quote ends with `complete` or its own timeout.
    for t in tasks {
        if let Ok(run) = t.await {
            out.runs.push(run);
        }
    }
    out
}

/// How long a quote may take from submit to `complete` before it counts as an error.
pub const QUOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /api/v1/quotes`; the run has the quote's id when it was created.
async fn submit(client: &reqwest::Client, base: &str, vin: String) -> QuoteRun {
    let scheduled_us = now_us();
    let mut run = QuoteRun { vin: vin.clone(), scheduled_us, submit_us: now_us(), ..QuoteRun::default() };
    let body = request_body(&vin);
    let response =
        client.post(format!("{base}/api/v1/quotes")).json(&body).timeout(Duration::from_secs(10)).send().await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            run.error = Some(format!("submit: {e}"));
            return run;
        }
    };
    run.http_status = response.status().as_u16();
    run.created_us = now_us();
    if run.http_status != 201 {
        run.error = Some(format!("submit: HTTP {}", run.http_status));
        return run;
    }
    let created: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => {
            run.error = Some(format!("submit body: {e}"));
            return run;
        }
    };
    match created.get("id").and_then(|v| v.as_str()).and_then(|s| s.parse::<Uuid>().ok()) {
        Some(id) => run.quote = Some(id),
        None => run.error = Some("submit: no id".into()),
    }
    run
}

/// Follows a created quote's stream to `complete`, into `run`.
async fn follow_run(client: &reqwest::Client, base: &str, id: Uuid, mut run: QuoteRun) -> QuoteRun {
    let events = &mut run.events;
    match tokio::time::timeout(QUOTE_TIMEOUT, follow(client, base, id, |e| events.push(e), None)).await {
        Ok(Ok(true)) => run.complete = true,
        Ok(Ok(false)) => run.error = Some("stream ended before complete".into()),
        Ok(Err(e)) => run.error = Some(format!("stream: {e}")),
        Err(_) => run.error = Some("no complete within 30 s".into()),
    }
    run
}

/// Reads the quote's SSE stream, handing each event to `on_event`, until `complete` (true)
/// or its end (false). `opened` is bumped once the server's first bytes arrive.
pub async fn follow(
    client: &reqwest::Client,
    base: &str,
    id: Uuid,
    mut on_event: impl FnMut(Received),
    opened: Option<&AtomicUsize>,
) -> anyhow::Result<bool> {
    let response = client
        .get(format!("{base}/api/v1/quotes/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let recv_us = now_us();
        if first {
            first = false;
            if let Some(o) = opened {
                o.fetch_add(1, Ordering::Relaxed);
            }
        }
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&block, recv_us) {
                let done = event.name == "complete";
                on_event(event);
                if done {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn parse_block(block: &str, recv_us: i64) -> Option<Received> {
    let (mut seq, mut name, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            seq = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    let data: Value = serde_json::from_str(&data).unwrap_or_default();
    Some(Received {
        seq: seq?,
        name: name?,
        insurer: data.get("insurer").and_then(|v| v.as_str()).map(str::to_string),
        status: data.get("status").and_then(|v| v.as_str()).map(str::to_string),
        recv_us,
    })
}

/// A closed-loop capacity run: `concurrency` workers POST back to back for `duration`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Capacity {
    pub ok: usize,
    pub errors: usize,
    pub seconds: f64,
    pub throughput: f64,
    pub latency_ms: crate::stats::Summary,
    #[serde(skip)]
    pub latencies: Vec<f64>,
    #[serde(skip)]
    pub created: Vec<Uuid>,
}

/// `bearer`, when given, authenticates each request (the aggregator's partner intake).
pub async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    concurrency: usize,
    duration: Duration,
    vins: &AtomicU64,
) -> Capacity {
    let started = tokio::time::Instant::now();
    let until = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, bearer) = (client.clone(), url.to_string(), bearer.map(str::to_string));
            let bodies: Vec<String> =
                (0..64).map(|_| request_body(&vin(vins.fetch_add(1, Ordering::Relaxed))).to_string()).collect();
            tokio::spawn(async move {
                let (mut lat, mut ok, mut err, mut ids) = (Vec::new(), 0usize, 0usize, Vec::<Uuid>::new());
                let mut k = 0;
                while tokio::time::Instant::now() < until {
                    let t0 = std::time::Instant::now();
                    let body = bodies[k % bodies.len()].clone();
                    k += 1;
                    let mut post = client.post(&url).header("content-type", "application/json");
                    if let Some(token) = &bearer {
                        post = post.bearer_auth(token);
                    }
                    let r = post.body(body).timeout(Duration::from_secs(10)).send().await;
                    match r {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let v: Value = r.json().await.unwrap_or_default();
                            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                            ok += 1;
                            if let Some(id) = v.get("id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()) {
                                ids.push(id);
                            }
                        }
                        _ => err += 1,
                    }
                }
                (lat, ok, err, ids)
            })
        })
        .collect();
    let mut out = Capacity::default();
    for w in workers {
        if let Ok((lat, ok, err, ids)) = w.await {
            out.latencies.extend(lat);
            out.ok += ok;
            out.errors += err;
            out.created.extend(ids);
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.throughput = out.ok as f64 / out.seconds;
    out.latency_ms = crate::stats::Summary::of(&out.latencies);
    out
}
