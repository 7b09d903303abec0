//! Starts the feed in-process on an ephemeral port and drives it as a client would.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use testkit::wait::poll;
use testkit::web::{client, delete, get, get_json, post, post_json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

async fn start(speed: f64, symbols: &[&str], tweak: impl FnOnce(&mut feed::Config)) -> feed::Feed {
    let mut config = feed::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        speed,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        ..feed::Config::default()
    };
    tweak(&mut config);
    feed::spawn(config).await.unwrap()
}

async fn connect(feed: &feed::Feed, streams: &str) -> Ws {
    let url = format!("{}/stream?streams={streams}", feed.ws_base_url());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Next text message as JSON (answering pings transparently), or panic after `WAIT`.
async fn next_json(ws: &mut Ws) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str::<Value>(t.as_str()).unwrap()
                }
                Some(Ok(_)) => continue,
                other => panic!("stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a message")
}

/// Reads until `pred` holds; returns that message and how many were skipped.
async fn until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> (Value, usize) {
    let mut skipped = 0;
    loop {
        let v = next_json(ws).await;
        if pred(&v) {
            return (v, skipped);
        }
        skipped += 1;
    }
}

/// Sends a request and reads until its reply (the next message with an `id`).
async fn ask(ws: &mut Ws, request: &str) -> Value {
    ws.send(Message::text(request)).await.unwrap();
    until(ws, |v| v.get("id").is_some()).await.0
}

/// A feed of ETHUSDT that pings every second and drops a client after 2 s without a pong.
async fn start_pinging() -> feed::Feed {
    start(1.0, &["ethusdt"], |c| {
        c.ping_interval_secs = 1;
        c.pong_timeout_secs = 2;
    })
    .await
}

fn stream_of(v: &Value) -> &str {
    v["stream"].as_str().unwrap_or("")
}

#[tokio::test]
async fn sends_only_requested_streams_and_handles_subscribe() {
    let feed = start(20.0, &["btcusdt", "ethusdt"], |_| {}).await;
    // Upper case in the request: names match case-insensitively.
    let mut ws = connect(&feed, "BTCUSDT@bookTicker").await;
    for _ in 0..30 {
        let v = next_json(&mut ws).await;
        assert_eq!(stream_of(&v), "btcusdt@bookTicker", "{v}");
        assert_eq!(v["data"]["s"], "BTCUSDT");
        // Recorded data is passed through untouched: decimal strings as Binance sends them.
        assert!(v["data"]["b"].as_str().unwrap().contains('.'));
    }

    let reply = ask(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["ethusdt@trade"],"id":7}"#,
    )
    .await;
    assert_eq!(reply, serde_json::json!({"result": null, "id": 7}));
    let (trade, _) = until(&mut ws, |v| stream_of(v) == "ethusdt@trade").await;
    assert_eq!(trade["data"]["e"], "trade");

    let reply = ask(
        &mut ws,
        r#"{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":8}"#,
    )
    .await;
    assert_eq!(reply, serde_json::json!({"result": null, "id": 8}));
    let reply = ask(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":9}"#).await;
    assert_eq!(
        reply,
        serde_json::json!({"result": ["ethusdt@trade"], "id": 9})
    );
    for _ in 0..20 {
        let v = next_json(&mut ws).await;
        assert_eq!(stream_of(&v), "ethusdt@trade", "{v}");
    }
}

#[tokio::test]
async fn posted_quote_replaces_replay_until_deleted() {
    let feed = start(10.0, &["btcusdt"], |c| c.repeat_ms = 200).await;
    let base = feed.http_base_url();
    let mut ws = connect(&feed, "btcusdt@bookTicker/btcusdt@trade").await;
    // Replay is running.
    let first = next_json(&mut ws).await;
    assert!(stream_of(&first).starts_with("btcusdt@"), "{first}");

    let quote =
        serde_json::json!({"symbol":"BTCUSDT","bid":"61000.10","ask":"61000.20","last":"61000.15"});
    let resp = post_json(format!("{base}/quotes"), &quote).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["bid"], "61000.10");

    let (book, _) = until(&mut ws, |v| v["data"]["b"] == "61000.10").await;
    assert_eq!(stream_of(&book), "btcusdt@bookTicker");
    assert_eq!(book["data"]["s"], "BTCUSDT");
    assert_eq!(book["data"]["a"], "61000.20");
    assert_eq!(book["data"]["B"], "1.00000000");
    let trade = next_json(&mut ws).await;
    assert_eq!(stream_of(&trade), "btcusdt@trade", "{trade}");
    assert_eq!(trade["data"]["p"], "61000.15");
    assert_eq!(trade["data"]["q"], "0.00100000");
    assert_eq!(trade["data"]["e"], "trade");

    // From now on only the scripted quote, re-emitted every repeat-ms with increasing ids.
    let mut last_u = book["data"]["u"].as_u64().unwrap();
    let mut books = 0;
    while books < 4 {
        let v = next_json(&mut ws).await;
        match stream_of(&v) {
            "btcusdt@bookTicker" => {
                assert_eq!(v["data"]["b"], "61000.10", "replay did not stop: {v}");
                let u = v["data"]["u"].as_u64().unwrap();
                assert!(u > last_u);
                last_u = u;
                books += 1;
            }
            "btcusdt@trade" => assert_eq!(v["data"]["p"], "61000.15", "replay did not stop: {v}"),
            other => panic!("unexpected stream {other}"),
        }
    }

    let list: Value = get_json(format!("{base}/quotes")).await;
    assert_eq!(list[0]["symbol"], "BTCUSDT");
    assert_eq!(list[0]["last"], "61000.15");

    let resp = delete(format!("{base}/quotes/btcusdt")).await;
    assert_eq!(resp.status(), 204);
    let (_, _) = until(&mut ws, |v| {
        stream_of(v) == "btcusdt@bookTicker" && v["data"]["b"] != "61000.10"
    })
    .await;
    let list: Value = get_json(format!("{base}/quotes")).await;
    assert_eq!(list, serde_json::json!([]));
    let resp = delete(format!("{base}/quotes/BTCUSDT")).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn any_symbol_can_be_scripted_and_numbers_are_exact() {
    let feed = start(1.0, &["ethusdt"], |_| {}).await;
    let mut ws = connect(&feed, "solusdt@bookTicker/solusdt@trade").await;
    let resp = client()
        .post(format!("{}/quotes", feed.http_base_url()))
        .header("content-type", "application/json")
        .body(r#"{"symbol":"solusdt","bid":145.1200,"ask":"145.13"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = next_json(&mut ws).await;
    assert_eq!(stream_of(&v), "solusdt@bookTicker");
    assert_eq!(v["data"]["s"], "SOLUSDT");
    assert_eq!(v["data"]["b"], "145.1200");
    assert_eq!(v["data"]["a"], "145.13");
    // No `last`: no trade, only the repeated bookTicker.
    let v = next_json(&mut ws).await;
    assert_eq!(stream_of(&v), "solusdt@bookTicker");
}

#[tokio::test]
async fn bad_quotes_get_400_json() {
    let feed = start(1.0, &["ethusdt"], |_| {}).await;
    let url = format!("{}/quotes", feed.http_base_url());
    for body in [
        "{",
        r#"{"symbol":"BTCUSDT","bid":"abc","ask":"1"}"#,
        r#"{"symbol":"BTCUSDT","bid":"2","ask":"1"}"#,
        r#"{"symbol":"BTCUSDT","bid":"-1","ask":"1"}"#,
        r#"{"symbol":"BTCUSDT","bid":"0","ask":"1"}"#,
        r#"{"symbol":"BTCUSDT","ask":"1"}"#,
        r#"{"bid":"1","ask":"1"}"#,
        r#"{"symbol":"BTCUSDT","bid":"1","ask":"1","last":"-5"}"#,
    ] {
        let resp = client().post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
    }
    let list: Value = get_json(&url).await;
    assert_eq!(list, serde_json::json!([]));
    let health = get(format!("{}/health", feed.http_base_url())).await;
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn pings_and_drops_clients_that_do_not_pong() {
    let feed = start_pinging().await;
    // A client that reads (tungstenite answers pings) stays; one that never reads is dropped.
    let mut live = connect(&feed, "").await;
    let mut silent = connect(&feed, "").await;
    let got_ping = tokio::time::timeout(WAIT, async {
        loop {
            match live.next().await {
                Some(Ok(Message::Ping(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("live client dropped: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(!got_ping.is_empty(), "pings carry a payload");
    // Keep the live client reading while the silent one stays silent past the timeout.
    let keep_reading = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, live.next()).await {
            assert!(msg.is_ok(), "live client dropped: {msg:?}");
        }
        live
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match silent.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "silent client was not dropped");
    let mut live = keep_reading.await.unwrap();
    let reply = ask(&mut live, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(reply["result"], serde_json::json!([]));
}

async fn post_control(feed: &feed::Feed, path_and_query: &str) -> Value {
    let resp = post(format!("{}{path_and_query}", feed.http_base_url()), "").await;
    assert_eq!(resp.status(), 200, "{path_and_query}");
    resp.json().await.unwrap()
}

/// A control request the feed refuses with 400.
async fn control_refused(feed: &feed::Feed, path_and_query: &str) {
    let resp = post(format!("{}{path_and_query}", feed.http_base_url()), "").await;
    assert_eq!(resp.status(), 400, "{path_and_query}");
}

/// Reads until the stream ends; returns (text messages seen, whether a close frame came).
async fn read_to_end(ws: &mut Ws) -> (Vec<Value>, bool) {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return false,
            }
        }
    })
    .await
    .expect("connection never ended");
    (seen, closed)
}

async fn scripted(feed: &feed::Feed, body: Value) {
    let resp = post_json(format!("{}/quotes", feed.http_base_url()), &body).await;
    assert_eq!(resp.status(), 200);
}

/// Scripts SOLUSDT, which has no recording, at 1/2.
async fn script_sol(feed: &feed::Feed) {
    scripted(
        feed,
        serde_json::json!({"symbol":"SOLUSDT","bid":"1","ask":"2"}),
    )
    .await;
}

/// Polls `GET /__control/connections` until `pred` holds (panics after `WAIT`).
async fn connections_until(feed: &feed::Feed, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    poll(WAIT, Duration::from_millis(20), async || {
        let list: Vec<Value> = serde_json::from_value(
            get_json(format!("{}/__control/connections", feed.http_base_url())).await,
        )
        .expect("a JSON array");
        if pred(&list) {
            Ok(list)
        } else {
            Err(format!("connections never matched: {list:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn drop_closes_open_connections_without_a_close_frame() {
    let feed = start(1.0, &["ethusdt"], |_| {}).await;
    let mut ws = connect(&feed, "solusdt@bookTicker").await;
    connections_until(&feed, |c| c.len() == 1).await;
    let r = post_control(&feed, "/__control/drop").await;
    assert_eq!(r["connections"], 1);
    let (_, close_frame) = read_to_end(&mut ws).await;
    assert!(!close_frame, "a drop must not say goodbye");
    let list = connections_until(&feed, |c| c[0]["closed_at_ms"].is_i64()).await;
    assert_eq!(list[0]["close_reason"], "dropped (control)");
    // A connection opened afterwards is not affected.
    let mut again = connect(&feed, "solusdt@bookTicker").await;
    script_sol(&feed).await;
    assert_eq!(next_json(&mut again).await["data"]["s"], "SOLUSDT");
}

#[tokio::test]
async fn shutdown_sends_server_shutdown_streams_through_the_grace_then_closes() {
    let feed = start(1.0, &["ethusdt"], |c| c.repeat_ms = 50).await;
    script_sol(&feed).await;
    let mut ws = connect(&feed, "solusdt@bookTicker").await;
    next_json(&mut ws).await;
    let r = post_control(&feed, "/__control/shutdown?grace_ms=700").await;
    assert_eq!(r["connections"], 1);
    let (event, _) = until(&mut ws, |v| v.get("e").is_some()).await;
    assert_eq!(event["e"], "serverShutdown");
    assert!(event["E"].as_i64().unwrap() > 1_700_000_000_000, "{event}");
    // Data keeps coming during the grace period, then a close frame.
    let (after, close_frame) = read_to_end(&mut ws).await;
    assert!(close_frame);
    assert!(
        after.iter().any(|v| v["data"]["s"] == "SOLUSDT"),
        "{after:?}"
    );
    let list = connections_until(&feed, |c| c[0]["closed_at_ms"].is_i64()).await;
    assert_eq!(list[0]["close_reason"], "server shutdown (control)");
    control_refused(&feed, "/__control/shutdown?grace_ms=abc").await;
}

#[tokio::test]
async fn burst_sends_every_message_and_ends_on_the_current_price() {
    // No repeats during the test: after the scripted quote, only the burst arrives.
    let feed = start(1.0, &["ethusdt"], |c| {
        c.client_buffer = 16;
        c.repeat_ms = 600_000;
    })
    .await;
    let mut ws = connect(&feed, "solusdt@bookTicker").await;
    connections_until(&feed, |c| c.len() == 1).await;
    scripted(
        &feed,
        serde_json::json!({"symbol":"SOLUSDT","bid":"145.12","ask":"145.13"}),
    )
    .await;
    let first = next_json(&mut ws).await;
    let mut last_u = first["data"]["u"].as_u64().unwrap();
    let n = 20_000;
    let r = post_control(&feed, &format!("/__control/burst?n={n}")).await;
    assert_eq!(r["connections"], 1);
    // Far more than the client's queue of 16: a burst bypasses it, nothing is dropped.
    let mut bids = HashSet::new();
    let mut last = Value::Null;
    for _ in 0..n {
        let v = next_json(&mut ws).await;
        assert_eq!(v["data"]["s"], "SOLUSDT");
        let u = v["data"]["u"].as_u64().unwrap();
        assert!(u > last_u, "update ids increase: {v}");
        last_u = u;
        bids.insert(v["data"]["b"].as_str().unwrap().to_string());
        last = v;
    }
    assert_eq!(last["data"]["b"], "145.12");
    assert_eq!(last["data"]["a"], "145.13");
    assert_eq!(bids.len(), 100, "prices vary within 100 levels");
    let list = connections_until(&feed, |c| c[0]["burst_sent"].as_u64() == Some(n)).await;
    assert_eq!(list[0]["dropped"], 0);
    control_refused(&feed, "/__control/burst").await;
}

#[tokio::test]
async fn stall_sends_nothing_for_a_while_then_resumes() {
    let feed = start(1.0, &["ethusdt"], |c| {
        c.repeat_ms = 50;
        c.ping_interval_secs = 1;
    })
    .await;
    script_sol(&feed).await;
    let mut ws = connect(&feed, "solusdt@bookTicker").await;
    next_json(&mut ws).await;
    post_control(&feed, "/__control/stall?ms=1500").await;
    let stalled_at = tokio::time::Instant::now();
    // Frames already in flight may still arrive; then nothing, not even a ping.
    let mut quiet_since = tokio::time::Instant::now();
    let resumed = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("never resumed")
        {
            Some(Ok(_)) => {
                let now = tokio::time::Instant::now();
                if now.duration_since(quiet_since) >= Duration::from_millis(1000) {
                    break now;
                }
                quiet_since = now;
            }
            other => panic!("stream ended: {other:?}"),
        }
    };
    assert!(resumed.duration_since(stalled_at) >= Duration::from_millis(1000));
    // And it streams again.
    next_json(&mut ws).await;
    let list = connections_until(&feed, |c| c[0]["dropped"].as_u64() > Some(0)).await;
    assert!(
        list[0]["closed_at_ms"].is_null(),
        "a stall does not close: {list:?}"
    );
}

#[tokio::test]
async fn feed_wide_stall_also_silences_new_connections() {
    let feed = start(1.0, &["ethusdt"], |c| c.repeat_ms = 50).await;
    script_sol(&feed).await;
    post_control(&feed, "/__control/stall?ms=1200&all=true").await;
    let t0 = tokio::time::Instant::now();
    let mut ws = connect(&feed, "solusdt@bookTicker").await;
    next_json(&mut ws).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn pongs_must_echo_the_ping_payload() {
    let feed = start_pinging().await;
    // This client answers every ping with a wrong payload (automatic pongs are replaced by
    // the explicit one): it is dropped like a silent one.
    let mut liar = connect(&feed, "").await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match liar.next().await {
                Some(Ok(Message::Ping(_))) => {
                    let _ = liar.send(Message::Pong("wrong".into())).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a client echoing the wrong payload was not dropped"
    );
    let list = connections_until(&feed, |c| c[0]["closed_at_ms"].is_i64()).await;
    assert_eq!(list[0]["close_reason"], "no pong in time");
    assert_eq!(list[0]["pongs"], 0);
    assert!(
        list[0]["unsolicited_pongs"].as_u64().unwrap() >= 1,
        "{list:?}"
    );
}
