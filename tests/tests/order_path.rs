//! The order path end to end: REST → SQS FIFO (moto) → executor → Postgres, prices
//! scripted on the feed and carried by ingest into Redis.

use e2e::{dec, field, Stack};
use serde_json::{json, Value};

fn market(symbol: &str, side: &str, qty: &str) -> Value {
    json!({ "symbol": symbol, "qty": qty, "side": side, "type": "market", "time_in_force": "gtc" })
}

/// Sign-up → login → API key → market buy at the ask → market sell at the bid: order,
/// fill, position, average entry price, cash and realized PnL exact to the last digit.
#[tokio::test]
async fn market_buy_then_sell_is_exact_to_the_cent() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, bearer) = (user.key(), user.bearer());

    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(dec(r.str("cash")), dec("100000"), "{r}");
    assert_eq!(r.str("id"), user.account_id, "{r}");
    stack.get("/v2/positions", &key).await.expect(200);
    assert!(stack.get("/v2/positions", &key).await.array().is_empty());

    // ---- buy 0.01 at the ask ------------------------------------------------------------
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let r = stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "0.01"))
        .await;
    r.expect(200);
    assert_eq!(r.str("status"), "pending_new", "{r}");
    assert_eq!(r.str("symbol"), "BTCUSDT", "{r}");
    assert_eq!(r.str("side"), "buy", "{r}");
    assert_eq!(r.str("type"), "market", "{r}");
    assert_eq!(r.str("qty"), "0.01", "{r}");
    let buy_id = r.str("id").to_string();

    let buy = stack.wait_terminal(&key, &buy_id).await;
    assert_eq!(field(&buy, "status"), "filled", "{buy}");
    assert_eq!(field(&buy, "filled_avg_price"), "60000.5", "{buy}");
    assert_eq!(field(&buy, "filled_qty"), "0.01", "{buy}");
    assert!(buy["filled_at"].is_string(), "{buy}");

    // The same order read with the session token.
    let r = stack.get(&format!("/v2/orders/{buy_id}"), &bearer).await;
    r.expect(200);
    assert_eq!(r.str("status"), "filled", "{r}");

    let r = stack.get("/v2/account/activities/FILL", &key).await;
    r.expect(200);
    let fills = r.array();
    assert_eq!(fills.len(), 1, "{r}");
    let f = &fills[0];
    assert_eq!(field(f, "order_id"), buy_id, "{r}");
    assert_eq!(field(f, "side"), "buy", "{r}");
    assert_eq!(field(f, "symbol"), "BTCUSDT", "{r}");
    assert_eq!(field(f, "qty"), "0.01", "{r}");
    assert_eq!(field(f, "price"), "60000.5", "{r}");
    assert_eq!(field(f, "fee"), "0.600005", "{r}");
    assert_eq!(field(f, "type"), "fill", "{r}");
    assert_eq!(field(f, "leaves_qty"), "0", "{r}");
    assert_eq!(field(f, "cum_qty"), "0.01", "{r}");

    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    r.expect(200);
    assert_eq!(r.str("qty"), "0.01", "{r}");
    assert_eq!(r.str("avg_entry_price"), "60000.5", "{r}");
    assert_eq!(r.str("side"), "long", "{r}");
    assert_eq!(r.str("cost_basis"), "600.005", "{r}");
    // Marked at the bid, the price it could be closed at now.
    assert_eq!(r.str("current_price"), "60000", "{r}");
    assert_eq!(r.str("unrealized_pl"), "-0.005", "{r}");
    // The Alpaca-style path of the same position, with the session token.
    let r2 = stack.get("/v2/positions/BTC/USDT", &bearer).await;
    r2.expect(200);
    assert_eq!(r2.str("qty"), "0.01", "{r2}");
    let r = stack.get("/v2/positions", &bearer).await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "{r}");

    // 100000 − 600.005 − 0.600005
    let r = stack.get("/v2/account", &bearer).await;
    r.expect(200);
    assert_eq!(r.str("cash"), "99399.394995", "{r}");
    assert_eq!(r.str("fees_paid"), "0.600005", "{r}");
    assert_eq!(r.str("realized_pl"), "-0.600005", "{r}");
    // equity = cash + qty × bid
    assert_eq!(r.str("equity"), "99999.394995", "{r}");

    // ---- sell 0.01 at the bid, with the session token -----------------------------------
    stack.set_quote("BTCUSDT", "61000.00", "61000.10").await;
    let r = stack
        .post("/v2/orders", &bearer, &market("BTCUSDT", "sell", "0.01"))
        .await;
    r.expect(200);
    assert_eq!(r.str("status"), "pending_new", "{r}");
    let sell_id = r.str("id").to_string();
    assert_ne!(sell_id, buy_id);
    let sell = stack.wait_terminal(&key, &sell_id).await;
    assert_eq!(field(&sell, "status"), "filled", "{sell}");
    assert_eq!(field(&sell, "filled_avg_price"), "61000", "{sell}");
    assert_eq!(field(&sell, "filled_qty"), "0.01", "{sell}");

    stack
        .get("/v2/positions/BTCUSDT", &key)
        .await
        .expect_error(404, "not_found");
    let r = stack.get("/v2/positions", &key).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");

    // 99399.394995 + 610 − 0.61
    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(r.str("cash"), "100008.784995", "{r}");
    assert_eq!(r.str("equity"), "100008.784995", "{r}");
    assert_eq!(r.str("fees_paid"), "1.210005", "{r}");
    // 0.01 × (61000 − 60000.5) − both fees = cash − initial cash
    assert_eq!(r.str("realized_pl"), "8.784995", "{r}");

    let r = stack
        .get("/v2/account/activities/FILL?direction=asc", &key)
        .await;
    r.expect(200);
    let fills = r.array();
    assert_eq!(fills.len(), 2, "{r}");
    let (b, s) = (&fills[0], &fills[1]);
    assert_eq!(field(b, "order_id"), buy_id, "{r}");
    assert_eq!(field(b, "realized_pl"), "-0.600005", "{r}");
    assert_eq!(field(s, "order_id"), sell_id, "{r}");
    assert_eq!(field(s, "side"), "sell", "{r}");
    assert_eq!(field(s, "price"), "61000", "{r}");
    assert_eq!(field(s, "fee"), "0.61", "{r}");
    // 0.01 × (61000 − 60000.5) − 0.61
    assert_eq!(field(s, "realized_pl"), "9.385", "{r}");
    let realized: rust_decimal::Decimal = fills.iter().map(|f| dec(field(f, "realized_pl"))).sum();
    assert_eq!(realized, dec("8.784995"));

    let r = stack.get("/v2/orders?status=closed", &key).await;
    r.expect(200);
    let ids: Vec<&str> = r.array().iter().map(|o| field(o, "id")).collect();
    assert_eq!(ids, vec![sell_id.as_str(), buy_id.as_str()], "{r}");
    let r = stack.get("/v2/orders?status=open", &key).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
}

/// The same `client_order_id` twice is one order and one fill; with different parameters
/// it is a 422. Another user sees none of it. A resting limit order is listed as open and
/// cancels once; a second cancel is a 422.
#[tokio::test]
async fn client_order_ids_privacy_and_cancels() {
    let stack = Stack::start().await;
    let alice = stack.new_user().await;
    let bob = stack.new_user().await;
    let key = alice.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;

    // ---- idempotent client_order_id --------------------------------------------------------
    let mut order = market("BTCUSDT", "buy", "0.001");
    order["client_order_id"] = json!("e2e-same-id-1");
    let first = stack.post("/v2/orders", &key, &order).await;
    first.expect(200);
    let second = stack.post("/v2/orders", &key, &order).await;
    second.expect(200);
    let id = first.str("id").to_string();
    assert_eq!(
        second.str("id"),
        id,
        "the same client_order_id is the same order: {first} / {second}"
    );
    assert_eq!(first.str("client_order_id"), "e2e-same-id-1", "{first}");

    let mut different = order.clone();
    different["qty"] = json!("0.002");
    stack
        .post("/v2/orders", &key, &different)
        .await
        .expect_error(422, "client_order_id_conflict");

    let filled = stack.wait_terminal(&key, &id).await;
    assert_eq!(field(&filled, "status"), "filled", "{filled}");
    assert_eq!(field(&filled, "filled_avg_price"), "60000.5", "{filled}");

    // Once more after the fill: the stored order, still one.
    let third = stack.post("/v2/orders", &key, &order).await;
    third.expect(200);
    assert_eq!(third.str("id"), id, "{third}");
    assert_eq!(third.str("status"), "filled", "{third}");
    stack
        .post("/v2/orders", &key, &different)
        .await
        .expect_error(422, "client_order_id_conflict");

    let r = stack
        .get(
            "/v2/orders:by_client_order_id?client_order_id=e2e-same-id-1",
            &key,
        )
        .await;
    r.expect(200);
    assert_eq!(r.str("id"), id, "{r}");

    let r = stack.get("/v2/orders?status=all", &key).await;
    r.expect(200);
    let orders = r.array();
    assert_eq!(orders.len(), 1, "exactly one order: {r}");
    assert_eq!(field(&orders[0], "id"), id, "{r}");
    let r = stack.get("/v2/account/activities/FILL", &key).await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "exactly one fill: {r}");
    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    r.expect(200);
    assert_eq!(r.str("qty"), "0.001", "{r}");
    // 100000 − 60.0005 − 0.0600005
    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(r.str("cash"), "99939.9394995", "{r}");

    // ---- another user sees nothing of it ----------------------------------------------------
    let other = bob.key();
    stack
        .get(&format!("/v2/orders/{id}"), &other)
        .await
        .expect_error(404, "not_found");
    stack
        .get(&format!("/v2/orders/{id}"), &bob.bearer())
        .await
        .expect_error(404, "not_found");
    stack
        .delete(&format!("/v2/orders/{id}"), &other)
        .await
        .expect_error(404, "not_found");
    stack
        .get(
            "/v2/orders:by_client_order_id?client_order_id=e2e-same-id-1",
            &other,
        )
        .await
        .expect_error(404, "not_found");
    let r = stack.get("/v2/orders?status=all", &other).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
    let r = stack.get("/v2/positions", &other).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
    stack
        .get("/v2/positions/BTCUSDT", &other)
        .await
        .expect_error(404, "not_found");
    let r = stack.get("/v2/account/activities/FILL", &other).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
    let r = stack.get("/v2/account", &other).await;
    r.expect(200);
    assert_eq!(dec(r.str("cash")), dec("100000"), "{r}");
    assert_eq!(r.str("id"), bob.account_id, "{r}");

    // ---- a resting limit buy, canceled -------------------------------------------------------
    let limit = json!({
        "symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "limit",
        "time_in_force": "gtc", "limit_price": "50000.00"
    });
    let r = stack.post("/v2/orders", &key, &limit).await;
    r.expect(200);
    assert_eq!(r.str("status"), "pending_new", "{r}");
    let lid = r.str("id").to_string();
    let resting = stack
        .wait_for_order(&key, &lid, "new", |o| o["status"] != "pending_new")
        .await;
    assert_eq!(
        field(&resting, "status"),
        "new",
        "a limit buy below the ask rests: {resting}"
    );
    assert_eq!(field(&resting, "limit_price"), "50000", "{resting}");
    assert_eq!(field(&resting, "filled_qty"), "0", "{resting}");

    let r = stack.get("/v2/orders?status=open", &key).await;
    r.expect(200);
    let open: Vec<&str> = r.array().iter().map(|o| field(o, "id")).collect();
    assert_eq!(open, vec![lid.as_str()], "{r}");
    // A resting buy holds back its notional and fee from buying power, not from cash.
    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(r.str("cash"), "99939.9394995", "{r}");
    assert_eq!(r.str("buying_power"), "99889.8894995", "{r}");

    // Bob cannot cancel it.
    stack
        .delete(&format!("/v2/orders/{lid}"), &other)
        .await
        .expect_error(404, "not_found");

    stack
        .delete(&format!("/v2/orders/{lid}"), &key)
        .await
        .expect(204);
    let canceled = stack.wait_terminal(&key, &lid).await;
    assert_eq!(field(&canceled, "status"), "canceled", "{canceled}");
    assert!(canceled["canceled_at"].is_string(), "{canceled}");
    stack
        .delete(&format!("/v2/orders/{lid}"), &key)
        .await
        .expect_error(422, "order_not_cancelable");
    // Nor is a filled order cancelable.
    stack
        .delete(&format!("/v2/orders/{id}"), &key)
        .await
        .expect_error(422, "order_not_cancelable");

    let r = stack.get("/v2/orders?status=open", &key).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
    let r = stack.get("/v2/orders?status=all", &key).await;
    r.expect(200);
    assert_eq!(r.array().len(), 2, "{r}");
    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(r.str("cash"), "99939.9394995", "{r}");
    assert_eq!(r.str("buying_power"), "99939.9394995", "{r}");
    let r = stack.get("/v2/account/activities/FILL", &key).await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "a canceled order never fills: {r}");
}
