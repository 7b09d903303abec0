//! Runs ingest against the in-process feed and a real Redis (`REDIS_URL`).
//!
//! `make test` starts a hermetic Redis and exports `REDIS_URL`; by hand:
//! `redis-server --port 6391 --save '' --appendonly no --daemonize yes` and
//! `REDIS_URL=redis://127.0.0.1:6391/ cargo test -p ingest`.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod common;
use common::{exists, post_quote, unique_prefix};

fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => panic!(
            "REDIS_URL is not set: run the tests with `make test`, which starts the services"
        ),
    }
}

/// Polls `key` until its JSON satisfies `pred`; returns it (panics after 15 s).
async fn wait_for(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    common::wait_for_within(conn, key, Duration::from_secs(15), pred).await
}

#[tokio::test]
async fn scripted_quotes_land_in_redis_exactly() {
    let Some(redis_url) = redis_url() else { return };
    let feed = feed::spawn(feed::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        symbols: vec!["btcusdt".into()],
        repeat_ms: 200,
        // Short ping cycle: ingest must answer pings or the feed drops it.
        ping_interval_secs: 1,
        pong_timeout_secs: 3,
        ..feed::Config::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("scripted");
    let config = market_data::Config {
        binance_ws_url: feed.ws_base_url(),
        symbols: vec!["BTCUSDT".into(), "solusdt".into()],
        redis_url: redis_url.clone(),
        key_prefix: prefix.clone(),
        flush_interval_ms: 50,
        price_ttl_ms: 60_000,
        stats_interval_secs: 0,
        heartbeat_file: common::heartbeat_path(&prefix),
        ..market_data::Config::defaults()
    };
    let ingest = market_data::spawn(&config).unwrap();
    let mut conn = common::redis(&redis_url).await;
    let btc_key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");

    // Replayed data arrives first.
    let replayed = wait_for(&mut conn, &btc_key, |v| v["bid"].is_string()).await;
    assert_eq!(replayed["symbol"], "BTCUSDT");

    post_quote(
        &feed,
        r#"{"symbol":"BTCUSDT","bid":"61000.10","ask":"61000.20","last":"61000.15"}"#,
    )
    .await;
    // Cached in canonical form: the same exact value, trailing zeros dropped.
    let v = wait_for(&mut conn, &btc_key, |v| v["bid"] == "61000.1").await;
    assert_eq!(v["ask"], "61000.2");
    assert_eq!(v["last"], "61000.15");
    // The value is exactly the shared contract.
    let q: domain::quote::Quote = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(q.bid, "61000.10".parse::<rust_decimal::Decimal>().unwrap());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(q.is_fresh(now_ms, 60_000), "{v}");
    let pttl = testkit::pttl(&mut conn, &btc_key).await;
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");

    // A symbol that was never recorded, with a JSON number parsed exactly.
    post_quote(
        &feed,
        r#"{"symbol":"SOLUSDT","bid":145.1200,"ask":"145.13","last":"145.125"}"#,
    )
    .await;
    let sol_key = adapters::keyspace::Keyspace::new(&prefix).price("SOLUSDT");
    let v = wait_for(&mut conn, &sol_key, |v| v["bid"] == "145.12").await;
    assert_eq!(v["ask"], "145.13");
    assert_eq!(v["last"], "145.125");

    // Past the feed's pong timeout the same connection still delivers: pongs are flushed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    post_quote(
        &feed,
        r#"{"symbol":"BTCUSDT","bid":"61001.00","ask":"61001.50"}"#,
    )
    .await;
    let v = wait_for(&mut conn, &btc_key, |v| v["bid"] == "61001").await;
    assert_eq!(v["ask"], "61001.5");
    assert_eq!(
        ingest.stream_stats.connects.load(Ordering::Relaxed),
        1,
        "ingest had to reconnect"
    );
    assert!(ingest.flush_stats.keys_written.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn reconnects_after_the_feed_goes_away() {
    let Some(redis_url) = redis_url() else { return };
    let listen: std::net::SocketAddr = {
        // Reserve a port, then free it for the feed (restarted on the same port below).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let feed_config = feed::Config {
        listen,
        symbols: vec!["ethusdt".into()],
        repeat_ms: 200,
        ..feed::Config::default()
    };
    let feed = feed::spawn(feed_config.clone()).await.unwrap();
    let prefix = unique_prefix("reconnect");
    let ingest = market_data::spawn(&market_data::Config {
        binance_ws_url: feed.ws_base_url(),
        symbols: vec!["ETHUSDT".into()],
        redis_url: redis_url.clone(),
        key_prefix: prefix.clone(),
        flush_interval_ms: 50,
        stats_interval_secs: 0,
        heartbeat_file: common::heartbeat_path(&prefix),
        ..market_data::Config::defaults()
    })
    .unwrap();
    let mut conn = common::redis(&redis_url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("ETHUSDT");
    post_quote(
        &feed,
        r#"{"symbol":"ETHUSDT","bid":"2500.01","ask":"2500.02"}"#,
    )
    .await;
    wait_for(&mut conn, &key, |v| v["bid"] == "2500.01").await;

    let stale = adapters::keyspace::Keyspace::new(&prefix).stale("ETHUSDT");
    assert!(!exists(&mut conn, &stale).await);

    // While the feed is down, the price is marked stale (within a flush or so).
    drop(feed);
    common::key_becomes(&mut conn, &stale, true, Duration::from_secs(15)).await;
    let feed = feed::spawn(feed_config).await.unwrap();
    post_quote(
        &feed,
        r#"{"symbol":"ETHUSDT","bid":"2600.01","ask":"2600.02","last":"2600.015"}"#,
    )
    .await;
    let v = wait_for(&mut conn, &key, |v| v["bid"] == "2600.01").await;
    assert_eq!(v["last"], "2600.015");
    assert!(ingest.stream_stats.connects.load(Ordering::Relaxed) >= 2);
    assert!(ingest.stream_stats.reconnects.load(Ordering::Relaxed) >= 1);
    // The fresh price came with the marker's deletion (same MULTI/EXEC).
    assert!(!exists(&mut conn, &stale).await);
}

#[tokio::test]
async fn redis_outage_keeps_the_latest_state_for_the_next_flush() {
    // Nothing listens on port 1: every write fails fast, and nothing panics.
    let mut flusher = market_data::flush::Flusher::new("redis://127.0.0.1:1/", "x:", 1000).unwrap();
    let book = Mutex::new(market_data::Book::new());
    let update = market_data::parse::parse(
        r#"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1.5","B":"1","a":"1.6","A":"1"}}"#,
    )
    .unwrap()
    .unwrap();
    book.lock().unwrap().apply(&update, 42);
    assert!(!flusher.flush_once(&book).await);
    assert!(!flusher.flush_once(&book).await);
    let quotes = book.lock().unwrap().take_dirty();
    assert_eq!(quotes.len(), 1);
    assert_eq!(quotes[0].bid.to_string(), "1.5");
    assert_eq!(flusher.stats.failures.load(Ordering::Relaxed), 2);
}
