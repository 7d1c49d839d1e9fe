//! A small Server-Sent Events client for tests: reads a stream until it ends or a timeout.

use futures::StreamExt;
use std::time::Duration;

/// One received event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    /// The `retry:` field, when the event carried one.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// `data` parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// What a stream delivered.
#[derive(Debug, Default)]
pub struct Received {
    pub status: u16,
    pub content_type: String,
    /// Events with data (comments and retry-only blocks are not events).
    pub events: Vec<SseEvent>,
    /// Comment lines (heartbeats).
    pub comments: Vec<String>,
    pub retry: Option<u64>,
    /// True when the server closed the stream (rather than the timeout ending it).
    pub closed_by_server: bool,
}

/// Reads `url` as an event stream for at most `timeout`, resuming after `last_event_id`.
pub async fn read(url: &str, last_event_id: Option<&str>, timeout: Duration) -> Received {
    let client = reqwest::Client::new();
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("SSE request");
    let mut received = Received {
        status: response.status().as_u16(),
        content_type: response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
        ..Received::default()
    };
    if response.status() != 200 {
        received.closed_by_server = true;
        return received;
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => break,
            Ok(None) => {
                received.closed_by_server = true;
                break;
            }
            Ok(Some(chunk)) => chunk.expect("SSE body"),
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            parse_block(&block, &mut received);
        }
    }
    received
}

/// The events and comments of a stream's whole body, read by other means.
pub fn parse(body: &str) -> Received {
    let mut received = Received::default();
    for block in body.split_inclusive("\n\n") {
        parse_block(block, &mut received);
    }
    received
}

fn parse_block(block: &str, received: &mut Received) {
    let lines = block.lines().filter_map(|line| line.strip_prefix(':'));
    received.comments.extend(lines.map(|comment| comment.trim().to_string()));
    let (event, retry) = parse_fields(block);
    received.retry = retry.or(received.retry);
    received.events.extend(event);
}

/// One block's event when it carried data (comments and retry-only blocks are not events), and
/// its `retry:` field either way.
pub fn parse_fields(block: &str) -> (Option<SseEvent>, Option<u64>) {
    let mut event = SseEvent { id: None, event: "message".into(), data: String::new(), retry: None };
    let mut has_data = false;
    for line in block.lines().filter(|line| !line.starts_with(':')) {
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => event.id = Some(value.to_string()),
            "event" => event.event = value.to_string(),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            "retry" => event.retry = value.parse().ok(),
            _ => {}
        }
    }
    let retry = event.retry;
    (has_data.then_some(event), retry)
}
