//! Event streams over HTTP/1.1 are answered on core-app's lean wire, not by hyper. Raw sockets
//! against a real stack check what goes over the wire: the framing, that a client going away
//! ends its stream, that shutdown ends streams cleanly, and that everything else (other
//! requests, HTTP/2 streams) is still hyper's.

mod support;

use std::time::Duration;
use support::{Stack, sample};
use testkit::sse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// The `sse_streams_open` gauge is one per process: tests that read it take turns.
static GAUGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends a bare HTTP/1.1 `GET path` to `base` and returns the socket.
async fn get(base: &str, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: core\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Everything the server sends until it closes.
async fn until_closed(mut tcp: TcpStream, within: Duration) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(within, tcp.read_to_end(&mut bytes)).await.expect("the server closes").unwrap();
    bytes
}

/// The response's head (lower-cased) and its body as sent.
fn split(response: &[u8]) -> (String, &[u8]) {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
    (String::from_utf8_lossy(&response[..end]).to_lowercase(), &response[end..])
}

/// A chunked body's data, and whether it ended with the last chunk.
fn dechunk(mut body: &[u8]) -> (String, bool) {
    let mut data = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return (String::from_utf8(data).unwrap(), false);
        };
        let len = usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap(), 16).expect("a chunk size");
        if len == 0 {
            return (String::from_utf8(data).unwrap(), &body[eol..] == b"\r\n\r\n");
        }
        data.extend_from_slice(&body[eol + 2..eol + 2 + len]);
        assert_eq!(&body[eol + 2 + len..eol + 4 + len], b"\r\n", "a chunk ends with CRLF");
        body = &body[eol + 4 + len..];
    }
}

async fn create_quote(stack: &Stack) -> String {
    let response =
        reqwest::Client::new().post(format!("{}/api/v1/quotes", stack.core_url)).json(&sample()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// A quote whose insurers never answer (no aggregator task behind it): its stream stays open.
async fn open_quote(stack: &Stack) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO quotes (id, request_hash, deadline, expires_at)
         VALUES ($1, '\\x00'::bytea, now() + interval '1 hour', now() + interval '1 hour')",
    )
    .bind(id)
    .execute(&stack.core_pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO quote_insurers (quote_id, insurer, display_name) VALUES ($1, 'alfa', 'alfa')")
        .bind(id)
        .execute(&stack.core_pool)
        .await
        .unwrap();
    id
}

/// Waits until core-app's `sse_streams_open` gauge reads `n`.
async fn streams_open(base: &str, n: u64) {
    let mut last = String::new();
    for _ in 0..100 {
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        last = metrics.lines().find(|l| l.starts_with("sse_streams_open ")).unwrap_or("none").to_string();
        if last == format!("sse_streams_open {n}") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} open streams, the gauge reads {last}");
}

#[tokio::test]
async fn an_http1_stream_is_chunked_on_the_lean_wire_and_ends_with_its_last_chunk() {
    let _turn = GAUGE.lock().await;
    let stack = Stack::start("20s").await;
    let id = create_quote(&stack).await;
    let response =
        until_closed(get(&stack.core_url, &format!("/api/v1/quotes/{id}/events")).await, Duration::from_secs(20)).await;
    let (head, body) = split(&response);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "transfer-encoding: chunked",
        "connection: close",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        // The router's layers answer on this wire too.
        "x-content-type-options: nosniff",
        "date: ",
    ] {
        assert!(head.contains(&format!("\r\n{line}")), "{line} missing from {head}");
    }
    let (data, ended) = dechunk(body);
    assert!(ended, "the body ends with the last chunk: {body:?}");
    let stream = sse::parse(&data);
    assert_eq!(stream.retry, Some(2000), "{data}");
    let names: Vec<&str> = stream.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.len(), 4, "three insurers' results, then complete: {data}");
    assert_eq!(names.last(), Some(&"complete"));

    // Resuming after the last event of a complete quote: 204, no body at all.
    let resume = format!("/api/v1/quotes/{id}/events?last_event_id={}", stream.events[3].id.as_deref().unwrap());
    let response = until_closed(get(&stack.core_url, &resume).await, Duration::from_secs(5)).await;
    let (head, body) = split(&response);
    assert!(head.starts_with("http/1.1 204 no content\r\n") && !head.contains("transfer-encoding"), "{head}");
    assert!(body.is_empty());

    // An unknown quote: a problem whose length is given.
    let response = until_closed(
        get(&stack.core_url, &format!("/api/v1/quotes/{}/events", Uuid::new_v4())).await,
        Duration::from_secs(5),
    )
    .await;
    let (head, body) = split(&response);
    assert!(head.starts_with("http/1.1 404 not found\r\n"), "{head}");
    assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn a_client_that_goes_away_ends_its_stream_and_shutdown_ends_the_others_cleanly() {
    let _turn = GAUGE.lock().await;
    let stack = Stack::start("20s").await;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let api = core_app::api::ApiSettings { client_rate: (1000, 1000), ..Default::default() };
    let replica = stack
        .start_core_app_until(&stack.aggregator_url, api, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await;
    let (first, second) = (open_quote(&stack).await, open_quote(&stack).await);
    let leaving = get(&replica, &format!("/api/v1/quotes/{first}/events")).await;
    let mut staying = get(&replica, &format!("/api/v1/quotes/{second}/events")).await;
    streams_open(&stack.core_url, 2).await;

    drop(leaving);
    streams_open(&stack.core_url, 1).await;

    // What the client sends after its request is read and dropped; the stream goes on.
    staying.write_all(b"GET /healthz HTTP/1.1\r\nHost: core\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    streams_open(&stack.core_url, 1).await;

    let _ = stop.send(true);
    let response = until_closed(staying, Duration::from_secs(2)).await;
    let (head, body) = split(&response);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    let (data, ended) = dechunk(body);
    assert!(ended, "shutdown ends the body with its last chunk, so the client reconnects: {body:?}");
    assert!(data.starts_with("retry: 2000\n"), "only the hello was sent: {data}");
    streams_open(&stack.core_url, 0).await;
}

/// Reads from `tcp` until what was read contains `needle`; returns everything read.
async fn read_until(tcp: &mut TcpStream, needle: &[u8], within: Duration) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        while !bytes.windows(needle.len()).any(|w| w == needle) {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before {:?}: {}", String::from_utf8_lossy(needle), String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {:?} in {}", String::from_utf8_lossy(needle), String::from_utf8_lossy(&bytes)));
    bytes
}

/// Reads one whole response with a `content-length` off `tcp`: its head and body.
async fn response(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = read_until(tcp, b"\r\n\r\n", Duration::from_secs(5)).await;
    let (head, after) = split(&bytes);
    let head_len = bytes.len() - after.len();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let end = head_len + len;
    while bytes.len() < end {
        let mut chunk = vec![0u8; end - bytes.len()];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        bytes.extend_from_slice(&chunk[..n]);
    }
    (head, bytes[head_len..end].to_vec())
}

#[tokio::test]
async fn a_stream_after_other_requests_on_a_kept_alive_connection_leaves_hyper_for_the_lean_wire() {
    let _turn = GAUGE.lock().await;
    let stack = Stack::start("20s").await;
    let mut tcp = TcpStream::connect(stack.core_url.trim_start_matches("http://")).await.unwrap();
    // As a browser does: the page's requests, the quote's POST, then its event stream, all on
    // one kept-alive connection.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: core\r\n\r\n").await.unwrap();
    let (head, _) = response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n") && !head.contains("connection: close"), "{head}");
    let body = serde_json::to_vec(&sample()).unwrap();
    let post = format!(
        "POST /api/v1/quotes HTTP/1.1\r\nHost: core\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(&[post.as_bytes(), &body].concat()).await.unwrap();
    let (head, created) = response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 201 created\r\n") && !head.contains("connection: close"), "{head}");
    let id = serde_json::from_slice::<serde_json::Value>(&created).unwrap()["id"].as_str().unwrap().to_string();

    let events = format!("GET /api/v1/quotes/{id}/events HTTP/1.1\r\nHost: core\r\n\r\n");
    tcp.write_all(events.as_bytes()).await.unwrap();
    let streamed = until_closed(tcp, Duration::from_secs(20)).await;
    let (head, body) = split(&streamed);
    assert!(head.contains("\r\nconnection: close\r\n"), "the lean wire answered: {head}");
    let (data, ended) = dechunk(body);
    assert!(ended, "{body:?}");
    assert_eq!(sse::parse(&data).events.last().map(|e| e.event.as_str()), Some("complete"), "{data}");
}

#[tokio::test]
async fn a_request_body_that_reads_like_a_stream_request_is_not_taken_for_one() {
    let stack = Stack::start("20s").await;
    let fake = format!("GET /api/v1/quotes/{}/events HTTP/1.1\r\nHost: core\r\n\r\n", Uuid::new_v4());
    let post = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: core\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            fake.len()
        )
    };
    // The head first, the body a moment later: hyper reads the body while the request is open.
    let mut tcp = TcpStream::connect(stack.core_url.trim_start_matches("http://")).await.unwrap();
    tcp.write_all(post("/api/v1/quotes").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(fake.as_bytes()).await.unwrap();
    let (head, body) = response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "the body is the POST's (not JSON): {head}");
    assert!(String::from_utf8_lossy(&body).contains("\"status\":400"), "{}", String::from_utf8_lossy(&body));
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: core\r\n\r\n").await.unwrap();
    let (head, _) = response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "and the connection is still hyper's: {head}");

    // Refused before its body is read (no POST there): the body arrives after the answer,
    // with nothing in flight, and is still not a request.
    let mut tcp = TcpStream::connect(stack.core_url.trim_start_matches("http://")).await.unwrap();
    tcp.write_all(post("/healthz").as_bytes()).await.unwrap();
    let (head, _) = response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 405 "), "{head}");
    tcp.write_all(fake.as_bytes()).await.unwrap();
    let mut after = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut after)).await;
    assert!(!after.windows(8).any(|w| w == b"HTTP/1.1"), "no answer to the body: {}", String::from_utf8_lossy(&after));
}

#[tokio::test]
async fn a_head_that_arrives_in_pieces_is_hypers_to_finish() {
    let stack = Stack::start("20s").await;
    let mut tcp = TcpStream::connect(stack.core_url.trim_start_matches("http://")).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: core\r\n\r\n").await.unwrap();
    response(&mut tcp).await;
    // On the kept-alive connection, half a head, then bytes that, read alone, are a stream
    // request: they end the POST's head.
    tcp.write_all(b"POST /api/v1/quotes HTTP/1.1\r\nHost: core\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rest = format!("\r\nGET /api/v1/quotes/{}/events HTTP/1.1\r\nHost: core\r\n\r\n", Uuid::new_v4());
    tcp.write_all(rest.as_bytes()).await.unwrap();
    // Both answers, which may come in one read: the POST's (it has no body), then the GET's.
    let bytes = read_until(&mut tcp, b"HTTP/1.1 404 Not Found\r\n", Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    let post = text.find("HTTP/1.1 400 Bad Request\r\n").unwrap_or_else(|| panic!("the POST is answered: {text}"));
    assert!(post < text.find("HTTP/1.1 404").unwrap(), "in order: {text}");
    assert!(!text.to_lowercase().contains("connection: close"), "both by hyper: {text}");
}

#[tokio::test]
async fn a_pipelined_stream_request_is_answered_by_hyper() {
    let _turn = GAUGE.lock().await;
    let stack = Stack::start("20s").await;
    let id = create_quote(&stack).await;
    let mut tcp = TcpStream::connect(stack.core_url.trim_start_matches("http://")).await.unwrap();
    // Sent in one write, the stream request is in hyper's buffer before the first is answered:
    // hyper serves it (no hand-off), and the events still arrive.
    let both = format!(
        "GET /healthz HTTP/1.1\r\nHost: core\r\n\r\nGET /api/v1/quotes/{id}/events HTTP/1.1\r\nHost: core\r\n\r\n"
    );
    tcp.write_all(both.as_bytes()).await.unwrap();
    let bytes = read_until(&mut tcp, b"event: complete", Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&bytes).to_lowercase();
    assert_eq!(text.matches("http/1.1 200 ok\r\n").count(), 2, "{text}");
    assert!(!text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn other_requests_and_http2_streams_are_served_by_hyper() {
    let _turn = GAUGE.lock().await;
    let stack = Stack::start("20s").await;
    // Keep-alive: two requests on one HTTP/1.1 connection, neither closing it.
    let mut tcp = TcpStream::connect(stack.core_url.trim_start_matches("http://")).await.unwrap();
    for _ in 0..2 {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: core\r\n\r\n").await.unwrap();
        let mut response = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut response)).await.unwrap().unwrap();
        let (head, _) = split(&response[..n]);
        assert!(head.starts_with("http/1.1 200 ok\r\n") && !head.contains("connection: close"), "{head}");
    }

    // An event stream over HTTP/2 (prior knowledge) is hyper's and streams to the end.
    let id = create_quote(&stack).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = client.get(format!("{}/api/v1/quotes/{id}/events", stack.core_url)).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), response.text()).await.unwrap().unwrap();
    let stream = sse::parse(&body);
    assert_eq!(stream.events.last().map(|e| e.event.as_str()), Some("complete"), "{body}");
    assert_eq!(stream.events.len(), 4, "{body}");
}
