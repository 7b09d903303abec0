//! Test faults: the messages a burst writes, and the `serverShutdown` event.
//!
//! A burst is `n` bookTicker messages written straight to one connection's socket (not
//! through its bounded queue, so none is dropped by the feed), round-robin over the
//! symbols the connection subscribed to by `<symbol>@bookTicker`. Each symbol's prices walk
//! within 99 ticks below its current price (the last bookTicker the feed published for it:
//! recorded or scripted) and the last message of the burst for a symbol carries exactly that
//! current price. So after a burst a consumer must show the same price as before it, and
//! every intermediate price is one that must have been coalesced away.

use std::collections::HashSet;
use std::fmt::Write as _;

use axum::extract::ws::Utf8Bytes;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::hub::Hub;
use crate::util::now_ms;

/// Distinct price levels a burst cycles through per symbol.
const LEVELS: u64 = 100;

/// `{"e":"serverShutdown","E":<now ms>}`, as Binance sends before a forced disconnect.
pub fn server_shutdown_event() -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"e":"serverShutdown","E":{}}}"#, now_ms()))
}

struct Symbol {
    /// `{"stream":"btcusdt@bookTicker","data":{"u":`
    head: String,
    /// `,"s":"BTCUSDT","b":"…","B":"1.00000000","a":"…","A":"1.00000000"}}` per level
    /// (index = ticks below the current price).
    tails: Vec<String>,
}

/// The messages of one burst, generated lazily.
pub struct Burst {
    symbols: Vec<Symbol>,
    n: u64,
    i: u64,
    first_u: u64,
}

#[derive(Deserialize)]
struct BookData<'a> {
    #[serde(borrow)]
    s: &'a str,
    #[serde(borrow)]
    b: &'a str,
    #[serde(borrow)]
    a: &'a str,
}

#[derive(Deserialize)]
struct BookMsg<'a> {
    #[serde(borrow)]
    data: BookData<'a>,
}

impl Burst {
    /// Plans `n` messages over the `<symbol>@bookticker` streams in `subs` (only `only`, an
    /// upper-case symbol, when given) whose current price the feed knows. `first_u` is the
    /// update id of the first message (ids then increase by one).
    pub fn plan(
        hub: &Hub,
        subs: &HashSet<String>,
        only: Option<&str>,
        n: u64,
        first_u: u64,
    ) -> Self {
        let mut streams: Vec<&String> =
            subs.iter().filter(|s| s.ends_with("@bookticker")).collect();
        streams.sort();
        let mut symbols = Vec::new();
        for stream in streams {
            let Some(last) = hub.last_book_ticker(stream) else {
                continue;
            };
            let Ok(msg) = serde_json::from_str::<BookMsg<'_>>(last.as_str()) else {
                continue;
            };
            let symbol = msg.data.s.to_ascii_uppercase();
            if only.is_some_and(|o| o != symbol) {
                continue;
            }
            let (Ok(bid), Ok(ask)) = (
                Decimal::from_str_exact(msg.data.b),
                Decimal::from_str_exact(msg.data.a),
            ) else {
                continue;
            };
            let tick = Decimal::new(1, bid.scale().min(ask.scale()));
            let levels = if bid - tick * Decimal::from(LEVELS) > Decimal::ZERO {
                LEVELS
            } else {
                1
            };
            let tails = (0..levels)
                .map(|k| {
                    let d = tick * Decimal::from(k);
                    format!(
                        r#","s":"{symbol}","b":"{}","B":"1.00000000","a":"{}","A":"1.00000000"}}}}"#,
                        bid - d,
                        ask - d
                    )
                })
                .collect();
            symbols.push(Symbol {
                head: format!(
                    r#"{{"stream":"{}@bookTicker","data":{{"u":"#,
                    symbol.to_ascii_lowercase()
                ),
                tails,
            });
        }
        let n = if symbols.is_empty() { 0 } else { n };
        Self {
            symbols,
            n,
            i: 0,
            first_u: first_u.max(1),
        }
    }

    /// Messages this burst will produce.
    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

impl Iterator for Burst {
    type Item = Utf8Bytes;

    fn next(&mut self) -> Option<Utf8Bytes> {
        if self.i >= self.n {
            return None;
        }
        let count = self.symbols.len() as u64;
        let (i, n) = (self.i, self.n);
        let idx = (i % count) as usize;
        // This symbol's messages in the burst, and which one this is.
        let per = n / count + u64::from((idx as u64) < n % count);
        let j = i / count;
        let sym = &self.symbols[idx];
        let level = ((per - 1 - j) % sym.tails.len() as u64) as usize;
        let tail = &sym.tails[level];
        let mut text = String::with_capacity(sym.head.len() + 20 + tail.len());
        text.push_str(&sym.head);
        let _ = write!(text, "{}", self.first_u + i);
        text.push_str(tail);
        self.i += 1;
        Some(Utf8Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(sym: &str, b: &str, a: &str) -> Utf8Bytes {
        Utf8Bytes::from(format!(
            r#"{{"stream":"{}@bookTicker","data":{{"u":1,"s":"{sym}","b":"{b}","B":"1","a":"{a}","A":"1"}}}}"#,
            sym.to_ascii_lowercase()
        ))
    }

    #[test]
    fn walks_below_the_current_price_and_ends_on_it() {
        let hub = Hub::new();
        hub.publish(
            "btcusdt@bookticker",
            &book("BTCUSDT", "61000.10", "61000.20"),
        );
        hub.publish("ethusdt@bookticker", &book("ETHUSDT", "0.05", "0.06"));
        let subs: HashSet<String> = ["btcusdt@bookticker", "ethusdt@bookticker", "x@trade"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let msgs: Vec<serde_json::Value> = Burst::plan(&hub, &subs, None, 1001, 7)
            .map(|t| serde_json::from_str(t.as_str()).unwrap())
            .collect();
        assert_eq!(msgs.len(), 1001);
        assert_eq!(msgs[0]["data"]["u"], 7);
        assert_eq!(msgs[1000]["data"]["u"], 1007);
        let btc: Vec<&serde_json::Value> = msgs
            .iter()
            .filter(|m| m["data"]["s"] == "BTCUSDT")
            .collect();
        assert_eq!(btc.len(), 501);
        assert_eq!(btc[0]["stream"], "btcusdt@bookTicker");
        let last = btc.last().unwrap();
        assert_eq!(last["data"]["b"], "61000.10");
        assert_eq!(last["data"]["a"], "61000.20");
        assert_eq!(btc[btc.len() - 2]["data"]["b"], "61000.09");
        let distinct: HashSet<&str> = btc
            .iter()
            .map(|m| m["data"]["b"].as_str().unwrap())
            .collect();
        assert_eq!(distinct.len(), 100);
        // Too close to zero to walk down: the price stays.
        let eth: Vec<&serde_json::Value> = msgs
            .iter()
            .filter(|m| m["data"]["s"] == "ETHUSDT")
            .collect();
        assert_eq!(eth.len(), 500);
        assert!(eth.iter().all(|m| m["data"]["b"] == "0.05"));

        let only: Vec<Utf8Bytes> = Burst::plan(&hub, &subs, Some("ETHUSDT"), 3, 1).collect();
        assert_eq!(only.len(), 3);
        assert!(only.iter().all(|t| t.as_str().contains("ETHUSDT")));
        // Unknown prices: nothing to send.
        assert!(Burst::plan(&hub, &subs, Some("SOLUSDT"), 3, 1).is_empty());
    }
}
