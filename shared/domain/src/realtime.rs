//! The WebSocket protocol, free of I/O: what clients send, what we send them, the connection
//! record kept in the connection table, and an account's PnL on live prices.
//!
//! # Client → server
//!
//! ```json
//! {"action":"subscribe","symbols":["BTCUSDT","ETHUSDT"],"max_rate_ms":500}
//! {"action":"unsubscribe","symbols":["ETHUSDT"]}
//! {"action":"ping"}
//! ```
//!
//! # Server → client
//!
//! Every message is a JSON object with `type` and `ts` (server time, ms since the epoch):
//!
//! - `snapshot`: the reply to a subscribe or unsubscribe: the subscription as it now stands
//!   and the current price of each subscribed symbol that has one.
//! - `prices`: the symbols that changed since this connection's last message, at most one
//!   message per flush and per `max_rate_ms`; it carries `pnl` too when the account's PnL
//!   moved, so a connection gets one message, not two.
//! - `pnl`: the account's PnL alone, when it moved without a subscribed price changing
//!   (a fill, or a price of a held symbol the connection does not watch).
//! - `order`: an Alpaca `trade_updates` event (`new`, `fill`, `partial_fill`, `canceled`,
//!   `expired`, `rejected`, `replaced`) under `data`.
//! - `error`: `{"code","message"}` naming the rule a client message broke; the connection
//!   stays open.
//! - `pong`: the reply to a ping.

use crate::RejectCode;
use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::accounting::Position;
use crate::catalog::Catalog;
use crate::decimal::to_text;
use crate::quote::Quote;

/// A connection's rate when its subscribe names none: at most one message per 500 ms.
pub const DEFAULT_MAX_RATE_MS: u32 = 500;
/// The fastest rate a client may ask for (one message per flush at the default 100 ms).
pub const MIN_RATE_MS: u32 = 100;
/// The slowest rate a client may ask for.
pub const MAX_RATE_MS: u32 = 60_000;
/// Default cap on symbols per connection.
pub const DEFAULT_MAX_SYMBOLS: usize = 50;
/// API Gateway closes a WebSocket connection after 2 hours; its item lives as long.
pub const CONNECTION_TTL_SECS: i64 = 2 * 60 * 60;

/// A client message that broke a rule: answered with an `error` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: RejectCode,
    pub message: String,
}

impl ProtocolError {
    fn new(code: RejectCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Subscribe {
        symbols: Vec<String>,
        max_rate_ms: Option<u32>,
    },
    Unsubscribe {
        symbols: Vec<String>,
    },
    Ping,
}

const ACTIONS: &str = "subscribe, unsubscribe or ping";

/// Parses one client message. Numbers are read from their JSON text, so `500.5` or `1e3`
/// for `max_rate_ms` is refused rather than rounded.
pub fn parse_action(text: &str) -> Result<ClientAction, ProtocolError> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            RejectCode::MalformedMessage,
            format!("the message is not JSON: {e}"),
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        ProtocolError::new(
            RejectCode::MalformedMessage,
            "the message must be a JSON object",
        )
    })?;
    let action = obj.get("action").and_then(Value::as_str).ok_or_else(|| {
        ProtocolError::new(
            RejectCode::MalformedMessage,
            format!("the message needs an \"action\": {ACTIONS}"),
        )
    })?;
    match action {
        "subscribe" => Ok(ClientAction::Subscribe {
            symbols: symbols_field(obj)?,
            max_rate_ms: rate_field(obj)?,
        }),
        "unsubscribe" => Ok(ClientAction::Unsubscribe {
            symbols: symbols_field(obj)?,
        }),
        "ping" => Ok(ClientAction::Ping),
        other => Err(ProtocolError::new(
            RejectCode::UnknownAction,
            format!("unknown action {other:?}: use {ACTIONS}"),
        )),
    }
}

fn symbols_field(obj: &serde_json::Map<String, Value>) -> Result<Vec<String>, ProtocolError> {
    let list = obj
        .get("symbols")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ProtocolError::new(
                RejectCode::MalformedMessage,
                "\"symbols\" must be an array of symbols, e.g. [\"BTCUSDT\"]",
            )
        })?;
    list.iter()
        .map(|s| {
            s.as_str()
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ProtocolError::new(
                        RejectCode::MalformedMessage,
                        "every entry of \"symbols\" must be a non-empty string",
                    )
                })
        })
        .collect()
}

fn rate_field(obj: &serde_json::Map<String, Value>) -> Result<Option<u32>, ProtocolError> {
    let Some(v) = obj.get("max_rate_ms").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        ProtocolError::new(
            RejectCode::InvalidRate,
            format!("\"max_rate_ms\" must be a whole number of milliseconds from {MIN_RATE_MS} to {MAX_RATE_MS}"),
        )
    };
    let ms: u32 = match v {
        Value::Number(n) => n.to_string().parse().map_err(|_| bad())?,
        Value::String(s) => s.trim().parse().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if !(MIN_RATE_MS..=MAX_RATE_MS).contains(&ms) {
        return Err(bad());
    }
    Ok(Some(ms))
}

/// What a connection receives: a set of symbols and the fastest rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub symbols: BTreeSet<String>,
    pub max_rate_ms: u32,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            symbols: BTreeSet::new(),
            max_rate_ms: DEFAULT_MAX_RATE_MS,
        }
    }
}

impl Subscription {
    /// Adds `symbols` (each must be a tradable instrument) and sets the rate if given. All or
    /// nothing: a rule broken leaves the subscription as it was.
    pub fn subscribe(
        &mut self,
        symbols: &[String],
        max_rate_ms: Option<u32>,
        catalog: &Catalog,
        max_symbols: usize,
    ) -> Result<(), ProtocolError> {
        let unknown: Vec<&str> = symbols
            .iter()
            .filter(|s| !catalog.get(s).is_some_and(|i| i.is_tradable()))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(ProtocolError::new(
                RejectCode::UnknownSymbol,
                format!(
                    "not a tradable symbol: {} (see GET /v2/assets)",
                    unknown.join(", ")
                ),
            ));
        }
        let mut next = self.symbols.clone();
        next.extend(symbols.iter().cloned());
        if next.len() > max_symbols {
            return Err(ProtocolError::new(
                RejectCode::TooManySymbols,
                format!(
                    "a connection may subscribe to at most {max_symbols} symbols; this would make {}",
                    next.len()
                ),
            ));
        }
        self.symbols = next;
        if let Some(ms) = max_rate_ms {
            self.max_rate_ms = ms;
        }
        Ok(())
    }

    /// Removes `symbols` (unknown ones are ignored: the result is what was asked for).
    pub fn unsubscribe(&mut self, symbols: &[String]) {
        for s in symbols {
            self.symbols.remove(s);
        }
    }
}

/// One WebSocket connection as the connection table holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub account_id: Uuid,
    /// Sorted, unique.
    pub symbols: Vec<String>,
    pub max_rate_ms: u32,
    /// Milliseconds since the epoch.
    pub connected_at: i64,
    /// DynamoDB TTL: seconds since the epoch after which the item is dead.
    pub ttl: i64,
    /// Which credential opened it (`session:…`, `key:<key id>`; never a secret), so that
    /// revoking the credential closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<String>,
}

impl Connection {
    /// A connection accepted at `now_ms`, with nothing subscribed yet.
    pub fn new(connection_id: &str, account_id: Uuid, now_ms: i64) -> Connection {
        Connection {
            connection_id: connection_id.to_string(),
            account_id,
            symbols: Vec::new(),
            max_rate_ms: DEFAULT_MAX_RATE_MS,
            connected_at: now_ms,
            ttl: now_ms.div_euclid(1000) + CONNECTION_TTL_SECS,
            opened_by: None,
        }
    }

    /// The same, recording the credential that opened it.
    pub fn opened_by(mut self, credential: Option<String>) -> Connection {
        self.opened_by = credential;
        self
    }

    /// DynamoDB deletes expired items up to days late; until then they are ignored.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms.div_euclid(1000) >= self.ttl
    }

    pub fn subscription(&self) -> Subscription {
        Subscription {
            symbols: self.symbols.iter().cloned().collect(),
            max_rate_ms: self.max_rate_ms.clamp(MIN_RATE_MS, MAX_RATE_MS),
        }
    }

    pub fn set_subscription(&mut self, s: &Subscription) {
        self.symbols = s.symbols.iter().cloned().collect();
        self.max_rate_ms = s.max_rate_ms;
    }
}

/// A change of the connection table, published by the ws function so the fan-out index
/// follows without reading the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConnectionChange {
    /// Created or re-subscribed: the whole record.
    Put {
        connection: Connection,
    },
    Delete {
        connection_id: String,
    },
}

/// An account's cash and positions after a commit: what the executor keeps in Redis, so the
/// fan-out can value the account on every price without reading the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionsSnapshot {
    pub account_id: Uuid,
    #[serde(with = "crate::decimal::text")]
    pub cash: Decimal,
    /// Open positions only, by symbol.
    pub positions: Vec<SnapshotPosition>,
    /// Milliseconds since the epoch when the snapshot was taken.
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPosition {
    pub symbol: String,
    pub position: Position,
}

/// One position valued on the price it could be closed at now (bid for a long, ask for a
/// short). Without a price its market fields are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionPnl {
    pub symbol: String,
    pub qty: Decimal,
    pub avg_entry_price: Decimal,
    pub current_price: Option<Decimal>,
    pub market_value: Option<Decimal>,
    pub unrealized_pl: Option<Decimal>,
}

/// An account valued on live prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPnl {
    pub cash: Decimal,
    /// `cash + Σ market_value`; `None` while a position has no price.
    pub equity: Option<Decimal>,
    /// Σ unrealized PnL of the priced positions.
    pub unrealized_pl: Decimal,
    pub positions: Vec<PositionPnl>,
}

impl AccountPnl {
    /// Values `snapshot` on `quote_of(symbol)`. Overflow (absurd inputs) leaves the affected
    /// fields unpriced rather than wrong.
    pub fn value<'q>(
        snapshot: &PositionsSnapshot,
        quote_of: impl Fn(&str) -> Option<&'q Quote>,
    ) -> AccountPnl {
        let mut equity = Some(snapshot.cash);
        let mut unrealized = Decimal::ZERO;
        let mut positions = Vec::with_capacity(snapshot.positions.len());
        for p in &snapshot.positions {
            let pos = &p.position;
            let mark = quote_of(&p.symbol).map(|q| {
                if pos.qty >= Decimal::ZERO {
                    q.bid
                } else {
                    q.ask
                }
            });
            let market_value = mark.and_then(|m| pos.market_value(m).ok());
            let upl = mark.and_then(|m| pos.unrealized_pnl(m).ok());
            equity = match (equity, market_value) {
                (Some(e), Some(mv)) => e.checked_add(mv),
                _ => None,
            };
            if let Some(u) = upl {
                unrealized = unrealized.checked_add(u).unwrap_or(unrealized);
            }
            positions.push(PositionPnl {
                symbol: p.symbol.clone(),
                qty: pos.qty,
                avg_entry_price: pos.avg_entry_price,
                current_price: mark,
                market_value,
                unrealized_pl: upl,
            });
        }
        AccountPnl {
            cash: snapshot.cash,
            equity,
            unrealized_pl: unrealized,
            positions,
        }
    }

    /// The `pnl` object of a message. Amounts are decimal strings.
    pub fn to_json(&self) -> Value {
        let opt = |d: Option<Decimal>| d.map(|d| Value::String(to_text(&d))).unwrap_or(Value::Null);
        json!({
            "cash": to_text(&self.cash),
            "equity": opt(self.equity),
            "unrealized_pl": to_text(&self.unrealized_pl),
            "positions": self.positions.iter().map(|p| json!({
                "symbol": p.symbol,
                "qty": to_text(&p.qty),
                "avg_entry_price": to_text(&p.avg_entry_price),
                "current_price": opt(p.current_price),
                "market_value": opt(p.market_value),
                "unrealized_pl": opt(p.unrealized_pl),
                "price_stale": p.current_price.is_none(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn quote_json(q: &Quote) -> Value {
    json!({
        "symbol": q.symbol,
        "bid": to_text(&q.bid),
        "ask": to_text(&q.ask),
        "last": q.last.as_ref().map(to_text),
        "ts": q.ts,
    })
}

/// `prices`, carrying `pnl` too when given; or `pnl` alone when there are no prices.
pub fn update_message(ts: i64, quotes: &[&Quote], pnl: Option<&Value>) -> String {
    let mut m = if quotes.is_empty() {
        json!({ "type": "pnl", "ts": ts })
    } else {
        json!({
            "type": "prices",
            "ts": ts,
            "prices": quotes.iter().map(|q| quote_json(q)).collect::<Vec<_>>(),
        })
    };
    if let (Some(pnl), Some(obj)) = (pnl, m.as_object_mut()) {
        obj.insert("pnl".into(), pnl.clone());
    }
    m.to_string()
}

/// The reply to a subscribe or unsubscribe.
pub fn snapshot_message(ts: i64, subscription: &Subscription, quotes: &[Quote]) -> String {
    json!({
        "type": "snapshot",
        "ts": ts,
        "symbols": subscription.symbols,
        "max_rate_ms": subscription.max_rate_ms,
        "prices": quotes.iter().map(quote_json).collect::<Vec<_>>(),
    })
    .to_string()
}

pub fn error_message(ts: i64, code: RejectCode, message: &str) -> String {
    json!({ "type": "error", "ts": ts, "code": code, "message": message }).to_string()
}

pub fn pong_message(ts: i64) -> String {
    json!({ "type": "pong", "ts": ts }).to_string()
}

/// An Alpaca `trade_updates` event: `data` is `{event, timestamp, order, …}` as Alpaca's
/// stream sends it (`price`, `qty`, `position_qty` on fills).
pub fn order_message(ts: i64, data: &Value) -> String {
    json!({ "type": "order", "ts": ts, "data": data }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn catalog() -> &'static Catalog {
        Catalog::builtin()
    }

    #[test]
    fn parses_the_three_actions_and_names_what_is_wrong() {
        assert_eq!(
            parse_action(
                r#"{"action":"subscribe","symbols":["btcusdt"," ETHUSDT"],"max_rate_ms":250}"#
            ),
            Ok(ClientAction::Subscribe {
                symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
                max_rate_ms: Some(250)
            })
        );
        assert_eq!(parse_action(r#"{"action":"ping"}"#), Ok(ClientAction::Ping));
        assert_eq!(
            parse_action(r#"{"action":"unsubscribe","symbols":[]}"#),
            Ok(ClientAction::Unsubscribe { symbols: vec![] })
        );
        let code = |t: &str| parse_action(t).unwrap_err().code;
        assert_eq!(code("not json"), "malformed_message");
        assert_eq!(code("[1]"), "malformed_message");
        assert_eq!(code(r#"{"symbols":[]}"#), "malformed_message");
        assert_eq!(code(r#"{"action":"dance"}"#), "unknown_action");
        assert_eq!(code(r#"{"action":"subscribe"}"#), "malformed_message");
        assert_eq!(
            code(r#"{"action":"subscribe","symbols":[1]}"#),
            "malformed_message"
        );
        assert_eq!(
            code(r#"{"action":"subscribe","symbols":[""]}"#),
            "malformed_message"
        );
        for rate in ["99", "60001", "100.5", "1e3", "-1", "true"] {
            let m = format!(r#"{{"action":"subscribe","symbols":[],"max_rate_ms":{rate}}}"#);
            assert_eq!(code(&m), "invalid_rate", "{rate}");
        }
        assert!(parse_action(r#"{"action":"subscribe","symbols":[],"max_rate_ms":100}"#).is_ok());
        assert!(
            parse_action(r#"{"action":"subscribe","symbols":[],"max_rate_ms":"60000"}"#).is_ok()
        );
    }

    #[test]
    fn subscribe_checks_the_catalog_and_the_cap_all_or_nothing() {
        let mut s = Subscription::default();
        s.subscribe(&["BTCUSDT".into()], None, catalog(), 2)
            .unwrap();
        assert_eq!(s.max_rate_ms, DEFAULT_MAX_RATE_MS);
        let e = s
            .subscribe(
                &["ETHUSDT".into(), "NOPEUSDT".into()],
                Some(200),
                catalog(),
                2,
            )
            .unwrap_err();
        assert_eq!(e.code, "unknown_symbol");
        assert!(e.message.contains("NOPEUSDT") && !e.message.contains("ETHUSDT"));
        assert_eq!(s.symbols.len(), 1);
        s.subscribe(
            &["ETHUSDT".into(), "BTCUSDT".into()],
            Some(200),
            catalog(),
            2,
        )
        .unwrap();
        assert_eq!(s.symbols.len(), 2);
        assert_eq!(s.max_rate_ms, 200);
        let e = s
            .subscribe(&["BNBUSDT".into()], None, catalog(), 2)
            .unwrap_err();
        assert_eq!(e.code, "too_many_symbols");
        assert!(e.message.contains("at most 2") && e.message.contains("make 3"));
        s.unsubscribe(&["BTCUSDT".into(), "XRPUSDT".into()]);
        assert_eq!(s.symbols.iter().collect::<Vec<_>>(), vec!["ETHUSDT"]);
    }

    #[test]
    fn a_connection_expires_at_its_ttl() {
        let c = Connection::new("abc=", Uuid::nil(), 1_000_000);
        assert_eq!(c.ttl, 1_000 + 7_200);
        assert!(!c.is_expired(8_199_999));
        assert!(c.is_expired(8_200_000));
        let change = ConnectionChange::Put {
            connection: c.clone(),
        };
        let text = serde_json::to_string(&change).unwrap();
        assert!(text.contains(r#""op":"put""#), "{text}");
        assert_eq!(
            serde_json::from_str::<ConnectionChange>(&text).unwrap(),
            change
        );
    }

    fn quote(symbol: &str, bid: Decimal, ask: Decimal) -> Quote {
        Quote::new(symbol, bid, ask, 1)
    }

    #[test]
    fn pnl_marks_longs_at_the_bid_and_shorts_at_the_ask() {
        let snap = PositionsSnapshot {
            account_id: Uuid::nil(),
            cash: dec!(1000),
            positions: vec![
                SnapshotPosition {
                    symbol: "BTCUSDT".into(),
                    position: Position {
                        qty: dec!(0.5),
                        avg_entry_price: dec!(60000),
                        realized_pnl: dec!(0),
                    },
                },
                SnapshotPosition {
                    symbol: "ETHUSDT".into(),
                    position: Position {
                        qty: dec!(-2),
                        avg_entry_price: dec!(3000),
                        realized_pnl: dec!(0),
                    },
                },
            ],
            at: 0,
        };
        let btc = quote("BTCUSDT", dec!(61000), dec!(61001));
        let eth = quote("ETHUSDT", dec!(2900), dec!(2901));
        let pnl = AccountPnl::value(&snap, |s| match s {
            "BTCUSDT" => Some(&btc),
            "ETHUSDT" => Some(&eth),
            _ => None,
        });
        // 0.5 × (61000 − 60000) + (−2) × (2901 − 3000) = 500 + 198
        assert_eq!(pnl.unrealized_pl, dec!(698));
        // 1000 + 30500 − 5802
        assert_eq!(pnl.equity, Some(dec!(25698)));
        let j = pnl.to_json();
        assert_eq!(j["positions"][1]["current_price"], "2901");
        assert_eq!(j["equity"], "25698");

        let unpriced = AccountPnl::value(&snap, |s| (s == "BTCUSDT").then_some(&btc));
        assert_eq!(unpriced.equity, None);
        assert_eq!(unpriced.unrealized_pl, dec!(500));
        assert_eq!(unpriced.to_json()["positions"][1]["price_stale"], true);

        let text = serde_json::to_string(&snap).unwrap();
        assert!(text.contains(r#""qty":"0.5""#), "{text}");
        assert_eq!(
            serde_json::from_str::<PositionsSnapshot>(&text).unwrap(),
            snap
        );
    }

    #[test]
    fn messages_carry_type_and_server_time() {
        let q = quote("BTCUSDT", dec!(1.50), dec!(1.6));
        let m: Value = serde_json::from_str(&update_message(7, &[&q], None)).unwrap();
        assert_eq!(m["type"], "prices");
        assert_eq!(m["ts"], 7);
        assert_eq!(m["prices"][0]["bid"], "1.5");
        assert!(m.get("pnl").is_none());
        let pnl = json!({"equity": "1"});
        let m: Value = serde_json::from_str(&update_message(7, &[&q], Some(&pnl))).unwrap();
        assert_eq!(m["pnl"]["equity"], "1");
        let m: Value = serde_json::from_str(&update_message(8, &[], Some(&pnl))).unwrap();
        assert_eq!(m["type"], "pnl");
        for (text, ty) in [
            (error_message(1, RejectCode::MalformedMessage, "m"), "error"),
            (pong_message(1), "pong"),
            (order_message(1, &json!({"event":"fill"})), "order"),
            (
                snapshot_message(1, &Subscription::default(), std::slice::from_ref(&q)),
                "snapshot",
            ),
        ] {
            let m: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(m["type"], ty);
            assert_eq!(m["ts"], 1);
        }
    }
}
