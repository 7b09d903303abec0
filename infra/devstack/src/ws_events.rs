//! The events API Gateway WebSocket sends to a route's Lambda proxy
//! integration, shaped like the ones AWS sends (field for field, as
//! `aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest` reads them),
//! so a function that works here reads the same JSON on AWS. They are built
//! with `testkit::events::WsEvent` from what the devstack knows of the
//! connection ([`ConnectionContext`]).
//!
//! Header names arrive lower-cased (hyper normalizes them), while AWS keeps
//! the client's spelling: functions must look headers up case-insensitively,
//! which `aws_lambda_events`' `HeaderMap` does anyway.

use crate::forwarded::{add_proxy_headers, header_str};
use axum::http::HeaderMap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;
use testkit::events::{WsEvent, WsRoute};

/// The made-up WebSocket API id (`requestContext.apiId`).
pub const API_ID: &str = testkit::events::WEBSOCKET_API_ID;

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

/// What every event of the connection has: its context, the request id and
/// the time.
fn with_context(
    event: WsEvent,
    ctx: &ConnectionContext,
    request_id: &str,
    now: DateTime<Utc>,
) -> WsEvent {
    let event = event
        .source_ip(&ctx.source_ip)
        .domain_name(&ctx.domain_name)
        .stage(&ctx.stage)
        .request_id(request_id)
        .connected_at(ctx.connected_at)
        .time(now)
        .api_id(API_ID);
    match &ctx.user_agent {
        Some(user_agent) => event.user_agent(user_agent),
        None => event,
    }
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
    add_proxy_headers(&mut headers, xff, local_port);

    // AWS leaves both query fields out when the URL has no query (so does
    // the builder).
    let event = WsEvent::connect(&ctx.connection_id)
        .headers(&headers)
        .raw_query(query.unwrap_or_default());
    with_context(event, ctx, request_id, now).to_value()
}

/// The `$default` route's `MESSAGE` event for one inbound message.
pub fn message_event(
    ctx: &ConnectionContext,
    body: &InboundBody,
    request_id: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let event = WsEvent::new(WsRoute::Message, &ctx.connection_id).message_id(message_id);
    let event = match body {
        InboundBody::Text(s) => event.body(s),
        InboundBody::Binary(b) => event.body_base64(b),
    };
    with_context(event, ctx, request_id, now).to_value()
}

/// The `$disconnect` event. AWS sends a few fixed headers here, not the
/// upgrade request's (the builder adds them).
pub fn disconnect_event(
    ctx: &ConnectionContext,
    why: &DisconnectInfo,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let event = WsEvent::disconnect(&ctx.connection_id, why.status_code, &why.reason);
    with_context(event, ctx, request_id, now).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
    use axum::http::HeaderValue;

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
