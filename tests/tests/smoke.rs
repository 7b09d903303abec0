//! The system is up: health through the devstack, and the feed → ingest → Redis path
//! carries replayed (not scripted) prices.

use e2e::{Auth, Stack};

#[tokio::test]
async fn health_and_replayed_prices_reach_redis() {
    let stack = Stack::start().await;

    let r = stack.get("/health", &Auth::None).await;
    r.expect(200);
    assert_eq!(r.json["status"], "ok", "{r}");
    for dep in ["postgres", "redis", "queue"] {
        assert_eq!(r.json["checks"][dep], "ok", "{dep}: {r}");
    }

    // Nothing is scripted here: the feed replays its recordings.
    let feed = stack.feed_health().await;
    let replaying: Vec<&str> = feed["replaying"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        replaying.iter().any(|s| s.eq_ignore_ascii_case("BTCUSDT")),
        "the feed replays BTCUSDT: {feed}"
    );
    assert!(
        feed["controlled"].as_array().is_some_and(|c| c.is_empty()),
        "nothing scripted: {feed}"
    );

    let first = stack
        .wait_for_quote("BTCUSDT", "a replayed price", |q| {
            q.bid > rust_decimal::Decimal::ZERO && q.ask >= q.bid
        })
        .await;
    // The recording (2024-08-08) trades BTC between about 54k and 63k USDT.
    assert!(
        first.bid > e2e::dec("10000") && first.ask < e2e::dec("200000"),
        "a plausible BTC price: {first:?}"
    );
    // And it keeps coming: a newer update follows.
    let later = stack
        .wait_for_quote("BTCUSDT", "updated", |q| q.ts > first.ts)
        .await;
    assert!(
        later.bid > rust_decimal::Decimal::ZERO && later.ask >= later.bid,
        "{later:?}"
    );
    stack
        .wait_for_quote("ETHUSDT", "a replayed price", |q| {
            q.bid > rust_decimal::Decimal::ZERO && q.ask >= q.bid
        })
        .await;

    // The replayed price is what the API marks with: a user can trade on it.
    let user = stack.new_user().await;
    let r = stack.get("/v2/assets/BTCUSDT", &user.key()).await;
    r.expect(200);
    assert_eq!(r.str("min_trade_increment"), "0.00001", "{r}");
    assert_eq!(r.str("price_increment"), "0.01", "{r}");
}
