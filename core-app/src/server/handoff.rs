//! Takes an HTTP/1.1 connection back from hyper when, with no request in flight, the client's
//! next request asks for an event stream: clients keep connections alive, so a stream often
//! follows another request on the same connection (a browser's `POST` of the quote, or a
//! proxy's pooled upstream connection), and would otherwise be served by hyper.
//!
//! hyper reads through [`Watched`]. A [`Gate`] counts the halves of requests in flight (each
//! response body, and each request body not yet read to its end). When none is, hyper holds no
//! bytes of a request it has not dispatched, and everything it wrote is flushed, `Watched`
//! peeks at what arrives; a stream request makes it tell hyper the client closed. hyper then
//! flushes and ends, `Watched` keeps the socket open, and the caller takes it back. A request body that
//! was not read to its end closes the gate for good: where hyper stands in it is unknown
//! (hyper closes such a connection today; the gate does not rely on that).

use super::sniff::{Sniff, sniff};
use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::PEEK;

/// What a connection's reads and its requests share.
#[derive(Clone)]
pub struct Gate(Arc<State>);

struct State {
    is_stream: fn(&str) -> bool,
    /// Response bodies not yet sent, and request bodies not yet read to their end.
    in_flight: AtomicUsize,
    /// A request body was dropped unread: never hand this connection off.
    shut: AtomicBool,
    /// The next request is a stream: hyper has been told the client closed.
    handed_off: AtomicBool,
    /// hyper was given bytes that no dispatched request has accounted for yet (a head in
    /// pieces, a body): what arrives next may be the rest of them.
    unaccounted: AtomicBool,
    /// hyper wrote bytes it has not flushed yet (a response cut off by an end of file is lost).
    unflushed: AtomicBool,
}

impl Gate {
    /// A gate for stream requests as `is_stream` tells them.
    pub fn new(is_stream: fn(&str) -> bool) -> Self {
        Gate(Arc::new(State {
            is_stream,
            in_flight: AtomicUsize::new(0),
            shut: AtomicBool::new(false),
            handed_off: AtomicBool::new(false),
            unaccounted: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
        }))
    }

    /// Whether hyper ended because the next request is a stream.
    pub fn handed_off(&self) -> bool {
        self.0.handed_off.load(Ordering::Acquire)
    }

    /// Counts `request` in flight until its response is sent (and its body, if it has one, read).
    pub fn request(&self, request: Request<Incoming>) -> Request<Body> {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.0.unaccounted.store(false, Ordering::Release);
        if request.body().is_end_stream() {
            return request.map(Body::new);
        }
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        request.map(|body| Body::new(Tracked { inner: body, gate: self.clone(), half: Half::Request, done: false }))
    }

    /// The response of a request counted by [`Gate::request`].
    pub fn response(&self, response: Response<Body>) -> Response<Body> {
        let gate = self.clone();
        response.map(|body| Body::new(Tracked { inner: body, gate, half: Half::Response, done: false }))
    }

    fn idle(&self) -> bool {
        self.0.in_flight.load(Ordering::Acquire) == 0
            && !self.0.shut.load(Ordering::Acquire)
            && !self.0.unaccounted.load(Ordering::Acquire)
            && !self.0.unflushed.load(Ordering::Acquire)
    }
}

/// Which half of an exchange a [`Tracked`] body is.
#[derive(Clone, Copy, PartialEq)]
enum Half {
    Request,
    Response,
}

/// A body that tells its gate when it ends (or is dropped before).
struct Tracked<B> {
    inner: B,
    gate: Gate,
    half: Half,
    done: bool,
}

impl<B> Tracked<B> {
    fn finish(&mut self, whole: bool) {
        if !self.done {
            self.done = true;
            if self.half == Half::Request {
                if whole {
                    // The body's bytes are accounted for.
                    self.gate.0.unaccounted.store(false, Ordering::Release);
                } else {
                    self.gate.0.shut.store(true, Ordering::Release);
                }
            }
            self.gate.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper reads it: at end of file when the next request is a stream.
pub struct Watched {
    tcp: TcpStream,
    gate: Gate,
}

impl Watched {
    pub fn new(tcp: TcpStream, gate: Gate) -> Self {
        Watched { tcp, gate }
    }

    /// The socket, for the lean wire to answer the stream request still unread on it.
    pub fn into_inner(self) -> TcpStream {
        self.tcp
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.gate.handed_off() {
            return Poll::Ready(Ok(()));
        }
        if self.gate.idle() {
            // Uninitialised: this runs before every request of a kept-alive connection.
            let mut head = [std::mem::MaybeUninit::<u8>::uninit(); PEEK];
            let mut peeked = ReadBuf::uninit(&mut head);
            match self.tcp.poll_peek(cx, &mut peeked) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => {
                    if let Sniff::Stream { .. } = sniff(peeked.filled(), self.gate.0.is_stream) {
                        self.gate.0.handed_off.store(true, Ordering::Release);
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.gate.0.unaccounted.store(true, Ordering::Release);
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.gate.0.unflushed.store(true, Ordering::Release);
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.gate.0.unflushed.store(true, Ordering::Release);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the socket once its own buffer is written out.
        let flushed = Pin::new(&mut self.tcp).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.gate.0.unflushed.store(false, Ordering::Release);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gate.handed_off() {
            // The socket goes on to the lean wire.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
