//! The webhook function with each of its dependencies down answers 503
//! `service_unavailable` with `Retry-After` (TradingView does not retry, but the answer is
//! recorded, and a 503 tells the owner the alert may be sent again): PostgreSQL (the
//! webhook's lookup), Redis (the sender's failure budget; the order's budget and pending
//! copy for TradingView's own addresses, which skip the first) and SQS (the enqueue, whose
//! pending copy is cleaned up). Each test points one client at a closed port.

mod common;

use adapters::cache::Cache;
use adapters::queue::CommandQueue;
use app::Deps;
use common::{alert, closed_port, hook, send, SENDER};

/// The TradingView address the alerts of every TradingView user come from.
const TRADINGVIEW: &str = app::webhooks::TRADINGVIEW_IPS[0];

#[tokio::test]
async fn postgres_down_is_a_503() {
    let deps = testkit::app_deps().await;
    let h = hook(&deps).await;
    let config = deps.config.clone();
    let ledger = adapters::ledger::Ledger::connect_lazy(
        &format!(
            "postgres://trading:trading@127.0.0.1:{}/trading",
            closed_port()
        ),
        1,
    )
    .expect("a lazy pool");
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    let (client, url) = testkit::fifo_queue("wh-pg-down").await;
    let down = Deps::with(
        config,
        ledger,
        cache,
        CommandQueue::from_client(&url, client),
    )
    .expect("deps");
    for ip in [SENDER, TRADINGVIEW] {
        let r = send(&down, &h.id, &alert(Some(&h.passphrase), "pg"), ip).await;
        r.expect_unavailable(ip);
        assert!(r.text.contains("postgres"), "{r:?}");
    }
}

#[tokio::test]
async fn redis_down_is_a_503() {
    let deps = testkit::app_deps().await;
    let h = hook(&deps).await;
    let mut config = deps.config.clone();
    config.redis.url = format!("redis://127.0.0.1:{}/", closed_port());
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    let (client, url) = testkit::fifo_queue("wh-redis-down").await;
    let down = Deps::with(
        config,
        testkit::ledger().await,
        cache,
        CommandQueue::from_client(&url, client),
    )
    .expect("deps");
    // Another sender: its failure budget is read first. TradingView's address: the order's
    // budget and the pending copy need Redis.
    for ip in [SENDER, TRADINGVIEW] {
        let r = send(&down, &h.id, &alert(Some(&h.passphrase), "redis"), ip).await;
        r.expect_unavailable(ip);
        assert!(r.text.contains("redis"), "{r:?}");
    }
    let messages = down
        .queue
        .client()
        .await
        .receive_message()
        .queue_url(down.queue.url())
        .send()
        .await
        .expect("moto")
        .messages
        .unwrap_or_default();
    assert!(messages.is_empty(), "nothing enqueued");
}

#[tokio::test]
async fn sqs_down_is_a_503_and_leaves_no_pending_copy() {
    let deps = testkit::app_deps().await;
    let h = hook(&deps).await;
    testkit::put_quote(
        &deps.cache,
        "BTCUSDT",
        rust_decimal_macros::dec!(60000),
        rust_decimal_macros::dec!(60000.5),
    )
    .await;
    let config = deps.config.clone();
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let queue = CommandQueue::from_client(deps.queue.url(), aws_sdk_sqs::Client::new(&sdk));
    let down = Deps::with(config, testkit::ledger().await, cache, queue).expect("deps");

    let r = send(&down, &h.id, &alert(Some(&h.passphrase), "sqs"), SENDER).await;
    r.expect_unavailable("SQS down");
    assert!(r.text.contains("queue"), "{r:?}");
    assert!(
        deps.cache
            .pending_orders(h.account_id)
            .await
            .unwrap()
            .is_empty(),
        "the pending copy of the order that could not be enqueued is gone"
    );
    // The owner sees the refused delivery.
    let deliveries = deps
        .ledger
        .deliveries(h.account_id, &h.id, 10)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].status, 503, "{deliveries:?}");
    // Sent again once SQS is back, the same alert is accepted.
    let r = send(&deps, &h.id, &alert(Some(&h.passphrase), "sqs"), SENDER).await;
    assert_eq!(r.status, 200, "{r:?}");
}
