//! Fan-out of messages to connected WebSocket clients.
//!
//! Each client has a set of subscribed stream names (lowercase) and a bounded queue.
//! Publishing never waits: when a client's queue is full the message is dropped for that
//! client and counted, so a slow client cannot make the feed's memory grow.
//!
//! The hub also carries the test faults (`/__control/...`) to the client tasks: a command
//! broadcast that only the connections open at the time receive, and a feed-wide stall.
//! It keeps a record of every connection (open, and the last [`HISTORY`] closed ones) so a
//! test can see when connections opened and closed, and why.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::util::{lock, now_ms};

/// Closed connections remembered for `GET /__control/connections`.
pub const HISTORY: usize = 256;

/// The streams one client subscribed to (lowercase names).
pub type Subscriptions = Arc<RwLock<HashSet<String>>>;

/// A fault injected into the connections open when it is issued (`/__control/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Close the TCP connection at once, without a WebSocket close frame.
    Drop,
    /// Send `{"e":"serverShutdown","E":<ms>}`, keep streaming for `grace`, then close.
    Shutdown { grace: Duration },
    /// Write `n` bookTicker messages straight to the socket (see `faults::Burst`), for the
    /// subscribed symbols (or only `symbol`, upper case).
    Burst { n: u64, symbol: Option<String> },
    /// Send nothing at all (no data, no pings) until `until`; data published meanwhile is
    /// discarded for this connection.
    Stall { until: Instant },
}

/// Per-connection counters, shared between the client task and the hub's record.
#[derive(Debug, Default)]
pub struct ClientCounters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub pings: AtomicU64,
    /// Pongs whose payload matched an outstanding ping.
    pub pongs: AtomicU64,
    /// Pongs that matched no outstanding ping (allowed, but they keep nobody alive).
    pub unsolicited_pongs: AtomicU64,
    pub burst_sent: AtomicU64,
}

struct Client {
    subs: Subscriptions,
    tx: mpsc::Sender<Utf8Bytes>,
    counters: Arc<ClientCounters>,
}

/// One connection as `GET /__control/connections` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub streams: Vec<String>,
    pub connected_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub close_reason: Option<String>,
    pub sent: u64,
    pub dropped: u64,
    pub pings: u64,
    pub pongs: u64,
    pub unsolicited_pongs: u64,
    pub burst_sent: u64,
}

struct Record {
    streams: Vec<String>,
    connected_at_ms: i64,
    closed: Option<(i64, String)>,
    counters: Arc<ClientCounters>,
}

/// Registry of connected clients.
pub struct Hub {
    clients: Mutex<HashMap<u64, Client>>,
    records: Mutex<BTreeMap<u64, Record>>,
    /// The last bookTicker published on each stream (lowercase name): the base of bursts.
    last_book: Mutex<HashMap<String, Utf8Bytes>>,
    commands: broadcast::Sender<ClientCommand>,
    /// Feed-wide stall: nothing is sent to anyone until this many ms after `epoch`.
    stalled_until: AtomicU64,
    epoch: Instant,
    next_id: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            clients: Mutex::default(),
            records: Mutex::default(),
            last_book: Mutex::default(),
            commands: broadcast::channel(64).0,
            stalled_until: AtomicU64::new(0),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

/// What a connected client task holds; unregisters itself on drop.
pub struct ClientHandle {
    pub id: u64,
    pub subs: Subscriptions,
    pub rx: mpsc::Receiver<Utf8Bytes>,
    pub commands: broadcast::Receiver<ClientCommand>,
    pub counters: Arc<ClientCounters>,
    close_reason: Option<String>,
    hub: Arc<Hub>,
}

impl ClientHandle {
    /// Recorded as the close reason when the handle drops.
    pub fn set_close_reason(&mut self, reason: &str) {
        self.close_reason = Some(reason.to_string());
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        lock(&self.hub.clients).remove(&self.id);
        let mut records = lock(&self.hub.records);
        if let Some(r) = records.get_mut(&self.id) {
            let reason = self.close_reason.take().unwrap_or_else(|| "gone".into());
            r.closed = Some((now_ms(), reason));
        }
        // Forget the oldest closed connections beyond HISTORY.
        let closed = records.values().filter(|r| r.closed.is_some()).count();
        if closed > HISTORY {
            let old: Vec<u64> = records
                .iter()
                .filter(|(_, r)| r.closed.is_some())
                .map(|(id, _)| *id)
                .take(closed - HISTORY)
                .collect();
            for id in old {
                records.remove(&id);
            }
        }
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
        let mut names: Vec<String> = streams.iter().cloned().collect();
        names.sort();
        let subs: Subscriptions = Arc::new(RwLock::new(streams));
        let counters = Arc::new(ClientCounters::default());
        // Subscribe before the client is visible: a command issued once it is listed reaches it.
        let commands = self.commands.subscribe();
        lock(&self.records).insert(
            id,
            Record {
                streams: names,
                connected_at_ms: now_ms(),
                closed: None,
                counters: counters.clone(),
            },
        );
        lock(&self.clients).insert(
            id,
            Client {
                subs: subs.clone(),
                tx,
                counters: counters.clone(),
            },
        );
        ClientHandle {
            id,
            subs,
            rx,
            commands,
            counters,
            close_reason: None,
            hub: self.clone(),
        }
    }

    /// Sends `text` to every client subscribed to `stream` (lowercase). Never blocks.
    pub fn publish(&self, stream: &str, text: &Utf8Bytes) {
        if stream.ends_with("@bookticker") {
            let mut last = lock(&self.last_book);
            match last.get_mut(stream) {
                Some(v) => *v = text.clone(),
                None => {
                    last.insert(stream.to_string(), text.clone());
                }
            }
        }
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
                    client.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                // The client task is going away; it unregisters itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// The last bookTicker message published on `stream` (lowercase), if any.
    pub fn last_book_ticker(&self, stream: &str) -> Option<Utf8Bytes> {
        lock(&self.last_book).get(stream).cloned()
    }

    /// Sends a fault command to every connection open now. Returns how many received it.
    pub fn command(&self, cmd: ClientCommand) -> usize {
        self.commands.send(cmd).unwrap_or(0)
    }

    /// Stalls the whole feed (every connection, including ones opened meanwhile) until `until`.
    pub fn stall_all(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.epoch).as_millis() as u64;
        self.stalled_until.fetch_max(ms, Ordering::Relaxed);
    }

    /// The end of the feed-wide stall, if one is in progress.
    pub fn stalled_until(&self) -> Option<Instant> {
        let ms = self.stalled_until.load(Ordering::Relaxed);
        let until = self.epoch + Duration::from_millis(ms);
        (ms > 0 && until > Instant::now()).then_some(until)
    }

    /// Every open connection, then the closed ones still remembered, in id order.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        lock(&self.records)
            .iter()
            .map(|(id, r)| {
                let c = &r.counters;
                ConnectionInfo {
                    id: *id,
                    streams: r.streams.clone(),
                    connected_at_ms: r.connected_at_ms,
                    closed_at_ms: r.closed.as_ref().map(|(t, _)| *t),
                    close_reason: r.closed.as_ref().map(|(_, why)| why.clone()),
                    sent: c.sent.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    pings: c.pings.load(Ordering::Relaxed),
                    pongs: c.pongs.load(Ordering::Relaxed),
                    unsolicited_pongs: c.unsolicited_pongs.load(Ordering::Relaxed),
                    burst_sent: c.burst_sent.load(Ordering::Relaxed),
                }
            })
            .collect()
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
        assert_eq!(a.counters.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(hub.stats().dropped, 1);
        assert!(a.rx.recv().await.is_some());
        assert!(a.rx.recv().await.is_some());
        assert!(a.rx.try_recv().is_err());
        a.set_close_reason("test over");
        drop(a);
        assert_eq!(hub.client_count(), 0);
        let conns = hub.connections();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].close_reason.as_deref(), Some("test over"));
        assert_eq!(conns[0].streams, vec!["x@trade".to_string()]);
    }

    #[tokio::test]
    async fn commands_reach_only_open_connections_and_history_is_bounded() {
        let hub = Hub::new();
        let mut a = hub.register(HashSet::new(), 1);
        assert_eq!(hub.command(ClientCommand::Drop), 1);
        let mut b = hub.register(HashSet::new(), 1);
        assert_eq!(a.commands.try_recv().unwrap(), ClientCommand::Drop);
        assert!(
            b.commands.try_recv().is_err(),
            "b connected after the command"
        );
        drop((a, b));
        for _ in 0..HISTORY + 10 {
            drop(hub.register(HashSet::new(), 1));
        }
        assert_eq!(hub.connections().len(), HISTORY);
    }

    #[tokio::test]
    async fn remembers_the_last_book_ticker_and_stalls() {
        let hub = Hub::new();
        hub.publish("x@bookticker", &Utf8Bytes::from("1".to_string()));
        hub.publish("x@bookticker", &Utf8Bytes::from("2".to_string()));
        hub.publish("x@trade", &Utf8Bytes::from("3".to_string()));
        assert_eq!(hub.last_book_ticker("x@bookticker").unwrap().as_str(), "2");
        assert!(hub.last_book_ticker("x@trade").is_none());
        assert!(hub.stalled_until().is_none());
        hub.stall_all(Instant::now() + Duration::from_secs(60));
        assert!(hub.stalled_until().is_some());
    }
}
