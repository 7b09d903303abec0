//! The WebSocket API end to end: a real client against the devstack's API Gateway
//! WebSocket, the real `ws` function, the connection table in moto, the fan-out in the real
//! ingest task, and order updates from the real executor.

use std::time::Duration;

use adapters::connections::ConnectionTable;
use e2e::ws::Closed;
use e2e::{Stack, StackOptions};
use serde_json::{json, Value};

/// How long a test watches for a message that must not come. Several flushes (100 ms) and
/// rate windows (100 ms here) long.
const QUIET: Duration = Duration::from_millis(1500);

/// The connection ids of an account, from the connection table.
async fn connection_ids(stack: &Stack, account: uuid::Uuid) -> Vec<String> {
    ConnectionTable::new(&stack.connections_table)
        .by_account(account, adapters::now_ms())
        .await
        .expect("query the connection table")
        .into_iter()
        .map(|c| c.connection_id)
        .collect()
}

fn has_price(v: &Value, symbol: &str, bid: &str) -> bool {
    v["prices"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["symbol"] == symbol && p["bid"] == bid))
}

#[tokio::test]
async fn connect_needs_credentials_and_respects_the_per_user_limit() {
    let stack = Stack::start_with(StackOptions {
        function_env: vec![("WS_MAX_CONNECTIONS_PER_USER".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let user = stack.new_user().await;

    let (status, body) = stack.ws_connect("").await.err().expect("refused");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    let (status, _) = stack
        .ws_connect("token=not-a-session")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 401);
    let (status, _) = stack
        .ws_connect(&format!("key_id={}&secret_key=wrong", user.key_id))
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 401);

    let mut by_token = stack
        .ws_connect(&format!("token={}", user.token))
        .await
        .unwrap_or_else(|(s, b)| panic!("a session token is accepted: {s} {b}"));
    let by_key = stack.ws_connect_as(&user).await;
    let (status, body) = stack
        .ws_connect(&format!("token={}", user.token))
        .await
        .err()
        .expect("a third connection is refused");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too_many_connections"), "{body}");
    assert_eq!(connection_ids(&stack, user.account_uuid()).await.len(), 2);

    // Closing one frees its place ($disconnect deletes the item).
    by_key.close().await;
    let deadline = std::time::Instant::now() + e2e::wait_limit();
    while connection_ids(&stack, user.account_uuid()).await.len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the item was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _again = stack.ws_connect_as(&user).await;
    assert_eq!(by_token.ping().await["type"], "pong");
}

#[tokio::test]
async fn subscribe_streams_injected_prices_and_unsubscribe_stops_them() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let mut client = stack.ws_connect_as(&user).await;

    stack.set_quote("SOLUSDT", "150.10", "150.20").await;
    let snap = client.subscribe(&["SOLUSDT"], Some(100)).await;
    assert_eq!(snap["symbols"], json!(["SOLUSDT"]));
    assert_eq!(snap["max_rate_ms"], 100);
    assert!(has_price(&snap, "SOLUSDT", "150.1"), "{snap}");
    assert!(snap["ts"].as_i64().is_some_and(|t| t > 0));

    stack.set_quote("SOLUSDT", "151.30", "151.40").await;
    let m = client
        .wait_for("prices", "with the injected SOLUSDT quote", |v| {
            has_price(v, "SOLUSDT", "151.3")
        })
        .await;
    assert!(m["ts"].as_i64().is_some_and(|t| t > 0));
    // Only subscribed symbols: BTCUSDT and ETHUSDT replay all the time, yet never appear.
    assert!(client.received.iter().all(|v| v["prices"]
        .as_array()
        .is_none_or(|ps| ps.iter().all(|p| p["symbol"] == "SOLUSDT"))));

    let snap = client.subscribe(&[], None).await;
    assert_eq!(snap["symbols"], json!(["SOLUSDT"]));
    client
        .send_json(&json!({"action": "unsubscribe", "symbols": ["SOLUSDT"]}))
        .await;
    let snap = client
        .wait_for("snapshot", "after unsubscribe", |_| true)
        .await;
    assert_eq!(snap["symbols"], json!([]));
    stack.set_quote("SOLUSDT", "152.50", "152.60").await;
    let after = client.drain(QUIET).await;
    assert!(
        after.iter().all(|v| v["type"] != "prices"),
        "prices after unsubscribe: {after:?}"
    );
}

#[tokio::test]
async fn a_fill_reaches_every_connection_of_the_account_and_no_other() {
    let stack = Stack::start().await;
    let (alice, bob) = (stack.new_user().await, stack.new_user().await);
    let mut a1 = stack.ws_connect_as(&alice).await;
    let mut a2 = stack.ws_connect_as(&alice).await;
    let mut b1 = stack.ws_connect_as(&bob).await;
    // Subscribed or not, order updates and PnL come to every connection of the account.
    a1.subscribe(&["SOLUSDT"], Some(100)).await;
    stack.set_quote("SOLUSDT", "150", "150.10").await;

    let r = stack
        .post(
            "/v2/orders",
            &alice.key(),
            &json!({"symbol": "SOLUSDT", "qty": "2", "side": "buy", "type": "market",
                    "time_in_force": "gtc", "client_order_id": "ws-fill-1"}),
        )
        .await;
    r.expect(200);
    let order_id = r.str("id").to_string();
    for client in [&mut a1, &mut a2] {
        let fill = client
            .wait_for("order", "with the fill", |v| v["data"]["event"] == "fill")
            .await;
        assert_eq!(fill["data"]["order"]["id"], order_id.as_str());
        assert_eq!(fill["data"]["order"]["status"], "filled");
        assert_eq!(fill["data"]["price"], "150.1");
        assert_eq!(fill["data"]["qty"], "2");
        assert_eq!(fill["data"]["position_qty"], "2");
        assert!(
            client
                .received
                .iter()
                .any(|v| v["type"] == "order" && v["data"]["event"] == "new"),
            "a new event comes before the fill"
        );
        // The PnL of the new position, on the live SOLUSDT bid of 150 (it may come before
        // the order update: the fan-out and the executor push independently).
        // PnL rides on a `prices` message when a watched price moved in the same flush.
        let with_position = |v: &Value| {
            v["pnl"]["positions"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["symbol"] == "SOLUSDT"))
        };
        let pnl = match client.received.iter().find(|v| with_position(v)).cloned() {
            Some(v) => v,
            None => loop {
                let v = client
                    .wait_for_any(&["pnl", "prices"], "with the SOLUSDT position")
                    .await;
                if with_position(&v) {
                    break v;
                }
            },
        };
        let p = &pnl["pnl"]["positions"][0];
        assert_eq!(p["qty"], "2");
        assert_eq!(p["current_price"], "150");
        assert_eq!(p["unrealized_pl"], "-0.2");
    }
    // Bob hears his own (flat) PnL, never Alice's orders or positions.
    let bobs = b1.drain(QUIET).await;
    assert!(
        bobs.iter()
            .all(|v| v["type"] != "order"
                && v["pnl"]["positions"].as_array().is_none_or(Vec::is_empty)),
        "bob got alice's updates: {bobs:?}"
    );
}

#[tokio::test]
async fn a_vanished_client_is_deleted_at_the_next_push() {
    let stack = Stack::start().await;
    let user = stack.new_user().await;
    let mut client = stack.ws_connect_as(&user).await;
    client.subscribe(&["SOLUSDT"], Some(100)).await;
    let ids = connection_ids(&stack, user.account_uuid()).await;
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();

    stack.ws_vanish(&id).await;
    stack.set_quote("SOLUSDT", "149.10", "149.20").await;
    // The fan-out's push gets 410 and deletes the item.
    let deadline = std::time::Instant::now() + e2e::wait_limit();
    while !connection_ids(&stack, user.account_uuid()).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gone connection was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = stack.ws_stats().await["gone_by_connection"][&id]
        .as_u64()
        .unwrap_or(0);
    assert!(gone >= 1, "the push was answered 410");
    // And it left the index: more prices, no more pushes to it.
    stack.set_quote("SOLUSDT", "149.30", "149.40").await;
    tokio::time::sleep(QUIET).await;
    let later = stack.ws_stats().await["gone_by_connection"][&id]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(later, gone, "pushes continued after the 410");
}

#[tokio::test]
async fn bad_messages_get_errors_oversized_ones_and_idle_clients_are_closed() {
    let stack = Stack::start_with(StackOptions {
        devstack_env: vec![("DEVSTACK_WS_IDLE_TIMEOUT_SECS".into(), "3".into())],
        ..Default::default()
    })
    .await;
    let user = stack.new_user().await;

    let mut client = stack.ws_connect_as(&user).await;
    for (text, code) in [
        ("hello", "malformed_message"),
        (r#"{"action":"dance"}"#, "unknown_action"),
        (
            r#"{"action":"subscribe","symbols":"BTCUSDT"}"#,
            "malformed_message",
        ),
        (
            r#"{"action":"subscribe","symbols":["NOTACOIN"]}"#,
            "unknown_symbol",
        ),
        (
            r#"{"action":"subscribe","symbols":["BTCUSDT"],"max_rate_ms":10}"#,
            "invalid_rate",
        ),
    ] {
        client.send_text(text).await;
        let e = client.wait_for("error", text, |_| true).await;
        assert_eq!(e["code"], code, "{text}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still open and served.
    assert_eq!(client.ping().await["type"], "pong");

    // Over API Gateway's 128 KB: the connection is closed with 1009.
    let mut big = stack.ws_connect_as(&user).await;
    big.send_text(&"x".repeat(130 * 1024)).await;
    assert_eq!(
        big.closed_within(e2e::wait_limit()).await,
        Closed::Code(1009)
    );

    // Idle for longer than the (shortened) idle timeout: closed with 1001, item deleted.
    assert_eq!(
        client.closed_within(e2e::wait_limit()).await,
        Closed::Code(1001)
    );
    let deadline = std::time::Instant::now() + e2e::wait_limit();
    while !connection_ids(&stack, user.account_uuid()).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections stay in the table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
