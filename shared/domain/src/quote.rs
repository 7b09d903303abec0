//! The latest top-of-book quote of one symbol, as the ingest task caches it in Redis.
//!
//! The cache value is JSON with decimal strings, e.g.
//! `{"symbol":"BTCUSDT","bid":"61837.63","ask":"61837.64","last":"61837.63","ts":1723161255343}`
//! where `ts` is the time in milliseconds since the Unix epoch at which the ingest task
//! received the newest update for this symbol. Consumers compare `ts` with their own clock
//! to tell a fresh price from a stale one.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub symbol: String,
    #[serde(with = "crate::decimal::text")]
    pub bid: Decimal,
    #[serde(with = "crate::decimal::text")]
    pub ask: Decimal,
    #[serde(with = "crate::decimal::opt_text", default)]
    pub last: Option<Decimal>,
    /// Milliseconds since the Unix epoch when the newest update was received.
    pub ts: i64,
}

impl Quote {
    /// A two-sided quote without a last trade price, received at `ts` (ms since the epoch).
    pub fn new(symbol: impl Into<String>, bid: Decimal, ask: Decimal, ts: i64) -> Quote {
        Quote {
            symbol: symbol.into(),
            bid,
            ask,
            last: None,
            ts,
        }
    }

    /// Age of the quote in milliseconds at `now_ms` (never negative).
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.ts).max(0)
    }

    /// True when the quote is no older than `max_age_ms` at `now_ms`.
    pub fn is_fresh(&self, now_ms: i64, max_age_ms: i64) -> bool {
        self.age_ms(now_ms) <= max_age_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_decimal_strings() {
        let q = Quote {
            symbol: "BTCUSDT".into(),
            bid: "61837.63".parse().unwrap(),
            ask: "61837.64".parse().unwrap(),
            last: Some("61837.63".parse().unwrap()),
            ts: 1_723_161_255_343,
        };
        let json = serde_json::to_string(&q).unwrap();
        assert!(json.contains("\"bid\":\"61837.63\""), "{json}");
        assert_eq!(serde_json::from_str::<Quote>(&json).unwrap(), q);
        assert!(q.is_fresh(q.ts + 5_000, 5_000));
        assert!(!q.is_fresh(q.ts + 5_001, 5_000));
    }
}
