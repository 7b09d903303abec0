//! What the driver saw, as a client and as the feed's scripter: the auditor's reference.
//!
//! Everything here is written by the driver from the answers it got and the quotes it
//! scripted, never read back from the system under test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rust_decimal::Decimal;
use uuid::Uuid;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One quote the driver scripted on the feed (`POST /quotes`): the feed streams it from
/// `at_ms` (taken before the POST) until the next one of its symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub at_ms: i64,
    pub bid: Decimal,
    pub ask: Decimal,
}

/// An order the API (or the webhook) answered with a 2xx: it must exist exactly once.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub account_id: Uuid,
    pub client_order_id: String,
    /// `market`, `limit`, `replace`, `alert`, `close`, `probe`, ...
    pub via: &'static str,
    pub at_ms: i64,
}

/// A cancel that got a 2xx: its order must end terminal (canceled, or filled if the fill won).
#[derive(Debug, Clone)]
pub struct CancelAccepted {
    pub account_id: Uuid,
    pub order_id: Uuid,
    pub at_ms: i64,
}

/// An answer no client may get: a 5xx other than 503 with `Retry-After`, a 503 without
/// `Retry-After`, a 4xx that is not a JSON `{code, message}` error, or no answer within the
/// client's timeout.
#[derive(Debug, Clone)]
pub struct BadAnswer {
    pub account_id: Option<Uuid>,
    pub what: String,
    pub status: Option<u16>,
    pub detail: String,
    pub at_ms: i64,
}

/// One fault as injected: its kind, when it started and ended, and how long after its end
/// the system served a probe order again (filled), if it did within the bound.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    pub kind: &'static str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub recovery_ms: Option<i64>,
}

/// Counters of the run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Mutating requests (commands) sent, first attempts only.
    pub sent: AtomicU64,
    /// Of those, answered 2xx (after retries).
    pub accepted: AtomicU64,
    /// Refused with a documented 4xx (rule refusals, not found, rate limits).
    pub refused: AtomicU64,
    /// 503s with `Retry-After` that the client retried.
    pub unavailable: AtomicU64,
    /// Requests given up after the retry bound (their outcome unknown to the client).
    pub gave_up: AtomicU64,
    /// Read requests (GET) answered.
    pub reads: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The whole record of a run.
#[derive(Debug, Default)]
pub struct Record {
    pub counters: Counters,
    accepted: Mutex<Vec<Accepted>>,
    cancels: Mutex<Vec<CancelAccepted>>,
    quotes: Mutex<HashMap<String, Vec<Published>>>,
    bad_answers: Mutex<Vec<BadAnswer>>,
    faults: Mutex<Vec<FaultEvent>>,
    /// Windows in which the feed sent nothing (stalls), `(from_ms, to_ms)`.
    silent_feed: Mutex<Vec<(i64, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Record {
    pub fn accept(&self, a: Accepted) {
        lock(&self.accepted).push(a);
    }
    pub fn cancel(&self, c: CancelAccepted) {
        lock(&self.cancels).push(c);
    }
    pub fn publish(&self, symbol: &str, p: Published) {
        lock(&self.quotes)
            .entry(symbol.to_string())
            .or_default()
            .push(p);
    }
    pub fn bad(&self, b: BadAnswer) {
        lock(&self.bad_answers).push(b);
    }
    pub fn fault(&self, f: FaultEvent) {
        lock(&self.faults).push(f);
    }
    pub fn feed_silent(&self, from_ms: i64, to_ms: i64) {
        lock(&self.silent_feed).push((from_ms, to_ms));
    }
    pub fn accepted(&self) -> Vec<Accepted> {
        lock(&self.accepted).clone()
    }
    pub fn cancels(&self) -> Vec<CancelAccepted> {
        lock(&self.cancels).clone()
    }
    /// Every scripted quote per symbol, in time order.
    pub fn quotes(&self) -> HashMap<String, Vec<Published>> {
        let mut q = lock(&self.quotes).clone();
        for v in q.values_mut() {
            v.sort_by_key(|p| p.at_ms);
        }
        q
    }
    pub fn bad_answers(&self) -> Vec<BadAnswer> {
        lock(&self.bad_answers).clone()
    }
    pub fn faults(&self) -> Vec<FaultEvent> {
        lock(&self.faults).clone()
    }
    pub fn silent_feed(&self) -> Vec<(i64, i64)> {
        lock(&self.silent_feed).clone()
    }
}
