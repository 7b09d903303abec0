//! Limits end to end: per-account rate limits (`RATE_*` of the api and webhook functions),
//! login backoff, and the account's risk limits and kill switch (`/v2/account/risk`,
//! `/v2/account/kill`), checked by the api at once and by the executor on the ledger.

use std::time::{Duration, Instant};

use e2e::{dec, field, wait_limit, Auth, Resp, Stack, StackOptions};
use reqwest::Method;
use serde_json::{json, Value};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn market(symbol: &str, side: &str, qty: &str) -> Value {
    json!({ "symbol": symbol, "qty": qty, "side": side, "type": "market", "time_in_force": "gtc" })
}

/// A buy limit far under the market: it rests and holds little cash.
fn resting_buy() -> Value {
    json!({ "symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "limit",
            "limit_price": "50000", "time_in_force": "gtc" })
}

/// A 429 with this code and a `Retry-After` of at least a second: the seconds.
#[track_caller]
fn limited(r: &Resp, code: &str) -> u64 {
    r.expect_error(429, code);
    let secs: u64 = r
        .retry_after
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a 429 says when to retry (Retry-After in seconds): {r}"));
    assert!(secs >= 1, "{r}");
    secs
}

async fn sleep_secs(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// `POST /v2/orders` → 200: the order id.
async fn place(stack: &Stack, auth: &Auth, body: &Value) -> String {
    let r = stack.post("/v2/orders", auth, body).await;
    r.expect(200);
    r.str("id").to_string()
}

async fn order_count(stack: &Stack, auth: &Auth) -> usize {
    let r = stack.get("/v2/orders?status=all", auth).await;
    r.expect(200);
    r.array().len()
}

// ---- rate limits -------------------------------------------------------------------------

/// `RATE_ORDERS_BURST=3`: the 4th order in a row is a 429 with `Retry-After`; after that
/// long an order goes through again. Webhook alerts draw on the same bucket. Each account
/// has its own. One token every 10 s: nothing refills while the burst is spent, however
/// slowly this machine runs it (a refill would show as a 4th order accepted, never as a
/// pass), and no assertion bounds how long it took.
#[tokio::test]
async fn orders_beyond_the_burst_are_rate_limited() {
    let stack = Stack::start_with(StackOptions {
        function_env: env(&[("RATE_ORDERS_BURST", "3"), ("RATE_ORDERS_PER_MINUTE", "6")]),
        ..Default::default()
    })
    .await;
    let (a, b) = tokio::join!(stack.new_user(), stack.new_user());
    let (ka, kb) = (a.key(), b.key());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let r = stack.post("/v2/webhooks", &a.bearer(), &json!({})).await;
    r.expect(201);
    let hook = r.json.clone();
    let send_alert = |body: String| {
        let path = format!("/v2/hooks/tradingview/{}", field(&hook, "id"));
        let stack = &stack;
        async move {
            stack
                .request_with(
                    Method::POST,
                    &path,
                    &Auth::None,
                    &[],
                    Some(("application/json", body)),
                )
                .await
        }
    };
    // A first alert (a wrong passphrase: no order, no token) gets the webhook function
    // connected, so that the alert below answers at once.
    let wrong = alert_body_of(&hook).replace(field(&hook, "passphrase"), "wrong");
    send_alert(wrong).await.expect_error(401, "unauthorized");

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(place(&stack, &ka, &resting_buy()).await);
    }
    let r = stack.post("/v2/orders", &ka, &resting_buy()).await;
    let retry = limited(&r, "rate_limited");
    assert!(retry <= 10, "one token every 10 s: {r}");
    // An alert now is refused by the same bucket, and the refusal recorded.
    // (Its Retry-After is checked by `webhook_rate_limits_say_when_to_retry`.)
    let alert = send_alert(alert_body_of(&hook)).await;
    alert.expect_error(429, "rate_limited");

    // Another account has a bucket of its own.
    for _ in 0..3 {
        place(&stack, &kb, &resting_buy()).await;
    }

    // The refused order and alert placed nothing.
    for id in &ids {
        stack.wait_status(&ka, id, "new").await;
    }
    assert_eq!(order_count(&stack, &ka).await, 3);
    let r = stack
        .get(
            &format!("/v2/webhooks/{}/deliveries", field(&hook, "id")),
            &ka,
        )
        .await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "{r}");
    assert_eq!(r.array()[0]["status"], 429, "{r}");
    assert_eq!(field(&r.array()[0], "outcome"), "rejected", "{r}");
    assert_eq!(field(&r.array()[0], "code"), "rate_limited", "{r}");

    // After Retry-After, orders go through again, from REST and from alerts.
    sleep_secs(retry).await;
    let id = place(&stack, &ka, &resting_buy()).await;
    stack.wait_status(&ka, &id, "new").await;
    // That took the token; the alert waits for the next one, as its 429 says.
    let r = send_alert(alert_body_of(&hook)).await;
    sleep_secs(limited(&r, "rate_limited")).await;
    let r = send_alert(alert_body_of(&hook)).await;
    r.expect(200);
    assert_eq!(r.str("status"), "accepted", "{r}");
    stack.wait_terminal(&ka, r.str("order_id")).await;
    assert_eq!(order_count(&stack, &ka).await, 5);
    assert_eq!(order_count(&stack, &kb).await, 3);
}

/// A webhook alert refused by the order rate limit says when to retry, as the REST API's
/// 429s do.
#[tokio::test]
async fn webhook_rate_limits_say_when_to_retry() {
    let stack = Stack::start_with(StackOptions {
        function_env: env(&[("RATE_ORDERS_BURST", "1"), ("RATE_ORDERS_PER_MINUTE", "6")]),
        ..Default::default()
    })
    .await;
    let user = stack.new_user().await;
    let key = user.key();
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let r = stack.post("/v2/webhooks", &user.bearer(), &json!({})).await;
    r.expect(201);
    let hook = r.json.clone();
    place(&stack, &key, &resting_buy()).await;
    let alert = stack
        .request_with(
            Method::POST,
            &format!("/v2/hooks/tradingview/{}", field(&hook, "id")),
            &Auth::None,
            &[],
            Some(("application/json", alert_body_of(&hook))),
        )
        .await;
    // One token every 10 s.
    let retry = limited(&alert, "rate_limited");
    assert!((5..=10).contains(&retry), "{alert}");
}

/// The strategy alert of `hook` for a buy of 0.001 (the one refused above, sent again).
fn alert_body_of(hook: &Value) -> String {
    field(&hook["alert_templates"], "strategy")
        .replace("{{exchange}}", "BINANCE")
        .replace("{{ticker}}", "BTCUSDT")
        .replace("{{strategy.order.action}}", "buy")
        .replace("{{strategy.order.contracts}}", "0.001")
        .replace("{{strategy.order.id}}", "Long")
        .replace("{{timenow}}", "2026-11-21T10:00:00Z")
}

/// `RATE_REQUESTS_BURST=5`: the 6th authenticated request in a row is a 429, whatever the
/// credentials; another account is unaffected. One token every 10 s, so that none refills
/// while the burst is spent (and no assertion bounds how long that took).
#[tokio::test]
async fn requests_beyond_the_burst_are_rate_limited() {
    let stack = Stack::start_with(StackOptions {
        function_env: env(&[
            ("RATE_REQUESTS_BURST", "5"),
            ("RATE_REQUESTS_PER_MINUTE", "6"),
        ]),
        ..Default::default()
    })
    .await;
    let (a, b) = tokio::join!(stack.new_user(), stack.new_user());

    for _ in 0..5 {
        stack.get("/v2/account", &a.key()).await.expect(200);
    }
    let r = stack.get("/v2/account", &a.key()).await;
    let retry = limited(&r, "rate_limited");
    // The session is the same account, the same bucket.
    limited(&stack.get("/v2/account", &a.bearer()).await, "rate_limited");
    stack.get("/v2/account", &b.key()).await.expect(200);

    sleep_secs(retry).await;
    stack.get("/v2/account", &a.key()).await.expect(200);
}

/// Login backoff per email: 5 failures are free, the 6th (still a 401) blocks 2 s, the next
/// 4 s; while blocked even the right password is a 429 `too_many_login_attempts`. An email without an
/// account gets the same answers, so they never tell whether it has one.
#[tokio::test]
async fn failed_logins_back_off() {
    let stack = Stack::start().await;
    // Signed up only: every password check costs (argon2id), and this test needs many.
    let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
    let right = json!({ "email": email, "password": "correct horse battery staple" });
    let wrong = json!({ "email": email, "password": "not the password" });
    stack
        .post("/v2/auth/signup", &Auth::None, &right)
        .await
        .expect(202);
    let nobody = json!({ "email": format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple()),
                         "password": "not the password" });
    let login = |body: &Value| {
        let body = body.clone();
        let stack = &stack;
        async move { stack.post("/v2/auth/login", &Auth::None, &body).await }
    };

    // Six failures each, the two emails side by side (argon2 is slow in debug builds).
    let mut unauthorized = Vec::new();
    for _ in 0..6 {
        let (r, n) = tokio::join!(login(&wrong), login(&nobody));
        for r in [r, n] {
            r.expect_error(401, "unauthorized");
            unauthorized.push(r.text.clone());
        }
    }
    unauthorized.dedup();
    assert_eq!(
        unauthorized.len(),
        1,
        "one answer for both: {unauthorized:?}"
    );

    // Blocked: the right password is not even tried.
    let r = login(&right).await;
    let first = limited(&r, "too_many_login_attempts");
    assert!(first <= 2, "the first block is 2 s: {r}");
    let n = login(&nobody).await;
    let nobody_first = limited(&n, "too_many_login_attempts");
    assert!(nobody_first <= 2, "{n}");
    assert_eq!(
        r.json["message"]
            .as_str()
            .map(|m| m.replace(&first.to_string(), "N")),
        n.json["message"]
            .as_str()
            .map(|m| m.replace(&nobody_first.to_string(), "N")),
        "the same answer for an email without an account"
    );

    // After the block, the next attempt is tried again; one more failure blocks twice as
    // long.
    sleep_secs(first.max(nobody_first)).await;
    login(&wrong).await.expect_error(401, "unauthorized");
    let r = login(&right).await;
    let second = limited(&r, "too_many_login_attempts");
    assert!(
        second > first && second >= 3,
        "the backoff grows: {first} s, then {second} s"
    );
}

// ---- risk limits -------------------------------------------------------------------------

/// `GET /v2/account/risk` shows the defaults; `PATCH` changes what it names (`null`
/// switches a limit off) and refuses what is invalid; an order over `max_order_notional`
/// is refused at once, one at the limit goes through.
#[tokio::test]
async fn risk_limits_are_shown_changed_and_enforced() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let key = user.key();
    // Loosening limits and resetting the kill switch need the login session.
    let session = user.bearer();

    let r = stack.get("/v2/account/risk", &key).await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({
            "max_order_notional": "100000",
            "max_position_notional": "250000",
            "max_open_orders": 200,
            "max_gross_leverage": "1",
            "daily_loss_limit": "10000",
            "flatten_on_kill": false,
            "realized_pnl_today": "0",
            "kill_switch": {"active": false, "since": null, "reason": null},
        }),
        "{r}"
    );
    let defaults = r.json.clone();

    // ---- invalid patches change nothing -------------------------------------------------
    for bad in [
        json!({"max_order_notional": "-1"}),
        json!({"max_order_notional": "0"}),
        json!({"max_position_notional": "abc"}),
        json!({"max_open_orders": "2.5"}),
        json!({"max_open_orders": -1}),
        json!({"daily_loss_limit": "1", "max_gross_leverage": "0"}),
    ] {
        stack
            .patch("/v2/account/risk", &session, &bad)
            .await
            .expect_error(422, "invalid_risk_limit");
    }
    for bad in [
        json!({"max_notional": "5"}),
        json!({"flatten_on_kill": "yes"}),
    ] {
        let r = stack.patch("/v2/account/risk", &session, &bad).await;
        assert_eq!(r.status, 400, "{r}");
    }
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(r.json, defaults, "{r}");

    // ---- a partial patch ----------------------------------------------------------------
    let r = stack
        .patch(
            "/v2/account/risk",
            &user.bearer(),
            &json!({"max_order_notional": "600", "max_open_orders": null, "flatten_on_kill": true}),
        )
        .await;
    r.expect(200);
    let mut want = defaults.clone();
    want["max_order_notional"] = json!("600");
    want["max_open_orders"] = Value::Null;
    want["flatten_on_kill"] = json!(true);
    assert_eq!(r.json, want, "{r}");
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(r.json, want, "persisted: {r}");
    let r = stack
        .patch(
            "/v2/account/risk",
            &session,
            &json!({"max_open_orders": 50, "flatten_on_kill": false}),
        )
        .await;
    r.expect(200);
    want["max_open_orders"] = json!(50);
    want["flatten_on_kill"] = json!(false);
    assert_eq!(r.json, want, "{r}");

    // ---- max_order_notional: 600 USDT ---------------------------------------------------
    stack.set_quote("BTCUSDT", "59999.99", "60000.00").await;
    // 0.011 × 60000 = 660
    let r = stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "0.011"))
        .await;
    r.expect_error(422, "max_order_notional");
    let msg = r.str("message");
    assert!(msg.contains("660") && msg.contains("600"), "{r}");
    // A limit order counts at its limit: 0.02 × 50000 = 1000.
    let r = stack
        .post(
            "/v2/orders",
            &key,
            &json!({"symbol": "BTCUSDT", "qty": "0.02", "side": "buy", "type": "limit",
                    "limit_price": "50000", "time_in_force": "gtc"}),
        )
        .await;
    r.expect_error(422, "max_order_notional");
    assert!(r.str("message").contains("1000"), "{r}");
    assert_eq!(order_count(&stack, &key).await, 0);

    // Exactly at the limit: 0.01 × 60000 = 600.
    let id = place(&stack, &key, &market("BTCUSDT", "buy", "0.01")).await;
    let o = stack.wait_terminal(&key, &id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "60000", "{o}");

    // Switched off: the same 660 goes through.
    let r = stack
        .patch(
            "/v2/account/risk",
            &session,
            &json!({"max_order_notional": null}),
        )
        .await;
    r.expect(200);
    assert!(r.json["max_order_notional"].is_null(), "{r}");
    let id = place(&stack, &key, &market("BTCUSDT", "buy", "0.011")).await;
    let o = stack.wait_terminal(&key, &id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    assert_eq!(r.str("qty"), "0.021", "{r}");

    // ---- max_position_notional: buys only -----------------------------------------------
    stack
        .patch(
            "/v2/account/risk",
            &session,
            &json!({"max_position_notional": "1300"}),
        )
        .await
        .expect(200);
    // (0.021 + 0.001) × 60000 = 1320
    let r = stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "0.001"))
        .await;
    r.expect_error(422, "max_position_notional");
    assert!(r.str("message").contains("1320"), "{r}");
    let id = place(&stack, &key, &market("BTCUSDT", "sell", "0.001")).await;
    let o = stack.wait_terminal(&key, &id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");

    // ---- max_open_orders ----------------------------------------------------------------
    stack
        .patch(
            "/v2/account/risk",
            &session,
            &json!({"max_open_orders": 1, "max_position_notional": null}),
        )
        .await
        .expect(200);
    let resting = place(&stack, &key, &resting_buy()).await;
    stack.wait_status(&key, &resting, "new").await;
    let r = stack.post("/v2/orders", &key, &resting_buy()).await;
    r.expect_error(422, "max_open_orders");
    stack
        .delete(&format!("/v2/orders/{resting}"), &key)
        .await
        .expect(204);
    stack.wait_status(&key, &resting, "canceled").await;
    let id = place(&stack, &key, &resting_buy()).await;
    stack.wait_status(&key, &id, "new").await;
}

/// Polls `GET /v2/positions` until the account holds nothing.
async fn wait_flat(stack: &Stack, auth: &Auth) {
    let deadline = Instant::now() + wait_limit();
    loop {
        let r = stack.get("/v2/positions", auth).await;
        if r.status == 200 && r.array().is_empty() {
            return;
        }
        if Instant::now() > deadline {
            stack.fail(&format!(
                "the positions never became empty; last answer: {r}"
            ));
        }
        stack.check_alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The kill switch refuses every new order (REST and webhook) until it is reset, and every
/// buy fill, while resting sells still protect the position; with `flatten` it also cancels
/// the open orders and sells every position.
#[tokio::test]
async fn the_kill_switch_stops_orders_and_flattens() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let key = user.key();
    // Loosening limits and resetting the kill switch need the login session.
    let session = user.bearer();
    stack.set_quote("BTCUSDT", "59999.99", "60000.00").await;
    let r = stack.post("/v2/webhooks", &session, &json!({})).await;
    r.expect(201);
    let hook = r.json.clone();

    // Bad kill requests.
    for (bad, status, code) in [
        (json!({"flatten": "yes"}), 400, None),
        (json!({"flaten": true}), 400, None),
        (
            json!({"reason": "x".repeat(201)}),
            422,
            Some("invalid_reason"),
        ),
    ] {
        let r = stack.post("/v2/account/kill", &key, &bad).await;
        assert_eq!(r.status, status, "{r}");
        if let Some(code) = code {
            r.expect_error(status, code);
        }
    }
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(r.json["kill_switch"]["active"], false, "{r}");

    // A position, a take-profit above the market and a buy under it.
    let buy = place(&stack, &key, &market("BTCUSDT", "buy", "0.01")).await;
    let o = stack.wait_terminal(&key, &buy).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let take_profit = place(
        &stack,
        &key,
        &json!({ "symbol": "BTCUSDT", "qty": "0.01", "side": "sell", "type": "limit",
                 "limit_price": "61000", "time_in_force": "gtc" }),
    )
    .await;
    let resting = place(&stack, &key, &resting_buy()).await;
    stack.wait_status(&key, &take_profit, "new").await;
    stack.wait_status(&key, &resting, "new").await;

    // ---- kill without a body ------------------------------------------------------------
    let r = stack
        .request(Method::POST, "/v2/account/kill", &key, None)
        .await;
    r.expect(200);
    assert_eq!(r.json["kill_switch"]["active"], true, "{r}");
    assert_eq!(r.json["kill_switch"]["reason"], "tripped by hand", "{r}");
    assert!(r.json["kill_switch"]["since"].is_string(), "{r}");
    assert_eq!(r.json["flatten"], false, "{r}");
    let since = r.json["kill_switch"]["since"].clone();
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(r.json["kill_switch"]["active"], true, "{r}");
    // Killing again keeps the first time and reason.
    let r = stack
        .post("/v2/account/kill", &key, &json!({"reason": "again"}))
        .await;
    r.expect(200);
    assert_eq!(r.json["kill_switch"]["reason"], "tripped by hand", "{r}");
    assert_eq!(r.json["kill_switch"]["since"], since, "{r}");

    let r = stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "0.01"))
        .await;
    r.expect_error(422, "kill_switch");
    // Sells too: no new orders at all.
    let r = stack
        .post(
            "/v2/orders",
            &user.bearer(),
            &market("BTCUSDT", "sell", "0.001"),
        )
        .await;
    r.expect_error(422, "kill_switch");
    // A webhook alert is refused the same way, and the refusal recorded.
    let alert = stack
        .request_with(
            Method::POST,
            &format!("/v2/hooks/tradingview/{}", field(&hook, "id")),
            &Auth::None,
            &[],
            Some(("application/json", alert_body_of(&hook))),
        )
        .await;
    alert.expect_error(422, "kill_switch");
    let r = stack
        .get(
            &format!("/v2/webhooks/{}/deliveries", field(&hook, "id")),
            &key,
        )
        .await;
    assert_eq!(r.array().len(), 1, "{r}");
    assert_eq!(r.array()[0]["status"], 422, "{r}");
    assert_eq!(field(&r.array()[0], "code"), "kill_switch", "{r}");
    assert_eq!(order_count(&stack, &key).await, 3);

    // The take-profit still sells; the resting buy may not fill, it is canceled.
    stack.set_quote("BTCUSDT", "61000.00", "61000.50").await;
    let o = stack.wait_terminal(&key, &take_profit).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "61000", "{o}");
    stack.set_quote("BTCUSDT", "49000.00", "49000.50").await;
    let o = stack.wait_terminal(&key, &resting).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");
    assert!(
        o["reject_reason"]
            .as_str()
            .is_some_and(|r| r.contains("kill_switch")),
        "{o}"
    );
    assert_eq!(field(&o, "filled_qty"), "0", "{o}");

    // ---- reset --------------------------------------------------------------------------
    stack.set_quote("BTCUSDT", "59999.99", "60000.00").await;
    let r = stack.delete("/v2/account/kill", &session).await;
    r.expect(200);
    assert_eq!(
        r.json["kill_switch"],
        json!({"active": false, "since": null, "reason": null}),
        "{r}"
    );
    let buy = place(&stack, &key, &market("BTCUSDT", "buy", "0.01")).await;
    let o = stack.wait_terminal(&key, &buy).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let resting = place(&stack, &key, &resting_buy()).await;
    stack.wait_status(&key, &resting, "new").await;

    // ---- kill and flatten ---------------------------------------------------------------
    let r = stack
        .post(
            "/v2/account/kill",
            &key,
            &json!({"flatten": true, "reason": "flatten test"}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json["flatten"], true, "{r}");
    assert_eq!(r.json["kill_switch"]["active"], true, "{r}");
    assert_eq!(r.json["kill_switch"]["reason"], "flatten test", "{r}");
    wait_flat(&stack, &key).await;
    let o = stack.wait_terminal(&key, &resting).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");
    let r = stack.get("/v2/orders?status=open", &key).await;
    assert!(r.array().is_empty(), "{r}");
    // The flatten sold the position at the bid.
    let r = stack.get("/v2/orders?status=closed", &key).await;
    r.expect(200);
    let flatten: Vec<&Value> = r
        .array()
        .iter()
        .filter(|o| field(o, "client_order_id").starts_with("flatten-"))
        .collect();
    assert_eq!(flatten.len(), 1, "{r}");
    assert_eq!(field(flatten[0], "side"), "sell", "{r}");
    assert_eq!(field(flatten[0], "status"), "filled", "{r}");
    assert_eq!(field(flatten[0], "qty"), "0.01", "{r}");
    assert_eq!(field(flatten[0], "filled_avg_price"), "59999.99", "{r}");
    // Still killed.
    stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "0.01"))
        .await
        .expect_error(422, "kill_switch");

    stack.delete("/v2/account/kill", &session).await.expect(200);
    let id = place(&stack, &key, &market("BTCUSDT", "buy", "0.01")).await;
    let o = stack.wait_terminal(&key, &id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
}

/// A day's realized loss reaching `daily_loss_limit` trips the kill switch by itself.
#[tokio::test]
async fn the_daily_loss_limit_trips_the_kill_switch() {
    let stack = Stack::start().await;
    let key = stack.new_user().await.key();
    stack.set_quote("BTCUSDT", "59999.99", "60000.50").await;
    stack
        .patch("/v2/account/risk", &key, &json!({"daily_loss_limit": "1"}))
        .await
        .expect(200);

    let buy = place(&stack, &key, &market("BTCUSDT", "buy", "0.01")).await;
    stack.wait_terminal(&key, &buy).await;
    let r = stack.get("/v2/account/risk", &key).await;
    // The buy's fee: 600.005 × 0.001.
    assert_eq!(dec(r.str("realized_pnl_today")), dec("-0.600005"), "{r}");
    assert_eq!(r.json["kill_switch"]["active"], false, "{r}");

    let sell = place(&stack, &key, &market("BTCUSDT", "sell", "0.01")).await;
    let o = stack.wait_terminal(&key, &sell).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    // −0.600005 + 0.01 × (59999.99 − 60000.5) − 599.9999 × 0.001
    let r = stack.get("/v2/account/risk", &key).await;
    assert_eq!(dec(r.str("realized_pnl_today")), dec("-1.2051049"), "{r}");
    assert_eq!(r.json["kill_switch"]["active"], true, "{r}");
    assert!(
        r.json["kill_switch"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("daily_loss_limit")),
        "{r}"
    );
    stack
        .post("/v2/orders", &key, &market("BTCUSDT", "buy", "0.01"))
        .await
        .expect_error(422, "kill_switch");
}
