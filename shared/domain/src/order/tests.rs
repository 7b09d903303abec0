use super::*;
use crate::amount::{Price, Quantity};
use crate::catalog::Catalog;
use rust_decimal_macros::dec;

fn req(json: &str) -> OrderRequest {
    serde_json::from_str(json).unwrap()
}

fn code(json: &str) -> String {
    req(json)
        .validate(Catalog::builtin())
        .unwrap_err()
        .code
        .to_string()
}

#[test]
fn valid_market_and_limit_orders() {
    let (v, _) = req(
        r#"{"symbol":"BTC/USDT","qty":0.001,"side":"buy","type":"market","time_in_force":"gtc"}"#,
    )
    .validate(Catalog::builtin())
    .unwrap();
    assert_eq!(v.spec.symbol, "BTCUSDT");
    assert_eq!(v.spec.qty.map(Quantity::get), Some(dec!(0.001)));
    let (v, _) = req(r#"{"symbol":"ETHUSDT","qty":"0.5","side":"sell","type":"limit","limit_price":"3000.01","time_in_force":"ioc","client_order_id":"abc"}"#)
        .validate(Catalog::builtin())
        .unwrap();
    assert_eq!(v.spec.limit_price.map(Price::get), Some(dec!(3000.01)));
    assert_eq!(v.client_order_id.as_deref(), Some("abc"));
}

#[test]
fn each_rule_has_its_code() {
    let base = |extra: &str| {
        format!(
            r#"{{"symbol":"BTCUSDT","side":"buy","type":"limit","time_in_force":"gtc",{extra}}}"#
        )
    };
    assert_eq!(
        code(&base(r#""qty":"0","limit_price":"60000""#)),
        "invalid_qty"
    );
    assert_eq!(
        code(&base(r#""qty":"-1","limit_price":"60000""#)),
        "invalid_qty"
    );
    assert_eq!(
        code(&base(r#""qty":"0.000015","limit_price":"60000""#)),
        "LOT_SIZE"
    );
    assert_eq!(
        code(&base(r#""qty":"0.001","limit_price":"60000.001""#)),
        "PRICE_FILTER"
    );
    assert_eq!(
        code(&base(r#""qty":"0.0001","limit_price":"60000""#)),
        "MIN_NOTIONAL"
    );
    assert_eq!(
        code(&base(r#""qty":"NaN","limit_price":"60000""#)),
        "invalid_number"
    );
    assert_eq!(
        code(&base(r#""qty":1e300,"limit_price":"60000""#)),
        "out_of_range"
    );
    assert_eq!(code(&base(r#""qty":"0.001""#)), "missing_limit_price");
    assert_eq!(
        code(
            r#"{"symbol":"NOPEUSDT","qty":"1","side":"buy","type":"market","time_in_force":"gtc"}"#
        ),
        "unknown_symbol"
    );
    assert_eq!(
        code(r#"{"symbol":"ETHBTC","qty":"1","side":"buy","type":"market","time_in_force":"gtc"}"#),
        "symbol_not_tradable"
    );
    assert_eq!(
        code(
            r#"{"symbol":"BTCUSDT","qty":"1","side":"hold","type":"market","time_in_force":"gtc"}"#
        ),
        "invalid_side"
    );
    let typed = |t: &str, extra: &str| {
        code(&format!(
            r#"{{"symbol":"BTCUSDT","qty":"0.01","side":"sell","type":"{t}","time_in_force":"gtc"{extra}}}"#
        ))
    };
    assert_eq!(typed("stop", ""), "missing_stop_price");
    assert_eq!(
        typed("stop_limit", r#","stop_price":"50000""#),
        "missing_limit_price"
    );
    assert_eq!(typed("trailing_stop", ""), "missing_trail");
    assert_eq!(
        typed("trailing_stop", r#","trail_price":"5","trail_percent":"1""#),
        "trail_price_and_percent"
    );
    assert_eq!(
        typed("trailing_stop", r#","trail_percent":"100""#),
        "invalid_trail_percent"
    );
    assert_eq!(typed("market", r#","stop_price":"50000""#), "invalid_field");
    assert_eq!(
        typed("stop", r#","stop_price":"50000.001""#),
        "PRICE_FILTER"
    );
    assert_eq!(
        typed("limit", r#","limit_price":"50000","order_class":"bracket""#),
        "missing_bracket_legs"
    );
    // A sell bracket's exits buy back: take-profit below the entry, stop above.
    assert_eq!(
        typed(
            "limit",
            r#","limit_price":"50000","order_class":"bracket","take_profit":{"limit_price":"51000"},"stop_loss":{"stop_price":"52000"}"#
        ),
        "invalid_leg_prices"
    );
    assert_eq!(
        typed(
            "market",
            r#","order_class":"oco","take_profit":{"limit_price":"51000"},"stop_loss":{"stop_price":"49000"}"#
        ),
        "invalid_type"
    );
    assert_eq!(
        typed(
            "limit",
            r#","limit_price":"50000","order_class":"oto","take_profit":{"limit_price":"49000"},"stop_loss":{"stop_price":"52000"}"#
        ),
        "missing_bracket_legs"
    );
    assert_eq!(
        typed(
            "limit",
            r#","limit_price":"50000","take_profit":{"limit_price":"49000"}"#
        ),
        "invalid_field"
    );
    assert_eq!(
        code(
            r#"{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"market","time_in_force":"opg"}"#
        ),
        "unsupported_time_in_force"
    );
    let long_id = "x".repeat(49);
    assert_eq!(
        code(&format!(
            r#"{{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"{long_id}"}}"#
        )),
        "invalid_client_order_id"
    );
}

#[test]
fn classes_build_their_legs() {
    let (v, _) = req(r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc","order_class":"bracket","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000","limit_price":"48900"}}"#)
        .validate(Catalog::builtin())
        .unwrap();
    assert_eq!(v.spec.legs.len(), 2);
    assert_eq!(v.spec.legs[0].order_type, OrderType::Limit);
    assert_eq!(v.spec.legs[1].order_type, OrderType::StopLimit);
    let (v, _) = req(r#"{"symbol":"BTCUSDT","qty":"0.01","side":"sell","type":"limit","time_in_force":"gtc","order_class":"oco","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000"}}"#)
        .validate(Catalog::builtin())
        .unwrap();
    assert_eq!(
        v.spec.limit_price.map(Price::get),
        Some(dec!(52000)),
        "the OCO's own limit"
    );
    assert_eq!(v.spec.legs[0].order_type, OrderType::Stop);
    let o = NewOrder::new(Uuid::new_v4(), v, Uuid::nil(), Utc::now()).pending();
    assert_eq!(o.legs.len(), 1);
    assert_eq!(o.legs[0].side, Side::Sell);
    assert_eq!(o.legs[0].parent_id, Some(o.id));
}

#[test]
fn day_orders_expire_at_the_next_utc_midnight() {
    let t = DateTime::parse_from_rfc3339("2026-11-21T23:59:59.999Z")
        .unwrap()
        .to_utc();
    assert_eq!(day_expiry(t).to_rfc3339(), "2026-11-22T00:00:00+00:00");
    let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(day_expiry(t).to_rfc3339(), "2026-11-23T00:00:00+00:00");
}

#[test]
fn a_day_order_on_the_last_day_of_the_calendar_expires_at_once() {
    // Found by fuzz_sqs_command_body_never_panics: a place command whose day order was
    // submitted at `+262142-12-31T23:59:59Z` (chrono's last day) panicked in `pending()`.
    let last: DateTime<Utc> = serde_json::from_str("\"+262142-12-31T23:59:59Z\"").unwrap();
    assert_eq!(day_expiry(last), last);
}

#[test]
fn order_ids_follow_client_order_ids() {
    let a = Uuid::new_v4();
    assert_eq!(order_id_for(a, "x"), order_id_for(a, "x"));
    assert_ne!(order_id_for(a, "x"), order_id_for(a, "y"));
    assert_ne!(order_id_for(a, "x"), order_id_for(Uuid::new_v4(), "x"));
}
