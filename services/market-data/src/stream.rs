//! The market-stream client: connections, keepalive, rotation without gaps, reconnects.
//!
//! A supervisor task owns the connections; each connection runs in its own task, reads
//! frames and applies updates to the book. Exactly one connection is *active*: only its
//! updates are applied. A newer connection takes over at its first update (an atomic
//! `fetch_max` on the active id, so ids only move forward), and every older connection is
//! then closed. That gives rotation without a gap: when the active connection
//!
//! - reaches `max_age` (Binance closes connections at 24 h),
//! - receives a `serverShutdown` event (Binance closes it soon after), or
//! - stalls (no update for `stall_timeout`),
//!
//! a new connection is opened while the old one keeps delivering, and the switch happens
//! only once the new one delivers (or, if the old one is gone or stalled too, once the new
//! one is open, after at most another `stall_timeout`). When the active connection is lost
//! with no successor, a new one is opened after a jittered exponential backoff.
//!
//! Keepalive: tungstenite queues a pong with the ping's payload when it reads a ping; we
//! flush it at once (it would otherwise wait for our next write or read), so the server sees
//! the pong within one round trip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::book::Book;
use crate::lock;
use crate::parse::{self, Parsed};

/// Counters of the reader (and the open-connection gauge the flusher reads).
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Connections opened.
    pub connects: AtomicU64,
    /// Connections open now (a gauge): 0 means disconnected.
    pub open_connections: AtomicU64,
    pub messages: AtomicU64,
    pub updates: AtomicU64,
    pub ignored: AtomicU64,
    pub errors: AtomicU64,
    /// Pings answered (pong with the same payload, flushed at once).
    pub pings: AtomicU64,
    /// Switch-overs from a live connection to a new one (max age, serverShutdown, stall).
    pub rotations: AtomicU64,
    /// New connections opened because the active one was lost.
    pub reconnects: AtomicU64,
    /// `serverShutdown` events received.
    pub server_shutdowns: AtomicU64,
    /// Times the active connection went `stall_timeout` without an update.
    pub stalls: AtomicU64,
    /// Updates dropped because they came from a connection already replaced by a newer one
    /// (the newer one carries the same data).
    pub superseded: AtomicU64,
}

/// `{base}/stream?streams=btcusdt@bookTicker/btcusdt@trade/...` (lowercase symbols).
pub fn stream_url(base: &str, symbols: &[String]) -> String {
    let streams: Vec<String> = symbols
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .flat_map(|s| [format!("{s}@bookTicker"), format!("{s}@trade")])
        .collect();
    format!(
        "{}/stream?streams={}",
        base.trim_end_matches('/'),
        streams.join("/")
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff with jitter: 100 ms doubling to a 5 s cap, each wait drawn from
/// [base/2, base].
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            base: min,
            min,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.base = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        let half = base / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// With no frame at all for this long (Binance pings every 20 s), the connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the supervisor checks ages and stalls.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// What the stream client needs to know.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The combined-stream URL ([`stream_url`]).
    pub url: String,
    /// Rotate a connection this old (Binance closes them at 24 h).
    pub max_age: Duration,
    /// No update on the active connection for this long: it is stalled.
    pub stall_timeout: Duration,
}

/// Why a connection was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Start,
    Reconnect,
    MaxAge,
    ServerShutdown,
    Stall,
}

/// What connection tasks tell the supervisor.
enum Event {
    Opened(u64),
    Failed(u64, anyhow::Error),
    /// The connection applied its first update (it is the active one now).
    Delivering(u64),
    ServerShutdown(u64),
    Closed(u64, Option<anyhow::Error>),
}

/// State shared by the supervisor and the connection tasks.
struct Shared {
    book: Arc<Mutex<Book>>,
    stats: Arc<StreamStats>,
    /// Id of the connection whose updates are applied (0: none yet). Only increases.
    active: AtomicU64,
    /// Wall-clock ms of the last update applied (or of the last promotion).
    last_update_ms: AtomicI64,
    events: mpsc::UnboundedSender<Event>,
}

impl Shared {
    fn send(&self, ev: Event) {
        // The supervisor holds the receiver for as long as any connection task runs.
        let _ = self.events.send(ev);
    }

    /// Whether connection `id` may apply an update; a newer connection takes over here.
    fn may_apply(&self, id: u64) -> bool {
        let active = self.active.load(Ordering::Acquire);
        if active == id {
            return true;
        }
        if id < active {
            return false;
        }
        self.active.fetch_max(id, Ordering::AcqRel) <= id
    }
}

/// One connection as the supervisor sees it.
struct Conn {
    reason: Reason,
    /// `Some` until the connection is asked to close.
    close: Option<oneshot::Sender<()>>,
    opened: Option<Instant>,
    took_over: bool,
    delivered: bool,
    shutdown_notice: bool,
    stall_noted: bool,
}

/// Runs the stream client until the task is aborted.
pub async fn run(config: StreamConfig, book: Arc<Mutex<Book>>, stats: Arc<StreamStats>) {
    let (events, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        book,
        stats,
        active: AtomicU64::new(0),
        last_update_ms: AtomicI64::new(now_ms()),
        events,
    });
    let mut sup = Supervisor {
        config,
        shared,
        conns: BTreeMap::new(),
        next_id: 1,
        backoff: Backoff::default(),
        retry_at: Instant::now(),
        ever_active: false,
    };
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        sup.supervise();
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => sup.handle(ev),
                None => return,
            },
            _ = check.tick() => {}
        }
    }
}

struct Supervisor {
    config: StreamConfig,
    shared: Arc<Shared>,
    /// Every connection task still running, by id.
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    backoff: Backoff,
    /// No new connection before this (backoff after failures).
    retry_at: Instant,
    ever_active: bool,
}

impl Supervisor {
    fn active_id(&self) -> u64 {
        self.shared.active.load(Ordering::Acquire)
    }

    fn stalled(&self, c: &Conn, now: Instant) -> bool {
        let stall = self.config.stall_timeout;
        let quiet_ms = now_ms() - self.shared.last_update_ms.load(Ordering::Relaxed);
        c.opened.is_some_and(|t| now.duration_since(t) >= stall)
            && quiet_ms >= stall.as_millis() as i64
    }

    /// Opens, promotes and closes connections as the state requires.
    fn supervise(&mut self) {
        let now = Instant::now();
        let active = self.active_id();
        let candidate = self
            .conns
            .range(active + 1..)
            .next_back()
            .map(|(id, _)| *id);
        let current_stalled = match self.conns.get(&active) {
            Some(c) => {
                let stalled = self.stalled(c, now);
                if stalled && !c.stall_noted {
                    self.shared.stats.stalls.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        stall_ms = self.config.stall_timeout.as_millis() as u64,
                        "market stream stalled; opening another connection"
                    );
                }
                if let Some(c) = self.conns.get_mut(&active) {
                    c.stall_noted |= stalled;
                }
                Some(stalled)
            }
            None => None,
        };

        if let Some(id) = candidate {
            // A silent successor takes over when there is nothing better: at once when the
            // active connection is gone, after a stall timeout when it is stalled too.
            let c = &self.conns[&id];
            if let Some(opened) = c.opened {
                let promote = match current_stalled {
                    None => true,
                    Some(stalled) => {
                        stalled && now.duration_since(opened) >= self.config.stall_timeout
                    }
                };
                if promote && !c.took_over {
                    if current_stalled.is_some() {
                        // Nothing proves the new connection works: grow the backoff.
                        self.retry_at = now + self.backoff.next_delay();
                    }
                    self.shared.active.fetch_max(id, Ordering::AcqRel);
                    self.shared
                        .last_update_ms
                        .store(now_ms(), Ordering::Relaxed);
                    self.took_over(id);
                }
            }
            return;
        }

        let need = match self.conns.get(&active) {
            None => Some(if self.ever_active {
                Reason::Reconnect
            } else {
                Reason::Start
            }),
            Some(c) if c.shutdown_notice => Some(Reason::ServerShutdown),
            Some(c)
                if c.opened
                    .is_some_and(|t| now.duration_since(t) >= self.config.max_age) =>
            {
                Some(Reason::MaxAge)
            }
            Some(_) if current_stalled == Some(true) => Some(Reason::Stall),
            Some(_) => None,
        };
        if let Some(reason) = need {
            if now >= self.retry_at {
                self.open(reason);
            }
        }
    }

    fn open(&mut self, reason: Reason) {
        let id = self.next_id;
        self.next_id += 1;
        if reason == Reason::Reconnect {
            self.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(connection = id, ?reason, "opening market stream connection");
        let (close, close_rx) = oneshot::channel();
        self.conns.insert(
            id,
            Conn {
                reason,
                close: Some(close),
                opened: None,
                took_over: false,
                delivered: false,
                shutdown_notice: false,
                stall_noted: false,
            },
        );
        tokio::spawn(connection(
            id,
            self.config.url.clone(),
            self.shared.clone(),
            close_rx,
        ));
    }

    /// Connection `id` is the active one now: close every older one.
    fn took_over(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.took_over {
            return;
        }
        c.took_over = true;
        let reason = c.reason;
        self.ever_active = true;
        let mut replaced_live = false;
        for (old, c) in self.conns.range_mut(..id) {
            if let Some(close) = c.close.take() {
                replaced_live |= c.opened.is_some();
                tracing::info!(connection = old, "closing the replaced connection");
                let _ = close.send(());
            }
        }
        if replaced_live {
            self.shared.stats.rotations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(connection = id, ?reason, "switched to the new connection");
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Opened(id) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.opened = Some(now);
                }
            }
            Event::Failed(id, e) => {
                self.conns.remove(&id);
                self.retry_at = now + self.backoff.next_delay();
                tracing::warn!(connection = id, error = %format!("{e:#}"),
                    retry_in_ms = self.retry_at.duration_since(now).as_millis() as u64,
                    "market stream connect failed");
            }
            Event::Delivering(id) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.delivered = true;
                }
                self.backoff.reset();
                if id == self.active_id() {
                    self.took_over(id);
                }
            }
            Event::ServerShutdown(id) => {
                tracing::warn!(
                    connection = id,
                    "serverShutdown received; rotating to a new connection"
                );
                if let Some(c) = self.conns.get_mut(&id) {
                    c.shutdown_notice = true;
                }
            }
            Event::Closed(id, error) => {
                let Some(c) = self.conns.remove(&id) else {
                    return;
                };
                if c.close.is_none() {
                    return; // we asked it to close
                }
                if id >= self.active_id() {
                    if c.delivered {
                        self.backoff.reset();
                    }
                    self.retry_at = now + self.backoff.next_delay();
                    let retry_in_ms = self.retry_at.duration_since(now).as_millis() as u64;
                    match error {
                        Some(e) => tracing::warn!(connection = id, error = %format!("{e:#}"),
                            retry_in_ms, "market stream failed"),
                        None => {
                            tracing::warn!(connection = id, retry_in_ms, "market stream closed")
                        }
                    }
                }
            }
        }
    }
}

/// Keeps `open_connections` right however the connection task ends.
struct OpenGuard(Arc<StreamStats>);

impl OpenGuard {
    fn new(stats: &Arc<StreamStats>) -> Self {
        stats.open_connections.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection: connect, read until closed (or asked to close), report to the supervisor.
async fn connection(id: u64, url: String, shared: Arc<Shared>, mut close: oneshot::Receiver<()>) {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url));
    let mut ws = tokio::select! {
        r = connect => match r {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return shared.send(Event::Failed(id, e.into())),
            Err(_) => return shared.send(Event::Failed(id, anyhow::anyhow!("connect timed out"))),
        },
        _ = &mut close => return shared.send(Event::Closed(id, None)),
    };
    let open = OpenGuard::new(&shared.stats);
    let n = shared.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(connection = id, connects = n, "connected to market stream");
    shared.send(Event::Opened(id));
    let result = read(id, &mut ws, &shared, &mut close).await;
    drop(open);
    shared.send(Event::Closed(id, result.err()));
}

async fn read<S>(
    id: u64,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    shared: &Shared,
    close: &mut oneshot::Receiver<()>,
) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let stats = &shared.stats;
    let mut delivered = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut *close => {
                // Replaced: say goodbye (bounded), then drop the socket.
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return Ok(());
            }
            frame = tokio::time::timeout(READ_TIMEOUT, ws.next()) => frame,
        };
        let frame = match frame {
            Err(_) => anyhow::bail!("no frame for {READ_TIMEOUT:?}"),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(text) => {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                match parse::parse_message(text.as_str()) {
                    Ok(Parsed::Update(update)) => {
                        if !shared.may_apply(id) {
                            stats.superseded.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let now = now_ms();
                        lock(&shared.book).apply(&update, now);
                        shared.last_update_ms.store(now, Ordering::Relaxed);
                        stats.updates.fetch_add(1, Ordering::Relaxed);
                        if !delivered {
                            delivered = true;
                            shared.send(Event::Delivering(id));
                        }
                    }
                    Ok(Parsed::ServerShutdown) => {
                        stats.server_shutdowns.fetch_add(1, Ordering::Relaxed);
                        shared.send(Event::ServerShutdown(id));
                    }
                    Ok(Parsed::Other) => {
                        stats.ignored.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if stats.errors.fetch_add(1, Ordering::Relaxed) < 10 {
                            tracing::warn!(error = %e, "unparseable message ignored");
                        }
                    }
                }
            }
            Message::Ping(_) => {
                // tungstenite queued the matching pong (same payload) when it read the ping;
                // flush it now rather than at our next read or write.
                ws.flush().await?;
                stats.pings.fetch_add(1, Ordering::Relaxed);
            }
            Message::Close(frame) => {
                tracing::info!(connection = id, ?frame, "server closed the stream");
                return Ok(());
            }
            Message::Binary(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_combined_stream_url() {
        assert_eq!(
            stream_url("ws://127.0.0.1:9100/", &["BTCUSDT".into(), " ethusdt".into()]),
            "ws://127.0.0.1:9100/stream?streams=btcusdt@bookTicker/btcusdt@trade/ethusdt@bookTicker/ethusdt@trade"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::default();
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(101));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(5001), "{d:?}");
        }
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(101));
    }
}
