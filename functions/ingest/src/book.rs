//! Latest quote per symbol plus the set of symbols changed since the last flush.
//!
//! Memory is bounded by the number of symbols, whatever the tick rate: every update
//! overwrites the previous state of its symbol (coalescing).

use std::collections::HashMap;
use std::sync::Arc;

use domain::quote::Quote;
use rust_decimal::Decimal;

use crate::parse::Update;

#[derive(Debug, Default, Clone)]
struct Entry {
    bid: Option<Decimal>,
    ask: Option<Decimal>,
    last: Option<Decimal>,
    ts: i64,
    dirty: bool,
}

#[derive(Debug, Default)]
pub struct Book {
    entries: HashMap<Arc<str>, Entry>,
    dirty: Vec<Arc<str>>,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an update received at `now_ms` (ms since the Unix epoch).
    pub fn apply(&mut self, update: &Update<'_>, now_ms: i64) {
        let symbol = update.symbol();
        let entry = match self.entries.get_mut(symbol) {
            Some(e) => e,
            None => self.entries.entry(Arc::from(symbol)).or_default(),
        };
        match *update {
            Update::Book { bid, ask, .. } => {
                entry.bid = Some(bid);
                entry.ask = Some(ask);
            }
            Update::Trade { price, .. } => entry.last = Some(price),
        }
        entry.ts = now_ms;
        if !entry.dirty {
            entry.dirty = true;
            // Only reached when the key exists: it was just looked up or inserted.
            if let Some((key, _)) = self.entries.get_key_value(symbol) {
                self.dirty.push(key.clone());
            }
        }
    }

    /// Takes the quotes of every changed symbol that has both a bid and an ask, and clears
    /// the dirty set. A symbol seen only in trades so far waits for its first bookTicker.
    pub fn take_dirty(&mut self) -> Vec<Quote> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for symbol in self.dirty.drain(..) {
            if let Some(e) = self.entries.get_mut(&symbol) {
                e.dirty = false;
                if let (Some(bid), Some(ask)) = (e.bid, e.ask) {
                    out.push(Quote {
                        symbol: symbol.to_string(),
                        bid,
                        ask,
                        last: e.last,
                        ts: e.ts,
                    });
                }
            }
        }
        out
    }

    /// Marks symbols dirty again after a failed write, so the next flush writes their
    /// (still latest) state.
    pub fn mark_dirty<'s>(&mut self, symbols: impl IntoIterator<Item = &'s str>) {
        for s in symbols {
            if let Some((key, e)) = self.entries.get_key_value(s) {
                if !e.dirty {
                    let key = key.clone();
                    if let Some(e) = self.entries.get_mut(s) {
                        e.dirty = true;
                    }
                    self.dirty.push(key);
                }
            }
        }
    }

    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    pub fn symbols(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn coalesces_and_tracks_dirty() {
        let mut b = Book::new();
        // A trade before any bookTicker is kept but not written.
        b.apply(
            &Update::Trade {
                symbol: "BTCUSDT",
                price: d("10.5"),
            },
            1,
        );
        assert!(b.take_dirty().is_empty());
        for i in 0..1000 {
            b.apply(
                &Update::Book {
                    symbol: "BTCUSDT",
                    bid: d("10"),
                    ask: d(&format!("11.{i}")),
                },
                2 + i,
            );
        }
        b.apply(
            &Update::Book {
                symbol: "ETHUSDT",
                bid: d("1"),
                ask: d("2"),
            },
            5,
        );
        assert_eq!(b.dirty_len(), 2);
        let mut q = b.take_dirty();
        q.sort_by(|x, y| x.symbol.cmp(&y.symbol));
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].symbol, "BTCUSDT");
        assert_eq!(q[0].ask, d("11.999"));
        assert_eq!(q[0].last, Some(d("10.5")));
        assert_eq!(q[0].ts, 1001);
        assert!(b.take_dirty().is_empty());
        b.mark_dirty(["ETHUSDT", "NOPE"]);
        b.mark_dirty(["ETHUSDT"]);
        assert_eq!(b.dirty_len(), 1);
        assert_eq!(b.take_dirty()[0].symbol, "ETHUSDT");
        assert_eq!(b.symbols(), 2);
    }
}
