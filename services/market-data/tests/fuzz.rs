//! Fuzz test of the Binance frame parser (`make fuzz` runs it with many more cases): combined
//! stream frames with hostile symbols and prices, through the parser and the book to the
//! quotes the flush writes. Nothing panics, and every price that gets through is one the
//! checks and fills downstream can multiply by any instrument's quantity.

use domain::quote::Quote;
use market_data::parse::{parse_message, Parsed, Update};
use market_data::Book;
use proptest::prelude::*;
use rust_decimal::Decimal;
use testkit::fuzz::{self, json_text, number_text, text};

fn quoted(s: String) -> String {
    serde_json::Value::String(s).to_string()
}

/// A field value: a price's text (quoted, as Binance sends it, or bare), or anything.
fn value() -> BoxedStrategy<String> {
    prop_oneof![
        5 => number_text().prop_map(quoted),
        1 => number_text(),
        1 => json_text(),
        1 => text().prop_map(quoted),
    ]
    .boxed()
}

fn frame() -> BoxedStrategy<String> {
    let stream = prop_oneof![
        4 => proptest::sample::select(&["btcusdt@bookTicker", "btcusdt@trade", "ethusdt@aggTrade", "btcusdt@depth@100ms", "x@BOOKTICKER"][..]).prop_map(str::to_string),
        1 => text(),
    ];
    let symbol = prop_oneof![3 => Just("BTCUSDT".to_string()), 1 => text()];
    prop_oneof![
        6 => (stream, symbol, value(), value(), value()).prop_map(|(stream, s, b, a, p)| {
            format!(r#"{{"stream":{},"data":{{"e":"trade","s":{},"b":{b},"B":"1","a":{a},"A":"1","p":{p},"q":"1"}}}}"#, quoted(stream), quoted(s))
        }),
        1 => text().prop_map(|t| format!(r#"{{"stream":"{t}"#)),
        1 => Just(r#"{"e":"serverShutdown","E":1}"#.to_string()),
        1 => json_text(),
        1 => text(),
    ]
    .boxed()
}

/// More than any instrument's maximum quantity (Binance's largest LOT_SIZE maxQty is below
/// 10^11).
fn largest_qty() -> Decimal {
    Decimal::from(100_000_000_000u64)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn fuzz_binance_frame_never_panics(frames in proptest::collection::vec(frame(), 1..4)) {
        let mut book = Book::new();
        for (i, f) in frames.iter().enumerate() {
            if let Ok(Parsed::Update(update)) = parse_message(f) {
                let prices = match update {
                    Update::Book { bid, ask, .. } => vec![bid, ask],
                    Update::Trade { price, .. } => vec![price],
                };
                for p in prices {
                    prop_assert!(p > Decimal::ZERO);
                    prop_assert!(p.checked_mul(largest_qty()).is_some(), "{f}: {p}");
                }
                book.apply(&update, i as i64);
            }
        }
        for quote in book.take_batch(10, None).quotes {
            let json = serde_json::to_string(&quote).unwrap();
            prop_assert_eq!(serde_json::from_str::<Quote>(&json).unwrap(), quote);
        }
    }
}

#[test]
fn prices_beyond_the_domain_range_are_not_prices() {
    // Found by fuzz_binance_frame_never_panics: rust_decimal's largest value as a bid was
    // accepted, and quantity × price overflowed (a panic) in the api's pre-trade checks and
    // the executor's fills.
    let huge = r#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"79228162514264337593543950335","a":"79228162514264337593543950335"}}"#;
    assert!(parse_message(huge).is_err());
    // Found by fuzz_binance_frame_never_panics at 20,000 cases: a price with 21 places was
    // written as a quote that the cache could not read back (the domain reads 18).
    let precise = r#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"0.000000000000000000001","a":"1"}}"#;
    assert!(parse_message(precise).is_err());
    let edge = r#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"1000000000000000","a":"0.10000000000000000000"}}"#;
    assert!(matches!(parse_message(edge), Ok(Parsed::Update(_))));
}
