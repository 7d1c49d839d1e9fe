//! core-app's HTTP server. hyper serves every connection (HTTP/1.1 and HTTP/2), except an
//! HTTP/1.1 request for an event stream, which is answered on the lean wire of [`stream`]:
//! at 10 000 idle streams, hyper's per-connection buffers were most of core-app's memory.
//! A stream request that opens its connection goes there at once; one that follows other
//! requests on a kept-alive connection is taken back from hyper first ([`handoff`]). The
//! router, and so every layer (tracing, metrics, CORS, limits), is the same for all of them.

mod handoff;
mod sniff;
mod stream;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sniff::Sniff;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Service, ServiceExt};

/// Bytes of a connection looked at to recognise a stream request; a longer head goes to hyper.
pub(crate) const PEEK: usize = 4096;

/// How long a request head may take to arrive in pieces before hyper is given the connection.
const PEEK_PATIENCE: Duration = Duration::from_millis(200);

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish
/// (event streams end at once) and returns when they have.
pub async fn run(listener: TcpListener, app: Router, is_stream: fn(&str) -> bool, stop: watch::Receiver<bool>) {
    // Every connection task holds a receiver; the sender sees them all gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut stopping = std::pin::pin!(stopped(stop.clone()));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to be freed.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let _ = tcp.set_nodelay(true);
        let (app, stop, open) = (app.clone(), stop.clone(), open_rx.clone());
        tokio::spawn(async move {
            connection(tcp, peer, app, is_stream, stop).await;
            drop(open);
        });
    }
    drop((listener, open_rx));
    open_tx.closed().await;
}

/// One connection, from its first bytes to its close.
async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    is_stream: fn(&str) -> bool,
    stop: watch::Receiver<bool>,
) {
    let mut stopping = std::pin::pin!(stopped(stop.clone()));
    loop {
        // A connection that has not said anything yet is simply closed at shutdown.
        let sniffed = tokio::select! {
            sniffed = peek_head(&tcp, is_stream) => sniffed,
            () = &mut stopping => return,
        };
        // Each branch is boxed: the task's future is as large as its largest state, and a
        // stream must not carry the size of a hyper connection.
        let served = match sniffed {
            Ok(Sniff::Stream { len, request }) => Box::pin(serve_stream(tcp, len, *request, peer, app, stop)).await,
            Ok(Sniff::Http2) => Box::pin(serve_http2(tcp, peer, app, stop)).await,
            Ok(_) => match Box::pin(serve_http1(tcp, peer, app.clone(), is_stream, stop.clone())).await {
                // hyper gave the socket back: its next request is a stream.
                Ok(Some(back)) => {
                    tcp = back;
                    continue;
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
        return;
    }
}

/// Recognises the connection's next request without consuming it, so that hyper reads it
/// again when it is not a stream request.
async fn peek_head(tcp: &TcpStream, is_stream: fn(&str) -> bool) -> std::io::Result<Sniff> {
    let mut bytes = vec![0; PEEK];
    let patience = tokio::time::Instant::now() + PEEK_PATIENCE;
    loop {
        let n = tcp.peek(&mut bytes).await?;
        match sniff::sniff(&bytes[..n], is_stream) {
            // A peek returns at once while anything is buffered: wait for more in small steps.
            Sniff::Incomplete if n > 0 && n < PEEK && tokio::time::Instant::now() < patience => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Sniff::Incomplete => return Ok(Sniff::Other),
            sniffed => return Ok(sniffed),
        }
    }
}

/// Answers a stream request on the lean wire.
async fn serve_stream(
    mut tcp: TcpStream,
    len: usize,
    request: Request<()>,
    peer: SocketAddr,
    app: Router,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // The head was only peeked at: take it off the socket now.
    tcp.read_exact(&mut vec![0; len]).await?;
    let Ok(response) = app.oneshot(from(peer, request.map(|()| Body::empty()))).await;
    stream::respond(tcp, response, stopped(stop)).await
}

/// Serves an HTTP/1.1 connection with hyper until it closes — or until, with no request in
/// flight and everything written flushed, the next one asks for an event stream: then the
/// socket is returned, open, with that request unread. On `stop`, the requests in flight
/// finish and the connection closes.
async fn serve_http1(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    is_stream: fn(&str) -> bool,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Option<TcpStream>> {
    let gate = handoff::Gate::new(is_stream);
    let counted = gate.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let request = from(peer, counted.request(request));
        let (mut app, gate) = (app.clone(), counted.clone());
        // Boxed: hyper hands the socket back only from a connection whose futures are Unpin.
        Box::pin(async move { app.call(request).await.map(|response| gate.response(response)) })
    });
    let io = TokioIo::new(handoff::Watched::new(tcp, gate.clone()));
    let mut conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    // Polled as a future, so that hyper flushes what it has written and shuts the socket down
    // (which `Watched` skips after a hand-off) before `into_parts`.
    drive(&mut conn, stop, |conn| conn.graceful_shutdown()).await.map_err(std::io::Error::other)?;
    if !gate.handed_off() {
        return Ok(None);
    }
    let parts = conn.into_parts();
    if !parts.read_buf.is_empty() {
        // hyper saw the end of the file instead of the stream request, so it cannot hold any of
        // it; should it hold anything, the connection is dropped rather than misread.
        tracing::debug!(bytes = parts.read_buf.len(), "hand-off with bytes in hyper's buffer; closing");
        return Ok(None);
    }
    Ok(Some(parts.io.into_inner().into_inner()))
}

/// Serves an HTTP/2 connection with hyper; on `stop`, the streams in flight finish.
async fn serve_http2(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        app.clone().call(from(peer, request.map(Body::new)))
    });
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(tcp), service));
    drive(&mut conn, stop, |conn| conn.get_mut().as_mut().graceful_shutdown()).await.map_err(std::io::Error::other)
}

/// `request` as the router sees it: with the client's address (`ConnectInfo`).
fn from<B>(peer: SocketAddr, mut request: Request<B>) -> Request<B> {
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// Polls a hyper connection to its end; once `stop` turns true, asks it (once) to finish the
/// requests in flight and close.
async fn drive<C: Future + Unpin>(
    conn: &mut C,
    stop: watch::Receiver<bool>,
    graceful: impl Fn(Pin<&mut C>),
) -> C::Output {
    let mut stopping = std::pin::pin!(stopped(stop));
    let mut shutting = false;
    std::future::poll_fn(|cx| {
        if !shutting && stopping.as_mut().poll(cx).is_ready() {
            shutting = true;
            graceful(Pin::new(&mut *conn));
        }
        Pin::new(&mut *conn).poll(cx)
    })
    .await
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
