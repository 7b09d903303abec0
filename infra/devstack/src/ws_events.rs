//! The events API Gateway WebSocket sends to a route's Lambda proxy
//! integration, shaped like the ones AWS sends (field for field, as
//! `aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest` reads them),
//! so a function that works here reads the same JSON on AWS.
//!
//! Header names arrive lower-cased (hyper normalizes them), while AWS keeps
//! the client's spelling: functions must look headers up case-insensitively,
//! which `aws_lambda_events`' `HeaderMap` does anyway.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// The made-up WebSocket API id (`requestContext.apiId`).
pub const API_ID: &str = "local";

/// An id in the format API Gateway uses for connection, request and message
/// ids: 11 random bytes in standard base64, i.e. 16 characters ending in `=`
/// (`L0SM9cOFvHcCIhw=`). Functions that store or parse connection ids see the
/// same alphabet (`+`, `/`, `=`) as on AWS, including the `=` that must be
/// percent-encoded in an `@connections` URL.
pub fn new_aws_id() -> String {
    let bytes: [u8; 11] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What every event of one connection has in common.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub connection_id: String,
    pub connected_at: DateTime<Utc>,
    pub source_ip: String,
    pub user_agent: Option<String>,
    /// `host:port` the client connected to (`requestContext.domainName`).
    pub domain_name: String,
    pub stage: String,
}

/// Why a connection ended, as `$disconnect` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectInfo {
    pub status_code: u16,
    pub reason: String,
}

/// A message body as the integration receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundBody {
    Text(String),
    /// A binary frame that is not UTF-8: sent base64-encoded with
    /// `isBase64Encoded: true`.
    Binary(Vec<u8>),
}

impl InboundBody {
    /// A binary frame that happens to be valid UTF-8 is treated as text.
    pub fn from_binary(data: Vec<u8>) -> Self {
        match String::from_utf8(data) {
            Ok(s) => Self::Text(s),
            Err(e) => Self::Binary(e.into_bytes()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn request_context(
    ctx: &ConnectionContext,
    route_key: &str,
    event_type: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let mut rc = Map::new();
    rc.insert("routeKey".into(), json!(route_key));
    rc.insert("eventType".into(), json!(event_type));
    rc.insert("extendedRequestId".into(), json!(request_id));
    rc.insert(
        "requestTime".into(),
        json!(now.format("%d/%b/%Y:%H:%M:%S %z").to_string()),
    );
    rc.insert("messageDirection".into(), json!("IN"));
    rc.insert("stage".into(), json!(ctx.stage));
    rc.insert(
        "connectedAt".into(),
        json!(ctx.connected_at.timestamp_millis()),
    );
    rc.insert("requestTimeEpoch".into(), json!(now.timestamp_millis()));
    rc.insert(
        "identity".into(),
        json!({ "userAgent": ctx.user_agent, "sourceIp": ctx.source_ip }),
    );
    rc.insert("requestId".into(), json!(request_id));
    rc.insert("domainName".into(), json!(ctx.domain_name));
    rc.insert("connectionId".into(), json!(ctx.connection_id));
    rc.insert("apiId".into(), json!(API_ID));
    rc
}

fn header_str(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// `headers` (last value wins) and `multiValueHeaders` of a header map.
fn header_maps(headers: &HeaderMap) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(header_str(v)))
            .collect();
        if let Some(last) = values.last() {
            single.insert(name.as_str().to_string(), last.clone());
        }
        multi.insert(name.as_str().to_string(), Value::Array(values));
    }
    (Value::Object(single), Value::Object(multi))
}

/// The `$connect` event for an upgrade request. `query` is the raw query
/// string of the upgrade URL; `local_port` becomes `X-Forwarded-Port`.
pub fn connect_event(
    ctx: &ConnectionContext,
    headers: &HeaderMap,
    query: Option<&str>,
    local_port: u16,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    // The headers API Gateway adds in front of the integration.
    let mut headers = headers.clone();
    let xff = match headers.get("x-forwarded-for") {
        Some(prev) => format!("{}, {}", header_str(prev), ctx.source_ip),
        None => ctx.source_ip.clone(),
    };
    let mut add = |name: &'static str, value: String, overwrite: bool| {
        if overwrite || !headers.contains_key(name) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    };
    add("x-forwarded-for", xff, true);
    add("x-forwarded-proto", "http".into(), false);
    add("x-forwarded-port", local_port.to_string(), false);
    add("x-amzn-trace-id", crate::runtime::new_trace_id(), false);
    let (single, multi) = header_maps(&headers);

    let mut event = Map::new();
    event.insert("headers".into(), single);
    event.insert("multiValueHeaders".into(), multi);
    // AWS leaves both query fields out when the URL has no query.
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let mut s = Map::new();
        let mut m: Map<String, Value> = Map::new();
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            s.insert(k.to_string(), Value::String(v.to_string()));
            match m.get_mut(k.as_ref()) {
                Some(Value::Array(list)) => list.push(Value::String(v.to_string())),
                _ => {
                    m.insert(k.to_string(), json!([v.to_string()]));
                }
            }
        }
        event.insert("queryStringParameters".into(), Value::Object(s));
        event.insert("multiValueQueryStringParameters".into(), Value::Object(m));
    }
    event.insert(
        "requestContext".into(),
        Value::Object(request_context(ctx, "$connect", "CONNECT", request_id, now)),
    );
    event.insert("isBase64Encoded".into(), json!(false));
    Value::Object(event)
}

/// The `$default` route's `MESSAGE` event for one inbound message.
pub fn message_event(
    ctx: &ConnectionContext,
    body: &InboundBody,
    request_id: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let mut rc = request_context(ctx, "$default", "MESSAGE", request_id, now);
    rc.insert("messageId".into(), json!(message_id));
    let (body, is_base64) = match body {
        InboundBody::Text(s) => (s.clone(), false),
        InboundBody::Binary(b) => (base64::engine::general_purpose::STANDARD.encode(b), true),
    };
    json!({
        "requestContext": Value::Object(rc),
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

/// The `$disconnect` event. AWS sends a few fixed headers here, not the
/// upgrade request's.
pub fn disconnect_event(
    ctx: &ConnectionContext,
    why: &DisconnectInfo,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let mut rc = request_context(ctx, "$disconnect", "DISCONNECT", request_id, now);
    rc.insert("disconnectStatusCode".into(), json!(why.status_code));
    rc.insert("disconnectReason".into(), json!(why.reason));
    json!({
        "headers": {
            "Host": ctx.domain_name,
            "x-api-key": "",
            "X-Forwarded-For": "",
            "x-restapi": "",
        },
        "multiValueHeaders": {
            "Host": [ctx.domain_name],
            "x-api-key": [""],
            "X-Forwarded-For": [""],
            "x-restapi": [""],
        },
        "requestContext": Value::Object(rc),
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;

    fn ctx() -> ConnectionContext {
        ConnectionContext {
            connection_id: "L0SM9cOFvHcCIhw=".into(),
            connected_at: Utc::now(),
            source_ip: "127.0.0.1".into(),
            user_agent: Some("test-agent".into()),
            domain_name: "127.0.0.1:3001".into(),
            stage: "local".into(),
        }
    }

    #[test]
    fn ids_look_like_api_gateway_ids() {
        for _ in 0..100 {
            let id = new_aws_id();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.ends_with('=') && !id.ends_with("=="), "{id}");
        }
        assert_ne!(new_aws_id(), new_aws_id());
    }

    #[test]
    fn connect_event_deserializes() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:3001"));
        headers.insert("user-agent", HeaderValue::from_static("test-agent"));
        let ev = connect_event(
            &ctx(),
            &headers,
            Some("token=a%3Db&x=1&x=2"),
            3001,
            "req=",
            Utc::now(),
        );
        let parsed: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev.clone()).unwrap();
        let rc = &parsed.request_context;
        assert_eq!(rc.route_key.as_deref(), Some("$connect"));
        assert_eq!(rc.event_type.as_deref(), Some("CONNECT"));
        assert_eq!(rc.connection_id.as_deref(), Some("L0SM9cOFvHcCIhw="));
        assert_eq!(rc.identity.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(parsed.query_string_parameters.first("token"), Some("a=b"));
        assert_eq!(
            parsed.multi_value_query_string_parameters.all("x"),
            Some(vec!["1", "2"])
        );
        assert_eq!(parsed.headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(ev["requestContext"]["apiId"], "local");

        let no_query = connect_event(&ctx(), &headers, None, 3001, "r", Utc::now());
        assert!(no_query.get("queryStringParameters").is_none());
        let _: ApiGatewayWebsocketProxyRequest = serde_json::from_value(no_query).unwrap();
    }

    #[test]
    fn message_and_disconnect_events_deserialize() {
        let ev = message_event(
            &ctx(),
            &InboundBody::Text("hi".into()),
            "r1",
            "m1",
            Utc::now(),
        );
        let parsed: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).unwrap();
        assert_eq!(parsed.body.as_deref(), Some("hi"));
        assert_eq!(parsed.request_context.message_id.as_deref(), Some("m1"));
        assert_eq!(
            parsed.request_context.event_type.as_deref(),
            Some("MESSAGE")
        );

        let bin = message_event(
            &ctx(),
            &InboundBody::from_binary(vec![0, 159, 255]),
            "r2",
            "m2",
            Utc::now(),
        );
        assert_eq!(bin["isBase64Encoded"], true);
        assert_eq!(bin["body"], "AJ//");
        assert_eq!(
            InboundBody::from_binary(b"ok".to_vec()),
            InboundBody::Text("ok".into())
        );

        let why = DisconnectInfo {
            status_code: 1001,
            reason: "Going away".into(),
        };
        let ev = disconnect_event(&ctx(), &why, "r3", Utc::now());
        let parsed: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).unwrap();
        let rc = &parsed.request_context;
        assert_eq!(rc.route_key.as_deref(), Some("$disconnect"));
        assert_eq!(rc.disconnect_status_code, Some(1001));
        assert_eq!(rc.disconnect_reason.as_deref(), Some("Going away"));
    }
}
