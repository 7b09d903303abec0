//! The ws function with a dependency down refuses the handshake with 503
//! `service_unavailable` and a `Retry-After` (never a 401 that would send the client back to
//! its login): DynamoDB (the connection table) down on `$connect` and `$disconnect`, and
//! Redis (sessions) down on `$connect` with a session token.
//!
//! DynamoDB is down for this whole test binary: its SDK configuration is the process's, read
//! from `AWS_ENDPOINT_URL`, which every test here points at a closed port before any client
//! exists. No other test shares the binary (or, under nextest, the process).

use std::sync::Once;

use adapters::auth::{digest, new_key_id, random_secret};
use adapters::cache::{Cache, Session};
use adapters::connections::ConnectionTable;
use rust_decimal_macros::dec;
use uuid::Uuid;
use ws::{handle, Deps, WsRequest, WsResponse};

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// Points the AWS SDK of this process at a closed port, once, before any client is built.
fn dynamodb_down() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        );
        // The first refusal is the answer (the SDK would retry, more slowly, to the same end).
        std::env::set_var("AWS_MAX_ATTEMPTS", "1");
    });
}

struct Fixture {
    deps: Deps,
    token: String,
    key_id: String,
    secret: String,
}

/// An account with a session and an API key on the real PostgreSQL and Redis; the ws
/// function's clients with `redis_url` for its cache.
async fn fixture(redis_url: Option<String>) -> Fixture {
    let ledger = testkit::ledger().await;
    let (user_id, account_id) = testkit::account_with_cash(&ledger, dec!(1000)).await;
    let mut config = testkit::config();
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    let token = random_secret();
    cache
        .put_session(
            &digest(&token),
            &Session {
                user_id,
                account_id,
            },
            &config.sessions,
        )
        .await
        .expect("session stored");
    let (key_id, secret) = (new_key_id(), random_secret());
    ledger
        .insert_api_key(&key_id, user_id, account_id, &digest(&secret))
        .await
        .expect("api key stored");
    if let Some(url) = redis_url {
        config.redis.url = url;
    }
    config.connections.table = format!("connections-{}", Uuid::new_v4().simple());
    let deps = Deps {
        table: ConnectionTable::new(&config.connections.table),
        ledger,
        cache: Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache"),
        catalog: domain::catalog::Catalog::builtin(),
        config,
    };
    Fixture {
        deps,
        token,
        key_id,
        secret,
    }
}

fn request(route: &str, query: &[(&str, &str)]) -> WsRequest {
    WsRequest {
        route_key: route.to_string(),
        connection_id: Uuid::new_v4().simple().to_string()[..16].to_string(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[track_caller]
fn expect_unavailable(r: &WsResponse, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r:?}");
    let body: serde_json::Value =
        serde_json::from_str(r.body.as_deref().unwrap_or_default()).expect("a JSON body");
    assert_eq!(body["code"], "service_unavailable", "{what}: {r:?}");
    assert!(r.retry_after.is_some_and(|s| s >= 1), "{what}: {r:?}");
    let proxy = r.clone().into_proxy_response();
    assert!(
        proxy.headers.contains_key("retry-after"),
        "{what}: API Gateway gets the header: {proxy:?}"
    );
}

#[tokio::test]
async fn dynamodb_down_refuses_connect_with_a_503_and_retry_after() {
    dynamodb_down();
    let f = fixture(None).await;
    for (what, query) in [
        ("session", vec![("token", f.token.as_str())]),
        (
            "API key",
            vec![
                ("key_id", f.key_id.as_str()),
                ("secret_key", f.secret.as_str()),
            ],
        ),
    ] {
        let r = handle(&f.deps, request("$connect", &query)).await;
        expect_unavailable(&r, what);
        assert!(
            r.body.as_deref().unwrap_or_default().contains("dynamodb"),
            "{what}: names the connection table's store: {r:?}"
        );
    }
    // The credentials were fine: a wrong one is still a 401, decided before the table.
    let r = handle(&f.deps, request("$connect", &[("token", "not-a-session")])).await;
    assert_eq!(r.status, 401, "{r:?}");
    // And a disconnect cannot delete the item: 503 too (API Gateway ignores it; the TTL and
    // the fan-out's 410 clean up).
    let r = handle(&f.deps, request("$disconnect", &[])).await;
    expect_unavailable(&r, "disconnect");
}

#[tokio::test]
async fn redis_down_refuses_a_session_connect_with_a_503_not_a_401() {
    dynamodb_down();
    let f = fixture(Some(format!("redis://127.0.0.1:{}/", closed_port()))).await;
    let r = handle(&f.deps, request("$connect", &[("token", &f.token)])).await;
    expect_unavailable(&r, "session lookup with Redis down");
    assert!(
        r.body.as_deref().unwrap_or_default().contains("redis"),
        "{r:?}"
    );
}
