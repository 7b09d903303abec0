//! Pre-trade and execution risk: no fill without the cash, never a fill at a stale price.

use e2e::{dec, field, Stack, StackOptions};
use serde_json::{json, Value};

/// `MAX_PRICE_AGE_MS` of this test's api and executor: short, so a released quote goes
/// stale quickly (the feed re-emits scripted quotes every 200 ms, keeping them fresh).
const MAX_PRICE_AGE_MS: u64 = 2_000;

fn market(symbol: &str, side: &str, qty: &str) -> Value {
    json!({ "symbol": symbol, "qty": qty, "side": side, "type": "market", "time_in_force": "gtc" })
}

#[tokio::test]
async fn insufficient_cash_and_stale_prices_are_rejected() {
    let stack = Stack::start_with(StackOptions {
        max_price_age_ms: Some(MAX_PRICE_AGE_MS),
        ..Default::default()
    })
    .await;
    let user = stack.new_user().await;
    let key = user.key();

    // ---- not enough cash: 2 BTC at 60000.50 is 120001 USDT plus the fee --------------------
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let r = stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "2"))
        .await;
    match r.status {
        422 => {
            r.expect_error(422, "insufficient_buying_power");
        }
        200 => {
            // The api's pre-check is a courtesy; the executor's check is the authoritative one.
            let id = r.str("id").to_string();
            let o = stack.wait_terminal(&key, &id).await;
            assert_eq!(field(&o, "status"), "rejected", "{o}");
            let reason = o["reject_reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("buying_power"),
                "the reason names buying power: {o}"
            );
        }
        _ => panic!("a market buy beyond the cash is refused: {r}"),
    }
    // A sell of what the account does not hold (spot: no shorting).
    let r = stack
        .post("/v2/orders", &key, &market("BTCUSDT", "sell", "0.01"))
        .await;
    match r.status {
        422 => {
            r.expect_error(422, "insufficient_qty");
        }
        200 => {
            let o = stack.wait_terminal(&key, r.str("id")).await;
            assert_eq!(field(&o, "status"), "rejected", "{o}");
        }
        _ => panic!("a sell without a position is refused: {r}"),
    }

    // ---- a stale price: SOLUSDT has no recording, so once released nothing refreshes it ----
    let scripted = stack.set_quote("SOLUSDT", "150.00", "150.01").await;
    stack.release_quote("SOLUSDT").await;
    let stale = stack
        .wait_for_quote("SOLUSDT", "stale", |q| {
            adapters::now_ms() - q.ts > MAX_PRICE_AGE_MS as i64 + 500
        })
        .await;
    assert_eq!(
        (stale.bid, stale.ask),
        (scripted.bid, scripted.ask),
        "still the scripted quote, only older"
    );
    let r = stack
        .post("/v2/orders", &key, &market("SOLUSDT", "buy", "1"))
        .await;
    r.expect(200);
    assert_eq!(r.str("status"), "pending_new", "{r}");
    let stale_id = r.str("id").to_string();
    let o = stack.wait_terminal(&key, &stale_id).await;
    assert_eq!(
        field(&o, "status"),
        "rejected",
        "never filled at a stale price: {o}"
    );
    assert!(
        o["reject_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stale_price"),
        "{o}"
    );
    assert_eq!(field(&o, "filled_qty"), "0", "{o}");
    assert!(o["filled_avg_price"].is_null(), "{o}");

    // The same order on a fresh price fills: the rejection was the price's age.
    stack.set_quote("SOLUSDT", "150.00", "150.01").await;
    let r = stack
        .post("/v2/orders", &key, &market("SOLUSDT", "buy", "1"))
        .await;
    r.expect(200);
    let o = stack.wait_terminal(&key, r.str("id")).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "150.01", "{o}");

    // Only that fill happened; cash = 100000 − 150.01 − 0.15001.
    let r = stack.get("/v2/account/activities/FILL", &key).await;
    r.expect(200);
    let fills = r.array();
    assert_eq!(fills.len(), 1, "{r}");
    assert_eq!(field(&fills[0], "symbol"), "SOLUSDT", "{r}");
    assert_ne!(field(&fills[0], "order_id"), stale_id, "{r}");
    stack
        .get("/v2/positions/BTCUSDT", &key)
        .await
        .expect_error(404, "not_found");
    let r = stack.get("/v2/positions/SOLUSDT", &key).await;
    r.expect(200);
    assert_eq!(r.str("qty"), "1", "{r}");
    let r = stack.get("/v2/account", &key).await;
    r.expect(200);
    assert_eq!(r.str("cash"), "99849.83999", "{r}");
    assert_eq!(
        dec(r.str("cash")),
        dec("100000") - dec("150.01") - dec("0.15001")
    );
}
