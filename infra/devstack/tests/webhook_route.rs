//! The REST API's second integration: `POST /v2/hooks/tradingview/{webhook_id}`
//! goes to the `webhook` function (here `devstack-event-echo`, which answers
//! the raw event), everything else to `api` (`devstack-echo`), and
//! `--trust-forwarded-for` lets tests choose the `sourceIp`.

mod common;

use std::time::Duration;

use devstack::{Config, Devstack, FunctionConfig};
use serde_json::{json, Value};
use testkit::web::{client, get_json, post};

const API_ECHO: &str = env!("CARGO_BIN_EXE_devstack-echo");
const EVENT_ECHO: &str = env!("CARGO_BIN_EXE_devstack-event-echo");

async fn start(webhook: bool, trust_forwarded_for: bool) -> Devstack {
    let mut config = Config::new();
    config.stage = "teststage".into();
    config.api = Some(FunctionConfig::new("api", API_ECHO, 1));
    if webhook {
        config.webhook = Some(FunctionConfig::new("webhook", EVENT_ECHO, 1));
    }
    config.trust_forwarded_for = trust_forwarded_for;
    config.api_timeout = Duration::from_secs(10);
    let stack = devstack::start(config).await.expect("devstack starts");
    common::wait_idle(stack.api(), 1).await;
    if webhook {
        common::wait_idle(stack.webhook(), 1).await;
    }
    stack
}

/// POST to the webhook path; the event the webhook function received.
async fn post_hook(stack: &Devstack, id: &str, xff: Option<&str>, body: &'static [u8]) -> Value {
    let mut req = client()
        .post(format!("{}/v2/hooks/tradingview/{id}", stack.rest_url()))
        .header("content-type", "text/plain; charset=utf-8")
        .body(body);
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-amzn-requestid"));
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["function_name"], "webhook", "{echo}");
    echo["event"].clone()
}

/// GET a path that belongs to the api function; what it echoed.
async fn get_api(stack: &Devstack, path: &str, xff: Option<&str>) -> Value {
    let mut req = client().get(format!("{}{path}", stack.rest_url()));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["function_name"], "api", "{path}: {echo}");
    echo
}

#[tokio::test]
async fn post_to_hook_path_reaches_webhook_function() {
    let stack = start(true, false).await;
    let body = br#"{"ticker":"BTCUSDT","action":"buy","qty":"0.01"}"#;
    let ev = post_hook(&stack, "abc", None, body).await;
    assert_eq!(ev["resource"], "/v2/hooks/tradingview/{webhook_id}");
    assert_eq!(ev["pathParameters"], json!({"webhook_id": "abc"}));
    assert_eq!(ev["path"], "/v2/hooks/tradingview/abc");
    assert_eq!(ev["httpMethod"], "POST");
    assert_eq!(ev["body"], std::str::from_utf8(body).unwrap());
    assert_eq!(ev["isBase64Encoded"], false);
    assert_eq!(ev["headers"]["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        ev["multiValueHeaders"]["content-type"],
        json!(["text/plain; charset=utf-8"])
    );
    assert_eq!(ev["headers"]["x-forwarded-for"], "127.0.0.1");
    let rc = &ev["requestContext"];
    assert_eq!(rc["resourcePath"], "/v2/hooks/tradingview/{webhook_id}");
    assert_eq!(rc["resourceId"], "hook01");
    assert_eq!(rc["httpMethod"], "POST");
    assert_eq!(rc["stage"], "teststage");
    assert_eq!(rc["path"], "/teststage/v2/hooks/tradingview/abc");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["requestId"].as_str().unwrap().len(), 36);

    // The id is percent-decoded in pathParameters; path stays raw.
    let ev = post_hook(&stack, "wh%20x", None, b"x").await;
    assert_eq!(ev["pathParameters"], json!({"webhook_id": "wh x"}));
    assert_eq!(ev["path"], "/v2/hooks/tradingview/wh%20x");

    // A body that is not UTF-8 is base64, as for api; none is null.
    let ev = post_hook(&stack, "bin", None, &[0, 159, 146, 150, 255]).await;
    assert_eq!(ev["body"], "AJ+Slv8=");
    assert_eq!(ev["isBase64Encoded"], true);
    let ev = post_hook(&stack, "empty", None, b"").await;
    assert_eq!(ev["body"], Value::Null);

    // Without --trust-forwarded-for, X-Forwarded-For does not change
    // sourceIp; the TCP peer is appended to it, as API Gateway does.
    let ev = post_hook(&stack, "abc", Some("203.0.113.7"), b"{}").await;
    assert_eq!(ev["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(ev["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    let api = get_api(&stack, "/v2/account", Some("203.0.113.7")).await;
    assert_eq!(api["request_context"]["identity"]["sourceIp"], "127.0.0.1");

    let health: Value = get_json(format!("{}/__devstack/health", stack.rest_url())).await;
    assert_eq!(health["webhook"]["name"], "webhook");
    assert_eq!(health["api"]["name"], "api");
    assert_eq!(health["trust_forwarded_for"], false);
    stack.shutdown().await;
}

#[tokio::test]
async fn other_paths_and_methods() {
    let stack = start(true, false).await;
    let c = client();

    // Other paths, including near misses of the hook shape, go to api on
    // /{proxy+}, with the events they always had.
    for path in [
        "/v2/account",
        "/v2/hooks/tradingview",
        "/v2/hooks/tradingview/",
        "/v2/hooks/tradingview/abc/extra",
        "/v2/hooks/other/abc",
    ] {
        let echo = get_api(&stack, path, None).await;
        assert_eq!(echo["raw_path"], path);
        assert_eq!(echo["request_context"]["resourcePath"], "/{proxy+}");
        assert_eq!(echo["request_context"]["resourceId"], "proxy0");
    }
    let url = format!("{}/v2/hooks/tradingview/abc/extra", stack.rest_url());
    let resp = post(url, "{}").await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["function_name"], "api");
    assert_eq!(echo["method"], "POST");

    // Other methods on the hook resource: API Gateway's missing-method answer,
    // no function invoked.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
        reqwest::Method::OPTIONS,
    ] {
        let resp = c
            .request(
                method.clone(),
                format!("{}/v2/hooks/tradingview/abc", stack.rest_url()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method}");
        assert_eq!(
            resp.headers()["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
        assert!(resp.headers().contains_key("x-amzn-requestid"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"message": "Missing Authentication Token"}));
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn trusted_forwarded_for_sets_source_ip() {
    let stack = start(true, true).await;

    let ev = post_hook(&stack, "abc", Some("203.0.113.7"), b"{}").await;
    assert_eq!(ev["requestContext"]["identity"]["sourceIp"], "203.0.113.7");
    // Passed on as received: what API Gateway gives a client at that address.
    assert_eq!(ev["headers"]["x-forwarded-for"], "203.0.113.7");

    // The first address of a chain is the client.
    let ev = post_hook(&stack, "abc", Some("198.51.100.2, 10.0.0.1"), b"{}").await;
    assert_eq!(ev["requestContext"]["identity"]["sourceIp"], "198.51.100.2");
    assert_eq!(ev["headers"]["x-forwarded-for"], "198.51.100.2, 10.0.0.1");
    let ev = post_hook(&stack, "abc", Some("2001:db8::5"), b"{}").await;
    assert_eq!(ev["requestContext"]["identity"]["sourceIp"], "2001:db8::5");

    // No header, or one that is not an address: the TCP peer, as without the flag.
    let ev = post_hook(&stack, "abc", None, b"{}").await;
    assert_eq!(ev["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(ev["headers"]["x-forwarded-for"], "127.0.0.1");
    let ev = post_hook(&stack, "abc", Some("unknown"), b"{}").await;
    assert_eq!(ev["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(ev["headers"]["x-forwarded-for"], "unknown, 127.0.0.1");

    // The api function's events follow the same rule.
    let api = get_api(&stack, "/v2/account", Some("203.0.113.9")).await;
    assert_eq!(
        api["request_context"]["identity"]["sourceIp"],
        "203.0.113.9"
    );
    assert_eq!(api["request_context"]["resourcePath"], "/{proxy+}");
    stack.shutdown().await;
}

#[tokio::test]
async fn without_webhook_function_hook_paths_get_502() {
    let stack = start(false, false).await;
    let resp = post(
        format!("{}/v2/hooks/tradingview/abc", stack.rest_url()),
        "{}",
    )
    .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InternalServerErrorException"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"message": "Internal server error"}));
    // The api function is untouched.
    get_api(&stack, "/v2/account", None).await;
    stack.shutdown().await;
}

#[test]
fn cli_flags() {
    use clap::Parser;
    use devstack::cli::Cli;
    let config = Cli::try_parse_from([
        "devstack",
        "--webhook-bin",
        "/bin/webhook",
        "--webhook-instances",
        "3",
        "--trust-forwarded-for",
    ])
    .unwrap()
    .into_config();
    let webhook = config.webhook.expect("webhook configured");
    assert_eq!(webhook.name, "webhook");
    assert_eq!(webhook.bin, std::path::PathBuf::from("/bin/webhook"));
    assert_eq!(webhook.instances, 3);
    assert!(config.trust_forwarded_for);

    // Defaults (unless the environment says otherwise).
    let config = Cli::try_parse_from(["devstack", "--webhook-bin", "/bin/webhook"])
        .unwrap()
        .into_config();
    if std::env::var_os("DEVSTACK_WEBHOOK_INSTANCES").is_none() {
        assert_eq!(config.webhook.unwrap().instances, 1);
    }
    if std::env::var_os("DEVSTACK_TRUST_FORWARDED_FOR").is_none() {
        assert!(!config.trust_forwarded_for);
    }
}
