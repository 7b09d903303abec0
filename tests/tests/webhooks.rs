//! TradingView webhooks end to end: management REST on the api, alerts on the `webhook`
//! function (`POST /v2/hooks/tradingview/{id}`), orders through SQS FIFO → executor.
//!
//! Alert bodies are built as TradingView builds them: the alert *Message* is one of the
//! templates `POST /v2/webhooks` returns (passphrase filled in), and TradingView replaces its
//! `{{…}}` placeholders with text before posting it. The devstack runs with
//! `--trust-forwarded-for`, so `X-Forwarded-For` chooses an alert's source address.

use e2e::{dec, field, Auth, Resp, Stack};
use reqwest::Method;
use serde_json::{json, Value};

/// One of TradingView's published webhook sender addresses.
const TV_IP: &str = "52.89.214.238";
const TV_IPS: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

const T1: &str = "2026-11-21T10:00:00Z";
const T2: &str = "2026-11-21T10:15:00Z";
const T3: &str = "2026-11-21T10:30:00Z";

/// What TradingView does to an alert message: every `{{placeholder}}` it knows replaced by
/// its text (others stay as they are). The chart's placeholders default to BINANCE:BTCUSDT
/// on the 15-minute chart at `T1`.
fn tv(template: &str, subs: &[(&str, &str)]) -> String {
    let mut body = template.to_string();
    for (placeholder, value) in subs.iter().chain(&[
        ("{{exchange}}", "BINANCE"),
        ("{{ticker}}", "BTCUSDT"),
        ("{{interval}}", "15"),
        ("{{timenow}}", T1),
    ]) {
        body = body.replace(placeholder, value);
    }
    body
}

/// A strategy alert for one filled order of the strategy.
fn strategy_alert(hook: &Value, action: &str, contracts: &str, order_id: &str, at: &str) -> String {
    tv(
        template(hook, "strategy"),
        &[
            ("{{strategy.order.action}}", action),
            ("{{strategy.order.contracts}}", contracts),
            ("{{strategy.order.id}}", order_id),
            ("{{timenow}}", at),
        ],
    )
}

/// A target-position alert: the strategy's position after its order.
fn target_alert(hook: &Value, position_size: &str, order_id: &str, at: &str) -> String {
    tv(
        template(hook, "target_position"),
        &[
            ("{{strategy.position_size}}", position_size),
            ("{{strategy.order.id}}", order_id),
            ("{{timenow}}", at),
        ],
    )
}

/// The alert template `name` of a webhook as `POST /v2/webhooks` (or rotate) returned it.
fn template<'a>(hook: &'a Value, name: &str) -> &'a str {
    hook["alert_templates"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no alert template {name:?} in {hook}"))
}

/// `POST /v2/webhooks` → 201; the webhook with its passphrase and templates.
async fn create_webhook(stack: &Stack, auth: &Auth, body: Value) -> Value {
    let r = stack.post("/v2/webhooks", auth, &body).await;
    r.expect(201);
    r.json.clone()
}

/// Posts an alert as TradingView does: `application/json` when the body is JSON, else
/// `text/plain`, from `ip`.
async fn send_alert(stack: &Stack, webhook_id: &str, body: &str, ip: &str) -> Resp {
    let content_type = if serde_json::from_str::<Value>(body).is_ok() {
        "application/json; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    stack
        .request_with(
            Method::POST,
            &format!("/v2/hooks/tradingview/{webhook_id}"),
            &Auth::None,
            &[("x-forwarded-for", ip)],
            Some((content_type, body.to_string())),
        )
        .await
}

/// An alert that must be accepted: its order id.
#[track_caller]
fn accepted(r: &Resp) -> String {
    r.expect(200);
    assert_eq!(r.str("status"), "accepted", "{r}");
    let coid = r.str("client_order_id");
    assert!(
        coid.starts_with("tv-") && coid.len() == 43,
        "a derived client order id: {r}"
    );
    r.str("order_id").to_string()
}

/// `GET /v2/webhooks/{id}/deliveries`, newest first.
async fn deliveries(stack: &Stack, auth: &Auth, webhook_id: &str) -> Vec<Value> {
    let r = stack
        .get(&format!("/v2/webhooks/{webhook_id}/deliveries"), auth)
        .await;
    r.expect(200);
    r.array().clone()
}

/// `GET /v2/orders?status=all`.
async fn all_orders(stack: &Stack, auth: &Auth) -> Vec<Value> {
    let r = stack.get("/v2/orders?status=all", auth).await;
    r.expect(200);
    r.array().clone()
}

fn wh_id(hook: &Value) -> String {
    field(hook, "id").to_string()
}

/// Strategy alerts (a buy, then the sell that closes it) and an indicator alert (a notional
/// buy) become the orders they describe; the webhook's answers and deliveries say so.
#[tokio::test]
async fn strategy_and_indicator_alerts_become_orders() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, session) = (user.key(), user.bearer());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;

    let hook = create_webhook(&stack, &session, json!({"name": "BTC 15m strategy"})).await;
    let id = wh_id(&hook);
    let passphrase = field(&hook, "passphrase").to_string();
    assert!(id.starts_with("wh_"), "{hook}");
    assert!(passphrase.len() >= 32, "{hook}");
    // The URL to paste into TradingView: this API's own address.
    assert_eq!(
        field(&hook, "url"),
        format!("{}/v2/hooks/tradingview/{id}", stack.rest_url),
        "{hook}"
    );
    assert_eq!(field(&hook, "name"), "BTC 15m strategy", "{hook}");
    assert!(hook["allowed_ips"].is_null(), "{hook}");
    assert!(hook["created_at"].is_string(), "{hook}");
    assert!(hook["rotated_at"].is_null(), "{hook}");
    for name in ["strategy", "indicator", "target_position", "bracket"] {
        let t: Value = serde_json::from_str(template(&hook, name)).expect("templates are JSON");
        assert_eq!(t["passphrase"], passphrase.as_str(), "{name}: {t}");
        assert_eq!(t["symbol"], "{{exchange}}:{{ticker}}", "{name}: {t}");
    }
    // Listed, without the passphrase (shown once).
    let r = stack.get("/v2/webhooks", &user.bearer()).await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "{r}");
    assert_eq!(field(&r.array()[0], "id"), id, "{r}");
    assert!(!r.text.contains(&passphrase), "{r}");
    assert!(r.array()[0].get("alert_templates").is_none(), "{r}");

    // ---- strategy: buy 0.01 -------------------------------------------------------------
    let buy_body = strategy_alert(&hook, "buy", "0.01", "Long", T1);
    let r = send_alert(&stack, &id, &buy_body, TV_IP).await;
    let buy_id = accepted(&r);
    assert_eq!(r.str("symbol"), "BTCUSDT", "{r}");
    assert_eq!(r.str("side"), "buy", "{r}");
    assert_eq!(r.str("qty"), "0.01", "{r}");
    let buy_coid = r.str("client_order_id").to_string();
    let o = stack.wait_terminal(&key, &buy_id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "60000.5", "{o}");
    assert_eq!(field(&o, "filled_qty"), "0.01", "{o}");
    assert_eq!(field(&o, "client_order_id"), buy_coid, "{o}");
    assert_eq!(field(&o, "type"), "market", "{o}");
    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    r.expect(200);
    assert_eq!(r.str("qty"), "0.01", "{r}");

    // ---- strategy: sell 0.01 (another order of the strategy, later) -----------------------
    stack.set_quote("BTCUSDT", "61000.00", "61000.50").await;
    let sell_body = strategy_alert(&hook, "sell", "0.01", "Close", T2);
    let r = send_alert(&stack, &id, &sell_body, TV_IP).await;
    let sell_id = accepted(&r);
    assert_ne!(sell_id, buy_id);
    assert_eq!(r.str("side"), "sell", "{r}");
    let o = stack.wait_terminal(&key, &sell_id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "side"), "sell", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "61000", "{o}");
    let r = stack.get("/v2/positions", &key).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");

    // ---- indicator: buy 100 USDT worth ----------------------------------------------------
    let ind_body = tv(template(&hook, "indicator"), &[("{{timenow}}", T3)]);
    let r = send_alert(&stack, &id, &ind_body, TV_IP).await;
    let ind_id = accepted(&r);
    assert_eq!(r.str("notional"), "100", "{r}");
    assert!(r.json["qty"].is_null(), "{r}");
    let o = stack.wait_terminal(&key, &ind_id).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "notional"), "100", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "61000.5", "{o}");
    // 100 / 61000.5 = 0.0016393…, down to the 0.00001 lot step.
    assert_eq!(field(&o, "filled_qty"), "0.00163", "{o}");

    // Three orders, all from the alerts.
    let orders = all_orders(&stack, &key).await;
    assert_eq!(orders.len(), 3, "{orders:?}");
    assert!(orders
        .iter()
        .all(|o| field(o, "client_order_id").starts_with("tv-")));

    // ---- deliveries: newest first, passphrase redacted -----------------------------------
    let d = deliveries(&stack, &key, &id).await;
    assert_eq!(d.len(), 3, "{d:?}");
    for (delivery, (order_id, sent)) in d.iter().zip([
        (&ind_id, &ind_body),
        (&sell_id, &sell_body),
        (&buy_id, &buy_body),
    ]) {
        assert_eq!(delivery["status"], 200, "{delivery}");
        assert_eq!(field(delivery, "outcome"), "accepted", "{delivery}");
        assert_eq!(field(delivery, "order_id"), order_id.as_str(), "{delivery}");
        assert!(
            field(delivery, "client_order_id").starts_with("tv-"),
            "{delivery}"
        );
        assert_eq!(field(delivery, "source_ip"), TV_IP, "{delivery}");
        assert!(
            field(delivery, "content_type").starts_with("application/json"),
            "{delivery}"
        );
        assert!(delivery["received_at"].is_string(), "{delivery}");
        let body = field(delivery, "body");
        assert!(
            !body.contains(&passphrase),
            "passphrase redacted: {delivery}"
        );
        let stored: Value = serde_json::from_str(body).expect("a stored JSON body is JSON");
        let mut want: Value = serde_json::from_str(sent).expect("sent JSON");
        want["passphrase"] = json!("***");
        assert_eq!(stored, want, "{delivery}");
    }
    let r = stack
        .get(&format!("/v2/webhooks/{id}/deliveries?limit=1"), &key)
        .await;
    r.expect(200);
    assert_eq!(r.array().len(), 1, "{r}");
    assert_eq!(field(&r.array()[0], "order_id"), ind_id, "{r}");
}

/// Target-position alerts order whatever gets the account to the strategy's position: 0 →
/// 0.02 buys 0.02, → 0.005 sells 0.015, and 0.005 again changes nothing.
#[tokio::test]
async fn target_position_alerts_order_the_difference() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, session) = (user.key(), user.bearer());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let hook = create_webhook(&stack, &session, json!({})).await;
    let id = wh_id(&hook);

    let r = send_alert(&stack, &id, &target_alert(&hook, "0.02", "Long", T1), TV_IP).await;
    let up = accepted(&r);
    assert_eq!(r.str("side"), "buy", "{r}");
    assert_eq!(r.str("qty"), "0.02", "{r}");
    let o = stack.wait_terminal(&key, &up).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_qty"), "0.02", "{o}");

    let r = send_alert(
        &stack,
        &id,
        &target_alert(&hook, "0.005", "Trim", T2),
        TV_IP,
    )
    .await;
    let down = accepted(&r);
    assert_eq!(r.str("side"), "sell", "{r}");
    assert_eq!(r.str("qty"), "0.015", "{r}");
    let o = stack.wait_terminal(&key, &down).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "side"), "sell", "{o}");
    assert_eq!(field(&o, "filled_qty"), "0.015", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "60000", "{o}");
    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    r.expect(200);
    assert_eq!(dec(r.str("qty")), dec("0.005"), "{r}");

    // A later alert at the same target: nothing to do, no order.
    let r = send_alert(
        &stack,
        &id,
        &target_alert(&hook, "0.005", "Trim", T3),
        TV_IP,
    )
    .await;
    r.expect(200);
    assert_eq!(r.str("status"), "no_change", "{r}");
    assert!(r.json.get("order_id").is_none_or(Value::is_null), "{r}");
    assert_eq!(all_orders(&stack, &key).await.len(), 2);
    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    assert_eq!(dec(r.str("qty")), dec("0.005"), "{r}");

    let d = deliveries(&stack, &key, &id).await;
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(d[0]["status"], 200, "{:?}", d[0]);
    assert_eq!(field(&d[0], "outcome"), "accepted", "{:?}", d[0]);
    assert!(d[0]["order_id"].is_null(), "{:?}", d[0]);
    assert_eq!(field(&d[1], "order_id"), down);
    assert_eq!(field(&d[2], "order_id"), up);
}

/// The bracket template: an entry whose take-profit and stop-loss (the plotted levels) are
/// its legs and go live when it fills; with only one of them the order is `oto`.
#[tokio::test]
async fn bracket_alerts_carry_their_exits() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, session) = (user.key(), user.bearer());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let hook = create_webhook(&stack, &session, json!({"name": "bracket"})).await;
    let id = wh_id(&hook);

    // plot_0 / plot_1 rounded to the tick (math.round_to_mintick).
    let body = tv(
        template(&hook, "bracket"),
        &[("{{plot_0}}", "63000.00"), ("{{plot_1}}", "58000.00")],
    );
    let r = send_alert(&stack, &id, &body, TV_IP).await;
    let entry = accepted(&r);
    assert_eq!(r.str("qty"), "0.001", "{r}");
    let o = stack.wait_terminal(&key, &entry).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let r = stack
        .get(&format!("/v2/orders/{entry}?nested=true"), &key)
        .await;
    r.expect(200);
    assert_eq!(r.str("order_class"), "bracket", "{r}");
    let legs = r.json["legs"]
        .as_array()
        .expect("a bracket has legs")
        .clone();
    assert_eq!(legs.len(), 2, "{r}");
    let tp = legs
        .iter()
        .find(|l| l["type"] == "limit")
        .unwrap_or_else(|| panic!("a take-profit leg: {r}"));
    let sl = legs
        .iter()
        .find(|l| l["type"] == "stop")
        .unwrap_or_else(|| panic!("a stop-loss leg: {r}"));
    assert_eq!(field(tp, "side"), "sell", "{tp}");
    assert_eq!(field(tp, "limit_price"), "63000", "{tp}");
    assert_eq!(field(tp, "qty"), "0.001", "{tp}");
    assert_eq!(field(sl, "side"), "sell", "{sl}");
    assert_eq!(field(sl, "stop_price"), "58000", "{sl}");
    let (tp, sl) = (field(tp, "id").to_string(), field(sl, "id").to_string());
    stack.wait_status(&key, &tp, "new").await;
    stack.wait_status(&key, &sl, "new").await;

    // The take-profit fills; the stop-loss is canceled.
    stack.set_quote("BTCUSDT", "63100.00", "63100.50").await;
    let o = stack.wait_terminal(&key, &tp).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "filled_avg_price"), "63100", "{o}");
    let o = stack.wait_terminal(&key, &sl).await;
    assert_eq!(field(&o, "status"), "canceled", "{o}");

    // Only a stop-loss: one-triggers-other.
    let only_sl = template(&hook, "bracket").replace(r#""take_profit":"{{plot_0}}","#, "");
    assert_ne!(only_sl, template(&hook, "bracket"));
    let body = tv(&only_sl, &[("{{plot_1}}", "61000.00"), ("{{timenow}}", T2)]);
    let r = send_alert(&stack, &id, &body, TV_IP).await;
    let oto = accepted(&r);
    let o = stack.wait_terminal(&key, &oto).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    assert_eq!(field(&o, "order_class"), "oto", "{o}");
    let legs = o["legs"].as_array().expect("an oto has a leg");
    assert_eq!(legs.len(), 1, "{o}");
    assert_eq!(field(&legs[0], "type"), "stop", "{o}");
    assert_eq!(field(&legs[0], "stop_price"), "61000", "{o}");
    stack.wait_status(&key, field(&legs[0], "id"), "new").await;
}

/// TradingView may deliver an alert twice: the identical body is one order; the same
/// strategy order id at another `{{timenow}}` is another alert, and another order.
#[tokio::test]
async fn a_resent_alert_is_one_order() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, session) = (user.key(), user.bearer());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let hook = create_webhook(&stack, &session, json!({})).await;
    let id = wh_id(&hook);

    let body = strategy_alert(&hook, "buy", "0.01", "Long", T1);
    let first = send_alert(&stack, &id, &body, TV_IP).await;
    let order = accepted(&first);
    let second = send_alert(&stack, &id, &body, TV_IP).await;
    assert_eq!(accepted(&second), order, "{first}\n{second}");
    assert_eq!(
        second.str("client_order_id"),
        first.str("client_order_id"),
        "{second}"
    );
    let o = stack.wait_terminal(&key, &order).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    // And once more after it filled.
    let third = send_alert(&stack, &id, &body, TV_IP).await;
    assert_eq!(accepted(&third), order, "{third}");
    let orders = all_orders(&stack, &key).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    let r = stack.get("/v2/account/activities/FILL", &key).await;
    assert_eq!(r.array().len(), 1, "one fill: {r}");
    let r = stack.get("/v2/positions/BTCUSDT", &key).await;
    assert_eq!(r.str("qty"), "0.01", "{r}");

    // Each delivery is recorded, all naming the one order.
    let d = deliveries(&stack, &key, &id).await;
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.iter().all(|x| x["order_id"] == order.as_str()), "{d:?}");

    // The same strategy order id at another time is a new alert.
    let later = strategy_alert(&hook, "buy", "0.01", "Long", T2);
    let r = send_alert(&stack, &id, &later, TV_IP).await;
    let other = accepted(&r);
    assert_ne!(other, order);
    stack.wait_terminal(&key, &other).await;
    assert_eq!(all_orders(&stack, &key).await.len(), 2);
}

/// A wrong passphrase and an unknown webhook answer alike (and the wrong passphrase leaves
/// no trace); a body that is not JSON is a 400, recorded.
/// A new user's API key, a webhook made with its session (BTCUSDT priced), and a strategy
/// alert to it with the right passphrase and with a wrong one.
async fn hook_with_alerts(stack: &Stack) -> (Auth, Value, String, String) {
    let user = stack.new_user().await;
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let hook = create_webhook(stack, &user.bearer(), json!({})).await;
    let good = strategy_alert(&hook, "buy", "0.01", "Long", T1);
    let wrong = good.replace(field(&hook, "passphrase"), "not-the-passphrase");
    assert_ne!(wrong, good);
    (user.key(), hook, good, wrong)
}

#[tokio::test]
async fn wrong_passphrases_unknown_webhooks_and_bad_bodies_are_refused() {
    let stack = Stack::start().await;
    let (key, hook, good, wrong) = hook_with_alerts(&stack).await;
    let id = wh_id(&hook);
    let passphrase = field(&hook, "passphrase").to_string();
    let r_wrong = send_alert(&stack, &id, &wrong, TV_IP).await;
    r_wrong.expect_error(401, "unauthorized");
    assert_eq!(
        r_wrong.json,
        json!({"code": "unauthorized", "message": "unknown webhook or wrong passphrase"}),
        "{r_wrong}"
    );
    let unknown = format!("wh_{}", "x".repeat(43));
    let r_unknown = send_alert(&stack, &unknown, &good, TV_IP).await;
    assert_eq!(r_unknown.status, r_wrong.status, "{r_unknown}");
    assert_eq!(r_unknown.text, r_wrong.text, "{r_unknown}");
    // A body without a passphrase, too.
    let mut bare: Value = serde_json::from_str(&good).expect("JSON");
    bare.as_object_mut().expect("object").remove("passphrase");
    let r = send_alert(&stack, &id, &bare.to_string(), TV_IP).await;
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(r.text, r_wrong.text, "{r}");

    // Nothing was placed or recorded.
    assert!(all_orders(&stack, &key).await.is_empty());
    assert!(deliveries(&stack, &key, &id).await.is_empty());

    // A plain-text alert (the default message TradingView sends): 400 with the JSON it
    // needs, and not recorded: nothing is, before a passphrase has been checked.
    let text = "BTCUSDT Crossing 61837.64";
    let r = send_alert(&stack, &id, text, TV_IP).await;
    r.expect_error(400, "not_json");
    assert!(
        r.str("message").contains("passphrase"),
        "the hint shows the JSON template: {r}"
    );
    // The same answer for an unknown webhook: the body is judged before any lookup.
    let r_unknown = send_alert(&stack, &unknown, text, TV_IP).await;
    assert_eq!(r_unknown.text, r.text, "{r_unknown}");
    assert!(deliveries(&stack, &key, &id).await.is_empty());

    // Alerts that go wrong the ways TradingView alerts do, each refused: with the right
    // passphrase, recorded (the strategy template in an indicator alert, where TradingView
    // leaves `{{strategy.*}}` as is; a perpetual's ticker), and without a readable one, not
    // (an unquoted placeholder makes it not JSON; an oversized body is refused unread).
    let indicator_with_strategy_template = tv(template(&hook, "strategy"), &[]);
    let perpetual = strategy_alert(&hook, "buy", "0.01", "Long", T2)
        .replace("BINANCE:BTCUSDT", "BINANCE:BTCUSDT.P");
    let unquoted = format!(
        r#"{{"passphrase":"{passphrase}","symbol":"BINANCE:BTCUSDT","action":"buy","qty":{{{{strategy.order.contracts}}}}}}"#
    );
    let oversized = json!({"passphrase": passphrase, "symbol": "BINANCE:BTCUSDT",
                           "action": "buy", "qty": "0.01", "comment": "x".repeat(17 * 1024)})
    .to_string();
    for (body, status, code, recorded) in [
        (
            &indicator_with_strategy_template,
            422,
            "unsubstituted_placeholder",
            true,
        ),
        (&perpetual, 422, "unknown_symbol", true),
        (&unquoted, 400, "not_json", false),
        (&oversized, 413, "alert_too_large", false),
    ] {
        let before = deliveries(&stack, &key, &id).await.len();
        let r = send_alert(&stack, &id, body, TV_IP).await;
        r.expect_error(status, code);
        let d = deliveries(&stack, &key, &id).await;
        if !recorded {
            assert_eq!(d.len(), before, "not recorded: {code}");
            continue;
        }
        assert_eq!(d.len(), before + 1, "recorded: {code}");
        assert_eq!(d[0]["status"], status, "{:?}", d[0]);
        assert_eq!(field(&d[0], "outcome"), "rejected", "{:?}", d[0]);
        assert_eq!(field(&d[0], "code"), code, "{:?}", d[0]);
        let stored = field(&d[0], "body");
        assert!(
            !stored.contains(&passphrase),
            "passphrase masked: {stored:.300}"
        );
        assert!(stored.contains("***"), "passphrase masked: {stored}");
    }
    assert!(all_orders(&stack, &key).await.is_empty());

    // The right passphrase still works.
    let r = send_alert(&stack, &id, &good, TV_IP).await;
    let order = accepted(&r);
    stack.wait_terminal(&key, &order).await;
    assert_eq!(all_orders(&stack, &key).await.len(), 1);
    assert_eq!(deliveries(&stack, &key, &id).await.len(), 3);
}

/// `"allowed_ips": "tradingview"` accepts alerts from TradingView's addresses only; one from
/// elsewhere is a 403, recorded. A list of addresses works the same way.
#[tokio::test]
async fn ip_allowlists_refuse_other_senders() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let (key, session) = (user.key(), user.bearer());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;

    // Invalid webhooks are refused.
    stack
        .post("/v2/webhooks", &session, &json!({"name": "x".repeat(101)}))
        .await
        .expect_error(422, "invalid_name");
    let r = stack
        .post("/v2/webhooks", &session, &json!({"allowed": "tradingview"}))
        .await;
    assert_eq!(r.status, 400, "unknown fields are refused: {r}");
    stack
        .post("/v2/webhooks", &Auth::None, &json!({}))
        .await
        .expect_error(401, "unauthorized");
    // Invalid allowlists are refused.
    for bad in [json!([]), json!(["not-an-ip"]), json!("anyone"), json!(5)] {
        let r = stack
            .post("/v2/webhooks", &session, &json!({ "allowed_ips": bad }))
            .await;
        r.expect_error(422, "invalid_allowed_ips");
    }

    let hook = create_webhook(&stack, &session, json!({"allowed_ips": "tradingview"})).await;
    let id = wh_id(&hook);
    let ips: Vec<&str> = hook["allowed_ips"]
        .as_array()
        .unwrap_or_else(|| panic!("allowed_ips listed: {hook}"))
        .iter()
        .map(|v| v.as_str().expect("strings"))
        .collect();
    assert_eq!(ips, TV_IPS, "{hook}");

    let body = strategy_alert(&hook, "buy", "0.01", "Long", T1);
    let r = send_alert(&stack, &id, &body, "10.1.2.3").await;
    r.expect_error(403, "forbidden");
    assert!(all_orders(&stack, &key).await.is_empty());
    let d = deliveries(&stack, &key, &id).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["status"], 403, "{:?}", d[0]);
    assert_eq!(field(&d[0], "outcome"), "rejected", "{:?}", d[0]);
    assert_eq!(field(&d[0], "source_ip"), "10.1.2.3", "{:?}", d[0]);
    assert!(d[0]["order_id"].is_null(), "{:?}", d[0]);

    let r = send_alert(&stack, &id, &body, TV_IP).await;
    let order = accepted(&r);
    let o = stack.wait_terminal(&key, &order).await;
    assert_eq!(field(&o, "status"), "filled", "{o}");
    let d = deliveries(&stack, &key, &id).await;
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(field(&d[0], "source_ip"), TV_IP, "{:?}", d[0]);
    assert_eq!(field(&d[0], "order_id"), order, "{:?}", d[0]);

    // An explicit list.
    let own = create_webhook(&stack, &session, json!({"allowed_ips": ["1.2.3.4"]})).await;
    assert_eq!(own["allowed_ips"], json!(["1.2.3.4"]), "{own}");
    let body = strategy_alert(&own, "buy", "0.01", "Long", T2);
    send_alert(&stack, &wh_id(&own), &body, TV_IP)
        .await
        .expect_error(403, "forbidden");
    let r = send_alert(&stack, &wh_id(&own), &body, "1.2.3.4").await;
    let order = accepted(&r);
    stack.wait_terminal(&key, &order).await;
    assert_eq!(all_orders(&stack, &key).await.len(), 2);

    // At most 20 webhooks an account.
    for _ in 2..20 {
        create_webhook(&stack, &session, json!({})).await;
    }
    stack
        .post("/v2/webhooks", &session, &json!({}))
        .await
        .expect_error(422, "max_webhooks");
    let r = stack.get("/v2/webhooks", &key).await;
    assert_eq!(r.array().len(), 20, "{r}");
}

/// Rotating replaces the passphrase (the URL stays); deleting ends the webhook. Another
/// account can neither see nor touch it.
#[tokio::test]
async fn rotate_delete_and_other_accounts() {
    let stack = Stack::start().await;
    let (user, other) = tokio::join!(stack.new_user(), stack.new_user());
    let (key, bearer) = (user.key(), user.bearer());
    stack.set_quote("BTCUSDT", "60000.00", "60000.50").await;
    let hook = create_webhook(&stack, &bearer, json!({"name": "rotating"})).await;
    let id = wh_id(&hook);
    let old_body = strategy_alert(&hook, "buy", "0.01", "Long", T1);
    let order = accepted(&send_alert(&stack, &id, &old_body, TV_IP).await);
    stack.wait_terminal(&key, &order).await;

    // ---- another account: 404 everywhere, nothing listed --------------------------------
    for auth in [other.key(), other.bearer()] {
        let r = stack.get("/v2/webhooks", &auth).await;
        r.expect(200);
        assert!(r.array().is_empty(), "{r}");
        stack
            .get(&format!("/v2/webhooks/{id}/deliveries"), &auth)
            .await
            .expect_error(404, "not_found");
        stack
            .delete(&format!("/v2/webhooks/{id}"), &auth)
            .await
            .expect_error(404, "not_found");
    }
    // Rotating needs a session: another account's key is refused before any lookup, its
    // session finds nothing.
    for (auth, status, code) in [
        (other.key(), 403, "session_required"),
        (other.bearer(), 404, "not_found"),
    ] {
        stack
            .post(&format!("/v2/webhooks/{id}/rotate"), &auth, &json!({}))
            .await
            .expect_error(status, code);
    }
    // Without credentials: 401.
    stack
        .get("/v2/webhooks", &Auth::None)
        .await
        .expect_error(401, "unauthorized");
    // Still working for its owner, and still the owner's.
    let body = strategy_alert(&hook, "buy", "0.01", "Long", T2);
    let order = accepted(&send_alert(&stack, &id, &body, TV_IP).await);
    stack.wait_terminal(&key, &order).await;
    assert_eq!(all_orders(&stack, &key).await.len(), 2);
    assert!(all_orders(&stack, &other.key()).await.is_empty());

    // ---- rotate -------------------------------------------------------------------------
    let r = stack
        .post(&format!("/v2/webhooks/{id}/rotate"), &bearer, &json!({}))
        .await;
    r.expect(200);
    let rotated = r.json.clone();
    assert_eq!(wh_id(&rotated), id, "the URL stays: {r}");
    assert_eq!(field(&rotated, "url"), field(&hook, "url"), "{r}");
    assert!(rotated["rotated_at"].is_string(), "{r}");
    let new_pass = field(&rotated, "passphrase");
    assert_ne!(new_pass, field(&hook, "passphrase"), "{r}");
    // The old passphrase fails, on a new alert as on a resent one.
    let old_new_alert = strategy_alert(&hook, "buy", "0.01", "Long", T3);
    for body in [&old_body, &old_new_alert] {
        send_alert(&stack, &id, body, TV_IP)
            .await
            .expect_error(401, "unauthorized");
    }
    // The rotated templates carry the new one.
    let new_body = strategy_alert(&rotated, "buy", "0.01", "Long", T3);
    let order = accepted(&send_alert(&stack, &id, &new_body, TV_IP).await);
    stack.wait_terminal(&key, &order).await;
    assert_eq!(all_orders(&stack, &key).await.len(), 3);

    // ---- delete -------------------------------------------------------------------------
    let r = stack.delete(&format!("/v2/webhooks/{id}"), &bearer).await;
    r.expect(204);
    let r = send_alert(&stack, &id, &new_body, TV_IP).await;
    r.expect_error(401, "unauthorized");
    assert_eq!(
        r.json,
        json!({"code": "unauthorized", "message": "unknown webhook or wrong passphrase"}),
        "{r}"
    );
    let r = stack.get("/v2/webhooks", &key).await;
    r.expect(200);
    assert!(r.array().is_empty(), "{r}");
    stack
        .get(&format!("/v2/webhooks/{id}/deliveries"), &key)
        .await
        .expect_error(404, "not_found");
    stack
        .delete(&format!("/v2/webhooks/{id}"), &key)
        .await
        .expect_error(404, "not_found");
    stack
        .post(&format!("/v2/webhooks/{id}/rotate"), &bearer, &json!({}))
        .await
        .expect_error(404, "not_found");
    assert_eq!(all_orders(&stack, &key).await.len(), 3);
}

/// An address that keeps sending alerts to unknown webhooks or with wrong passphrases is
/// refused before any lookup (429 with `Retry-After`), whatever it sends next; other
/// addresses are not, nor TradingView's own, which every TradingView user's alerts share.
#[tokio::test]
async fn a_sender_that_keeps_failing_is_refused_before_any_lookup() {
    let stack = Stack::start().await;
    let (key, hook, good, wrong) = hook_with_alerts(&stack).await;
    let id = wh_id(&hook);
    let guesser = "10.9.9.9";
    for i in 0..20 {
        let r = send_alert(&stack, &id, &wrong, guesser).await;
        assert_eq!(r.status, 401, "failure {i} is answered: {r}");
    }
    for body in [&wrong, &good] {
        let r = send_alert(&stack, &id, body, guesser).await;
        r.expect_error(429, "rate_limited");
        assert!(r.retry_after.is_some(), "{r}");
    }
    assert!(deliveries(&stack, &key, &id).await.is_empty());
    // TradingView's addresses: its users' alerts are never blocked by someone else's.
    for _ in 0..25 {
        send_alert(&stack, &id, &wrong, TV_IP)
            .await
            .expect_error(401, "unauthorized");
    }
    let order = accepted(&send_alert(&stack, &id, &good, TV_IP).await);
    stack.wait_terminal(&key, &order).await;
}
