//! Fan-out of messages to connected WebSocket clients.
//!
//! Each client has a set of subscribed stream names (lowercase) and a bounded queue.
//! Publishing never waits: when a client's queue is full the message is dropped for that
//! client and counted, so a slow client cannot make the feed's memory grow.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

/// Locks a mutex, ignoring poisoning (our critical sections never leave data half-updated).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The streams one client subscribed to (lowercase names).
pub type Subscriptions = Arc<RwLock<HashSet<String>>>;

struct Client {
    subs: Subscriptions,
    tx: mpsc::Sender<Utf8Bytes>,
    dropped: Arc<AtomicU64>,
}

/// Registry of connected clients.
#[derive(Default)]
pub struct Hub {
    clients: Mutex<HashMap<u64, Client>>,
    next_id: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

/// What a connected client task holds; unregisters itself on drop.
pub struct ClientHandle {
    pub id: u64,
    pub subs: Subscriptions,
    pub rx: mpsc::Receiver<Utf8Bytes>,
    pub dropped: Arc<AtomicU64>,
    hub: Arc<Hub>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        lock(&self.hub.clients).remove(&self.id);
    }
}

/// Counters for `/health`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HubStats {
    pub clients: usize,
    pub sent: u64,
    pub dropped: u64,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a client with an initial set of streams and a queue of `capacity` messages.
    pub fn register(self: &Arc<Self>, streams: HashSet<String>, capacity: usize) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let subs: Subscriptions = Arc::new(RwLock::new(streams));
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.clients).insert(
            id,
            Client {
                subs: subs.clone(),
                tx,
                dropped: dropped.clone(),
            },
        );
        ClientHandle {
            id,
            subs,
            rx,
            dropped,
            hub: self.clone(),
        }
    }

    /// Sends `text` to every client subscribed to `stream` (lowercase). Never blocks.
    pub fn publish(&self, stream: &str, text: &Utf8Bytes) {
        let clients = lock(&self.clients);
        for client in clients.values() {
            let subscribed = client
                .subs
                .read()
                .map(|s| s.contains(stream))
                .unwrap_or_else(|e| e.into_inner().contains(stream));
            if !subscribed {
                continue;
            }
            match client.tx.try_send(text.clone()) {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    client.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                // The client task is going away; it unregisters itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Disconnects every client (their queues close; their tasks say goodbye and end).
    pub fn close_all(&self) {
        lock(&self.clients).clear();
    }

    pub fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            clients: self.client_count(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_only_subscribed_streams_and_drops_when_full() {
        let hub = Hub::new();
        let mut a = hub.register(["x@trade".to_string()].into(), 2);
        let msg = Utf8Bytes::from("m".to_string());
        hub.publish("y@trade", &msg);
        hub.publish("x@trade", &msg);
        hub.publish("x@trade", &msg);
        hub.publish("x@trade", &msg);
        assert_eq!(a.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(hub.stats().dropped, 1);
        assert!(a.rx.recv().await.is_some());
        assert!(a.rx.recv().await.is_some());
        assert!(a.rx.try_recv().is_err());
        drop(a);
        assert_eq!(hub.client_count(), 0);
    }
}
