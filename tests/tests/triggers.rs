//! Resting orders fired by the price stream, on the real path: prices scripted on the feed →
//! ingest → Redis and the trigger engine → SQS FIFO → executor → ledger → REST.

use e2e::{dec, field, Auth, Stack};
use serde_json::{json, Value};

fn order(symbol: &str, side: &str, qty: &str, extra: Value) -> Value {
    let mut o = json!({ "symbol": symbol, "qty": qty, "side": side, "time_in_force": "gtc" });
    for (k, v) in extra.as_object().expect("extra is an object") {
        o[k] = v.clone();
    }
    o
}

async fn place(stack: &Stack, key: &Auth, body: Value) -> String {
    let r = stack.post("/v2/orders", key, &body).await;
    r.expect(200);
    r.str("id").to_string()
}

/// Number of fills of an order in the activities.
async fn fills_of(stack: &Stack, key: &Auth, order_id: &str) -> usize {
    let r = stack.get("/v2/account/activities/FILL", key).await;
    r.expect(200);
    r.array()
        .iter()
        .filter(|a| a["order_id"] == order_id)
        .count()
}

/// Buys `qty` BTC at market at the current ask so the account has something to sell.
async fn buy_btc(stack: &Stack, key: &Auth, qty: &str) {
    let id = place(
        stack,
        key,
        order("BTCUSDT", "buy", qty, json!({"type": "market"})),
    )
    .await;
    let o = stack.wait_terminal(key, &id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
}

#[tokio::test]
async fn stops_limits_and_trailing_stops_fire_once_at_the_right_price() {
    let stack = Stack::start().await;
    let key = stack.new_user().await.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;

    // A buy stop above the market and a buy limit below it rest.
    let stop = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "stop", "stop_price": "61000"}),
        ),
    )
    .await;
    let limit = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "limit", "limit_price": "59000"}),
        ),
    )
    .await;
    stack.wait_status(&key, &stop, "new").await;
    stack.wait_status(&key, &limit, "new").await;

    // The ask gaps through the stop: it fills at the touch it triggered on, not the stop.
    stack.set_quote("BTCUSDT", "61499.00", "61500.00").await;
    let o = stack.wait_terminal(&key, &stop).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "61500", "{o}");
    assert_eq!(
        field(
            &stack.get(&format!("/v2/orders/{limit}"), &key).await.json,
            "status"
        ),
        "new"
    );

    // The ask gaps below the limit: it fills at the better price.
    stack.set_quote("BTCUSDT", "58400.00", "58500.00").await;
    let o = stack.wait_terminal(&key, &limit).await;
    assert_eq!(field(&o, "filled_avg_price"), "58500", "{o}");

    // A trailing sell stop 500 below its high-water mark follows the bid up.
    let trailing = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "sell",
            "0.02",
            json!({"type": "trailing_stop", "trail_price": "500"}),
        ),
    )
    .await;
    let o = stack.wait_status(&key, &trailing, "new").await;
    assert_eq!(field(&o, "hwm"), "58400", "{o}");
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    // 59600 is above 60000 − 500: nothing fires, whatever the mark did meanwhile.
    stack.set_quote("BTCUSDT", "59600.00", "59600.50").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let o = stack.get(&format!("/v2/orders/{trailing}"), &key).await;
    assert_eq!(field(&o.json, "status"), "new", "{o}");
    stack.set_quote("BTCUSDT", "59400.00", "59400.50").await;
    let o = stack.wait_terminal(&key, &trailing).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "59400", "{o}");
    assert_eq!(field(&o, "hwm"), "60000", "{o}");

    // Exactly once each, after more prices went by.
    stack.set_quote("BTCUSDT", "50000.00", "50000.50").await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    for id in [&stop, &limit, &trailing] {
        assert_eq!(fills_of(&stack, &key, id).await, 1, "order {id}");
    }
    let pos = stack.get("/v2/positions", &key).await;
    assert!(pos.array().is_empty(), "bought 0.02 and sold 0.02: {pos}");
}

#[tokio::test]
async fn bracket_and_oco_exits_cancel_each_other_exactly_once() {
    let stack = Stack::start().await;
    let key = stack.new_user().await.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;

    // A market bracket: entry fills, both exits go live.
    let bracket = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "market", "order_class": "bracket",
                   "take_profit": {"limit_price": "62000"},
                   "stop_loss": {"stop_price": "58000", "limit_price": "57900"}}),
        ),
    )
    .await;
    let o = stack.wait_terminal(&key, &bracket).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let legs = o["legs"].as_array().expect("legs").clone();
    assert_eq!(legs.len(), 2, "{o}");
    let tp = legs
        .iter()
        .find(|l| l["type"] == "limit")
        .expect("take-profit leg");
    let sl = legs
        .iter()
        .find(|l| l["type"] == "stop_limit")
        .expect("stop-loss leg");
    let (tp, sl) = (field(tp, "id").to_string(), field(sl, "id").to_string());
    stack.wait_status(&key, &tp, "new").await;
    stack.wait_status(&key, &sl, "new").await;
    // Take-profit fills → stop-loss canceled.
    stack.set_quote("BTCUSDT", "62100.00", "62100.50").await;
    let o = stack.wait_terminal(&key, &tp).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "62100", "{o}");
    let o = stack.wait_terminal(&key, &sl).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");

    // An OCO pair on a position: the stop half fills → the limit half is canceled.
    buy_btc(&stack, &key, "0.01").await;
    let oco = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "sell",
            "0.01",
            json!({"type": "limit", "order_class": "oco",
                   "take_profit": {"limit_price": "65000"},
                   "stop_loss": {"stop_price": "60000"}}),
        ),
    )
    .await;
    let o = stack.wait_status(&key, &oco, "new").await;
    let stop_half = field(&o["legs"][0], "id").to_string();
    stack.wait_status(&key, &stop_half, "new").await;
    // Both halves sell the same 0.01: it is held once, and nothing more is available.
    let pos = stack.get("/v2/positions/BTCUSDT", &key).await;
    assert_eq!(dec(field(&pos.json, "qty_available")), dec("0"), "{pos}");
    stack.set_quote("BTCUSDT", "59000.00", "59000.50").await;
    let o = stack.wait_terminal(&key, &stop_half).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let o = stack.wait_terminal(&key, &oco).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");
    stack.set_quote("BTCUSDT", "66000.00", "66000.50").await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(fills_of(&stack, &key, &oco).await, 0);
    assert_eq!(fills_of(&stack, &key, &stop_half).await, 1);
    assert!(stack.get("/v2/positions", &key).await.array().is_empty());
}

#[tokio::test]
async fn replace_cancel_all_and_closing_positions() {
    let stack = Stack::start().await;
    let key = stack.new_user().await.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;

    // Replace a resting limit: the old one is `replaced`, linked both ways.
    let old = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "limit", "limit_price": "55000"}),
        ),
    )
    .await;
    stack.wait_status(&key, &old, "new").await;
    let r = stack
        .patch(
            &format!("/v2/orders/{old}"),
            &key,
            &json!({"limit_price": "56000", "qty": "0.02"}),
        )
        .await;
    r.expect(200);
    let new = r.str("id").to_string();
    assert_eq!(r.str("replaces"), old, "{r}");
    let o = stack.wait_status(&key, &new, "new").await;
    assert_eq!(field(&o, "limit_price"), "56000", "{o}");
    assert_eq!(field(&o, "qty"), "0.02", "{o}");
    let o = stack.wait_status(&key, &old, "replaced").await;
    assert_eq!(field(&o, "replaced_by"), new, "{o}");
    // The replaced order is closed: replacing it again is refused.
    stack
        .patch(
            &format!("/v2/orders/{old}"),
            &key,
            &json!({"limit_price": "57000"}),
        )
        .await
        .expect_error(422, "order_not_open");

    // Cancel all: 207 with one entry per open order.
    let other = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "stop", "stop_price": "70000"}),
        ),
    )
    .await;
    stack.wait_status(&key, &other, "new").await;
    let r = stack.delete("/v2/orders", &key).await;
    r.expect(207);
    assert_eq!(r.array().len(), 2, "{r}");
    assert!(r.array().iter().all(|e| e["status"] == 200), "{r}");
    stack.wait_status(&key, &new, "canceled").await;
    stack.wait_status(&key, &other, "canceled").await;

    // Close 25 % of a position, then everything with its open orders canceled.
    buy_btc(&stack, &key, "0.04").await;
    let r = stack
        .delete("/v2/positions/BTCUSDT?percentage=25", &key)
        .await;
    r.expect(200);
    assert_eq!(r.str("side"), "sell", "{r}");
    assert_eq!(r.str("qty"), "0.01", "{r}");
    stack.wait_terminal(&key, r.str("id")).await;
    let resting = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "sell",
            "0.03",
            json!({"type": "limit", "limit_price": "90000"}),
        ),
    )
    .await;
    stack.wait_status(&key, &resting, "new").await;
    let r = stack.delete("/v2/positions?cancel_orders=true", &key).await;
    r.expect(207);
    assert_eq!(r.array().len(), 1, "{r}");
    assert_eq!(r.array()[0]["symbol"], "BTCUSDT", "{r}");
    let close = field(&r.array()[0]["body"], "id").to_string();
    let o = stack.wait_terminal(&key, &close).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    stack.wait_status(&key, &resting, "canceled").await;
    assert!(stack.get("/v2/positions", &key).await.array().is_empty());
    stack
        .delete("/v2/positions/BTCUSDT", &key)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn a_flushed_trigger_index_is_rebuilt_and_nothing_fires_twice() {
    let stack = Stack::start().await;
    let key = stack.new_user().await.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let limit = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "limit", "limit_price": "59000"}),
        ),
    )
    .await;
    stack.wait_status(&key, &limit, "new").await;

    // Redis loses the index (as after a flush or a failover).
    stack.delete_keys("watch:*").await;

    stack.set_quote("BTCUSDT", "58900.00", "58950.00").await;
    let o = stack.wait_terminal(&key, &limit).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "58950", "{o}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(fills_of(&stack, &key, &limit).await, 1);
}

#[tokio::test]
async fn triggers_survive_feed_drops_and_rotations() {
    let stack = Stack::start().await;
    let key = stack.new_user().await.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let stop = place(
        &stack,
        &key,
        order(
            "BTCUSDT",
            "buy",
            "0.01",
            json!({"type": "stop", "stop_price": "61000"}),
        ),
    )
    .await;
    stack.wait_status(&key, &stop, "new").await;

    // The connection drops, then the server announces a shutdown: ingest reconnects.
    stack.feed_control("/__control/drop").await;
    stack.feed_control("/__control/shutdown").await;
    stack.set_quote("BTCUSDT", "61100.00", "61100.50").await;
    let o = stack.wait_terminal(&key, &stop).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "61100.5", "{o}");
    assert_eq!(fills_of(&stack, &key, &stop).await, 1);
}
