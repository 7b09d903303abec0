//! A dependency that is down answers 503 `service_unavailable` with `Retry-After`, on every
//! route that needs it, and leaves nothing half done: each test points one client (SQS,
//! Redis) at a closed port, the others at the real services. PostgreSQL down, and Redis
//! down for API-key requests, are in `handler.rs`.

mod common;

use adapters::cache::Cache;
use api::Deps;
use common::{
    assert_nothing_enqueued, call, closed_port, drain, queue_down, resting_buy, sqs_silent_client,
    user, Auth,
};
use domain::order::{order_id_for, OrderRef, OrderStatus};
use lambda_http::http::Method;
use rust_decimal_macros::dec;
use serde_json::json;
use testkit::put_quote;

/// The same services and key prefix as `deps`, with its queue behind an SQS that is down.
async fn with_sqs_down(deps: &Deps) -> Deps {
    let config = deps.config.clone();
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    Deps::with(
        config,
        testkit::ledger().await,
        cache,
        queue_down(deps).await,
    )
    .expect("deps")
}

/// Found by the chaos suite's queue pause: moto stopped (SIGSTOP) for 30 s accepted the
/// api's connections and never answered, and every order placed meanwhile hung until API
/// Gateway answered 504 at 29 s. The SDK's calls are bounded now (`adapters::aws`).
#[tokio::test]
async fn a_queue_that_never_answers_is_a_503_within_the_sdk_s_bounds_not_a_hang() {
    let deps = testkit::app_deps().await;
    let silent = Deps::with(
        deps.config.clone(),
        testkit::ledger().await,
        Cache::new(&deps.config.redis.url, &deps.config.redis.key_prefix).expect("cache"),
        adapters::queue::CommandQueue::from_client(deps.queue.url(), sqs_silent_client().await),
    )
    .expect("deps");
    let alice = user(&deps, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    let order = json!({"symbol": "BTCUSDT", "qty": "0.01", "side": "buy", "type": "limit", "time_in_force": "gtc", "limit_price": "50000"});
    // Well past the SDK's bound (5 s) and short of API Gateway's 29 s: a hang fails here.
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        call(
            &silent,
            Method::POST,
            "/v2/orders",
            &alice.key(),
            Some(&order),
        ),
    )
    .await
    .expect("an answer before API Gateway would give up");
    r.expect_unavailable("place with a silent queue");
    assert_nothing_enqueued(&deps, alice.account_id, "place with a silent queue").await;
}

#[tokio::test]
async fn sqs_down_place_is_a_503_and_leaves_no_pending_copy() {
    let deps = testkit::app_deps().await;
    let down = with_sqs_down(&deps).await;
    let alice = user(&deps, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    let order = json!({"symbol": "BTCUSDT", "qty": "0.01", "side": "buy", "type": "limit", "time_in_force": "gtc", "limit_price": "50000", "client_order_id": "through-the-outage"});

    let r = call(
        &down,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&order),
    )
    .await;
    r.expect_unavailable("place with SQS down");
    assert!(
        r.json["message"].as_str().unwrap().contains("queue"),
        "{r:?}"
    );
    // The order the api could not enqueue is nowhere: no pending copy, nothing listed.
    let id = order_id_for(alice.account_id, "through-the-outage");
    let order_ref = OrderRef {
        account_id: alice.account_id,
        order_id: id,
    };
    assert!(deps.cache.pending_order(order_ref).await.unwrap().is_none());
    assert_nothing_enqueued(&deps, alice.account_id, "place with SQS down").await;
    let r = call(
        &deps,
        Method::GET,
        &format!("/v2/orders/{id}"),
        &alice.key(),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{r:?}");
    let r = call(&deps, Method::GET, "/v2/orders", &alice.key(), None).await;
    assert_eq!(r.json, json!([]), "{r:?}");

    // The client's retry, once SQS is back, places it: one order, one command.
    let r = call(
        &deps,
        Method::POST,
        "/v2/orders",
        &alice.key(),
        Some(&order),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["id"], id.to_string(), "{r:?}");
    assert_eq!(drain(&deps).await.len(), 1);
}

#[tokio::test]
async fn sqs_down_cancel_replace_and_cancel_all_are_503s_and_change_nothing() {
    let deps = testkit::app_deps().await;
    let down = with_sqs_down(&deps).await;
    let alice = user(&deps, dec!(100000)).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
    let resting = resting_buy(&deps, alice.account_id).await;

    let r = call(
        &down,
        Method::DELETE,
        &format!("/v2/orders/{resting}"),
        &alice.key(),
        None,
    )
    .await;
    r.expect_unavailable("cancel with SQS down");
    let r = call(
        &down,
        Method::PATCH,
        &format!("/v2/orders/{resting}"),
        &alice.key(),
        Some(&json!({"limit_price": "51000", "client_order_id": "the-replacement"})),
    )
    .await;
    r.expect_unavailable("replace with SQS down");
    let r = call(&down, Method::DELETE, "/v2/orders", &alice.key(), None).await;
    r.expect_unavailable("cancel all with SQS down");

    // The replacement left no pending copy; the order is as it was; nothing was enqueued.
    assert_nothing_enqueued(&deps, alice.account_id, "replace and cancel with SQS down").await;
    let stored = deps
        .ledger
        .order(OrderRef {
            account_id: alice.account_id,
            order_id: resting,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, OrderStatus::New);
    let r = call(
        &deps,
        Method::GET,
        "/v2/orders?status=all",
        &alice.key(),
        None,
    )
    .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{r:?}");
}

#[tokio::test]
async fn health_names_the_queue_when_sqs_is_down() {
    let deps = testkit::app_deps().await;
    let r = call(&deps, Method::GET, "/health", &Auth::None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["checks"]["queue"], "ok", "{r:?}");

    let down = with_sqs_down(&deps).await;
    let r = call(&down, Method::GET, "/health", &Auth::None, None).await;
    r.expect_unavailable("health with SQS down");
    let message = r.json["message"].as_str().unwrap_or_default();
    assert!(message.contains("queue"), "{r:?}");
    assert!(
        !message.contains("redis") && !message.contains("postgres"),
        "only the queue is down: {r:?}"
    );
}

#[tokio::test]
async fn session_auth_with_redis_down_is_a_503_not_a_401() {
    let deps = testkit::app_deps().await;
    let alice = user(&deps, dec!(1000)).await;
    // Redis down for every client of the function: sessions, limiter, pending orders.
    let mut config = deps.config.clone();
    config.redis.url = format!("redis://127.0.0.1:{}/", closed_port());
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    let (client, url) = testkit::fifo_queue("down").await;
    let down = Deps::with(
        config,
        testkit::ledger().await,
        cache,
        adapters::queue::CommandQueue::from_client(&url, client),
    )
    .expect("deps");

    // A live session cannot be looked up: the client is told to retry, not to log in again.
    for (method, path) in [
        (Method::GET, "/v2/account"),
        (Method::GET, "/v2/api_keys"),
        (Method::POST, "/v2/auth/logout"),
        (Method::POST, "/v2/auth/logout_all"),
    ] {
        let r = call(&down, method, path, &alice.bearer(), Some(&json!({}))).await;
        r.expect_unavailable(path);
    }
    // Its session survived the outage.
    let r = call(&deps, Method::GET, "/v2/account", &alice.bearer(), None).await;
    assert_eq!(r.status, 200, "{r:?}");
}
