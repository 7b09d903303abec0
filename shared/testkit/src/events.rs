//! Typed Lambda events, as API Gateway and SQS send them.
//!
//! Each builder makes the `aws_lambda_events` struct the function deserializes, and the
//! JSON the service sends:
//!
//! | builder | `build()` | for |
//! |---|---|---|
//! | [`RestEvent`] | [`ApiGatewayProxyRequest`] | API Gateway REST proxy integration (payload 1.0): `api`, `webhook` (through `lambda_http`) |
//! | [`WsEvent`] | [`ApiGatewayWebsocketProxyRequest`] | API Gateway WebSocket `$connect` / `$default` / `$disconnect`: `ws` |
//! | [`SqsRecord`] | [`SqsMessage`] ([`sqs_event`] → [`SqsEvent`]) | the SQS event source: `executor` |
//!
//! `to_value()` / `to_json()` on a builder give the JSON; [`EventJson`] does the same for a
//! typed event (one built and then changed, say). The devstack builds every event it sends
//! with these builders, so a test that uses them sends what the devstack (and AWS) sends.
//!
//! ```
//! use testkit::events::{EventJson, Method, RestEvent};
//!
//! let event = RestEvent::new(Method::POST, "/v2/orders?dry_run=1")
//!     .header("apca-api-key-id", "PK1")
//!     .header("content-type", "application/json")
//!     .body(r#"{"symbol":"BTCUSDT"}"#)
//!     .source_ip("203.0.113.7")
//!     .stage("local");
//! let typed = event.build();
//! assert_eq!(typed.path_parameters["proxy"], "v2/orders");
//! assert_eq!(typed.query_string_parameters.first("dry_run"), Some("1"));
//! let json = event.to_json(); // what the function reads
//! assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap(), typed.to_value());
//! ```
//!
//! # Where the JSON is not the typed struct's serde output
//!
//! The structs serialize a few things differently from AWS (or cannot hold them); the JSON
//! is adjusted so that it is what AWS sends, and what `aws_lambda_events` and `lambda_http`
//! deserialize to the same struct:
//!
//! - empty maps that AWS sends as `null` (REST `pathParameters`, `stageVariables` and the
//!   query maps) or leaves out (WebSocket: no query, no headers in `$default`, no
//!   `resource`, `path`, `pathParameters`, `stageVariables`, `body` where AWS has none);
//! - `headers` keeps the *last* value of a repeated header, `multiValueHeaders` all of them
//!   (the struct's serializer would take the first), and the REST `queryStringParameters`
//!   the last value of a repeated parameter; the WebSocket `queryStringParameters` are
//!   strings (the struct serializes lists);
//! - header names keep the spelling given to a builder (a `HeaderMap` lower-cases them);
//! - a query string without parameters (`?&`) gives empty query maps (`{}`), as the
//!   devstack always sent it, where no query gives `null` (REST) or none (WebSocket): the
//!   typed maps cannot tell the two apart;
//! - fields the structs do not have: REST `requestContext.extendedRequestId` (the request
//!   id) and `requestContext.identity.principalOrgId` (`null`); and WebSocket
//!   `requestContext` fields without a value are left out rather than `null`, as AWS does
//!   (`identity` has `sourceIp` and `userAgent`), and REST `identity.apiKey`/`apiKeyId`
//!   are left out when `null`;
//! - SQS `md5OfMessageAttributes` is left out when the message has no attributes' digest.
//!
//! Header values that are not UTF-8 are taken lossily (U+FFFD), as the devstack always
//! did: the structs' serializers only write UTF-8.

mod base;
mod rest;
mod sqs;
mod websocket;

pub use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayWebsocketProxyRequest};
pub use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
pub use base::{
    aws_id, percent_decode, request_time, EventJson, ACCOUNT_ID, PROXY_RESOURCE, PROXY_RESOURCE_ID,
    QUEUE_ARN, REGION, REST_API_ID, STAGE, WEBSOCKET_API_ID,
};
pub use http::Method;
pub use rest::RestEvent;
pub use sqs::{sqs_event, SqsRecord};
pub use websocket::{WsEvent, WsRoute};
