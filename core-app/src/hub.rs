//! Fan-out of "quote X has new events" to the SSE streams of this replica.
//!
//! Whichever replica stores an event NOTIFYs [`store::CHANNEL`]; every replica LISTENs and
//! wakes its local streams of that quote, which then read the new events from the
//! database. So two replicas behind no sticky routing both stream every event, and a
//! slow stream never loses one: the database, not a channel, holds the events.

use crate::store;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Watchers per quote; a watch channel coalesces wake-ups, so a burst costs one read.
#[derive(Default)]
pub struct Hub {
    quotes: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
}

/// A stream's registration; dropping it unregisters the quote when it was the last one.
pub struct Subscription {
    hub: Arc<Hub>,
    quote: Uuid,
    rx: Option<watch::Receiver<u64>>,
}

impl Subscription {
    /// Marks everything so far as seen; call before reading the database.
    pub fn mark_seen(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
    }

    /// Waits for a wake-up after the last [`mark_seen`](Self::mark_seen).
    pub async fn changed(&mut self) {
        match self.rx.as_mut() {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
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
        let rx = self.quotes.lock().expect("hub lock").entry(quote).or_insert_with(|| watch::channel(0).0).subscribe();
        metrics::gauge!("sse_streams_open").increment(1.0);
        Subscription { hub: self.clone(), quote, rx: Some(rx) }
    }

    /// Wakes the streams of `quote` on this replica.
    pub fn notify(&self, quote: Uuid) {
        if let Some(tx) = self.quotes.lock().expect("hub lock").get(&quote) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every stream: after a lost LISTEN connection, when notifications may be missing.
    pub fn notify_all(&self) {
        for tx in self.quotes.lock().expect("hub lock").values() {
            tx.send_modify(|n| *n += 1);
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
                                Ok(Some(n)) => match n.payload().parse::<Uuid>() {
                                    Ok(quote) => self.notify(quote),
                                    Err(_) => tracing::warn!("ignoring a malformed quote notification"),
                                },
                                Ok(None) => {
                                    tracing::warn!("LISTEN connection lost; resynchronising streams");
                                    self.notify_all();
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
        hub.notify(a);
        tokio::time::timeout(Duration::from_millis(100), sa.changed()).await.expect("a woken");
        assert!(tokio::time::timeout(Duration::from_millis(50), sb.changed()).await.is_err(), "b not woken");
        assert_eq!(hub.streams(), 2);
        drop(sa);
        assert_eq!(hub.streams(), 1);
        assert!(!hub.quotes.lock().unwrap().contains_key(&a));
        hub.notify_all();
        tokio::time::timeout(Duration::from_millis(100), sb.changed()).await.expect("b woken by notify_all");
    }
}
