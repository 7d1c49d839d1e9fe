//! Recognises, from the first bytes of a connection, an HTTP/1.1 request for an event stream
//! that the lean wire can answer: a complete `GET` head without a body or an upgrade.

use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

/// Header lines read at most; a request with more goes to hyper, which answers it properly.
const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection are.
#[derive(Debug)]
pub enum Sniff {
    /// A request head that has not fully arrived.
    Incomplete,
    /// HTTP/2 with prior knowledge (its connection preface).
    Http2,
    /// Anything else for hyper's HTTP/1: another method or path, HTTP/1.0, a body, an upgrade,
    /// or bytes that do not parse.
    Other,
    /// A stream request whose head is the first `len` bytes.
    Stream { len: usize, request: Box<Request<()>> },
}

/// The connection preface of HTTP/2 with prior knowledge (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads `bytes` as the start of a connection (or of its next request); `is_stream` says which
/// paths are streams.
pub fn sniff(bytes: &[u8], is_stream: impl Fn(&str) -> bool) -> Sniff {
    if bytes.starts_with(H2_PREFACE) {
        return Sniff::Http2;
    }
    if H2_PREFACE.starts_with(bytes) {
        return Sniff::Incomplete;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Sniff::Incomplete,
        Err(_) => return Sniff::Other,
    };
    let (Some("GET"), Some(path), Some(1)) = (head.method, head.path, head.version) else {
        return Sniff::Other;
    };
    if !is_stream(path.split('?').next().unwrap_or(path)) {
        return Sniff::Other;
    }
    let Ok(uri) = path.parse::<Uri>() else {
        return Sniff::Other;
    };
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    for h in head.headers.iter() {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return Sniff::Other;
        };
        request.headers_mut().append(name, value);
    }
    if carries_body_or_upgrade(request.headers()) {
        return Sniff::Other;
    }
    Sniff::Stream { len, request: Box::new(request) }
}

/// A body (which the lean wire does not read) or a protocol switch is hyper's to handle.
fn carries_body_or_upgrade(headers: &axum::http::HeaderMap) -> bool {
    use axum::http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
    let empty = headers.get_all(CONTENT_LENGTH).iter().all(|v| v.as_bytes() == b"0");
    !empty || headers.contains_key(TRANSFER_ENCODING) || headers.contains_key(UPGRADE) || headers.contains_key(EXPECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(path: &str) -> bool {
        path.starts_with("/q/") && path.ends_with("/events")
    }

    fn stream(bytes: &[u8]) -> (usize, Request<()>) {
        match sniff(bytes, events) {
            Sniff::Stream { len, request } => (len, *request),
            other => panic!("{} read as {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn a_complete_stream_request_is_read_with_its_headers_and_query() {
        let head = b"GET /q/7/events?last_event_id=3 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 5\r\nAccept: text/event-stream\r\nAccept: x\r\n\r\n";
        let (len, request) = stream(&[&head[..], b"leftover"].concat());
        assert_eq!(len, head.len(), "the head ends at the blank line; what follows is not part of it");
        assert_eq!(request.uri(), "/q/7/events?last_event_id=3");
        assert_eq!(request.headers()["last-event-id"], "5");
        assert_eq!(request.headers().get_all("accept").iter().count(), 2, "repeated headers are all kept");
        assert_eq!(request.version(), Version::HTTP_11);
    }

    #[test]
    fn a_head_cut_short_is_incomplete_at_every_byte() {
        let head = b"GET /q/7/events HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            assert!(matches!(sniff(&head[..cut], events), Sniff::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let others: [&[u8]; 8] = [
            b"POST /q/7/events HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /q/7 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /q/7/events HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET /q/7/events HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
            b"GET /q/7/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /q/7/events HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /q/7/events HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for bytes in others {
            assert!(matches!(sniff(bytes, events), Sniff::Other), "{}", String::from_utf8_lossy(bytes));
        }
        assert!(matches!(
            sniff(b"GET /q/7/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n", events),
            Sniff::Stream { .. }
        ));
        assert!(matches!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", events), Sniff::Http2));
        assert!(matches!(sniff(b"PRI * HTTP/2", events), Sniff::Incomplete));
    }

    #[test]
    fn a_head_with_more_headers_than_read_goes_to_hyper() {
        let mut head = b"GET /q/7/events HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend(format!("X-{i}: v\r\n").bytes());
        }
        head.extend(b"\r\n");
        assert!(matches!(sniff(&head, events), Sniff::Other));
    }
}
