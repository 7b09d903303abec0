//! Script-controlled quotes: `POST /quotes` puts a symbol under script control.
//!
//! While a symbol is controlled, its recorded data is not replayed and the scripted quote is
//! emitted as a bookTicker (plus a trade when `last` is set) at once and then every
//! `repeat_ms`, the way a live market keeps updating.
//!
//! Publishing happens while the control lock is held, both here and in the replay loop, so a
//! client never sees a recorded message of a symbol after the scripted one that replaced it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::watch;

use crate::hub::Hub;
use crate::util::lock;

// `now_ms` lives in `util` (below `hub`, which needs it too); still reachable here as
// `feed::control::now_ms`, as benches and tests outside this crate call it.
pub use crate::util::now_ms;

/// A quote set by a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptedQuote {
    /// Upper-case symbol.
    pub symbol: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub bid: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub ask: Decimal,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub last: Option<Decimal>,
    /// When it was set (ms since the Unix epoch).
    pub set_at_ms: i64,
}

/// Shared state of scripted quotes.
pub struct Control {
    quotes: Mutex<BTreeMap<String, ScriptedQuote>>,
    /// Bumped on every change, so replay loops waiting on a controlled symbol wake up.
    generation: watch::Sender<u64>,
    next_update_id: AtomicU64,
    next_trade_id: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            quotes: Mutex::new(BTreeMap::new()),
            generation: watch::channel(0).0,
            next_update_id: AtomicU64::new(1),
            next_trade_id: AtomicU64::new(1),
        }
    }
}

#[derive(Serialize)]
struct Combined<'a, T> {
    stream: &'a str,
    data: T,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct BookTicker<'a> {
    u: u64,
    s: &'a str,
    b: String,
    B: &'static str,
    a: String,
    A: &'static str,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Trade<'a> {
    e: &'static str,
    E: i64,
    s: &'a str,
    t: u64,
    p: String,
    q: &'static str,
    T: i64,
    m: bool,
    M: bool,
}

impl Control {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A receiver that changes whenever a quote is set or released.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Puts `quote.symbol` under script control (replacing any previous quote) and emits it.
    pub fn set(&self, quote: ScriptedQuote, hub: &Hub) {
        let mut quotes = lock(&self.quotes);
        self.emit(&quote, hub);
        quotes.insert(quote.symbol.clone(), quote);
        drop(quotes);
        self.bump();
    }

    /// Releases a symbol; its replay resumes. Returns the quote it had, if any.
    pub fn release(&self, symbol: &str) -> Option<ScriptedQuote> {
        let removed = lock(&self.quotes).remove(symbol);
        if removed.is_some() {
            self.bump();
        }
        removed
    }

    /// Reserves `n` consecutive bookTicker update ids (for bursts); returns the first.
    pub fn reserve_update_ids(&self, n: u64) -> u64 {
        self.next_update_id.fetch_add(n, Ordering::Relaxed)
    }

    pub fn list(&self) -> Vec<ScriptedQuote> {
        lock(&self.quotes).values().cloned().collect()
    }

    pub fn is_controlled(&self, symbol: &str) -> bool {
        lock(&self.quotes).contains_key(symbol)
    }

    /// Publishes a recorded message unless `symbol` is controlled. Returns whether it did.
    pub fn publish_recorded(
        &self,
        symbol: &str,
        stream: &str,
        text: &Utf8Bytes,
        hub: &Hub,
    ) -> bool {
        let quotes = lock(&self.quotes);
        if quotes.contains_key(symbol) {
            return false;
        }
        hub.publish(stream, text);
        true
    }

    /// Re-emits every controlled quote (called every `repeat_ms`).
    pub fn emit_all(&self, hub: &Hub) {
        let quotes = lock(&self.quotes);
        for q in quotes.values() {
            self.emit(q, hub);
        }
    }

    fn emit(&self, q: &ScriptedQuote, hub: &Hub) {
        let lower = q.symbol.to_ascii_lowercase();
        let u = self.next_update_id.fetch_add(1, Ordering::Relaxed);
        let book_stream = format!("{lower}@bookTicker");
        let book = Combined {
            stream: &book_stream,
            data: BookTicker {
                u,
                s: &q.symbol,
                b: q.bid.to_string(),
                B: "1.00000000",
                a: q.ask.to_string(),
                A: "1.00000000",
            },
        };
        match serde_json::to_string(&book) {
            Ok(text) => hub.publish(&book_stream.to_ascii_lowercase(), &Utf8Bytes::from(text)),
            Err(e) => tracing::error!(error = %e, "serializing bookTicker"),
        }
        if let Some(last) = q.last {
            let now = now_ms();
            let t = self.next_trade_id.fetch_add(1, Ordering::Relaxed);
            let trade_stream = format!("{lower}@trade");
            let trade = Combined {
                stream: &trade_stream,
                data: Trade {
                    e: "trade",
                    E: now,
                    s: &q.symbol,
                    t,
                    p: last.to_string(),
                    q: "0.00100000",
                    T: now,
                    m: false,
                    M: true,
                },
            };
            match serde_json::to_string(&trade) {
                Ok(text) => hub.publish(&trade_stream, &Utf8Bytes::from(text)),
                Err(e) => tracing::error!(error = %e, "serializing trade"),
            }
        }
    }
}

/// Re-emits controlled quotes every `repeat` until the task is aborted.
pub async fn run_repeater(control: Arc<Control>, hub: Arc<Hub>, repeat: Duration) {
    let mut tick = tokio::time::interval(repeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; `set` already emitted
    loop {
        tick.tick().await;
        control.emit_all(&hub);
    }
}
