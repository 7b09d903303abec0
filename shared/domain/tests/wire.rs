//! The queue's wire format did not change when `NewOrder` came to carry an `OrderSpec`:
//! a place command serializes to the same JSON object as before (the golden strings were
//! printed by the code before the change), reads back to the same order, and the sample
//! SQS batch of `events/` still parses and re-serializes to what it holds.

use chrono::{DateTime, Utc};
use domain::catalog::Catalog;
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest};
use serde_json::Value;
use uuid::Uuid;

const BRACKET_GOLDEN: &str = r#"{"type":"place_order","command_id":"785debfd-e27c-5e89-a912-cff9290d182c","order":{"id":"785debfd-e27c-5e89-a912-cff9290d182c","account_id":"00000000-0000-0000-0000-000000000007","client_order_id":"wire-1","symbol":"BTCUSDT","asset_id":"b5e79fba-94af-59f5-bf18-c11e8bd8397f","side":"buy","order_type":"limit","time_in_force":"gtc","qty":"0.01","notional":null,"limit_price":"50000","stop_price":null,"trail":null,"order_class":"bracket","legs":[{"role":"take_profit","order_type":"limit","prices":{"limit_price":"52000","stop_price":null,"trail":null}},{"role":"stop_loss","order_type":"stop_limit","prices":{"limit_price":"48900","stop_price":"49000","trail":null}}],"replaces":"00000000-0000-0000-0000-000000000009","submitted_at":"2026-11-21T09:00:00Z"}}"#;

const TRAILING_GOLDEN: &str = r#"{"id":"2c8b652b-5fd3-5fa4-815b-2c06877a429c","account_id":"00000000-0000-0000-0000-000000000007","client_order_id":"wire-2","symbol":"ETHUSDT","asset_id":"779e5b59-9eb8-5daf-9aea-d25cc344a4e3","side":"sell","order_type":"trailing_stop","time_in_force":"day","qty":"0.5","notional":null,"limit_price":null,"stop_price":null,"trail":{"percent":"2.5"},"order_class":"simple","legs":[],"replaces":null,"submitted_at":"2026-11-21T09:00:00Z"}"#;

fn at() -> DateTime<Utc> {
    "2026-11-21T09:00:00Z".parse().unwrap()
}

fn order(request: &str) -> NewOrder {
    let request: OrderRequest = serde_json::from_str(request).unwrap();
    let (valid, inst) = request.validate(Catalog::builtin()).unwrap();
    NewOrder::new(Uuid::from_u128(7), valid, inst.asset_id, at())
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn a_bracket_place_command_is_the_json_it_was() {
    let mut o = order(
        r#"{"symbol":"BTC/USDT","qty":"0.01","side":"buy","type":"limit","limit_price":"50000","time_in_force":"gtc","order_class":"bracket","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000","limit_price":"48900"},"client_order_id":"wire-1"}"#,
    );
    o.replaces = Some(Uuid::from_u128(9));
    let command = Command::place(o);
    let json = serde_json::to_string(&command).unwrap();
    assert_eq!(value(&json), value(BRACKET_GOLDEN), "{json}");
    let back: Command = serde_json::from_str(BRACKET_GOLDEN).unwrap();
    assert_eq!(back, command);
}

#[test]
fn a_trailing_stop_order_is_the_json_it_was() {
    let mut o = order(
        r#"{"symbol":"ETHUSDT","qty":"0.5","side":"sell","type":"trailing_stop","trail_percent":"2.5","time_in_force":"day"}"#,
    );
    // Without a client order id both are made up: take the golden's.
    o.client_order_id = "wire-2".into();
    o.id = Uuid::parse_str("2c8b652b-5fd3-5fa4-815b-2c06877a429c").unwrap();
    let json = serde_json::to_string(&o).unwrap();
    assert_eq!(value(&json), value(TRAILING_GOLDEN), "{json}");
    assert_eq!(
        serde_json::from_str::<NewOrder>(TRAILING_GOLDEN).unwrap(),
        o
    );
}

#[test]
fn the_sample_sqs_batch_reads_and_writes_back_its_commands() {
    let raw = include_str!("../../../events/executor-sqs-batch.json");
    let event: Value = serde_json::from_str(raw).unwrap();
    let records = event["Records"].as_array().unwrap();
    assert!(!records.is_empty());
    for record in records {
        let body = record["body"].as_str().unwrap();
        let command: Command = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let written = serde_json::to_value(&command).unwrap();
        // Every field the sample has comes back with its value (absent optional fields come
        // back as their defaults).
        let sample = value(body);
        for (key, v) in sample["order"].as_object().into_iter().flatten() {
            assert_eq!(&written["order"][key], v, "{key} in {body}");
        }
        assert_eq!(written["type"], sample["type"]);
        assert_eq!(written["command_id"], sample["command_id"]);
    }
}
