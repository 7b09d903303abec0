//! Ingest robustness against the real feed (in-process) and a real Redis (`REDIS_URL`):
//! keepalive, dropped connections, `serverShutdown`, connection max age, stalls, bursts,
//! stale markers and the flush hook.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

/// Generous bound for anything that should take well under a second.
const SOON: Duration = Duration::from_secs(15);
/// The recovery the issue asks for.
const RECOVERY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn pings_are_answered_with_their_payload() {
    let feed = quiet_feed(|c| {
        c.ping_interval_secs = 1;
        c.pong_timeout_secs = 2;
    })
    .await;
    let prefix = unique_prefix("pings");
    let ingest = market_data::spawn(&ingest_config(&feed, &["BTCUSDT"], &prefix)).unwrap();
    // Three pings answered with the right payload on the one connection; the feed drops a
    // client that leaves a ping unanswered for 2 s, so this also proves the pongs are sent
    // promptly (flushed), not at some later write.
    let list = connections_until(&feed, SOON, |c| c.len() == 1 && c[0].pongs >= 3).await;
    assert!(list[0].closed_at_ms.is_none(), "{list:#?}");
    assert_eq!(
        list[0].unsolicited_pongs, 0,
        "every pong echoes a ping: {list:#?}"
    );
    assert_eq!(ingest.stream_stats.connects.load(Ordering::Relaxed), 1);
    assert!(ingest.stream_stats.pings.load(Ordering::Relaxed) >= 3);
}

#[tokio::test]
async fn a_dropped_connection_is_replaced_and_prices_resume() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("drop");
    let ingest = market_data::spawn(&ingest_config(&feed, &["BTCUSDT"], &prefix)).unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "100.1").await;

    assert_eq!(control(&feed, "drop").await["connections"], 1);
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"101.1","ask":"101.2"}"#).await;
    wait_for_within(&mut conn, &key, RECOVERY, |v| v["bid"] == "101.1").await;
    let list = connections_until(&feed, SOON, |c| c.len() == 2).await;
    assert_eq!(list[0].close_reason.as_deref(), Some("dropped (control)"));
    assert!(list[1].closed_at_ms.is_none());
    assert_eq!(ingest.stream_stats.reconnects.load(Ordering::Relaxed), 1);
    assert_eq!(ingest.stream_stats.rotations.load(Ordering::Relaxed), 0);
}

/// Checks, from the feed's own records, that connection `i + 1` was open before connection
/// `i` closed, and that ingest (not the feed) closed connection `i`: a switch without a gap.
fn assert_overlapping(list: &[feed::hub::ConnectionInfo], upto: usize) {
    for w in list[..=upto].windows(2) {
        let (old, new) = (&w[0], &w[1]);
        let closed = old
            .closed_at_ms
            .unwrap_or_else(|| panic!("connection {} still open: {list:#?}", old.id));
        assert_eq!(
            old.close_reason.as_deref(),
            Some("closed by client"),
            "ingest must close the old connection itself: {list:#?}"
        );
        assert!(
            new.connected_at_ms <= closed,
            "connection {} opened after {} closed: {list:#?}",
            new.id,
            old.id
        );
    }
}

#[tokio::test]
async fn server_shutdown_rotates_to_a_new_connection_without_a_gap() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("shutdown");
    let recorder = Recorder::default();
    let ingest = market_data::spawn_with_hook(
        &ingest_config(&feed, &["BTCUSDT"], &prefix),
        Some(Box::new(recorder.clone())),
    )
    .unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    let stale = adapters::keyspace::Keyspace::new(&prefix).stale("BTCUSDT");
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "100.1").await;
    key_becomes(&mut conn, &stale, false, SOON).await;
    let watch = KeyWatch::start(&url, stale.clone()).await;

    // The feed would close the connection 10 s after the event: ingest must not wait.
    let shutdown_at = now_ms();
    assert_eq!(
        control(&feed, "shutdown?grace_ms=10000").await["connections"],
        1
    );
    let list = connections_until(&feed, RECOVERY, |c| {
        c.len() == 2 && c[0].closed_at_ms.is_some()
    })
    .await;
    assert_overlapping(&list, 1);
    assert!(list[1].closed_at_ms.is_none());
    let stats = &ingest.stream_stats;
    assert_eq!(stats.server_shutdowns.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rotations.load(Ordering::Relaxed), 1);
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0);

    // Prices kept flowing: the scripted quote (re-emitted every 100 ms) was written after
    // the switch, a new price lands, and the stale marker never appeared.
    let switched = list[0].closed_at_ms.unwrap();
    eventually(SOON, "a write after the switch", || {
        recorder.times("BTCUSDT").iter().any(|t| *t > switched)
    })
    .await;
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"102.1","ask":"102.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "102.1").await;
    assert!(
        !watch.seen(),
        "the price was marked stale during the rotation"
    );
    assert!(switched >= shutdown_at);
}

#[tokio::test]
async fn connections_are_rotated_at_their_max_age_without_a_gap() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("maxage");
    let mut config = ingest_config(&feed, &["BTCUSDT"], &prefix);
    config.connection_max_age_secs = 1;
    let ingest = market_data::spawn(&config).unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    let stale = adapters::keyspace::Keyspace::new(&prefix).stale("BTCUSDT");
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "100.1").await;
    key_becomes(&mut conn, &stale, false, SOON).await;
    let watch = KeyWatch::start(&url, stale.clone()).await;

    // Three rotations, each opening the new connection before closing the old one.
    let list = connections_until(&feed, SOON, |c| {
        c.len() >= 4 && c[..3].iter().all(|c| c.closed_at_ms.is_some())
    })
    .await;
    assert_overlapping(&list, 3);
    let stats = &ingest.stream_stats;
    assert!(stats.rotations.load(Ordering::Relaxed) >= 3);
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0);
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"103.1","ask":"103.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "103.1").await;
    assert!(
        !watch.seen(),
        "the price was marked stale during a rotation"
    );
}

#[tokio::test]
async fn a_stalled_connection_is_replaced_and_the_stale_marker_comes_and_goes() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("stall1");
    let mut config = ingest_config(&feed, &["BTCUSDT"], &prefix);
    config.stall_timeout_ms = 500;
    let ingest = market_data::spawn(&config).unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    let stale = adapters::keyspace::Keyspace::new(&prefix).stale("BTCUSDT");
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "100.1").await;
    key_becomes(&mut conn, &stale, false, SOON).await;

    // The open connection hangs for a minute; a new one would work.
    control(&feed, "stall?ms=60000").await;
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"104.1","ask":"104.2"}"#).await;
    wait_for_within(&mut conn, &key, RECOVERY, |v| v["bid"] == "104.1").await;
    key_becomes(&mut conn, &stale, false, SOON).await;
    let stats = &ingest.stream_stats;
    assert!(stats.stalls.load(Ordering::Relaxed) >= 1);
    assert!(stats.rotations.load(Ordering::Relaxed) >= 1);
    let list = connections_until(&feed, SOON, |c| c[0].closed_at_ms.is_some()).await;
    assert_eq!(list[0].close_reason.as_deref(), Some("closed by client"));
    // The hung connection delivered nothing more; the marker was set while nothing came.
    assert!(ingest.flush_stats.stale_marked.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_feed_wide_stall_marks_prices_stale_until_data_returns() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("stall2");
    let mut config = ingest_config(&feed, &["BTCUSDT", "SOLUSDT"], &prefix);
    config.stall_timeout_ms = 300;
    let ingest = market_data::spawn(&config).unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    let stale = adapters::keyspace::Keyspace::new(&prefix).stale("BTCUSDT");
    // SOLUSDT never gets a quote: marked stale from the start, and stays so.
    let sol_stale = adapters::keyspace::Keyspace::new(&prefix).stale("SOLUSDT");
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    wait_for(&mut conn, &key, |v| v["bid"] == "100.1").await;
    key_becomes(&mut conn, &sol_stale, true, SOON).await;
    key_becomes(&mut conn, &stale, false, SOON).await;

    // Nothing from the feed for 3 s, on any connection: the price is marked stale (with
    // the price's TTL) while it lasts...
    control(&feed, "stall?ms=3000&all=true").await;
    key_becomes(&mut conn, &stale, true, Duration::from_millis(2500)).await;
    let pttl = testkit::pttl(&mut conn, &stale).await;
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    // ...and cleared with the first fresh write once data returns.
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"105.1","ask":"105.2"}"#).await;
    let v = wait_for(&mut conn, &key, |v| v["bid"] == "105.1").await;
    assert!(
        !exists(&mut conn, &stale).await,
        "fresh price {v} still marked stale"
    );
    assert!(exists(&mut conn, &sol_stale).await);
    assert!(ingest.stream_stats.stalls.load(Ordering::Relaxed) >= 1);
    assert!(ingest.flush_stats.stale_cleared.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_burst_coalesces_into_one_entry_per_symbol() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("burst");
    let ingest =
        market_data::spawn(&ingest_config(&feed, &["BTCUSDT", "SOLUSDT"], &prefix)).unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let btc = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    let sol = adapters::keyspace::Keyspace::new(&prefix).price("SOLUSDT");
    post_quote(
        &feed,
        r#"{"symbol":"BTCUSDT","bid":"61000.10","ask":"61000.20"}"#,
    )
    .await;
    post_quote(
        &feed,
        r#"{"symbol":"SOLUSDT","bid":"145.12","ask":"145.13"}"#,
    )
    .await;
    wait_for(&mut conn, &btc, |v| v["bid"] == "61000.1").await;
    wait_for(&mut conn, &sol, |v| v["bid"] == "145.12").await;

    let stats = &ingest.stream_stats;
    let updates0 = stats.updates.load(Ordering::Relaxed);
    let coalesced0 = ingest.book.lock().unwrap().coalesced();
    let flushes0 = ingest.flush_stats.flushes.load(Ordering::Relaxed);
    let n: u64 = 100_000;
    control(&feed, &format!("burst?n={n}")).await;
    let mut max_symbols = 0;
    let mut max_dirty = 0;
    eventually(Duration::from_secs(60), "the whole burst read", || {
        let b = ingest.book.lock().unwrap();
        max_symbols = max_symbols.max(b.symbols());
        max_dirty = max_dirty.max(b.dirty_len());
        stats.updates.load(Ordering::Relaxed) >= updates0 + n
    })
    .await;
    // The book never holds more than one entry per symbol, whatever the tick rate.
    assert_eq!(max_symbols, 2);
    assert!(max_dirty <= 2, "{max_dirty}");
    let updates = stats.updates.load(Ordering::Relaxed) - updates0;
    let coalesced = ingest.book.lock().unwrap().coalesced() - coalesced0;
    let flushes = ingest.flush_stats.flushes.load(Ordering::Relaxed) - flushes0;
    // Every update was either merged into a pending write or started one (≤ 2 per flush,
    // plus the ones pending now; the counters are read one after the other, so allow for
    // the quotes the feed repeats meanwhile).
    assert!(
        coalesced + 2 * (flushes + 2) + 4 >= updates,
        "updates {updates}, coalesced {coalesced}, flushes {flushes}"
    );
    assert!(coalesced >= n / 2, "{coalesced}");
    assert_eq!(stats.superseded.load(Ordering::Relaxed), 0);
    // The burst ends on the current prices: that is what Redis shows.
    wait_for(&mut conn, &btc, |v| {
        v["bid"] == "61000.1" && v["ask"] == "61000.2"
    })
    .await;
    wait_for(&mut conn, &sol, |v| v["bid"] == "145.12").await;
    let list = feed.connections();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].burst_sent, n);
}

#[tokio::test]
async fn the_flush_hook_sees_exactly_what_was_written() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("hook");
    let recorder = Recorder::default();
    let ingest = market_data::spawn_with_hook(
        &ingest_config(&feed, &["BTCUSDT"], &prefix),
        Some(Box::new(recorder.clone())),
    )
    .unwrap();
    let url = redis_url();
    let mut conn = redis(&url).await;
    let key = adapters::keyspace::Keyspace::new(&prefix).price("BTCUSDT");
    post_quote(
        &feed,
        r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2","last":"100.15"}"#,
    )
    .await;
    wait_for(&mut conn, &key, |v| v["bid"] == "100.1").await;
    eventually(SOON, "the hook saw the quote", || {
        recorder.0.lock().unwrap().iter().any(|(_, q)| {
            q.bid == "100.1".parse().unwrap() && q.last == Some("100.15".parse().unwrap())
        })
    })
    .await;
    // A final flush goes through the same flusher (and hook); once the feed is gone and it
    // is done, every key written was seen by the hook, one quote per symbol per flush.
    drop(feed);
    assert!(ingest.final_flush().await);
    let written = ingest.flush_stats.keys_written.load(Ordering::Relaxed) as usize;
    assert_eq!(recorder.len(), written);
    let all = recorder.0.lock().unwrap().clone();
    assert!(all.iter().all(|(_, q)| q.symbol == "BTCUSDT"));
}
