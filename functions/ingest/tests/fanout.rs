//! The fan-out runner against real Redis (`REDIS_URL`: pub/sub, positions snapshots) and a
//! moto DynamoDB connection table (`AWS_ENDPOINT_URL`, one fresh table per test, built from
//! template.yaml by `$PYTHON infra/scripts/aws_setup.py table`), pushing to an in-process
//! server that plays API Gateway's `@connections` API on 127.0.0.1. `make test` (or
//! `eval "$(bash infra/scripts/services.sh env test)"`) provides the environment; without it
//! these tests fail, they never skip.
//!
//! Quotes are fed through the flush hook (the tap), as the flusher does after each write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::cache::Cache;
use adapters::connections::ConnectionTable;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use domain::accounting::Position;
use domain::quote::Quote;
use domain::realtime::{Connection, ConnectionChange, PositionsSnapshot, SnapshotPosition};
use fanout::{spawn, FanoutConfig, FanoutHandle};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use testkit::service_env;
use testkit::wait::poll;
use tokio::task::JoinHandle;
use triggers::FlushTap;
use uuid::Uuid;

const STAGE: &str = "test";
/// How long a wait may take, and how often it polls.
const SOON: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_millis(20);

// ---- the @connections API ------------------------------------------------------------

#[derive(Default)]
struct Api {
    /// Delivered messages, in order: (connection id, body).
    delivered: Mutex<Vec<(String, Value)>>,
    gone: Mutex<HashSet<String>>,
    /// 410 answers per connection.
    gone_hits: Mutex<HashMap<String, usize>>,
    /// Connections to answer 500 this many more times.
    fail: Mutex<HashMap<String, usize>>,
    failed_hits: Mutex<HashMap<String, usize>>,
}

impl Api {
    fn to(&self, id: &str) -> Vec<Value> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn count(&self, id: &str) -> usize {
        self.to(id).len()
    }

    fn gone_hits(&self, id: &str) -> usize {
        self.gone_hits.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

fn aws_error(status: StatusCode, error_type: &'static str, message: Value) -> Response {
    let mut resp = (status, axum::Json(json!({ "message": message }))).into_response();
    resp.headers_mut()
        .insert("x-amzn-ErrorType", HeaderValue::from_static(error_type));
    resp
}

async fn post_to_connection(
    State(api): State<Arc<Api>>,
    Path((stage, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    assert_eq!(stage, STAGE);
    if api.gone.lock().unwrap().contains(&id) {
        *api.gone_hits.lock().unwrap().entry(id).or_default() += 1;
        return aws_error(StatusCode::GONE, "GoneException", Value::Null);
    }
    {
        let mut fail = api.fail.lock().unwrap();
        if let Some(n) = fail.get_mut(&id).filter(|n| **n > 0) {
            *n -= 1;
            *api.failed_hits.lock().unwrap().entry(id).or_default() += 1;
            return aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerErrorException",
                json!("boom"),
            );
        }
    }
    let v: Value = serde_json::from_slice(&body).expect("the body is JSON");
    api.delivered.lock().unwrap().push((id, v));
    StatusCode::OK.into_response()
}

async fn serve_api() -> (Arc<Api>, String, JoinHandle<()>) {
    let api = Arc::new(Api::default());
    let app = Router::new()
        .route("/{stage}/@connections/{id}", post(post_to_connection))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (api, format!("http://{addr}/{STAGE}"), server)
}

// ---- the stack -----------------------------------------------------------------------

/// A connection table of the test's own, from template.yaml.
fn create_table(name: &str) {
    let python = service_env("PYTHON");
    let endpoint = service_env("AWS_ENDPOINT_URL");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/scripts/aws_setup.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["table", &endpoint, name])
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "aws_setup.py table {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Stack {
    api: Arc<Api>,
    endpoint: String,
    table_name: String,
    table: ConnectionTable,
    cache: Cache,
    prefix: String,
    server: JoinHandle<()>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Running {
    fanout: FanoutHandle,
    tap: FlushTap,
}

impl Stack {
    async fn new() -> Stack {
        let table_name = format!("conn-{}", Uuid::new_v4().simple());
        create_table(&table_name);
        let prefix = format!("t{}:", Uuid::new_v4().simple());
        let (api, endpoint, server) = serve_api().await;
        Stack {
            api,
            endpoint,
            table: ConnectionTable::new(&table_name),
            cache: Cache::new(&service_env("REDIS_URL"), &prefix).unwrap(),
            table_name,
            prefix,
            server,
        }
    }

    fn config(&self) -> FanoutConfig {
        let mut cfg = FanoutConfig::new(
            &service_env("REDIS_URL"),
            &self.prefix,
            &self.table_name,
            &self.endpoint,
        );
        cfg.tick = Duration::from_millis(50);
        cfg.concurrency = 4;
        cfg.stats_every = None;
        cfg.pubsub_ping = Duration::from_millis(200);
        cfg
    }

    /// Starts the fan-out and waits for its first scan.
    async fn start(&self, tweak: impl FnOnce(&mut FanoutConfig)) -> Running {
        let mut cfg = self.config();
        tweak(&mut cfg);
        let fanout = spawn(cfg).unwrap();
        let stats = fanout.stats.clone();
        eventually("the first scan", || stats.snapshot().scans >= 1).await;
        let tap = fanout.tap();
        Running { fanout, tap }
    }

    /// What the ws function does on connect or (un)subscribe: write the item, then publish.
    async fn connect(&self, c: &Connection) {
        self.table.put(c).await.unwrap();
        self.cache
            .publish_connection_change(&ConnectionChange::Put {
                connection: c.clone(),
            })
            .await
            .unwrap();
    }

    /// What the ws function does on disconnect.
    async fn disconnect(&self, id: &str) {
        self.table.delete(id).await.unwrap();
        self.cache
            .publish_connection_change(&ConnectionChange::Delete {
                connection_id: id.to_string(),
            })
            .await
            .unwrap();
    }
}

impl Running {
    async fn until_indexed(&self, ids: &[&str]) {
        let want: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
        poll(SOON, TICK, async || {
            let have: HashSet<String> = self.fanout.connection_ids().await.into_iter().collect();
            if have == want {
                Ok(())
            } else {
                Err(format!("index is {have:?}, expected {want:?}"))
            }
        })
        .await
    }

    fn flush(&mut self, quotes: &[Quote]) {
        self.tap.on_flush(quotes);
    }
}

/// A connection id like API Gateway's (12 characters, base64, often ending in `=`).
fn conn_id() -> String {
    let s = Uuid::new_v4().simple().to_string();
    format!("{}=", &s[..11])
}

fn connection(id: &str, account: Uuid, symbols: &[&str], rate: u32) -> Connection {
    let mut c = Connection::new(id, account, adapters::now_ms());
    let mut syms: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
    syms.sort();
    c.symbols = syms;
    c.max_rate_ms = rate;
    c
}

fn quote(symbol: &str, bid: &str) -> Quote {
    let bid: Decimal = bid.parse().unwrap();
    Quote {
        symbol: symbol.into(),
        bid,
        ask: bid + Decimal::new(1, 2),
        last: Some(bid),
        ts: adapters::now_ms(),
    }
}

fn snapshot(
    account: Uuid,
    cash: i64,
    positions: &[(&str, &str, &str)],
    at: i64,
) -> PositionsSnapshot {
    PositionsSnapshot {
        account_id: account,
        cash: Decimal::from(cash),
        positions: positions
            .iter()
            .map(|(s, qty, avg)| SnapshotPosition {
                symbol: s.to_string(),
                position: Position {
                    qty: qty.parse().unwrap(),
                    avg_entry_price: avg.parse().unwrap(),
                    realized_pnl: Decimal::ZERO,
                },
            })
            .collect(),
        at,
    }
}

async fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    poll(SOON, TICK, async || {
        pred()
            .then_some(())
            .ok_or(format!("never happened: {what}"))
    })
    .await
}

/// The `(symbol, bid)` pairs of a message.
fn prices(m: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = m["prices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["symbol"].as_str().unwrap().to_string(),
                        p["bid"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn pair(s: &str, bid: &str) -> (String, String) {
    (s.to_string(), bid.to_string())
}

// ---- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn a_connection_in_the_table_at_start_is_loaded_and_gets_coalesced_prices() {
    let stack = Stack::new().await;
    let slow = conn_id();
    stack
        .table
        .put(&connection(
            &slow,
            Uuid::new_v4(),
            &["BTCUSDT", "ETHUSDT"],
            1_000,
        ))
        .await
        .unwrap();
    // Expired: DynamoDB has not deleted it yet; the fan-out must ignore it.
    let mut dead = connection(&conn_id(), Uuid::new_v4(), &["BTCUSDT"], 100);
    dead.ttl = adapters::now_ms() / 1000 - 1;
    stack.table.put(&dead).await.unwrap();

    let mut run = stack.start(|_| {}).await;
    run.until_indexed(&[&slow]).await;
    run.flush(&[quote("BTCUSDT", "61000"), quote("SOLUSDT", "150")]);
    eventually("the first message", || stack.api.count(&slow) == 1).await;
    let first = &stack.api.to(&slow)[0];
    assert_eq!(first["type"], "prices");
    assert_eq!(
        prices(first),
        [pair("BTCUSDT", "61000")],
        "only subscribed symbols"
    );

    // Within the next second (max_rate_ms = 1000) three flushes: they wait and coalesce.
    run.flush(&[quote("BTCUSDT", "61001")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.flush(&[quote("ETHUSDT", "3000"), quote("SOLUSDT", "151")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.flush(&[quote("BTCUSDT", "61002")]);
    eventually("the coalesced message", || stack.api.count(&slow) == 2).await;
    let second = &stack.api.to(&slow)[1];
    let apart = second["ts"].as_i64().unwrap() - first["ts"].as_i64().unwrap();
    assert!(
        apart >= 1_000,
        "the rate was not respected: {apart} ms apart"
    );
    assert_eq!(
        prices(second),
        [pair("BTCUSDT", "61002"), pair("ETHUSDT", "3000")],
        "one message, latest quote of each changed symbol"
    );
    // Nothing changed since: nothing more.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(stack.api.count(&slow), 2);
    assert_eq!(stack.api.gone_hits(&dead.connection_id), 0);
    assert!(stack.api.to(&dead.connection_id).is_empty());
    let c = run.fanout.stats.snapshot();
    assert_eq!(c.messages_sent, 2);
    assert_eq!(c.prices_sent, 3);
    assert_eq!(c.connections, 1);
    assert!(c.coalesced >= 1, "{c:?}");
    assert_eq!(c.subscribes, 1, "pings keep the pub/sub connection: {c:?}");
}

#[tokio::test]
async fn a_gone_connection_is_deleted_from_the_table_and_dropped_from_the_index() {
    let stack = Stack::new().await;
    let mut run = stack.start(|_| {}).await;
    let (gone, kept) = (conn_id(), conn_id());
    let account = Uuid::new_v4();
    // Connected a minute ago: a 410 now means gone (a fresh one gets a grace period).
    let mut old = connection(&gone, account, &["BTCUSDT"], 100);
    old.connected_at -= 60_000;
    stack.connect(&old).await;
    stack
        .connect(&connection(&kept, account, &["BTCUSDT"], 100))
        .await;
    run.until_indexed(&[&gone, &kept]).await;
    stack.api.gone.lock().unwrap().insert(gone.clone());

    run.flush(&[quote("BTCUSDT", "61000")]);
    eventually("the 410", || stack.api.gone_hits(&gone) == 1).await;
    eventually("the delivery to the other", || stack.api.count(&kept) == 1).await;
    run.until_indexed(&[&kept]).await;
    poll(SOON, Duration::from_millis(50), async || {
        let item = stack.table.get(&gone, adapters::now_ms()).await.unwrap();
        item.is_none()
            .then_some(())
            .ok_or("the item was not deleted".to_string())
    })
    .await;
    assert!(stack
        .table
        .get(&kept, adapters::now_ms())
        .await
        .unwrap()
        .is_some());

    for bid in ["61001", "61002", "61003"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        run.flush(&[quote("BTCUSDT", bid)]);
    }
    eventually("the later deliveries", || {
        stack.api.to(&kept).last().map(prices) == Some(vec![pair("BTCUSDT", "61003")])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.api.gone_hits(&gone),
        1,
        "no further POST to a gone connection"
    );
    let c = run.fanout.stats.snapshot();
    assert_eq!(c.pushes_gone, 1);
    assert_eq!(c.items_deleted, 1);
    assert_eq!(c.connections, 1);
    assert_eq!(c.accounts, 1);
}

#[tokio::test]
async fn a_positions_snapshot_sends_pnl_to_every_connection_of_the_account_and_no_other() {
    let stack = Stack::new().await;
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    // X's snapshot is in Redis before its connections: loaded when the first one appears,
    // with the cached price of what it holds (no ETH flush comes before its first PnL).
    stack
        .cache
        .put_snapshots(&[snapshot(x, 1_000, &[("ETHUSDT", "1", "2000")], 1)])
        .await
        .unwrap();
    stack
        .cache
        .put_quote(&quote("ETHUSDT", "2500"), 60_000)
        .await
        .unwrap();
    let mut run = stack.start(|_| {}).await;
    let (x_btc, x_none, y_btc) = (conn_id(), conn_id(), conn_id());
    stack
        .connect(&connection(&x_btc, x, &["BTCUSDT"], 100))
        .await;
    stack.connect(&connection(&x_none, x, &[], 100)).await;
    stack
        .connect(&connection(&y_btc, y, &["BTCUSDT"], 100))
        .await;
    run.until_indexed(&[&x_btc, &x_none, &y_btc]).await;

    // X's connections get its PnL from the loaded snapshot, priced on the cached ETH bid.
    eventually("X's first PnL", || {
        stack.api.count(&x_btc) == 1 && stack.api.count(&x_none) == 1
    })
    .await;
    for id in [&x_btc, &x_none] {
        let m = &stack.api.to(id)[0];
        assert_eq!(m["type"], "pnl");
        assert_eq!(m["pnl"]["cash"], "1000");
        assert_eq!(m["pnl"]["equity"], "3500", "{m}");
        assert_eq!(m["pnl"]["unrealized_pl"], "500", "{m}");
    }
    run.flush(&[quote("BTCUSDT", "61000")]);
    eventually("prices", || {
        stack.api.count(&x_btc) == 2 && stack.api.count(&y_btc) == 1
    })
    .await;
    assert!(
        stack.api.to(&x_btc)[1].get("pnl").is_none(),
        "X holds no BTC: PnL unchanged"
    );
    assert!(
        stack.api.to(&y_btc)[0].get("pnl").is_none(),
        "Y has no snapshot"
    );

    // A fill: the executor stores and publishes X's new snapshot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stack
        .cache
        .put_snapshots(&[snapshot(x, 500, &[("BTCUSDT", "0.01", "60000")], 2)])
        .await
        .unwrap();
    eventually("X's new PnL", || {
        stack.api.count(&x_btc) == 3 && stack.api.count(&x_none) == 2
    })
    .await;
    for id in [&x_btc, &x_none] {
        let m = stack.api.to(id).pop().unwrap();
        assert_eq!(m["type"], "pnl", "{m}");
        // 0.01 × (61000 − 60000) = 10; equity 500 + 610.
        assert_eq!(m["pnl"]["unrealized_pl"], "10", "{m}");
        assert_eq!(m["pnl"]["equity"], "1110", "{m}");
        assert_eq!(m["pnl"]["positions"][0]["symbol"], "BTCUSDT");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        stack.api.count(&y_btc),
        1,
        "no PnL message to another account"
    );

    // Now BTC moves: X's BTC watcher gets prices + PnL, the other X connection PnL alone.
    run.flush(&[quote("BTCUSDT", "62000")]);
    eventually("the next round", || {
        stack.api.count(&x_btc) == 4
            && stack.api.count(&x_none) == 3
            && stack.api.count(&y_btc) == 2
    })
    .await;
    let m = stack.api.to(&x_btc).pop().unwrap();
    assert_eq!(m["type"], "prices");
    assert_eq!(prices(&m), [pair("BTCUSDT", "62000")]);
    assert_eq!(m["pnl"]["unrealized_pl"], "20");
    assert_eq!(stack.api.to(&x_none).pop().unwrap()["type"], "pnl");
    assert!(stack.api.to(&y_btc).pop().unwrap().get("pnl").is_none());
    let c = run.fanout.stats.snapshot();
    assert_eq!(c.accounts, 2);
    assert!(c.snapshots_applied >= 2, "{c:?}");
}

#[tokio::test]
async fn notifications_follow_subscribes_and_disconnects() {
    let stack = Stack::new().await;
    let mut run = stack.start(|_| {}).await;
    let (a, b) = (conn_id(), conn_id());
    let account = Uuid::new_v4();
    stack
        .connect(&connection(&a, account, &["BTCUSDT", "ETHUSDT"], 100))
        .await;
    stack
        .connect(&connection(&b, account, &["ETHUSDT"], 100))
        .await;
    run.until_indexed(&[&a, &b]).await;
    run.flush(&[quote("BTCUSDT", "1"), quote("ETHUSDT", "2")]);
    eventually("both", || {
        stack.api.count(&a) == 1 && stack.api.count(&b) == 1
    })
    .await;
    assert_eq!(
        prices(&stack.api.to(&a)[0]),
        [pair("BTCUSDT", "1"), pair("ETHUSDT", "2")]
    );

    // a unsubscribes from BTC; b disconnects.
    stack
        .connect(&connection(&a, account, &["ETHUSDT"], 100))
        .await;
    stack.disconnect(&b).await;
    run.until_indexed(&[&a]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.flush(&[quote("BTCUSDT", "3")]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.flush(&[quote("ETHUSDT", "4")]);
    eventually("ETH to a", || stack.api.count(&a) == 2).await;
    assert_eq!(prices(&stack.api.to(&a)[1]), [pair("ETHUSDT", "4")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.api.count(&a), 2, "nothing for BTC any more");
    assert_eq!(stack.api.count(&b), 1, "nothing after the disconnect");
}

#[tokio::test]
async fn a_failed_push_is_retried_until_delivered_with_the_latest_quote() {
    let stack = Stack::new().await;
    let mut run = stack.start(|_| {}).await;
    let (flaky, fine) = (conn_id(), conn_id());
    stack
        .connect(&connection(&flaky, Uuid::new_v4(), &["BTCUSDT"], 100))
        .await;
    stack
        .connect(&connection(&fine, Uuid::new_v4(), &["BTCUSDT"], 100))
        .await;
    run.until_indexed(&[&flaky, &fine]).await;
    // The SDK retries a 500 itself (3 attempts): 4 failures make the first push fail.
    stack.api.fail.lock().unwrap().insert(flaky.clone(), 4);
    run.flush(&[quote("BTCUSDT", "100")]);
    eventually("the healthy one", || stack.api.count(&fine) == 1).await;
    run.flush(&[quote("BTCUSDT", "101")]);
    eventually("the retried delivery", || stack.api.count(&flaky) >= 1).await;
    eventually("a failure counted", || {
        run.fanout.stats.snapshot().push_failures >= 1
    })
    .await;
    assert_eq!(
        stack.api.failed_hits.lock().unwrap().get(&flaky).copied(),
        Some(4)
    );
    eventually("the latest quote reaches the flaky one", || {
        stack.api.to(&flaky).last().map(prices) == Some(vec![pair("BTCUSDT", "101")])
    })
    .await;
    // Order kept: never an older quote after a newer one.
    let bids: Vec<String> = stack
        .api
        .to(&flaky)
        .iter()
        .map(|m| prices(m)[0].1.clone())
        .collect();
    let mut sorted = bids.clone();
    sorted.sort();
    assert_eq!(bids, sorted);
    assert!(run.fanout.stats.snapshot().connections == 2);
}

#[tokio::test]
async fn the_periodic_rescan_repairs_missed_notifications() {
    let stack = Stack::new().await;
    let mut run = stack
        .start(|c| c.rescan_every = Duration::from_millis(500))
        .await;
    let (missed, stale) = (conn_id(), conn_id());
    // Written to the table without a notification (as if published while disconnected).
    stack
        .table
        .put(&connection(&missed, Uuid::new_v4(), &["BTCUSDT"], 100))
        .await
        .unwrap();
    // Notified, then deleted from the table without a notification.
    stack
        .connect(&connection(&stale, Uuid::new_v4(), &["BTCUSDT"], 100))
        .await;
    run.until_indexed(&[&stale]).await;
    stack.table.delete(&stale).await.unwrap();
    run.until_indexed(&[&missed]).await;
    run.flush(&[quote("BTCUSDT", "5")]);
    eventually("the missed one gets prices", || {
        stack.api.count(&missed) == 1
    })
    .await;
    let c = run.fanout.stats.snapshot();
    assert!(c.scans >= 2, "{c:?}");
    assert_eq!(c.subscribes, 1, "{c:?}");
}

/// A TCP proxy to Redis that the test can cut (every proxied connection closed) and pause
/// (new connections closed at once).
struct Proxy {
    url: String,
    paused: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn to_redis() -> Proxy {
        let target = service_env("REDIS_URL");
        let hostport = target
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (p, c) = (paused.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if p.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let hostport = hostport.clone();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&hostport).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Proxy {
            url,
            paused,
            conns,
            task,
        }
    }

    /// Closes every proxied connection; while `pause`, new ones are closed at once.
    fn cut(&self, pause: bool) {
        self.paused
            .store(pause, std::sync::atomic::Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut(true);
    }
}

#[tokio::test]
async fn after_a_lost_pub_sub_connection_it_subscribes_again_and_rescans() {
    let stack = Stack::new().await;
    let proxy = Proxy::to_redis().await;
    let url = proxy.url.clone();
    let mut run = stack.start(|c| c.redis_url = url).await;
    let stats = run.fanout.stats.clone();
    let (before, during) = (conn_id(), conn_id());
    let account = Uuid::new_v4();
    stack
        .connect(&connection(&before, account, &["BTCUSDT"], 100))
        .await;
    run.until_indexed(&[&before]).await;

    // Redis unreachable for the fan-out: a connect and a snapshot published now are lost
    // for it.
    proxy.cut(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .connect(&connection(&during, Uuid::new_v4(), &["BTCUSDT"], 100))
        .await;
    stack
        .cache
        .put_snapshots(&[snapshot(account, 42, &[], 1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.api.count(&before), 0);
    assert_eq!(stats.snapshot().subscribes, 1);
    proxy.resume();
    eventually("subscribed again", || stats.snapshot().subscribes == 2).await;
    eventually("rescanned", || stats.snapshot().scans >= 2).await;
    run.until_indexed(&[&before, &during]).await;
    eventually("the missed snapshot, read back", || {
        stack.api.count(&before) == 1
    })
    .await;
    let m = &stack.api.to(&before)[0];
    assert_eq!(m["type"], "pnl");
    assert_eq!(m["pnl"]["cash"], "42");
    run.flush(&[quote("BTCUSDT", "7")]);
    eventually("both get prices", || {
        stack.api.count(&before) == 2 && stack.api.count(&during) == 1
    })
    .await;
}

#[tokio::test]
async fn a_410_right_after_connect_is_retried_not_taken_for_gone() {
    // API Gateway answers 410 until the handshake that `$connect` belongs to completes.
    let stack = Stack::new().await;
    let mut run = stack.start(|_| {}).await;
    let young = conn_id();
    stack
        .connect(&connection(&young, Uuid::new_v4(), &["BTCUSDT"], 100))
        .await;
    run.until_indexed(&[&young]).await;
    stack.api.gone.lock().unwrap().insert(young.clone());
    run.flush(&[quote("BTCUSDT", "61000")]);
    eventually("the 410", || stack.api.gone_hits(&young) >= 1).await;
    // The handshake completes.
    stack.api.gone.lock().unwrap().remove(&young);
    eventually("the delivery after the retry", || {
        stack.api.to(&young).last().map(prices) == Some(vec![pair("BTCUSDT", "61000")])
    })
    .await;
    assert!(stack
        .table
        .get(&young, adapters::now_ms())
        .await
        .unwrap()
        .is_some());
    let c = run.fanout.stats.snapshot();
    assert_eq!((c.pushes_gone, c.items_deleted, c.connections), (0, 0, 1));
}
