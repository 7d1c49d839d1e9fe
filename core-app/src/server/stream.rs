//! The lean wire: one HTTP/1.1 response written straight to the socket, for event streams.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB header buffer for as long as an HTTP/1.1
//! connection lives, so an idle event stream cost about 20 KiB. Here a stream holds its socket
//! and its body, nothing more. The response says `Connection: close`: no second request is read
//! on the connection, and bytes the client sends after its request are discarded.

use axum::body::{Body, HttpBody};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use std::io;
use tokio::net::TcpStream;

/// How a response's body is delimited on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (204, 304, 1xx).
    Empty,
    /// `Content-Length` bytes.
    Length,
    /// `Transfer-Encoding: chunked`, for a body of unknown length such as an event stream.
    Chunked,
}

/// Headers that describe this hop's connection: the wire sets its own.
const HOP_HEADERS: [HeaderName; 7] = [
    CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    TE,
    TRAILER,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The status line and headers of `response`, and how its body follows them.
pub fn head(response: &Response, now: std::time::SystemTime) -> (Vec<u8>, Framing) {
    let status = response.status();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    let line = |head: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    // A response without a body has no length to give either.
    let dropped = |name: &HeaderName| HOP_HEADERS.contains(name) || (bodiless && name == CONTENT_LENGTH);
    for (name, value) in response.headers().iter().filter(|(n, _)| !dropped(n)) {
        line(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless {
        Framing::Empty
    } else if response.headers().contains_key(CONTENT_LENGTH) {
        Framing::Length
    } else if let Some(len) = response.body().size_hint().exact() {
        line(&mut head, b"content-length", len.to_string().as_bytes());
        Framing::Length
    } else {
        line(&mut head, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if !response.headers().contains_key(DATE) {
        line(&mut head, b"date", httpdate::fmt_http_date(now).as_bytes());
    }
    line(&mut head, b"connection", b"close");
    head.extend_from_slice(b"\r\n");
    (head, framing)
}

/// One piece of body as it goes on the wire.
pub fn frame(data: &[u8], framing: &Framing) -> Vec<u8> {
    match framing {
        Framing::Chunked => {
            let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
            chunk.extend_from_slice(data);
            chunk.extend_from_slice(b"\r\n");
            chunk
        }
        _ => data.to_vec(),
    }
}

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes `response` on `tcp` and closes the connection: when the body ends, when the client
/// goes away (the body is dropped at once, which ends its subscription), or when `stop`
/// resolves (a chunked body then ends cleanly, so that the client reconnects elsewhere).
pub async fn respond(mut tcp: TcpStream, response: Response, stop: impl Future<Output = ()>) -> io::Result<()> {
    let (head, framing) = head(&response, std::time::SystemTime::now());
    send(&tcp, &head).await?;
    drop(head);
    if framing != Framing::Empty {
        let mut body = std::pin::pin!(Body::into_data_stream(response.into_body()));
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                data = body.next() => match data {
                    // An empty chunk would end the body: skip it.
                    Some(Ok(data)) if data.is_empty() => {}
                    // A client that stops reading must not hold shutdown up: the write gives
                    // way to `stop`, and the response is cut off mid-frame.
                    Some(Ok(data)) => {
                        let framed = frame(&data, &framing);
                        tokio::select! {
                            sent = send(&tcp, &framed) => sent?,
                            () = &mut stop => return Ok(()),
                        }
                    }
                    // A body that fails is cut off without its end, so the client sees it failed.
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    None => break,
                },
                gone = client_gone(&tcp) => return gone,
                () = &mut stop => break,
            }
        }
        if framing == Framing::Chunked {
            send(&tcp, LAST_CHUNK).await?;
        }
    }
    tokio::io::AsyncWriteExt::shutdown(&mut tcp).await
}

/// Writes all of `bytes` without taking the socket mutably, so that [`client_gone`] can watch
/// it meanwhile.
async fn send(tcp: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resolves when the client closes its side (or the socket fails); what it sends meanwhile is
/// read and dropped.
async fn client_gone(tcp: &TcpStream) -> io::Result<()> {
    loop {
        tcp.readable().await?;
        let mut scrap = [0u8; 64];
        match tcp.try_read(&mut scrap) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;
    use std::time::{Duration, UNIX_EPOCH};

    fn text(head: &[u8]) -> String {
        String::from_utf8(head.to_vec()).unwrap()
    }

    const NOW: Duration = Duration::from_secs(1_764_500_000);

    #[test]
    fn a_stream_is_chunked_and_closes_the_connection() {
        let body = Body::from_stream(futures::stream::empty::<Result<axum::body::Bytes, io::Error>>());
        let mut response = Response::new(body);
        response.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        let (head, framing) = head(&response, UNIX_EPOCH + NOW);
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(
            text(&head),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
             date: Sun, 30 Nov 2025 10:53:20 GMT\r\nconnection: close\r\n\r\n",
            "the handler's own connection header gives way to the wire's"
        );
    }

    #[test]
    fn a_body_of_known_length_says_so_and_an_empty_status_has_no_body() {
        let (found, framing) = head(&(StatusCode::NOT_FOUND, "no such quote").into_response(), UNIX_EPOCH + NOW);
        assert_eq!(framing, Framing::Length);
        assert!(text(&found).starts_with("HTTP/1.1 404 Not Found\r\n"), "{}", text(&found));
        assert!(text(&found).contains("content-length: 13\r\n"), "{}", text(&found));
        let (empty, framing) = head(&StatusCode::NO_CONTENT.into_response(), UNIX_EPOCH + NOW);
        assert_eq!(framing, Framing::Empty);
        assert!(!text(&empty).contains("content-length") && !text(&empty).contains("transfer-encoding"));
    }

    #[test]
    fn chunks_carry_their_length_in_hex() {
        assert_eq!(frame(&[b'x'; 26], &Framing::Chunked), [&b"1a\r\n"[..], &[b'x'; 26], b"\r\n"].concat());
        assert_eq!(frame(b"as is", &Framing::Length), b"as is");
    }
}
