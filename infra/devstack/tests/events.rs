//! The sample events in `events/` and the events the REST emulation builds
//! deserialize with aws_lambda_events (and lambda_http) as on AWS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::sqs::SqsEvent;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use devstack::rest::{build_proxy_event, build_webhook_event, route, IncomingRequest, Route};
use lambda_http::RequestExt;
use serde_json::Value;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn read(name: &str) -> String {
    let path = events_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The event is for `path`, on the `/{proxy+}` resource with `proxy` as its parameter.
fn assert_proxy_route(ev: &ApiGatewayProxyRequest, path: &str, proxy: &str) {
    assert_eq!(ev.path.as_deref(), Some(path));
    assert_eq!(ev.resource.as_deref(), Some("/{proxy+}"));
    assert_eq!(
        ev.path_parameters.get("proxy").map(String::as_str),
        Some(proxy)
    );
}

#[test]
fn api_get_account_sample_deserializes() {
    let text = read("api-get-account.json");
    let ev: ApiGatewayProxyRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(ev.http_method, Method::GET);
    assert_proxy_route(&ev, "/v2/account", "v2/account");
    assert_eq!(
        ev.headers.get("apca-api-key-id").unwrap(),
        "PKDEMO0000000000000001"
    );
    assert!(ev.headers.get("apca-api-secret-key").is_some());
    assert_eq!(ev.request_context.stage.as_deref(), Some("local"));
    assert_eq!(
        ev.request_context.identity.source_ip.as_deref(),
        Some("127.0.0.1")
    );
    assert!(ev.body.is_none());

    // And lambda_http turns it into the request the api handler sees.
    let req = lambda_http::request::from_str(&text).unwrap();
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.raw_http_path(), "/v2/account");
    assert_eq!(
        req.headers().get("APCA-API-KEY-ID").unwrap(),
        "PKDEMO0000000000000001"
    );
}

#[test]
fn api_post_order_sample_deserializes() {
    let text = read("api-post-order.json");
    let ev: ApiGatewayProxyRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(ev.http_method, Method::POST);
    assert_eq!(ev.path.as_deref(), Some("/v2/orders"));
    assert_eq!(ev.request_context.http_method, Method::POST);
    assert!(!ev.is_base64_encoded);
    let body: Value = serde_json::from_str(ev.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"market",
                           "time_in_force":"gtc","client_order_id":"demo-1"})
    );
    assert_eq!(
        ev.headers.get("content-length").unwrap().to_str().unwrap(),
        ev.body.as_deref().unwrap().len().to_string()
    );
    let req = lambda_http::request::from_str(&text).unwrap();
    assert_eq!(req.raw_http_path(), "/v2/orders");
    let body: Value = serde_json::from_slice(req.body().as_ref()).unwrap();
    assert_eq!(body["client_order_id"], "demo-1");
}

#[test]
fn executor_sqs_batch_sample_deserializes() {
    let ev: SqsEvent = serde_json::from_str(&read("executor-sqs-batch.json")).unwrap();
    assert_eq!(ev.records.len(), 3);
    let groups: Vec<&str> = ev
        .records
        .iter()
        .map(|r| r.attributes["MessageGroupId"].as_str())
        .collect();
    assert_eq!(groups[0], groups[2]);
    assert_ne!(groups[0], groups[1]);
    for r in &ev.records {
        assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
        assert!(r.event_source_arn.as_deref().unwrap().ends_with(".fifo"));
        for attr in [
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SequenceNumber",
            "MessageDeduplicationId",
        ] {
            assert!(r.attributes.contains_key(attr), "missing {attr}");
        }
        let body: Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["type"], "place_order");
    }
}

fn built_event(uri: &str, method: Method, body: &[u8]) -> Value {
    let uri: Uri = uri.parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:3000"));
    headers.insert("apca-api-key-id", HeaderValue::from_static("PK1"));
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static("two"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    build_proxy_event(
        &IncomingRequest {
            method: &method,
            uri: &uri,
            headers: &headers,
            body,
            source_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
            source_ip_from_forwarded_for: false,
            local_port: 3000,
        },
        "local",
        "11111111-2222-3333-4444-555555555555",
        chrono::Utc::now(),
    )
}

#[test]
fn built_rest_event_round_trips_through_aws_lambda_events() {
    let v = built_event(
        "/v2/orders:by_client_order_id?client_order_id=demo%201&x=1&x=2",
        Method::GET,
        b"",
    );
    let ev: ApiGatewayProxyRequest = serde_json::from_value(v.clone()).unwrap();
    assert_proxy_route(
        &ev,
        "/v2/orders:by_client_order_id",
        "v2/orders:by_client_order_id",
    );
    assert_eq!(
        ev.query_string_parameters.first("client_order_id"),
        Some("demo 1")
    );
    assert_eq!(ev.query_string_parameters.first("x"), Some("2"));
    assert_eq!(
        ev.multi_value_query_string_parameters.all("x"),
        Some(vec!["1", "2"])
    );
    let multi: Vec<_> = ev.multi_value_headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, vec!["one", "two"]);
    assert_eq!(ev.headers.get("x-multi").unwrap(), "two");
    assert_eq!(ev.headers.get("x-forwarded-for").unwrap(), "127.0.0.9");
    let rc = &ev.request_context;
    assert_eq!(rc.stage.as_deref(), Some("local"));
    assert_eq!(
        rc.request_id.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(rc.identity.source_ip.as_deref(), Some("127.0.0.9"));
    assert_eq!(rc.resource_path.as_deref(), Some("/{proxy+}"));
    assert_eq!(
        rc.path.as_deref(),
        Some("/local/v2/orders:by_client_order_id")
    );
    assert_eq!(rc.account_id.as_deref(), Some("123456789012"));
    assert!(rc.apiid.is_some() && rc.resource_id.is_some() && rc.request_time.is_some());
    assert!(rc.request_time_epoch > 0);
    assert!(ev.body.is_none());
    assert!(!ev.is_base64_encoded);

    // Serializing the typed event and parsing it again gives the same event.
    let again: ApiGatewayProxyRequest =
        serde_json::from_value(serde_json::to_value(&ev).unwrap()).unwrap();
    assert_eq!(again, ev);

    // lambda_http sees the path (with ':') and the query intact.
    let req = lambda_http::request::from_str(&v.to_string()).unwrap();
    assert_eq!(req.raw_http_path(), "/v2/orders:by_client_order_id");
    assert_eq!(
        req.query_string_parameters().first("client_order_id"),
        Some("demo 1")
    );
    assert_eq!(req.headers().get("apca-api-key-id").unwrap(), "PK1");
}

#[test]
fn built_event_body_text_and_binary() {
    let v = built_event("/v2/orders", Method::POST, br#"{"qty":"1"}"#);
    let ev: ApiGatewayProxyRequest = serde_json::from_value(v).unwrap();
    assert_eq!(ev.body.as_deref(), Some(r#"{"qty":"1"}"#));
    assert!(!ev.is_base64_encoded);

    let v = built_event("/upload", Method::PUT, &[0, 159, 146, 150, 255]);
    let ev: ApiGatewayProxyRequest = serde_json::from_value(v.clone()).unwrap();
    assert!(ev.is_base64_encoded);
    assert_eq!(ev.body.as_deref(), Some("AJ+Slv8="));
    let req = lambda_http::request::from_str(&v.to_string()).unwrap();
    assert_eq!(req.body().as_ref(), &[0, 159, 146, 150, 255]);
}

#[test]
fn built_event_for_root_path() {
    let v = built_event("/", Method::GET, b"");
    let ev: ApiGatewayProxyRequest = serde_json::from_value(v).unwrap();
    assert_eq!(ev.resource.as_deref(), Some("/"));
    assert!(ev.path_parameters.is_empty());
    assert!(ev.query_string_parameters.is_empty());
}

#[test]
fn built_webhook_event_round_trips_through_aws_lambda_events() {
    let uri: Uri = "/v2/hooks/tradingview/wh%20abc".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:3000"));
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
    let body = br#"{"ticker":"BTCUSDT","action":"buy"}"#;
    let v = build_webhook_event(
        &IncomingRequest {
            method: &Method::POST,
            uri: &uri,
            headers: &headers,
            body,
            source_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            source_ip_from_forwarded_for: true,
            local_port: 3000,
        },
        "wh abc",
        "local",
        "11111111-2222-3333-4444-555555555555",
        chrono::Utc::now(),
    );
    let ev: ApiGatewayProxyRequest = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        ev.resource.as_deref(),
        Some("/v2/hooks/tradingview/{webhook_id}")
    );
    assert_eq!(ev.path.as_deref(), Some("/v2/hooks/tradingview/wh%20abc"));
    assert_eq!(ev.path_parameters.len(), 1);
    assert_eq!(
        ev.path_parameters.get("webhook_id").map(String::as_str),
        Some("wh abc")
    );
    assert_eq!(ev.http_method, Method::POST);
    assert_eq!(
        ev.body.as_deref(),
        Some(r#"{"ticker":"BTCUSDT","action":"buy"}"#)
    );
    assert!(!ev.is_base64_encoded);
    let rc = &ev.request_context;
    assert_eq!(
        rc.resource_path.as_deref(),
        Some("/v2/hooks/tradingview/{webhook_id}")
    );
    assert_eq!(rc.resource_id.as_deref(), Some("hook01"));
    assert_eq!(rc.identity.source_ip.as_deref(), Some("203.0.113.7"));
    // The trusted X-Forwarded-For is passed on as received.
    assert_eq!(ev.headers.get("x-forwarded-for").unwrap(), "203.0.113.7");

    // lambda_http gives the handler the path parameter and the body.
    let req = lambda_http::request::from_str(&v.to_string()).unwrap();
    assert_eq!(req.path_parameters().first("webhook_id"), Some("wh abc"));
    assert_eq!(req.raw_http_path(), "/v2/hooks/tradingview/wh%20abc");
    assert_eq!(req.body().as_ref(), body);
}

#[test]
fn routes_as_api_gateway_with_proxy_and_webhook_resources() {
    let hook = |id: &str| Route::Webhook {
        webhook_id: id.to_string(),
    };
    assert_eq!(
        route(&Method::POST, "/v2/hooks/tradingview/abc"),
        hook("abc")
    );
    assert_eq!(
        route(&Method::POST, "/v2/hooks/tradingview/a%2Fb"),
        hook("a/b")
    );
    for m in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
        assert_eq!(
            route(&m, "/v2/hooks/tradingview/abc"),
            Route::MissingMethod,
            "{m}"
        );
    }
    for p in [
        "/",
        "/v2/account",
        "/v2/hooks/tradingview",
        "/v2/hooks/tradingview/",
        "/v2/hooks/tradingview/abc/",
        "/v2/hooks/tradingview/abc/more",
        "/v2/hooks/other/abc",
        "/V2/hooks/tradingview/abc",
    ] {
        assert_eq!(route(&Method::POST, p), Route::Api, "{p}");
        assert_eq!(route(&Method::GET, p), Route::Api, "{p}");
    }
}
