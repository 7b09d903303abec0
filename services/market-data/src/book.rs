//! Latest quote per symbol plus the set of symbols changed since the last flush.
//!
//! Memory is bounded by the number of symbols, whatever the tick rate: every update
//! overwrites the previous state of its symbol (coalescing). An update that lands on a
//! symbol already waiting for the next flush is counted in [`Book::coalesced`].
//!
//! The book also tracks, per symbol, what the Redis stale marker (`{prefix}stale:{SYMBOL}`)
//! is believed to be, so a flush writes only the marker transitions (see [`Book::take_batch`]).

use std::collections::HashMap;
use std::sync::Arc;

use domain::quote::Quote;
use rust_decimal::Decimal;

use crate::parse::Update;

/// What we believe the stale marker of a symbol in Redis is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// Not known: a previous process may have left one. The first fresh write deletes it.
    #[default]
    Unknown,
    Set,
    Clear,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    bid: Option<Decimal>,
    ask: Option<Decimal>,
    last: Option<Decimal>,
    /// Receive time of the newest update (or when the symbol was added, if none yet).
    ts: i64,
    dirty: bool,
    /// Set while a batch is being taken: its quote is in the batch.
    written: bool,
    marker: Marker,
}

/// When a symbol counts as stale at a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// No update for the symbol for this long (ms).
    pub stall_ms: i64,
    /// The market stream is connected at all (no connection = every symbol is stale).
    pub connected: bool,
}

/// What one flush writes: the changed quotes and the stale-marker transitions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// One quote per changed symbol that has both a bid and an ask.
    pub quotes: Vec<Quote>,
    /// Symbols whose stale marker must be set.
    pub mark_stale: Vec<Arc<str>>,
    /// Symbols whose stale marker must be deleted (a fresh quote is written with it).
    pub clear_stale: Vec<Arc<str>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.quotes.is_empty() && self.mark_stale.is_empty() && self.clear_stale.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Book {
    entries: HashMap<Arc<str>, Entry>,
    dirty: Vec<Arc<str>>,
    coalesced: u64,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    /// A book that knows `symbols` (upper case) from the start, as received at `now_ms`
    /// with no price yet: a symbol that never gets an update is marked stale too.
    pub fn with_symbols<'s>(symbols: impl IntoIterator<Item = &'s str>, now_ms: i64) -> Self {
        let mut book = Self::new();
        for s in symbols {
            let s = s.trim().to_ascii_uppercase();
            if !s.is_empty() {
                book.entries.insert(
                    Arc::from(s.as_str()),
                    Entry {
                        ts: now_ms,
                        ..Entry::default()
                    },
                );
            }
        }
        book
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
        if entry.dirty {
            // Merged into the write already pending for this symbol.
            self.coalesced += 1;
        } else {
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

    /// Takes what the next flush writes: the dirty quotes ([`Book::take_dirty`]) and, when
    /// `staleness` is given, the stale-marker transitions at `now_ms`. A symbol is stale
    /// when the stream is disconnected or it had no update for `stall_ms`; its marker is set
    /// once, and deleted with the first fresh quote written after it. The markers' state
    /// changes only in [`Book::commit`], after the write succeeded.
    pub fn take_batch(&mut self, now_ms: i64, staleness: Option<Staleness>) -> Batch {
        let mut batch = Batch {
            quotes: Vec::with_capacity(self.dirty.len()),
            ..Batch::default()
        };
        for symbol in self.dirty.drain(..) {
            if let Some(e) = self.entries.get_mut(&symbol) {
                e.dirty = false;
                if let (Some(bid), Some(ask)) = (e.bid, e.ask) {
                    batch.quotes.push(Quote {
                        symbol: symbol.to_string(),
                        bid,
                        ask,
                        last: e.last,
                        ts: e.ts,
                    });
                    e.written = staleness.is_some();
                }
            }
        }
        let Some(st) = staleness else {
            return batch;
        };
        for (key, e) in self.entries.iter_mut() {
            let stale = !st.connected || now_ms - e.ts > st.stall_ms;
            if stale && e.marker != Marker::Set {
                batch.mark_stale.push(key.clone());
            } else if !stale && e.written && e.marker != Marker::Clear {
                batch.clear_stale.push(key.clone());
            }
            e.written = false;
        }
        batch
    }

    /// Records that `batch` was written: its marker transitions now hold.
    pub fn commit(&mut self, batch: &Batch) {
        for (symbols, marker) in [
            (&batch.mark_stale, Marker::Set),
            (&batch.clear_stale, Marker::Clear),
        ] {
            for s in symbols {
                if let Some(e) = self.entries.get_mut(s) {
                    e.marker = marker;
                }
            }
        }
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

    /// Symbols whose stale marker is set (as far as this process wrote it).
    pub fn stale_symbols(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.marker == Marker::Set)
            .map(|(k, _)| k.to_string())
            .collect();
        v.sort();
        v
    }

    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    pub fn symbols(&self) -> usize {
        self.entries.len()
    }

    /// Updates merged into a write already pending for their symbol (never written alone).
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn book_update<'a>(symbol: &'a str, bid: &str, ask: &str) -> Update<'a> {
        Update::Book {
            symbol,
            bid: d(bid),
            ask: d(ask),
        }
    }

    #[test]
    fn coalesces_and_tracks_dirty() {
        let mut b = Book::new();
        // A trade before any bookTicker is kept but not written.
        b.apply(
            &Update::Trade {
                symbol: "BTCUSDT",
                price: d("10.5"),
                print: None,
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
        b.apply(&book_update("ETHUSDT", "1", "2"), 5);
        assert_eq!(b.dirty_len(), 2);
        // 1000 BTC updates: the first made it dirty, 999 merged into it.
        assert_eq!(b.coalesced(), 999);
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

    fn names(v: &[Arc<str>]) -> Vec<&str> {
        let mut v: Vec<&str> = v.iter().map(|s| &**s).collect();
        v.sort();
        v
    }

    #[test]
    fn stale_markers_are_set_once_and_cleared_by_a_fresh_write() {
        let up = Some(Staleness {
            stall_ms: 100,
            connected: true,
        });
        let down = Some(Staleness {
            stall_ms: 100,
            connected: false,
        });
        let mut b = Book::with_symbols(["btcusdt", "ETHUSDT", " "], 0);
        assert_eq!(b.symbols(), 2);
        b.apply(&book_update("BTCUSDT", "1", "2"), 50);
        // Fresh write of a symbol whose marker is unknown: delete any leftover marker.
        let batch = b.take_batch(60, up);
        assert_eq!(batch.quotes.len(), 1);
        assert_eq!(names(&batch.clear_stale), ["BTCUSDT"]);
        assert!(batch.mark_stale.is_empty());
        b.commit(&batch);
        // ETHUSDT never had an update: stale once the stall timeout passed since the start.
        let batch = b.take_batch(101, up);
        assert_eq!(names(&batch.mark_stale), ["ETHUSDT"]);
        // Not committed (the write failed): proposed again.
        let batch = b.take_batch(102, up);
        assert_eq!(names(&batch.mark_stale), ["ETHUSDT"]);
        b.commit(&batch);
        assert!(b.take_batch(103, up).is_empty());
        assert_eq!(b.stale_symbols(), ["ETHUSDT"]);

        // Disconnected: everything is stale at once, and only once.
        let batch = b.take_batch(104, down);
        assert_eq!(names(&batch.mark_stale), ["BTCUSDT"]);
        b.commit(&batch);
        assert!(b.take_batch(105, down).is_empty());

        // A fresh update while connected clears the marker with the write.
        b.apply(&book_update("ETHUSDT", "3", "4"), 200);
        let batch = b.take_batch(201, up);
        assert_eq!(batch.quotes[0].symbol, "ETHUSDT");
        assert_eq!(names(&batch.clear_stale), ["ETHUSDT"]);
        assert!(batch.mark_stale.is_empty(), "{batch:?}");
        b.commit(&batch);
        assert_eq!(b.stale_symbols(), ["BTCUSDT"]);

        // An update written while disconnected is written, and stays marked stale.
        b.apply(&book_update("ETHUSDT", "3", "5"), 300);
        let batch = b.take_batch(301, down);
        assert_eq!(batch.quotes.len(), 1);
        assert_eq!(names(&batch.mark_stale), ["ETHUSDT"]);
        assert!(batch.clear_stale.is_empty());

        // Without staleness, no markers at all.
        let mut b = Book::with_symbols(["X"], 0);
        assert!(b.take_batch(10_000, None).is_empty());
    }
}
