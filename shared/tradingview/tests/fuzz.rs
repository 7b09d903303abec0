//! Fuzz tests of the TradingView alert protocol (`make fuzz` runs them with many more
//! cases): alert bodies as the webhook receives them, through parsing, the order request
//! they become (for any current position) and its validation; the passphrase redaction of
//! what is stored. Nothing panics; every refusal has a `RejectCode`.

use domain::catalog::Catalog;
use domain::RejectCode;
use proptest::prelude::*;
use rust_decimal::Decimal;
use testkit::fuzz::{self, json_text, number_text, object_with, text};
use tradingview::{
    alert_passphrase, client_order_id, map_symbol, parse_alert, redact_passphrase,
    MAX_STORED_BODY_BYTES,
};

const FIELDS: &[&str] = &[
    "passphrase",
    "symbol",
    "ticker",
    "action",
    "side",
    "qty",
    "contracts",
    "notional",
    "position_size",
    "type",
    "order_type",
    "price",
    "limit_price",
    "time_in_force",
    "take_profit",
    "tp",
    "stop_loss",
    "sl",
    "id",
    "alert_id",
    "Passphrase",
];

/// Alerts shaped like the templates, with hostile values in each field.
fn templated() -> BoxedStrategy<String> {
    let quoted = |s: String| serde_json::Value::String(s).to_string();
    let amount = prop_oneof![
        number_text(),
        number_text().prop_map(quoted),
        json_text(),
        Just(r#"{"limit_price":"1"}"#.to_string()),
        number_text().prop_map(|n| format!(r#"{{"stop_price":"{n}"}}"#)),
    ];
    let word = |words: &'static [&'static str]| {
        prop_oneof![
            4 => proptest::sample::select(words).prop_map(move |w| quoted(w.to_string())),
            1 => text().prop_map(quoted),
            1 => json_text(),
        ]
    };
    (
        word(&[
            "BINANCE:BTCUSDT",
            "BTCUSDT",
            "btc/usdt",
            "BTC-USDT",
            "ETHUSDT",
            "BTCUSDT.P",
        ]),
        word(&["buy", "sell", "BUY", "{{strategy.order.action}}"]),
        proptest::sample::select(&["qty", "contracts", "notional", "position_size"][..]),
        amount.clone(),
        proptest::option::of(("price", amount.clone())),
        proptest::option::of((
            proptest::sample::select(&["take_profit", "stop_loss", "tp", "sl"][..]),
            amount,
        )),
        proptest::option::of(word(&["market", "limit"])),
        proptest::option::of(text().prop_map(quoted)),
    )
        .prop_map(
            |(symbol, action, size_field, size, price, leg, order_type, id)| {
                let mut fields = vec![
                    r#""passphrase":"pw""#.to_string(),
                    format!(r#""symbol":{symbol}"#),
                    format!(r#""action":{action}"#),
                    format!(r#""{size_field}":{size}"#),
                ];
                if let Some((name, v)) = price {
                    fields.push(format!(r#""{name}":{v}"#));
                }
                if let Some((name, v)) = leg {
                    fields.push(format!(r#""{name}":{v}"#));
                }
                if let Some(t) = order_type {
                    fields.push(format!(r#""type":{t}"#));
                }
                if let Some(id) = id {
                    fields.push(format!(r#""id":{id}"#));
                }
                format!("{{{}}}", fields.join(","))
            },
        )
        .boxed()
}

fn alert_body() -> BoxedStrategy<String> {
    prop_oneof![
        4 => templated(),
        3 => object_with(FIELDS),
        1 => json_text(),
        1 => text(),
        1 => text().prop_map(|t| format!("\u{feff}{t}")),
        // Templates whose placeholders broke the JSON: the passphrase must still be masked.
        1 => (text(), text()).prop_map(|(a, b)| format!(r#"{{"passphrase": "{a}", "qty": {{{{strategy.order.contracts}}}}, {b}"#)),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn fuzz_webhook_alert_body_never_panics(
        body in alert_body(),
        position in prop_oneof![Just(Decimal::ZERO), number_text().prop_filter_map("a decimal", |n| domain::decimal::parse_decimal(&n).ok())],
    ) {
        let _ = alert_passphrase(&body);
        let stored = redact_passphrase(&body);
        prop_assert!(stored.len() <= MAX_STORED_BODY_BYTES);
        prop_assert!(!stored.contains(r#""passphrase":"pw""#), "{stored}");
        match parse_alert(&body) {
            Err(v) => prop_assert!(RejectCode::parse(v.code.as_str()).is_some()),
            Ok(alert) => {
                let id = client_order_id("wh_1", &alert, &body);
                prop_assert!(id.len() <= domain::order::MAX_CLIENT_ORDER_ID_LEN);
                match alert.to_order_request(position, id) {
                    Err(v) => prop_assert!(RejectCode::parse(v.code.as_str()).is_some()),
                    Ok(None) => {}
                    Ok(Some(request)) => {
                        if let Err(v) = request.validate(Catalog::builtin()) {
                            prop_assert!(RejectCode::parse(v.code.as_str()).is_some());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fuzz_tradingview_symbol_never_panics(symbol in text()) {
        let mapped = map_symbol(&symbol);
        let _ = Catalog::builtin().get(&mapped);
    }
}
