//! Resting orders fired by the price stream, on the real path: prices scripted on the feed →
//! ingest → Redis and the trigger engine → SQS FIFO → executor → ledger → REST.

use e2e::{dec, field, Auth, Stack};
use serde_json::{json, Value};

/// The fields of a limit order at `price`.
fn limit_at(price: &str) -> Value {
    json!({"type": "limit", "limit_price": price})
}

/// The fields of a stop order at `price`.
fn stop_at(price: &str) -> Value {
    json!({"type": "stop", "stop_price": price})
}

/// A stack of its own with one user's API key, BTCUSDT quoted at 60000.00/60000.50.
struct Desk {
    stack: Stack,
    key: Auth,
}

impl Desk {
    async fn open() -> Desk {
        let stack = Stack::start().await;
        let key = stack.new_user().await.key();
        stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
        Desk { stack, key }
    }

    /// Places a gtc BTCUSDT order of `side` and `qty` with the fields of `extra`: its id.
    async fn place(&self, side: &str, qty: &str, extra: Value) -> String {
        let mut o =
            json!({ "symbol": "BTCUSDT", "qty": qty, "side": side, "time_in_force": "gtc" });
        for (k, v) in extra.as_object().expect("extra is an object") {
            o[k] = v.clone();
        }
        let r = self.stack.post("/v2/orders", &self.key, &o).await;
        r.expect(200);
        r.str("id").to_string()
    }

    /// Places an order as [`Desk::place`] does and waits until it rests (`new`): its id.
    async fn rest(&self, side: &str, qty: &str, extra: Value) -> String {
        let id = self.place(side, qty, extra).await;
        self.stack.wait_status(&self.key, &id, "new").await;
        id
    }

    /// Waits until the order is done and asserts that it filled at `price`: the order.
    async fn filled_at(&self, id: &str, price: &str) -> Value {
        let o = self.stack.wait_terminal(&self.key, id).await;
        assert_eq!(field(&o, "status"), "filled", "{o}");
        assert_eq!(field(&o, "filled_avg_price"), price, "{o}");
        o
    }

    /// Number of fills of an order in the activities.
    async fn fills_of(&self, order_id: &str) -> usize {
        let r = self
            .stack
            .get("/v2/account/activities/FILL", &self.key)
            .await;
        r.expect(200);
        r.array()
            .iter()
            .filter(|a| a["order_id"] == order_id)
            .count()
    }

    /// Buys `qty` BTC at market at the current ask so the account has something to sell.
    async fn buy_btc(&self, qty: &str) {
        let id = self.place("buy", qty, json!({"type": "market"})).await;
        let o = self.stack.wait_terminal(&self.key, &id).await;
        assert_eq!(field(&o, "status"), "filled", "{o}");
    }
}

#[tokio::test]
async fn stops_limits_and_trailing_stops_fire_once_at_the_right_price() {
    let desk = Desk::open().await;
    let (stack, key) = (&desk.stack, &desk.key);

    // A buy stop above the market and a buy limit below it rest.
    let stop = desk.rest("buy", "0.01", stop_at("61000")).await;
    let limit = desk.rest("buy", "0.01", limit_at("59000")).await;

    // The ask gaps through the stop: it fills at the touch it triggered on, not the stop.
    stack.set_quote("BTCUSDT", "61499.00", "61500.00").await;
    desk.filled_at(&stop, "61500").await;
    assert_eq!(
        field(
            &stack.get(&format!("/v2/orders/{limit}"), key).await.json,
            "status"
        ),
        "new"
    );

    // The ask gaps below the limit: it fills at the better price.
    stack.set_quote("BTCUSDT", "58400.00", "58500.00").await;
    let o = stack.wait_terminal(key, &limit).await;
    assert_eq!(field(&o, "filled_avg_price"), "58500", "{o}");

    // A trailing sell stop 500 below its high-water mark follows the bid up.
    let trailing = desk
        .place(
            "sell",
            "0.02",
            json!({"type": "trailing_stop", "trail_price": "500"}),
        )
        .await;
    let o = stack.wait_status(key, &trailing, "new").await;
    assert_eq!(field(&o, "hwm"), "58400", "{o}");
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    // 59600 is above 60000 − 500: nothing fires, whatever the mark did meanwhile.
    stack.set_quote("BTCUSDT", "59600.00", "59600.50").await;
    stack.quiescent().await;
    let o = stack.get(&format!("/v2/orders/{trailing}"), key).await;
    assert_eq!(field(&o.json, "status"), "new", "{o}");
    stack.set_quote("BTCUSDT", "59400.00", "59400.50").await;
    let o = desk.filled_at(&trailing, "59400").await;
    assert_eq!(field(&o, "hwm"), "60000", "{o}");

    // Exactly once each, after more prices went by.
    stack.set_quote("BTCUSDT", "50000.00", "50000.50").await;
    stack.quiescent().await;
    for id in [&stop, &limit, &trailing] {
        assert_eq!(desk.fills_of(id).await, 1, "order {id}");
    }
    let pos = stack.get("/v2/positions", key).await;
    assert!(pos.array().is_empty(), "bought 0.02 and sold 0.02: {pos}");
}

#[tokio::test]
async fn bracket_and_oco_exits_cancel_each_other_exactly_once() {
    let desk = Desk::open().await;
    let (stack, key) = (&desk.stack, &desk.key);

    // A market bracket: entry fills, both exits go live.
    let bracket = desk
        .place(
            "buy",
            "0.01",
            json!({"type": "market", "order_class": "bracket",
                   "take_profit": {"limit_price": "62000"},
                   "stop_loss": {"stop_price": "58000", "limit_price": "57900"}}),
        )
        .await;
    let o = stack.wait_terminal(key, &bracket).await;
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
    stack.wait_status(key, &tp, "new").await;
    stack.wait_status(key, &sl, "new").await;
    // Take-profit fills → stop-loss canceled.
    stack.set_quote("BTCUSDT", "62100.00", "62100.50").await;
    desk.filled_at(&tp, "62100").await;
    let o = stack.wait_terminal(key, &sl).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");

    // An OCO pair on a position: the stop half fills → the limit half is canceled.
    desk.buy_btc("0.01").await;
    let oco = desk
        .place(
            "sell",
            "0.01",
            json!({"type": "limit", "order_class": "oco",
                   "take_profit": {"limit_price": "65000"},
                   "stop_loss": {"stop_price": "60000"}}),
        )
        .await;
    let o = stack.wait_status(key, &oco, "new").await;
    let stop_half = field(&o["legs"][0], "id").to_string();
    stack.wait_status(key, &stop_half, "new").await;
    // Both halves sell the same 0.01: it is held once, and nothing more is available.
    let pos = stack.get("/v2/positions/BTCUSDT", key).await;
    assert_eq!(dec(field(&pos.json, "qty_available")), dec("0"), "{pos}");
    stack.set_quote("BTCUSDT", "59000.00", "59000.50").await;
    let o = stack.wait_terminal(key, &stop_half).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let o = stack.wait_terminal(key, &oco).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");
    stack.set_quote("BTCUSDT", "66000.00", "66000.50").await;
    stack.quiescent().await;
    assert_eq!(desk.fills_of(&oco).await, 0);
    assert_eq!(desk.fills_of(&stop_half).await, 1);
    assert!(stack.get("/v2/positions", key).await.array().is_empty());
}

#[tokio::test]
async fn replace_cancel_all_and_closing_positions() {
    let desk = Desk::open().await;
    let (stack, key) = (&desk.stack, &desk.key);

    // Replace a resting limit: the old one is `replaced`, linked both ways.
    let old = desk.rest("buy", "0.01", limit_at("55000")).await;
    let r = stack
        .patch(
            &format!("/v2/orders/{old}"),
            key,
            &json!({"limit_price": "56000", "qty": "0.02"}),
        )
        .await;
    r.expect(200);
    let new = r.str("id").to_string();
    assert_eq!(r.str("replaces"), old, "{r}");
    let o = stack.wait_status(key, &new, "new").await;
    assert_eq!(field(&o, "limit_price"), "56000", "{o}");
    assert_eq!(field(&o, "qty"), "0.02", "{o}");
    let o = stack.wait_status(key, &old, "replaced").await;
    assert_eq!(field(&o, "replaced_by"), new, "{o}");
    // The replaced order is closed: replacing it again is refused.
    stack
        .patch(
            &format!("/v2/orders/{old}"),
            key,
            &json!({"limit_price": "57000"}),
        )
        .await
        .expect_error(422, "order_not_open");

    // Cancel all: 207 with one entry per open order.
    let other = desk.rest("buy", "0.01", stop_at("70000")).await;
    let r = stack.delete("/v2/orders", key).await;
    r.expect(207);
    assert_eq!(r.array().len(), 2, "{r}");
    assert!(r.array().iter().all(|e| e["status"] == 200), "{r}");
    stack.wait_status(key, &new, "canceled").await;
    stack.wait_status(key, &other, "canceled").await;

    // Close 25 % of a position, then everything with its open orders canceled.
    desk.buy_btc("0.04").await;
    let r = stack
        .delete("/v2/positions/BTCUSDT?percentage=25", key)
        .await;
    r.expect(200);
    assert_eq!(r.str("side"), "sell", "{r}");
    assert_eq!(r.str("qty"), "0.01", "{r}");
    stack.wait_terminal(key, r.str("id")).await;
    let resting = desk.rest("sell", "0.03", limit_at("90000")).await;
    let r = stack.delete("/v2/positions?cancel_orders=true", key).await;
    r.expect(207);
    assert_eq!(r.array().len(), 1, "{r}");
    assert_eq!(r.array()[0]["symbol"], "BTCUSDT", "{r}");
    let close = field(&r.array()[0]["body"], "id").to_string();
    let o = stack.wait_terminal(key, &close).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    stack.wait_status(key, &resting, "canceled").await;
    assert!(stack.get("/v2/positions", key).await.array().is_empty());
    stack
        .delete("/v2/positions/BTCUSDT", key)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn a_flushed_trigger_index_is_rebuilt_and_nothing_fires_twice() {
    let desk = Desk::open().await;
    let stack = &desk.stack;
    let limit = desk.rest("buy", "0.01", limit_at("59000")).await;

    // Redis loses the index (as after a flush or a failover).
    stack.delete_keys("watch:*").await;

    stack.set_quote("BTCUSDT", "58900.00", "58950.00").await;
    desk.filled_at(&limit, "58950").await;
    stack.quiescent().await;
    assert_eq!(desk.fills_of(&limit).await, 1);
}

#[tokio::test]
async fn triggers_survive_feed_drops_and_rotations() {
    let desk = Desk::open().await;
    let stack = &desk.stack;
    let stop = desk.rest("buy", "0.01", stop_at("61000")).await;

    // The connection drops, then the server announces a shutdown: ingest reconnects.
    stack.feed_control("/__control/drop").await;
    stack.feed_control("/__control/shutdown").await;
    stack.set_quote("BTCUSDT", "61100.00", "61100.50").await;
    desk.filled_at(&stop, "61100.5").await;
    assert_eq!(desk.fills_of(&stop).await, 1);
}
