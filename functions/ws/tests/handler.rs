//! The ws handlers against real PostgreSQL, Redis and DynamoDB (moto), with events shaped as
//! API Gateway sends them (`events/ws-*.json`).

mod common;

use std::time::Duration;

use common::{event, fixture};
use domain::realtime::ConnectionChange;
use futures_util::StreamExt;
use rust_decimal_macros::dec;
use serde_json::Value;
use testkit::service_env;
use uuid::Uuid;
use ws::{handle, WsRequest};

fn connect_req(id: &str, query: &[(&str, &str)]) -> WsRequest {
    let mut r = WsRequest::from(event("ws-connect.json"));
    r.connection_id = id.to_string();
    r.query = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

fn message_req(id: &str, body: &str) -> WsRequest {
    let mut r = WsRequest::from(event("ws-message.json"));
    r.connection_id = id.to_string();
    r.body = Some(body.to_string());
    r
}

fn body(r: &ws::WsResponse) -> Value {
    serde_json::from_str(r.body.as_deref().expect("a body")).expect("JSON body")
}

fn new_id() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_string()
}

#[test]
fn sample_events_parse_as_api_gateway_sends_them() {
    let c = WsRequest::from(event("ws-connect.json"));
    assert_eq!(c.route_key, "$connect");
    assert_eq!(c.connection_id, "L0SM9cOFvHcCIhw=");
    assert!(c.query.contains_key("token"));
    let m = WsRequest::from(event("ws-message.json"));
    assert_eq!(m.route_key, "$default");
    assert!(m.body.unwrap_or_default().contains("subscribe"));
    let d = WsRequest::from(event("ws-disconnect.json"));
    assert_eq!(d.route_key, "$disconnect");
}

#[tokio::test]
async fn connect_authenticates_limits_registers_and_announces() {
    let f = fixture(2).await;
    let redis = redis::Client::open(service_env("REDIS_URL")).expect("redis url");
    let mut pubsub = redis.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(f.deps.cache.keys().connections_channel())
        .await
        .expect("subscribe");

    let refused = handle(&f.deps, connect_req(&new_id(), &[])).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(body(&refused)["code"], "unauthorized");
    assert!(body(&refused)["message"]
        .as_str()
        .unwrap_or_default()
        .contains("token"));
    let wrong = handle(&f.deps, connect_req(&new_id(), &[("token", "nope")])).await;
    assert_eq!(wrong.status, 401);
    let half = handle(&f.deps, connect_req(&new_id(), &[("key_id", &f.key_id)])).await;
    assert_eq!(half.status, 401);
    let bad_secret = handle(
        &f.deps,
        connect_req(&new_id(), &[("key_id", &f.key_id), ("secret_key", "x")]),
    )
    .await;
    assert_eq!(bad_secret.status, 401);

    let first = new_id();
    let ok = handle(&f.deps, connect_req(&first, &[("token", &f.token)])).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let stored = f
        .deps
        .table
        .get(&first, adapters::now_ms())
        .await
        .expect("get")
        .expect("the connection is stored");
    assert_eq!(stored.account_id, f.account_id);
    assert!(stored.symbols.is_empty());
    let mut messages = pubsub.on_message();
    let announced: ConnectionChange = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("announced in time")
        .expect("a message")
        .get_payload::<String>()
        .map(|p| serde_json::from_str(&p).expect("a ConnectionChange"))
        .expect("payload");
    assert_eq!(announced, ConnectionChange::Put { connection: stored });

    // The account's snapshot is in Redis for the fan-out.
    let snaps = f
        .deps
        .cache
        .snapshots(&[f.account_id])
        .await
        .expect("snapshots");
    assert_eq!(snaps[&f.account_id].cash, dec!(1000));

    let second = new_id();
    let ok = handle(
        &f.deps,
        connect_req(&second, &[("key_id", &f.key_id), ("secret_key", &f.secret)]),
    )
    .await;
    assert_eq!(ok.status, 200, "API keys work too: {ok:?}");
    let over = handle(&f.deps, connect_req(&new_id(), &[("token", &f.token)])).await;
    assert_eq!(over.status, 429, "{over:?}");
    assert_eq!(over.retry_after, Some(10));
    assert_eq!(body(&over)["code"], "too_many_connections");
    assert!(body(&over)["message"]
        .as_str()
        .unwrap_or_default()
        .contains("at most 2"));

    // Disconnecting frees a place and announces the deletion.
    let mut d = WsRequest::from(event("ws-disconnect.json"));
    d.connection_id = first.clone();
    assert_eq!(handle(&f.deps, d).await.status, 200);
    assert!(f
        .deps
        .table
        .get(&first, adapters::now_ms())
        .await
        .expect("get")
        .is_none());
    let mut deleted = false;
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("announced in time")
            .expect("a message");
        let change: ConnectionChange =
            serde_json::from_str(&m.get_payload::<String>().expect("payload")).expect("change");
        if change
            == (ConnectionChange::Delete {
                connection_id: first.clone(),
            })
        {
            deleted = true;
            break;
        }
    }
    assert!(deleted, "the deletion was announced");
    let again = handle(&f.deps, connect_req(&new_id(), &[("token", &f.token)])).await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn messages_subscribe_unsubscribe_ping_and_explain_mistakes() {
    let f = fixture(5).await;
    testkit::put_quote(&f.deps.cache, "BTCUSDT", dec!(61000.5), dec!(61001)).await;
    let id = new_id();
    assert_eq!(
        handle(&f.deps, connect_req(&id, &[("token", &f.token)]))
            .await
            .status,
        200
    );
    let say = |text: &str| handle(&f.deps, message_req(&id, text));

    let snap = body(
        &say(r#"{"action":"subscribe","symbols":["btcusdt","ETHUSDT"],"max_rate_ms":250}"#).await,
    );
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["symbols"], serde_json::json!(["BTCUSDT", "ETHUSDT"]));
    assert_eq!(snap["max_rate_ms"], 250);
    // Only BTCUSDT has a price in this cache.
    assert_eq!(snap["prices"].as_array().map(Vec::len), Some(1));
    assert_eq!(snap["prices"][0]["bid"], "61000.5");
    let stored = f
        .deps
        .table
        .get(&id, adapters::now_ms())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.symbols, ["BTCUSDT", "ETHUSDT"]);
    assert_eq!(stored.max_rate_ms, 250);

    let code = |v: Value| v["code"].as_str().unwrap_or_default().to_string();
    let e = body(&say(r#"{"action":"subscribe","symbols":["NOPEUSDT"]}"#).await);
    assert_eq!(
        (e["type"].as_str(), code(e.clone()).as_str()),
        (Some("error"), "unknown_symbol")
    );
    let e = body(&say(r#"{"action":"subscribe","symbols":["BNBUSDT","XRPUSDT"]}"#).await);
    assert_eq!(code(e), "too_many_symbols");
    let e = body(&say(r#"{"action":"subscribe","symbols":["BNBUSDT"],"max_rate_ms":50}"#).await);
    assert_eq!(code(e), "invalid_rate");
    assert_eq!(code(body(&say("{not json").await)), "malformed_message");
    assert_eq!(
        code(body(&say(r#"{"action":"buy"}"#).await)),
        "unknown_action"
    );
    let huge = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(9000));
    assert_eq!(code(body(&say(&huge).await)), "message_too_large");
    // None of the mistakes changed the subscription.
    let stored = f
        .deps
        .table
        .get(&id, adapters::now_ms())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.symbols, ["BTCUSDT", "ETHUSDT"]);

    let pong = body(&say(r#"{"action":"ping"}"#).await);
    assert_eq!(pong["type"], "pong");
    assert!(pong["ts"].as_i64().unwrap_or_default() > 0);

    let snap = body(&say(r#"{"action":"unsubscribe","symbols":["BTCUSDT"]}"#).await);
    assert_eq!(snap["symbols"], serde_json::json!(["ETHUSDT"]));
    assert_eq!(snap["prices"], serde_json::json!([]));

    // After a disconnect the connection is unknown and a subscribe does not resurrect it.
    let mut d = WsRequest::from(event("ws-disconnect.json"));
    d.connection_id = id.clone();
    handle(&f.deps, d).await;
    let e = body(&say(r#"{"action":"subscribe","symbols":["BTCUSDT"]}"#).await);
    assert_eq!(code(e), "connection_unknown");
    assert!(f
        .deps
        .table
        .get(&id, adapters::now_ms())
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn connect_checks_a_browser_s_origin_only_when_told_to() {
    let mut f = fixture(10).await;
    let from = |origin: Option<&str>| {
        let mut r = connect_req(&new_id(), &[("token", &f.token)]);
        r.headers.remove("origin");
        if let Some(o) = origin {
            r.headers.insert("origin".into(), o.into());
        }
        r
    };
    // Off (the default): any origin connects with valid credentials.
    let r = handle(&f.deps, from(Some("https://evil.example.com"))).await;
    assert_eq!(r.status, 200, "{r:?}");

    f.deps.config.cors.allowed_origins = vec!["https://terminal.example.com".parse().unwrap()];
    f.deps.config.cors.check_websocket_origin = true;
    let refused = handle(&f.deps, from(Some("https://evil.example.com"))).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(body(&refused)["code"], "forbidden");
    for ok in [Some("https://terminal.example.com"), None] {
        let r = handle(&f.deps, from(ok)).await;
        assert_eq!(r.status, 200, "{ok:?}: {r:?}");
    }
    // The refusal registered nothing: three connections, the refused one not among them.
    let open = f
        .deps
        .table
        .by_account(f.account_id, adapters::now_ms())
        .await
        .expect("the table");
    assert_eq!(open.len(), 3, "{open:?}");
}
