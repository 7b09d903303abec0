//! Fast parsing of Binance combined-stream messages.
//!
//! One serde pass over the message with borrowed `&str` fields and no allocation; only the
//! fields we need are kept (`stream`, `data.s`, `data.b`, `data.a`, `data.p`). Depth updates,
//! whose `b`/`a` are arrays, are skipped without building anything. Decimals are parsed from
//! their text, never through `f64`.

use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A market-data update that changes the cached quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update<'a> {
    /// Best bid/ask from `<sym>@bookTicker`.
    Book {
        symbol: &'a str,
        bid: Decimal,
        ask: Decimal,
    },
    /// Last trade price from `<sym>@trade` (or `@aggTrade`), with what the bars need when
    /// the message has it.
    Trade {
        symbol: &'a str,
        price: Decimal,
        print: Option<Print>,
    },
}

/// A trade's quantity and exchange time (`q`, `T`): what builds the bars. Absent when the
/// message lacks either or has one out of range (the price still counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Print {
    pub qty: Decimal,
    pub time_ms: i64,
}

impl<'a> Update<'a> {
    pub fn symbol(&self) -> &'a str {
        match self {
            Update::Book { symbol, .. } | Update::Trade { symbol, .. } => symbol,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("{stream}: missing field {field}")]
    Missing { stream: String, field: &'static str },
    #[error("{stream}: invalid decimal in {field}: {value:?}")]
    Decimal {
        stream: String,
        field: &'static str,
        value: String,
    },
    #[error("{stream}: non-positive price in {field}")]
    NonPositive { stream: String, field: &'static str },
}

/// A string field that may also be an array or anything else (then `None`, skipped cheaply).
#[derive(Debug, Default, Clone, Copy)]
struct MaybeStr<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MaybeStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or anything else")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(v)))
            }
            // An escaped string cannot be borrowed; prices and symbols never need escapes.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            // A number where a price should be is not a price: the value is dropped unread
            // (never converted through f64), and a message without its string prices is
            // counted as a parse error.
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
struct Data<'a> {
    #[serde(borrow, default)]
    e: MaybeStr<'a>,
    #[serde(borrow, default)]
    s: MaybeStr<'a>,
    #[serde(borrow, default)]
    b: MaybeStr<'a>,
    #[serde(borrow, default)]
    a: MaybeStr<'a>,
    #[serde(borrow, default)]
    p: MaybeStr<'a>,
    #[serde(borrow, default)]
    q: MaybeStr<'a>,
    /// The trade's time (ms); anything but an integer is no time.
    #[serde(rename = "T", default, deserialize_with = "lenient_ms")]
    trade_ms: Option<i64>,
}

fn lenient_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_i64())
}

/// A trade's print, if its quantity is a positive decimal within the domain's range and it
/// has a time.
fn print(q: Option<&str>, time_ms: Option<i64>) -> Option<Print> {
    let qty = Decimal::from_str_exact(q?).ok()?;
    let in_range = qty > Decimal::ZERO
        && qty <= domain::decimal::MAX_ABS
        && qty.normalize().scale() <= domain::decimal::MAX_SCALE;
    Some(Print {
        qty: in_range.then_some(qty)?,
        time_ms: time_ms.filter(|t| *t > 0)?,
    })
}

#[derive(Deserialize, Default)]
struct EventBody<'a> {
    #[serde(borrow, default)]
    e: MaybeStr<'a>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    stream: MaybeStr<'a>,
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
    /// A raw (unwrapped) event's type: `{"e":"serverShutdown","E":...}`.
    #[serde(borrow, default)]
    e: MaybeStr<'a>,
    /// The WebSocket API's connection events: `{"event":{"e":"serverShutdown",...}}`.
    #[serde(borrow, default)]
    event: Option<EventBody<'a>>,
}

/// What one text frame means to ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A quote change.
    Update(Update<'a>),
    /// `serverShutdown`: this connection will be closed soon; open another one now.
    ServerShutdown,
    /// Anything else (depth, unknown streams, subscription answers).
    Other,
}

const SERVER_SHUTDOWN: &str = "serverShutdown";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Book,
    Trade,
}

fn kind_of(stream: &str) -> Option<Kind> {
    let (_, channel) = stream.split_once('@')?;
    if channel.eq_ignore_ascii_case("bookTicker") {
        Some(Kind::Book)
    } else if channel.eq_ignore_ascii_case("trade") || channel.eq_ignore_ascii_case("aggTrade") {
        Some(Kind::Trade)
    } else {
        None
    }
}

fn price(stream: &str, field: &'static str, v: Option<&str>) -> Result<Decimal, ParseError> {
    let text = v.ok_or_else(|| ParseError::Missing {
        stream: stream.to_string(),
        field,
    })?;
    let d = Decimal::from_str_exact(text).map_err(|_| ParseError::Decimal {
        stream: stream.to_string(),
        field,
        value: text.to_string(),
    })?;
    if d <= Decimal::ZERO {
        return Err(ParseError::NonPositive {
            stream: stream.to_string(),
            field,
        });
    }
    // Beyond the domain's range (10^15) a price is not one: quantity × price would overflow
    // the checks and fills that multiply it (a panic in the api and the executor). Nor is
    // one with more places than the domain reads back (18): its quote, once written, could
    // not be read from the cache.
    if d > domain::decimal::MAX_ABS || d.normalize().scale() > domain::decimal::MAX_SCALE {
        return Err(ParseError::Decimal {
            stream: stream.to_string(),
            field,
            value: text.to_string(),
        });
    }
    Ok(d)
}

/// Parses one text frame. `Ok(None)` for messages that do not change a quote (depth,
/// unknown streams, subscription answers, connection events): see [`parse_message`].
pub fn parse(text: &str) -> Result<Option<Update<'_>>, ParseError> {
    match parse_message(text)? {
        Parsed::Update(u) => Ok(Some(u)),
        Parsed::ServerShutdown | Parsed::Other => Ok(None),
    }
}

/// Parses one text frame: a quote update, a `serverShutdown` event (raw
/// `{"e":"serverShutdown","E":...}`, wrapped in a combined-stream envelope, or as the
/// WebSocket API's `{"event":{...}}`), or something else.
pub fn parse_message(text: &str) -> Result<Parsed<'_>, ParseError> {
    // Cheap pre-filter: depth updates are most of the traffic and we never need them.
    if let Some(rest) = text.strip_prefix("{\"stream\":\"") {
        if let Some((stream, _)) = rest.split_once('"') {
            if kind_of(stream).is_none() {
                // Only a short message can be an event; depth updates are long.
                if text.len() < 256 && text.contains(SERVER_SHUTDOWN) {
                    return parse_full(text);
                }
                return Ok(Parsed::Other);
            }
        }
    }
    parse_full(text)
}

fn parse_full(text: &str) -> Result<Parsed<'_>, ParseError> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    let shutdown = env.e.0 == Some(SERVER_SHUTDOWN)
        || env.event.as_ref().and_then(|b| b.e.0) == Some(SERVER_SHUTDOWN)
        || env.data.as_ref().and_then(|d| d.e.0) == Some(SERVER_SHUTDOWN);
    if shutdown {
        return Ok(Parsed::ServerShutdown);
    }
    let (Some(stream), Some(data)) = (env.stream.0, env.data) else {
        return Ok(Parsed::Other);
    };
    let Some(kind) = kind_of(stream) else {
        return Ok(Parsed::Other);
    };
    let symbol = match data.s.0 {
        Some(s) if !s.is_empty() => s,
        _ => {
            return Err(ParseError::Missing {
                stream: stream.to_string(),
                field: "s",
            })
        }
    };
    Ok(Parsed::Update(match kind {
        Kind::Book => Update::Book {
            symbol,
            bid: price(stream, "b", data.b.0)?,
            ask: price(stream, "a", data.a.0)?,
        },
        Kind::Trade => Update::Trade {
            symbol,
            price: price(stream, "p", data.p.0)?,
            print: print(data.q.0, data.trade_ms),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from infra/feed/data/btcusdt_20240808.gz (receive timestamp removed).
    const BOOK: &str = r#"{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}"#;
    const TRADE: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}"#;
    const DEPTH: &str = r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255308,"s":"BTCUSDT","U":50093239203,"u":50093239207,"b":[["55653.87000000","0.00000000"]],"a":[["61838.04000000","0.32332000"],["61844.30000000","0.40163000"],["61862.50000000","0.05019000"],["61862.51000000","0.00000000"]]}}"#;

    #[test]
    fn parses_book_ticker_exactly() {
        let u = parse(BOOK).unwrap().unwrap();
        assert_eq!(
            u,
            Update::Book {
                symbol: "BTCUSDT",
                bid: "61837.63000000".parse().unwrap(),
                ask: "61837.64000000".parse().unwrap(),
            }
        );
        if let Update::Book { bid, .. } = u {
            assert_eq!(bid.to_string(), "61837.63000000");
        }
    }

    #[test]
    fn parses_trade() {
        let u = parse(TRADE).unwrap().unwrap();
        assert_eq!(
            u,
            Update::Trade {
                symbol: "BTCUSDT",
                price: "61837.63000000".parse().unwrap(),
                print: Some(Print {
                    qty: "0.02".parse().unwrap(),
                    time_ms: 1723161255342
                }),
            }
        );
    }

    #[test]
    fn a_trade_without_a_usable_print_still_has_its_price() {
        for frame in [
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"0","T":5}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"-1","T":5}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"1e3","T":5}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"1","T":"5"}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"1","T":-5}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"1"}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","T":5}}"#,
            r#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"10000000000000000","T":5}}"#,
        ] {
            match parse(frame) {
                Ok(Some(Update::Trade { price, print, .. })) => {
                    assert_eq!(price, Decimal::TEN, "{frame}");
                    assert_eq!(print, None, "{frame}");
                }
                other => panic!("{frame}: {other:?}"),
            }
        }
    }

    #[test]
    fn ignores_depth_unknown_and_control_messages() {
        assert_eq!(parse(DEPTH), Ok(None));
        // Depth parsed through the full path too (no fast-path prefix).
        let spaced = DEPTH.replacen("{\"stream\":", "{ \"stream\": ", 1);
        assert_eq!(parse(&spaced), Ok(None));
        assert_eq!(parse(r#"{"result":null,"id":1}"#), Ok(None));
        assert_eq!(
            parse(r#"{"stream":"btcusdt@kline_1m","data":{"s":"BTCUSDT"}}"#),
            Ok(None)
        );
    }

    #[test]
    fn recognizes_server_shutdown_in_every_shape() {
        for text in [
            r#"{"e":"serverShutdown","E":1723161255343}"#,
            r#"{"E":1723161255343,"e":"serverShutdown"}"#,
            r#"{"event":{"e":"serverShutdown","E":1770123456789}}"#,
            r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#,
        ] {
            assert_eq!(parse_message(text), Ok(Parsed::ServerShutdown), "{text}");
            assert_eq!(parse(text), Ok(None), "{text}");
        }
        assert_eq!(
            parse_message(r#"{"e":"somethingElse","E":1}"#),
            Ok(Parsed::Other)
        );
        assert_eq!(parse_message(DEPTH), Ok(Parsed::Other));
        assert!(matches!(parse_message(BOOK), Ok(Parsed::Update(_))));
    }

    #[test]
    fn field_order_does_not_matter() {
        let text =
            r#"{"data":{"a":"2.5","b":"2.4","s":"ETHUSDT","u":1},"stream":"ethusdt@bookTicker"}"#;
        assert_eq!(
            parse(text).unwrap(),
            Some(Update::Book {
                symbol: "ETHUSDT",
                bid: "2.4".parse().unwrap(),
                ask: "2.5".parse().unwrap()
            })
        );
    }

    #[test]
    fn rejects_bad_prices() {
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"stream":"x@trade","data":{"s":"X","p":"abc"}}"#).is_err());
        assert!(parse(r#"{"stream":"x@trade","data":{"s":"X","p":1.5}}"#).is_err());
        assert!(parse(r#"{"stream":"x@bookTicker","data":{"s":"X","b":"0","a":"1"}}"#).is_err());
        assert!(parse(r#"{"stream":"x@bookTicker","data":{"s":"X","b":"1"}}"#).is_err());
    }

    #[test]
    fn parses_every_recorded_line() {
        use std::io::BufRead;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/feed/data");
        let file = std::fs::File::open(dir.join("ethusdt_20240808.gz")).unwrap();
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
        let (mut books, mut trades, mut ignored) = (0, 0, 0);
        for line in reader.lines() {
            let line = line.unwrap();
            let (_, json) = line.split_once(' ').unwrap();
            if !json.starts_with("{\"stream\"") {
                continue; // REST depth snapshots recorded alongside
            }
            match parse(json).unwrap_or_else(|e| panic!("{e}: {json}")) {
                Some(Update::Book { symbol, bid, ask }) => {
                    assert_eq!(symbol, "ETHUSDT");
                    assert!(bid <= ask);
                    books += 1;
                }
                Some(Update::Trade { .. }) => trades += 1,
                None => ignored += 1,
            }
        }
        assert!(
            books > 1000 && trades > 1000 && ignored > 100,
            "{books} {trades} {ignored}"
        );
    }
}
