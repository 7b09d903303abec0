//! The api handler called directly with the sample REST proxy events of `events/`, against
//! real PostgreSQL, Redis and moto (`make test`).

use adapters::auth::{digest, new_key_id, random_secret};
use api::{handle, Deps};
use lambda_http::{Body, Request};
use rust_decimal_macros::dec;
use serde_json::Value;
use testkit::{account_with_cash, put_quote};
use uuid::Uuid;

async fn deps() -> Deps {
    testkit::app_deps().await
}

/// A sample event with its credentials and body replaced.
fn event(name: &str, key: Option<(&str, &str)>, body: Option<&str>) -> Request {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut ev: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (h, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let map = ev[h].as_object_mut().unwrap();
        map.remove("APCA-API-KEY-ID");
        map.remove("APCA-API-SECRET-KEY");
        map.remove("Content-Length");
        if let Some((id, secret)) = key {
            let (id, secret) = if multi {
                (serde_json::json!([id]), serde_json::json!([secret]))
            } else {
                (id.into(), secret.into())
            };
            map.insert("APCA-API-KEY-ID".into(), id);
            map.insert("APCA-API-SECRET-KEY".into(), secret);
        }
    }
    if let Some(b) = body {
        ev["body"] = b.into();
    }
    lambda_http::request::from_str(&ev.to_string()).expect("sample event parses")
}

fn body_json(r: &lambda_http::Response<Body>) -> Value {
    match r.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        Body::Empty => Value::Null,
        Body::Binary(b) => serde_json::from_slice(b).unwrap(),
        _ => Value::Null,
    }
}

async fn user_with_key(deps: &Deps) -> (Uuid, String, String) {
    let (user, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    let (key_id, secret) = (new_key_id(), random_secret());
    deps.ledger
        .insert_api_key(&key_id, user, account, &digest(&secret))
        .await
        .unwrap();
    (account, key_id, secret)
}

#[tokio::test]
async fn sample_post_order_is_accepted_once_and_enqueued() {
    let deps = deps().await;
    let (account, key_id, secret) = user_with_key(&deps).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;

    let r = handle(
        &deps,
        event("api-post-order.json", Some((&key_id, &secret)), None),
    )
    .await;
    assert_eq!(r.status(), 200, "{:?}", body_json(&r));
    let order = body_json(&r);
    assert_eq!(order["status"], "pending_new");
    assert_eq!(order["qty"], "0.01");
    assert_eq!(order["symbol"], "BTCUSDT");
    let expected_id =
        domain::order::order_id_for(account, order["client_order_id"].as_str().unwrap());
    assert_eq!(order["id"], expected_id.to_string());

    // A retry answers with the same order; different parameters under the same id are refused.
    let again = handle(
        &deps,
        event("api-post-order.json", Some((&key_id, &secret)), None),
    )
    .await;
    assert_eq!(body_json(&again)["id"], order["id"]);
    let changed = r#"{"symbol":"BTCUSDT","qty":"0.02","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"demo-1"}"#;
    let conflict = handle(
        &deps,
        event(
            "api-post-order.json",
            Some((&key_id, &secret)),
            Some(changed),
        ),
    )
    .await;
    assert_eq!(conflict.status(), 422);
    assert_eq!(body_json(&conflict)["code"], "client_order_id_conflict");

    let msgs = deps
        .queue
        .client()
        .await
        .receive_message()
        .queue_url(deps.queue.url())
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(
        msgs.messages.unwrap_or_default().len(),
        1,
        "one command on the queue for one order"
    );

    // The pending order is visible before the executor takes it.
    let mut get = event("api-get-account.json", Some((&key_id, &secret)), None);
    *get.uri_mut() = format!("/v2/orders/{}", order["id"].as_str().unwrap())
        .parse()
        .unwrap();
    let got = handle(
        &deps,
        lambda_http::RequestExt::with_raw_http_path(
            get,
            format!("/v2/orders/{}", order["id"].as_str().unwrap()),
        ),
    )
    .await;
    assert_eq!(got.status(), 200);
    assert_eq!(body_json(&got)["status"], "pending_new");
}

#[tokio::test]
async fn sample_get_account_needs_valid_credentials() {
    let deps = deps().await;
    let (account, key_id, secret) = user_with_key(&deps).await;
    let ok = handle(
        &deps,
        event("api-get-account.json", Some((&key_id, &secret)), None),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let body = body_json(&ok);
    assert_eq!(body["id"], account.to_string());
    assert_eq!(body["cash"], "100000");
    assert_eq!(body["equity"], "100000");
    assert_eq!(body["currency"], "USDT");

    let none = handle(&deps, event("api-get-account.json", None, None)).await;
    assert_eq!(none.status(), 401);
    assert_eq!(body_json(&none)["code"], "unauthorized");
    let wrong = handle(
        &deps,
        event("api-get-account.json", Some((&key_id, "wrong")), None),
    )
    .await;
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_4xx() {
    let deps = deps().await;
    let (_, key_id, secret) = user_with_key(&deps).await;
    let big = format!(r#"{{"symbol":"BTCUSDT","pad":"{}"}}"#, "x".repeat(70_000));
    let r = handle(
        &deps,
        event("api-post-order.json", Some((&key_id, &secret)), Some(&big)),
    )
    .await;
    assert_eq!(r.status(), 413);
    assert_eq!(body_json(&r)["code"], "payload_too_large");
    let r = handle(
        &deps,
        event(
            "api-post-order.json",
            Some((&key_id, &secret)),
            Some("{\"symbol\":"),
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(&r)["code"], "malformed_json");
}

/// A closed port on loopback: connecting fails at once.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn outages_answer_503_with_retry_after_naming_the_dependency() {
    let healthy = deps().await;
    let (_, key_id, secret) = user_with_key(&healthy).await;

    // Redis down: health names it; an authenticated route that needs it answers 503.
    let mut no_redis = deps().await;
    no_redis.cache =
        adapters::cache::Cache::new(&format!("redis://127.0.0.1:{}/", dead_port()), "x:").unwrap();
    let mut health = event("api-get-account.json", None, None);
    *health.uri_mut() = "/health".parse().unwrap();
    let r = handle(
        &no_redis,
        lambda_http::RequestExt::with_raw_http_path(health, "/health"),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body = body_json(&r);
    assert_eq!(body["code"], "service_unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("redis"),
        "{body}"
    );
    assert!(
        !body["message"].as_str().unwrap().contains("postgres"),
        "{body}"
    );
    let r = handle(
        &no_redis,
        event("api-post-order.json", Some((&key_id, &secret)), None),
    )
    .await;
    assert_eq!(r.status(), 503, "{:?}", body_json(&r));
    assert!(r.headers().contains_key("retry-after"));

    // Postgres down: API-key authentication needs the ledger.
    let mut no_pg = deps().await;
    no_pg.ledger = adapters::ledger::Ledger::connect_lazy(
        &format!(
            "postgres://trading:trading@127.0.0.1:{}/trading",
            dead_port()
        ),
        1,
    )
    .unwrap();
    let r = handle(
        &no_pg,
        event("api-get-account.json", Some((&key_id, &secret)), None),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert_eq!(body_json(&r)["code"], "service_unavailable");
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_every_route() {
    let deps = deps().await;
    let mut req = event("api-get-account.json", None, None);
    *req.uri_mut() = "/openapi.yaml".parse().unwrap();
    let r = handle(
        &deps,
        lambda_http::RequestExt::with_raw_http_path(req, "/openapi.yaml"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let Body::Text(doc) = r.body() else {
        panic!("text body expected")
    };
    for route in [
        "/health:",
        "/openapi.yaml:",
        "/v2/openapi.yaml:",
        "/v2/auth/signup:",
        "/v2/auth/login:",
        "/v2/auth/logout:",
        "/v2/auth/logout_all:",
        "/v2/auth/password:",
        "/v2/api_keys:",
        "/v2/api_keys/{key_id}:",
        "/v2/account:",
        "/v2/orders:",
        "/v2/orders/{order_id}:",
        "/v2/orders:by_client_order_id:",
        "/v2/positions:",
        "/v2/positions/{symbol}:",
        "/v2/positions/{base}/{quote}:",
        "/v2/account/activities:",
        "/v2/account/activities/{activity_type}:",
        "/v2/assets:",
        "/v2/assets/{symbol}:",
        "/v2/assets/{base}/{quote}:",
        "/v2/clock:",
        "/v2/account/risk:",
        "/v2/account/kill:",
        "/v2/webhooks:",
        "/v2/webhooks/{webhook_id}:",
        "/v2/webhooks/{webhook_id}/rotate:",
        "/v2/webhooks/{webhook_id}/deliveries:",
        "/v2/hooks/tradingview/{webhook_id}:",
    ] {
        assert!(
            doc.contains(&format!("\n  {route}")),
            "{route} missing from openapi.yaml"
        );
    }
}

/// The panic backstop at the route level: a route that panics (here a byte-index slice inside
/// a multi-byte character, the classic crash) is answered 500 `internal` as JSON, and the next
/// request is served by the same process and the same `Deps`.
#[tokio::test]
async fn a_panicking_route_is_a_500_and_the_next_request_is_served() {
    let deps = deps().await;
    let routes =
        async |deps: &Deps, method: &lambda_http::http::Method, path: &str, req: Request| {
            if path.ends_with("/account") {
                let text = String::from("é");
                let _ = &text[..1];
            }
            api::route(deps, method, path, req).await
        };
    let (_, key_id, secret) = user_with_key(&deps).await;
    let r = api::serve(
        &deps,
        event("api-get-account.json", Some((&key_id, &secret)), None),
        routes,
    )
    .await;
    assert_eq!(r.status(), 500);
    let body = body_json(&r);
    assert_eq!(body["code"], "internal");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    // The same table, another route: served normally.
    let r = api::serve(
        &deps,
        event(
            "api-post-order.json",
            Some((&key_id, &secret)),
            Some("{\"symbol\":"),
        ),
        routes,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(&r)["code"], "malformed_json");
    // And the real table, on the route that panicked above.
    let r = handle(
        &deps,
        event("api-get-account.json", Some((&key_id, &secret)), None),
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// The backstop needs the release profile to unwind: with `panic = "abort"` a caught panic
/// would still end the process (a 502 and a cold start for the next client).
#[test]
fn the_release_profile_unwinds() {
    let manifest = include_str!("../../../Cargo.toml");
    let release = manifest
        .split("[profile.release]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [profile.release] section");
    let panic: Vec<&str> = release
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("panic"))
        .collect();
    assert_eq!(panic, ["panic = \"unwind\""]);
}
