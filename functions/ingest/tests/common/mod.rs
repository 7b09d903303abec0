//! Helpers shared by the ingest integration tests (real feed in-process, real Redis).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testkit::wait::poll;

/// `REDIS_URL`, or a panic: these tests never skip.
pub fn redis_url() -> String {
    match std::env::var("REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "REDIS_URL is not set: run the tests with `make test`, which starts the services"
        ),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-ingest-{name}-{}-{nanos}:", std::process::id())
}

pub async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A feed on an ephemeral port replaying no recording (only scripted quotes), pinging
/// every second and re-emitting scripted quotes every 100 ms.
pub async fn quiet_feed(tweak: impl FnOnce(&mut feed::Config)) -> feed::Feed {
    // No recordings: only scripted quotes (and faults) reach ingest.
    let empty =
        std::env::temp_dir().join(format!("ingest-tests-no-recordings-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let mut config = feed::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: empty,
        repeat_ms: 100,
        ping_interval_secs: 1,
        pong_timeout_secs: 3,
        ..feed::Config::default()
    };
    tweak(&mut config);
    feed::spawn(config).await.unwrap()
}

pub fn ingest_config(feed: &feed::Feed, symbols: &[&str], prefix: &str) -> market_data::Config {
    market_data::Config {
        binance_ws_url: feed.ws_base_url(),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        redis_url: redis_url(),
        key_prefix: prefix.to_string(),
        flush_interval_ms: 50,
        price_ttl_ms: 60_000,
        stats_interval_secs: 0,
        heartbeat_file: heartbeat_path(prefix),
        ..market_data::Config::defaults()
    }
}

/// A heartbeat file of this test's own (not the default path, which a local ingest may use).
pub fn heartbeat_path(prefix: &str) -> std::path::PathBuf {
    let name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("{name}heartbeat"))
}

pub async fn post_quote(feed: &feed::Feed, body: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{}/quotes", feed.http_base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

/// `POST {feed}/__control/...`; returns the JSON answer.
pub async fn control(feed: &feed::Feed, path_and_query: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/__control/{path_and_query}",
            feed.http_base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path_and_query}");
    resp.json().await.unwrap()
}

/// How often the helpers below poll.
const TICK: Duration = Duration::from_millis(20);

/// Polls `pred` every 20 ms until it holds; panics with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    poll(within, TICK, async || {
        pred()
            .then_some(())
            .ok_or(format!("never happened: {what}"))
    })
    .await
}

/// Polls the feed's connection records until `pred` holds (panics after `within`).
pub async fn connections_until(
    feed: &feed::Feed,
    within: Duration,
    pred: impl Fn(&[feed::hub::ConnectionInfo]) -> bool,
) -> Vec<feed::hub::ConnectionInfo> {
    poll(within, TICK, async || {
        let list = feed.connections();
        if pred(&list) {
            Ok(list)
        } else {
            Err(format!("feed connections never matched: {list:#?}"))
        }
    })
    .await
}

/// Polls `key` until its JSON satisfies `pred`; returns it (panics after `within`).
pub async fn wait_for_within(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let mut seen: Option<String> = None;
    poll(within, TICK, async || {
        let raw: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
        if let Some(raw) = &raw {
            let v: Value = serde_json::from_str(raw).unwrap();
            if pred(&v) {
                return Ok(v);
            }
        }
        seen = raw.or(seen.take());
        Err(format!("{key} never matched; last value {seen:?}"))
    })
    .await
}

pub async fn wait_for(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_for_within(conn, key, Duration::from_secs(15), pred).await
}

pub async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

/// Polls whether `key` exists until it is `want` (panics after `within`).
pub async fn key_becomes(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    want: bool,
    within: Duration,
) {
    poll(within, TICK, async || {
        let went = if want { "appeared" } else { "went away" };
        (exists(conn, key).await == want)
            .then_some(())
            .ok_or(format!("{key} never {went}"))
    })
    .await
}

/// Watches `key` every 10 ms in the background; `seen()` says whether it ever existed.
pub struct KeyWatch {
    seen: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyWatch {
    pub async fn start(url: &str, key: String) -> Self {
        let mut conn = redis(url).await;
        let seen = Arc::new(Mutex::new(false));
        let flag = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if exists(&mut conn, &key).await {
                    *flag.lock().unwrap() = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self { seen, task }
    }

    pub fn seen(&self) -> bool {
        *self.seen.lock().unwrap()
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A flush hook recording (wall ms, quote) of every quote it is given.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<(i64, domain::quote::Quote)>>>);

impl market_data::FlushHook for Recorder {
    fn on_flush(&mut self, quotes: &[domain::quote::Quote]) {
        let now = now_ms();
        let mut v = self.0.lock().unwrap();
        v.extend(quotes.iter().map(|q| (now, q.clone())));
    }
}

impl Recorder {
    /// Wall-clock times of the writes of `symbol`.
    pub fn times(&self, symbol: &str) -> Vec<i64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, q)| q.symbol == symbol)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}
