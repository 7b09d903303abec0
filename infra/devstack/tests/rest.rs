//! API Gateway REST emulation end to end, with a real lambda_http function
//! (`devstack-echo`) running under the devstack's Lambda Runtime API.

mod common;

use std::time::Duration;

use devstack::{Config, Devstack, FunctionConfig};
use serde_json::Value;
use testkit::web::{client, get, get_json, post};

const ECHO: &str = env!("CARGO_BIN_EXE_devstack-echo");

async fn start_echo(instances: usize, timeout: Duration) -> Devstack {
    let mut config = Config::new();
    config.stage = "teststage".into();
    config.api = Some(FunctionConfig::new("api", ECHO, instances));
    config.api_timeout = timeout;
    let stack = devstack::start(config).await.expect("devstack starts");
    common::wait_idle(stack.api(), instances).await;
    stack
}

#[tokio::test]
async fn request_becomes_rest_proxy_event() {
    let stack = start_echo(1, Duration::from_secs(10)).await;
    let url = format!(
        "{}/v2/orders:by_client_order_id?client_order_id=demo%201&nested=a%3Db",
        stack.rest_url()
    );
    let resp = client()
        .post(&url)
        .header("APCA-API-KEY-ID", "PKTEST")
        .header("APCA-API-SECRET-KEY", "secret")
        .header("content-type", "application/json")
        .body(r#"{"symbol":"BTCUSDT","qty":"0.01"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-amzn-requestid"));
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["raw_path"], "/v2/orders:by_client_order_id");
    assert_eq!(echo["query"]["client_order_id"][0], "demo 1");
    assert_eq!(echo["query"]["nested"][0], "a=b");
    assert_eq!(echo["headers"]["apca-api-key-id"][0], "PKTEST");
    assert_eq!(echo["headers"]["apca-api-secret-key"][0], "secret");
    assert_eq!(echo["headers"]["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(echo["body"], r#"{"symbol":"BTCUSDT","qty":"0.01"}"#);
    let rc = &echo["request_context"];
    assert_eq!(rc["stage"], "teststage");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["resourcePath"], "/{proxy+}");
    assert_eq!(rc["httpMethod"], "POST");
    assert_eq!(rc["path"], "/teststage/v2/orders:by_client_order_id");
    assert_eq!(rc["requestId"].as_str().unwrap().len(), 36);
    // The Lambda environment the function runs in.
    assert_eq!(echo["function_name"], "api");
    assert!(echo["runtime_api"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(echo["trace_id"].as_str().unwrap().starts_with("Root=1-"));

    // Each request gets a fresh request id.
    let a: Value = get_json(format!("{}/x", stack.rest_url())).await;
    assert_ne!(a["request_context"]["requestId"], rc["requestId"]);
    assert_eq!(a["body"], "");
    stack.shutdown().await;
}

#[tokio::test]
async fn response_status_headers_and_binary_body() {
    let stack = start_echo(1, Duration::from_secs(10)).await;
    let resp = get(format!("{}/__echo/status?code=418", stack.rest_url())).await;
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-echo"], "yes");
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, vec!["a=1", "b=2"]);

    let resp = get(format!("{}/__echo/binary", stack.rest_url())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        &[0, 159, 146, 150, 255]
    );

    let resp = get(format!("{}/__devstack/health", stack.rest_url())).await;
    assert_eq!(resp.status(), 200);
    stack.shutdown().await;
}

#[tokio::test]
async fn crash_gives_502_and_the_next_request_works() {
    let stack = start_echo(1, Duration::from_secs(20)).await;
    let first: Value = get_json(format!("{}/before", stack.rest_url())).await;

    let resp = get(format!("{}/__echo/exit", stack.rest_url())).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "Internal server error"})
    );

    // The only instance crashed; it is restarted and serves the next request.
    let after: Value = get_json(format!("{}/after", stack.rest_url())).await;
    assert_eq!(after["raw_path"], "/after");
    assert_ne!(
        after["pid"], first["pid"],
        "a new process serves after the crash"
    );

    // A panic and a handler error are function errors: 502 too, same process.
    for path in ["/__echo/panic", "/__echo/error"] {
        let resp = get(format!("{}{path}", stack.rest_url())).await;
        assert_eq!(resp.status(), 502, "{path}");
    }
    let again: Value = get_json(format!("{}/again", stack.rest_url())).await;
    assert_eq!(again["pid"], after["pid"]);
    stack.shutdown().await;
}

#[tokio::test]
async fn timeout_gives_504_and_the_instance_is_replaced() {
    let stack = start_echo(1, Duration::from_millis(700)).await;
    let resp = get(format!("{}/__echo/sleep?ms=5000", stack.rest_url())).await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "Endpoint request timed out"})
    );
    let ok = get(format!("{}/fine", stack.rest_url())).await;
    assert_eq!(ok.status(), 200);
    stack.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_413_without_invoking() {
    let stack = start_echo(1, Duration::from_secs(10)).await;
    let big = vec![b'x'; devstack::rest::MAX_REQUEST_BODY + 1];
    let resp = post(format!("{}/v2/orders", stack.rest_url()), big).await;
    assert_eq!(resp.status(), 413);
    // Exactly the limit still goes through.
    let max = vec![b'y'; devstack::rest::MAX_REQUEST_BODY];
    let resp = post(format!("{}/v2/orders", stack.rest_url()), max).await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], devstack::rest::MAX_REQUEST_BODY);
    stack.shutdown().await;
}

#[tokio::test]
async fn parallel_requests_spread_over_instances() {
    let stack = start_echo(3, Duration::from_secs(20)).await;
    let n = 24;
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}/__echo/sleep?ms=100&i={i}", stack.rest_url());
        tasks.push(tokio::spawn(async move {
            let resp = get(url).await;
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            (
                v["query"]["i"][0].as_str().unwrap().to_string(),
                v["pid"].clone(),
            )
        }));
    }
    let mut seen = std::collections::HashSet::new();
    let mut pids = std::collections::HashSet::new();
    for t in tasks {
        let (i, pid) = t.await.unwrap();
        seen.insert(i);
        pids.insert(pid.to_string());
    }
    assert_eq!(seen.len(), n, "every request got its own answer");
    assert!(
        pids.len() > 1,
        "requests ran on several instances: {pids:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn missing_binary_gives_502_or_504_not_a_hang() {
    let mut config = Config::new();
    config.api = Some(FunctionConfig::new("api", "/nonexistent/binary", 1));
    config.api_timeout = Duration::from_millis(500);
    let stack = devstack::start(config).await.unwrap();
    let resp = get(format!("{}/v2/account", stack.rest_url())).await;
    assert!(
        resp.status() == 504 || resp.status() == 502,
        "{}",
        resp.status()
    );
    stack.shutdown().await;
}
