//! Fan-out of a quote's new events to the SSE streams of this replica.
//!
//! Whichever replica stores an event NOTIFYs [`store::CHANNEL`] with the event itself (when
//! it fits); every replica LISTENs and hands it to its local streams of that quote. A stream
//! that gets the event following its last one sends it as it is; any other wake-up (a burst
//! longer than the channel holds, an event too large to notify, a lost LISTEN connection)
//! makes it read the database. So two replicas behind no sticky routing both stream every
//! event, a slow stream never loses one — the database, not a channel, holds the events —
//! and the common case costs no query per stream: a quote's last result and its `complete`,
//! committed together, both reach the stream from the channel.

use crate::store::{self, StoredEvent};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use uuid::Uuid;

/// What woke a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// The quote's newest event.
    Event(Arc<StoredEvent>),
    /// Something changed: read the database.
    Read,
}

/// Wake-ups a quote's channel holds for a stream that has not taken them yet: every event of
/// a quote of six insurers, and its `complete`. A stream further behind reads the database.
const BACKLOG: usize = 8;

/// Listeners per quote; each stream gets every wake-up in order, up to [`BACKLOG`] behind.
#[derive(Default)]
pub struct Hub {
    quotes: Mutex<HashMap<Uuid, broadcast::Sender<Wake>>>,
}

/// A stream's registration; dropping it unregisters the quote when it was the last one.
pub struct Subscription {
    hub: Arc<Hub>,
    quote: Uuid,
    rx: Option<broadcast::Receiver<Wake>>,
}

impl Subscription {
    /// Marks everything so far as seen (drops the wake-ups waiting); call before reading the
    /// database, which holds all they announce.
    pub fn mark_seen(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            while !matches!(rx.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        }
    }

    /// The next wake-up after the last one seen; [`Wake::Read`] when the stream fell more than
    /// [`BACKLOG`] behind and some were dropped.
    pub async fn changed(&mut self) -> Wake {
        match self.rx.as_mut() {
            Some(rx) => match rx.recv().await {
                Ok(wake) => wake,
                Err(RecvError::Lagged(_)) => Wake::Read,
                // The hub keeps the sender while a subscription lives.
                Err(RecvError::Closed) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut quotes = self.hub.quotes.lock().expect("hub lock");
        if quotes.get(&self.quote).is_some_and(|tx| tx.receiver_count() == 0) {
            quotes.remove(&self.quote);
        }
        metrics::gauge!("sse_streams_open").decrement(1.0);
    }
}

impl Hub {
    /// Registers a stream of `quote`.
    pub fn subscribe(self: &Arc<Self>, quote: Uuid) -> Subscription {
        let rx = self
            .quotes
            .lock()
            .expect("hub lock")
            .entry(quote)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe();
        metrics::gauge!("sse_streams_open").increment(1.0);
        Subscription { hub: self.clone(), quote, rx: Some(rx) }
    }

    /// Wakes the streams of `quote` on this replica.
    pub fn notify(&self, quote: Uuid, wake: Wake) {
        if let Some(tx) = self.quotes.lock().expect("hub lock").get(&quote) {
            // Fails only with no stream left, which the last one's drop is about to clean up.
            let _ = tx.send(wake);
        }
    }

    /// Hands a notification's payload to the streams of its quote; unwatched quotes cost no
    /// parsing beyond the id.
    fn notify_payload(&self, payload: &str) {
        let Some(quote) = payload.get(..36).and_then(|id| id.parse::<Uuid>().ok()) else {
            tracing::warn!("ignoring a malformed quote notification");
            return;
        };
        if !self.quotes.lock().expect("hub lock").contains_key(&quote) {
            return;
        }
        match store::parse_push(payload) {
            Some((_, Some(event))) => self.notify(quote, Wake::Event(Arc::new(event))),
            Some((_, None)) => self.notify(quote, Wake::Read),
            None => tracing::warn!("ignoring a malformed quote notification"),
        }
    }

    /// Wakes every stream to read: after a lost LISTEN connection, when notifications may be missing.
    pub fn notify_all(&self) {
        for tx in self.quotes.lock().expect("hub lock").values() {
            let _ = tx.send(Wake::Read);
        }
    }

    /// Streams open on this replica.
    pub fn streams(&self) -> usize {
        self.quotes.lock().expect("hub lock").values().map(broadcast::Sender::receiver_count).sum()
    }

    /// Listens for notifications until the task is dropped, reconnecting as needed.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(store::CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        // Anything notified while we were not listening is read now.
                        self.notify_all();
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => self.notify_payload(n.payload()),
                                // Reconnect here rather than inside try_recv: only once the new
                                // connection LISTENs can streams resynchronise without a gap.
                                Ok(None) => {
                                    tracing::warn!("LISTEN connection lost; reconnecting");
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "LISTEN failed");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect for LISTEN"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_streams_of_the_quote_and_forgets_unwatched_quotes() {
        let hub = Arc::new(Hub::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut sa = hub.subscribe(a);
        let mut sb = hub.subscribe(b);
        sa.mark_seen();
        sb.mark_seen();
        let event = StoredEvent { seq: 3, name: "offer".into(), data: r#"{"insurer": "alfa"}"#.into() };
        hub.notify_payload(&format!("{a} {} {} {}", event.seq, event.name, event.data));
        let woken = tokio::time::timeout(Duration::from_millis(100), sa.changed()).await.expect("a woken");
        assert_eq!(woken, Wake::Event(Arc::new(event)), "the event itself is handed over");
        assert!(tokio::time::timeout(Duration::from_millis(50), sb.changed()).await.is_err(), "b not woken");
        assert_eq!(hub.streams(), 2);
        drop(sa);
        assert_eq!(hub.streams(), 1);
        assert!(!hub.quotes.lock().unwrap().contains_key(&a));
        hub.notify_all();
        let woken =
            tokio::time::timeout(Duration::from_millis(100), sb.changed()).await.expect("b woken by notify_all");
        assert_eq!(woken, Wake::Read);
        hub.notify_payload(&b.to_string());
        hub.notify_all();
        assert_eq!(sb.changed().await, Wake::Read, "a bare id asks for a read");
    }

    /// A quote's last result and its `complete` are notified back to back: the stream gets
    /// both, not only the newer (which would send it to the database for the one between).
    #[tokio::test]
    async fn a_burst_reaches_the_stream_event_by_event_and_a_longer_one_asks_for_a_read() {
        let hub = Arc::new(Hub::default());
        let quote = Uuid::new_v4();
        let mut stream = hub.subscribe(quote);
        stream.mark_seen();
        let event = |seq: i64| StoredEvent { seq, name: "status".into(), data: format!(r#"{{"n": {seq}}}"#) };
        for seq in [6, 7] {
            let e = event(seq);
            hub.notify_payload(&format!("{quote} {} {} {}", e.seq, e.name, e.data));
        }
        for seq in [6, 7] {
            assert_eq!(stream.changed().await, Wake::Event(Arc::new(event(seq))));
        }
        for seq in 8..8 + BACKLOG as i64 + 2 {
            hub.notify(quote, Wake::Event(Arc::new(event(seq))));
        }
        assert_eq!(stream.changed().await, Wake::Read, "fell behind: read the database");
        stream.mark_seen();
        assert!(tokio::time::timeout(Duration::from_millis(50), stream.changed()).await.is_err(), "all seen");
    }

    #[test]
    fn push_payloads_are_read_back_and_a_malformed_one_is_refused() {
        let quote = Uuid::new_v4();
        let data = r#"{"status": "offer", "reason": "a b c"}"#;
        let (parsed, event) = store::parse_push(&format!("{quote} 7 offer {data}")).unwrap();
        assert_eq!(parsed, quote);
        assert_eq!(event, Some(StoredEvent { seq: 7, name: "offer".into(), data: data.into() }));
        assert_eq!(store::parse_push(&quote.to_string()), Some((quote, None)));
        assert_eq!(store::parse_push("not-a-quote 1 offer {}"), None);
        assert_eq!(store::parse_push(&format!("{quote} x offer {{}}")), None);
    }
}
