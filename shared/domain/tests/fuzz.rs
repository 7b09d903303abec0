//! Fuzz tests of the domain's parsers of outside input (`make fuzz` runs them with many more
//! cases): decimal text, order bodies (`POST /v2/orders`) and their validation, risk patches
//! (`PATCH /v2/account/risk`), WebSocket client messages and SQS command bodies (the
//! executor's decode). Nothing panics; every refusal is a `RuleViolation` (or a
//! `ProtocolError`) with a `RejectCode`, and what is accepted stays within the documented
//! range and travels the queue unchanged.

use chrono::{DateTime, Utc};
use domain::amount::{Money, Price, Quantity};
use domain::catalog::Catalog;
use domain::command::Command;
use domain::decimal::{parse_decimal, DecimalText, MAX_ABS, MAX_SCALE};
use domain::order::{NewOrder, OrderRequest};
use domain::realtime::{parse_action, ClientAction, Subscription};
use domain::risk::{RiskLimits, RiskPatch};
use domain::RejectCode;
use proptest::prelude::*;
use testkit::fuzz::{self, date_text, json_text, number_text, object_with, text};
use uuid::Uuid;

/// Amounts the catalog's filters take for the usual symbols, so validation runs past them.
const PLAUSIBLE: &[&str] = &[
    "0.01", "0.001", "0.5", "1", "2.5", "10", "100", "48900", "49000", "50000", "52000", "0.1",
];

/// A value for an amount field: well-typed (a JSON string, or a number that is valid JSON)
/// with hostile text, or (`wild`) any JSON at all.
fn amount_value(wild: bool) -> BoxedStrategy<String> {
    let quoted = |s: String| serde_json::Value::String(s).to_string();
    if wild {
        prop_oneof![
            4 => number_text(),
            4 => number_text().prop_map(quoted),
            1 => json_text(),
        ]
        .boxed()
    } else {
        prop_oneof![
            3 => proptest::sample::select(PLAUSIBLE).prop_map(str::to_string),
            3 => proptest::sample::select(PLAUSIBLE).prop_map(move |p| quoted(p.into())),
            4 => number_text().prop_map(quoted),
        ]
        .boxed()
    }
}

/// A value for a text field: one of `words`, hostile text, or (`wild`) any JSON.
fn string_value(words: &'static [&'static str], wild: bool) -> BoxedStrategy<String> {
    let quoted = |s: String| serde_json::Value::String(s).to_string();
    let word = proptest::sample::select(words).prop_map(move |w| quoted(w.into()));
    if wild {
        prop_oneof![6 => word, 2 => text().prop_map(quoted), 1 => json_text()].boxed()
    } else {
        prop_oneof![30 => word, 1 => text().prop_map(quoted)].boxed()
    }
}

const SYMBOLS: &[&str] = &[
    "BTCUSDT", "btcusdt", "BTC/USDT", "ETHUSDT", "BNBUSDT", "ETHBTC",
];
const SIDES: &[&str] = &["buy", "sell"];
const TYPES: &[&str] = &["market", "limit", "stop", "stop_limit", "trailing_stop"];
const TIFS: &[&str] = &["gtc", "day", "ioc", "fok", "gtc", "day", "opg"];
const CLASSES: &[&str] = &["", "simple", "bracket", "oco", "oto"];

/// One `"key":value` entry of an order body or of a leg.
fn entry(
    key: &'static str,
    presence: f64,
    value: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<Option<String>> {
    proptest::option::weighted(presence, value.prop_map(move |v| format!("\"{key}\":{v}"))).boxed()
}

fn object(entries: Vec<Option<String>>, extra: Vec<String>) -> String {
    let mut parts: Vec<String> = entries.into_iter().flatten().collect();
    parts.extend(extra);
    format!("{{{}}}", parts.join(","))
}

/// A bracket or OTO leg: Alpaca's `{"limit_price", "stop_price", …}` with hostile values.
fn leg(wild: bool) -> BoxedStrategy<String> {
    let leg = (
        entry("limit_price", 0.5, amount_value(wild)),
        entry("stop_price", 0.5, amount_value(wild)),
        entry("trail_price", 0.15, amount_value(wild)),
        entry("trail_percent", 0.15, amount_value(wild)),
    )
        .prop_map(|(a, b, c, d)| object(vec![a, b, c, d], vec![]));
    if wild {
        prop_oneof![6 => leg, 1 => json_text()].boxed()
    } else {
        leg.boxed()
    }
}

/// `POST /v2/orders` bodies: mostly objects that deserialize, with hostile values, so that
/// validation runs deep; the `wild` ones have wrong types, repeated and unknown keys.
fn order_body_of(wild: bool) -> BoxedStrategy<String> {
    let fields = (
        (
            entry("symbol", 0.95, string_value(SYMBOLS, wild)),
            entry("qty", 0.7, amount_value(wild)),
            entry("notional", 0.2, amount_value(wild)),
            entry("side", 0.95, string_value(SIDES, wild)),
            entry("type", 0.95, string_value(TYPES, wild)),
            entry("time_in_force", 0.95, string_value(TIFS, wild)),
        ),
        (
            entry("limit_price", 0.5, amount_value(wild)),
            entry("stop_price", 0.4, amount_value(wild)),
            entry("trail_price", 0.15, amount_value(wild)),
            entry("trail_percent", 0.15, amount_value(wild)),
            entry(
                "client_order_id",
                0.5,
                string_value(&["my-1", "", "x"], wild),
            ),
            entry("order_class", 0.5, string_value(CLASSES, wild)),
        ),
        (
            entry("take_profit", 0.4, leg(wild)),
            entry("stop_loss", 0.4, leg(wild)),
            entry(
                "extended_hours",
                0.2,
                prop_oneof![
                    Just("true".to_string()),
                    Just("false".to_string()),
                    json_text()
                ],
            ),
        ),
        proptest::collection::vec(
            object_with(ORDER_FIELDS).prop_map(|o| {
                // The entries of a random object, to repeat or add keys.
                o.trim_start_matches('{').trim_end_matches('}').to_string()
            }),
            0..if wild { 2 } else { 1 },
        ),
    );
    fields
        .prop_map(
            |((a, b, c, d, e, f), (g, h, i, j, k, l), (m, n, o), extra)| {
                let extra = extra.into_iter().filter(|s| !s.is_empty()).collect();
                object(vec![a, b, c, d, e, f, g, h, i, j, k, l, m, n, o], extra)
            },
        )
        .boxed()
}

fn order_body() -> BoxedStrategy<String> {
    prop_oneof![
        8 => order_body_of(false),
        3 => order_body_of(true),
        1 => object_with(ORDER_FIELDS),
        1 => json_text(),
    ]
    .boxed()
}

const ORDER_FIELDS: &[&str] = &[
    "symbol",
    "qty",
    "notional",
    "side",
    "type",
    "order_type",
    "time_in_force",
    "limit_price",
    "stop_price",
    "trail_price",
    "trail_percent",
    "extended_hours",
    "client_order_id",
    "order_class",
    "take_profit",
    "stop_loss",
];

fn at() -> DateTime<Utc> {
    "2026-11-21T09:00:00Z".parse().unwrap()
}

fn in_range(d: rust_decimal::Decimal) -> bool {
    d.abs() <= MAX_ABS && d.scale() <= MAX_SCALE
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn fuzz_decimal_text_never_panics(t in prop_oneof![number_text(), text(), date_text()]) {
        if let Ok(d) = parse_decimal(&t) {
            prop_assert!(in_range(d), "{t} parsed to {d}");
        }
        let _ = Price::parse(&t);
        let _ = Quantity::parse(&t);
        let _ = Money::parse(&t);
        let json = serde_json::Value::String(t.clone()).to_string();
        let _ = serde_json::from_str::<Price>(&json);
        let _ = serde_json::from_str::<Money>(&t);
        let _ = serde_json::from_str::<DecimalText>(&t).map(|d| d.parse());
    }

    #[test]
    fn fuzz_order_body_never_panics(body in order_body()) {
        let Ok(request) = serde_json::from_str::<OrderRequest>(&body) else {
            return Ok(());
        };
        match request.validate(Catalog::builtin()) {
            Err(v) => prop_assert!(RejectCode::parse(v.code.as_str()).is_some()),
            Ok((valid, inst)) => {
                for amount in [valid.spec.qty.map(Quantity::get), valid.spec.limit_price.map(Price::get), valid.spec.stop_price.map(Price::get), valid.spec.notional.map(Money::get)].into_iter().flatten() {
                    prop_assert!(in_range(amount), "{body}: {amount}");
                }
                // What the api accepts travels the queue to the executor unchanged.
                let order = NewOrder::new(Uuid::from_u128(7), valid, inst.asset_id, at());
                let command = Command::place(order);
                let wire = serde_json::to_string(&command).unwrap();
                prop_assert_eq!(serde_json::from_str::<Command>(&wire).unwrap(), command);
            }
        }
    }

    #[test]
    fn fuzz_risk_patch_never_panics(body in object_with(RISK_FIELDS)) {
        let Ok(patch) = serde_json::from_str::<RiskPatch>(&body) else {
            return Ok(());
        };
        for current in [RiskLimits::default(), RiskLimits::none()] {
            match patch.apply(&current) {
                Err(v) => prop_assert_eq!(v.code, RejectCode::InvalidRiskLimit),
                Ok(next) => {
                    for limit in [next.max_order_notional, next.max_position_notional, next.max_gross_leverage, next.daily_loss_limit].into_iter().flatten() {
                        prop_assert!(in_range(limit) && limit > rust_decimal::Decimal::ZERO, "{body}: {limit}");
                    }
                }
            }
        }
    }

    #[test]
    fn fuzz_ws_message_never_panics(body in prop_oneof![
        4 => object_with(&["action", "symbols", "max_rate_ms"]),
        2 => (string_value(&["subscribe", "unsubscribe", "ping"], true), proptest::collection::vec(string_value(SYMBOLS, true), 0..6), prop_oneof![number_text(), json_text()])
            .prop_map(|(a, s, r)| format!("{{\"action\":{a},\"symbols\":[{}],\"max_rate_ms\":{r}}}", s.join(","))),
        1 => json_text(),
    ]) {
        match parse_action(&body) {
            Err(e) => prop_assert!(RejectCode::parse(e.code.as_str()).is_some()),
            Ok(ClientAction::Subscribe { symbols, max_rate_ms }) => {
                let mut s = Subscription::default();
                let _ = s.subscribe(&symbols, max_rate_ms, Catalog::builtin(), 50);
                s.unsubscribe(&symbols);
            }
            Ok(ClientAction::Unsubscribe { symbols }) => Subscription::default().unsubscribe(&symbols),
            Ok(ClientAction::Ping) => {}
        }
    }

    #[test]
    fn fuzz_sqs_command_body_never_panics(body in command_body()) {
        // The executor's decode is exactly this; a command that decodes re-encodes to itself.
        if let Ok(command) = serde_json::from_str::<Command>(&body) {
            if let Command::PlaceOrder { order, .. } = &command {
                // What the executor makes of a place command before it applies it.
                let pending = order.pending();
                let _ = domain::trigger::Watch::of(&pending);
                let _ = order.same_parameters(order);
            }
            let wire = serde_json::to_string(&command).unwrap();
            prop_assert_eq!(serde_json::from_str::<Command>(&wire).unwrap(), command);
        }
    }
}

const RISK_FIELDS: &[&str] = &[
    "max_order_notional",
    "max_position_notional",
    "max_open_orders",
    "max_gross_leverage",
    "daily_loss_limit",
    "flatten_on_kill",
];

/// Real commands (one of each kind, as the api and the ingest task send them) with one or
/// two values replaced by hostile JSON, or anything at all.
fn command_body() -> impl Strategy<Value = String> {
    const HOLE: &str = "\u{1}HOLE\u{1}";
    let request: OrderRequest = serde_json::from_str(
        r#"{"symbol":"BTC/USDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc","order_class":"bracket","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000","limit_price":"48900"},"client_order_id":"wire-1"}"#,
    )
    .unwrap();
    let (valid, inst) = request.validate(Catalog::builtin()).unwrap();
    let order = NewOrder::new(Uuid::from_u128(7), valid, inst.asset_id, at());
    let day: OrderRequest = serde_json::from_str(
        r#"{"symbol":"ETHUSDT","qty":"0.5","side":"sell","type":"trailing_stop","trail_percent":"2.5","time_in_force":"day"}"#,
    )
    .unwrap();
    let (valid, inst) = day.validate(Catalog::builtin()).unwrap();
    let day = NewOrder::new(Uuid::from_u128(7), valid, inst.asset_id, at());
    let (a, o) = (Uuid::from_u128(7), Uuid::from_u128(9));
    let commands: Vec<serde_json::Value> = [
        Command::place(order),
        Command::place(day),
        Command::cancel(domain::order::OrderRef {
            account_id: a,
            order_id: o,
        }),
        Command::trigger(a, o, "BTCUSDT", Some(rust_decimal::Decimal::new(615, 1))),
        Command::expire(a, o),
        Command::flatten(a),
    ]
    .iter()
    .map(|c| serde_json::to_value(c).unwrap())
    .collect();
    let places = commands[..2].to_vec();
    let mutated = (
        proptest::sample::select(commands),
        any::<proptest::sample::Index>(),
        prop_oneof![
            amount_value(true),
            date_text().prop_map(|d| serde_json::Value::String(d).to_string()),
            string_value(&["buy", "limit", "gtc", "place_order", "trail"], true),
            json_text()
        ],
    )
        .prop_map(|(mut command, at, hostile)| {
            let mut paths = Vec::new();
            leaves(&command, &mut Vec::new(), &mut paths);
            let path = &paths[at.index(paths.len())];
            let mut slot = &mut command;
            for key in path {
                slot = match key {
                    Key::Field(k) => &mut slot[k.as_str()],
                    Key::Item(i) => &mut slot[*i],
                };
            }
            *slot = serde_json::Value::String(HOLE.into());
            command.to_string().replace(
                &serde_json::Value::String(HOLE.into()).to_string(),
                &hostile,
            )
        });
    // The place commands' times, at the ends of the calendar.
    let times = (
        proptest::sample::select(vec![places[0].clone(), places[1].clone()]),
        prop_oneof![
            proptest::sample::select(
                testkit::fuzz::DATES
                    .iter()
                    .filter(|d| d.contains('T'))
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
            ),
            date_text()
        ],
    )
        .prop_map(|(mut command, time)| {
            command["order"]["submitted_at"] = serde_json::Value::String(time);
            command.to_string()
        });
    prop_oneof![
        6 => mutated,
        4 => times,
        1 => object_with(&["type", "command_id", "order", "account_id", "order_id", "symbol", "hwm"]),
        1 => json_text(),
    ]
}

#[derive(Clone)]
enum Key {
    Field(String),
    Item(usize),
}

/// The paths to every value of `v` (objects and arrays included).
fn leaves(v: &serde_json::Value, path: &mut Vec<Key>, out: &mut Vec<Vec<Key>>) {
    out.push(path.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                path.push(Key::Field(k.clone()));
                leaves(child, path, out);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Key::Item(i));
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}
