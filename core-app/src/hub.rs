//! Fan-out of a quote's new events to the SSE streams of this replica.
//!
//! Whichever replica stores an event NOTIFYs [`store::CHANNEL`] with the event itself (when
//! it fits); every replica LISTENs and hands it to its local streams of that quote. A stream
//! that gets the event following its last one sends it as it is; any other wake-up (a
//! coalesced burst, an event too large to notify, a lost LISTEN connection) makes it read
//! the database. So two replicas behind no sticky routing both stream every event, a slow
//! stream never loses one — the database, not a channel, holds the events — and the common
//! case costs no query per stream.

use crate::store::{self, StoredEvent};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// What woke a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// The quote's newest event.
    Event(Arc<StoredEvent>),
    /// Something changed: read the database.
    Read,
}

/// Watchers per quote; a watch channel keeps only the latest wake-up, so a burst costs at
/// most one read.
#[derive(Default)]
pub struct Hub {
    quotes: Mutex<HashMap<Uuid, watch::Sender<Wake>>>,
}

/// A stream's registration; dropping it unregisters the quote when it was the last one.
pub struct Subscription {
    hub: Arc<Hub>,
    quote: Uuid,
    rx: Option<watch::Receiver<Wake>>,
}

impl Subscription {
    /// Marks everything so far as seen; call before reading the database.
    pub fn mark_seen(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
    }

    /// Waits for a wake-up after the last one seen, and marks it seen.
    pub async fn changed(&mut self) -> Wake {
        match self.rx.as_mut() {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                rx.borrow_and_update().clone()
            }
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
            .or_insert_with(|| watch::channel(Wake::Read).0)
            .subscribe();
        metrics::gauge!("sse_streams_open").increment(1.0);
        Subscription { hub: self.clone(), quote, rx: Some(rx) }
    }

    /// Wakes the streams of `quote` on this replica.
    pub fn notify(&self, quote: Uuid, wake: Wake) {
        if let Some(tx) = self.quotes.lock().expect("hub lock").get(&quote) {
            tx.send_replace(wake);
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
            tx.send_replace(Wake::Read);
        }
    }

    /// Streams open on this replica.
    pub fn streams(&self) -> usize {
        self.quotes.lock().expect("hub lock").values().map(watch::Sender::receiver_count).sum()
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
