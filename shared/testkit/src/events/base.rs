//! What every event kind uses: the default ids, [`EventJson`], and the header, query and
//! body handling. The event modules depend on this one, not on each other or on their
//! parent (which only re-exports).

use std::collections::HashMap;

use aws_lambda_events::query_map::QueryMap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// The AWS account id of every event (`requestContext.accountId`, queue ARNs).
pub const ACCOUNT_ID: &str = "123456789012";
/// The region of SQS records (`awsRegion`) and of [`QUEUE_ARN`].
pub const REGION: &str = "us-east-1";
/// The API Gateway stage (REST and WebSocket).
pub const STAGE: &str = "local";
/// The REST API id (`requestContext.apiId`), as the devstack's.
pub const REST_API_ID: &str = "devstack01";
/// The REST resource of the `api` function.
pub const PROXY_RESOURCE: &str = "/{proxy+}";
/// The resource id of [`PROXY_RESOURCE`] (and of `/`), as the devstack's.
pub const PROXY_RESOURCE_ID: &str = "proxy0";
/// The WebSocket API id (`requestContext.apiId`), as the devstack's.
pub const WEBSOCKET_API_ID: &str = "local";
/// The queue of SQS records unless told otherwise (`eventSourceARN`).
pub const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:commands.fifo";

/// The JSON AWS sends for a typed event (see the `testkit::events` docs for where it differs
/// from the struct's own serde output).
pub trait EventJson {
    /// The event as a JSON value.
    ///
    /// # Panics
    ///
    /// If the struct cannot be serialized, which only happens with a header value that is
    /// not UTF-8 (the builders never make one).
    fn to_value(&self) -> Value;

    /// The event as JSON text.
    fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// An id in the format API Gateway uses for WebSocket connection, request and message ids:
/// 11 random bytes in standard base64, i.e. 16 characters ending in `=` (`L0SM9cOFvHcCIhw=`).
pub fn aws_id() -> String {
    let random = uuid::Uuid::new_v4();
    base64::engine::general_purpose::STANDARD.encode(&random.as_bytes()[..11])
}

/// `requestContext.requestTime`: `08/Aug/2024:00:00:00 +0000`.
pub fn request_time(t: DateTime<Utc>) -> String {
    t.format("%d/%b/%Y:%H:%M:%S %z").to_string()
}

/// Percent-decode a path (segment); invalid escapes are kept as they are, bytes that are not
/// UTF-8 become U+FFFD. This is how `pathParameters` values are decoded.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Headers in the order and spelling they were given (values as text).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderList(Vec<(String, String)>);

impl HeaderList {
    /// Append a value (repeated names add values).
    ///
    /// # Panics
    ///
    /// On a name that is not a valid header name, or a value with control characters.
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        let value = String::from_utf8_lossy(value).into_owned();
        if let Err(e) = HeaderName::from_bytes(name.as_bytes()) {
            panic!("invalid header name {name:?}: {e}");
        }
        if let Err(e) = HeaderValue::from_str(&value) {
            panic!("invalid value of header {name}: {value:?}: {e}");
        }
        self.0.push((name.to_string(), value));
    }

    /// Append every header of another list.
    pub(crate) fn append(&mut self, other: &HeaderList) {
        self.0.extend(other.0.iter().cloned());
    }

    pub(crate) fn extend(&mut self, headers: &HeaderMap) {
        for name in headers.keys() {
            for value in headers.get_all(name) {
                self.push(name.as_str(), value.as_bytes());
            }
        }
    }

    /// The first value of a header (names compare case-insensitively).
    pub(crate) fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(headers, multiValueHeaders)`: the last value of each header, and all of them.
    pub(crate) fn maps(&self) -> (HeaderMap, HeaderMap) {
        let mut multi = HeaderMap::new();
        for (name, value) in &self.0 {
            // Validated in `push`.
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                multi.append(n, v);
            }
        }
        let mut single = HeaderMap::new();
        for name in multi.keys() {
            if let Some(last) = multi.get_all(name).iter().next_back() {
                single.insert(name.clone(), last.clone());
            }
        }
        (single, multi)
    }

    /// Rename the lower-cased header names in `event`'s `headers` and `multiValueHeaders`
    /// to the spelling they were given in (the first one, if given in several).
    pub(crate) fn restore_spelling(&self, event: &mut Value) {
        let mut seen: Vec<String> = Vec::new();
        for (name, _) in &self.0 {
            let lower = name.to_ascii_lowercase();
            if seen.contains(&lower) {
                continue;
            }
            seen.push(lower.clone());
            if lower == *name {
                continue;
            }
            for field in ["headers", "multiValueHeaders"] {
                if let Some(map) = event.get_mut(field).and_then(Value::as_object_mut) {
                    if let Some(v) = map.remove(&lower) {
                        map.insert(name.clone(), v);
                    }
                }
            }
        }
    }
}

/// Decoded query parameters, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryList {
    params: Vec<(String, String)>,
    /// A raw query string that was not empty was given (`?&` has no parameters, but the
    /// query maps are then `{}` rather than absent or `null`).
    raw: bool,
}

impl QueryList {
    pub(crate) fn push(&mut self, name: &str, value: &str) {
        self.params.push((name.to_string(), value.to_string()));
    }

    /// Add the parameters of a raw (form-urlencoded) query string: `a=1&b=x%20y&a=2`.
    pub(crate) fn push_raw(&mut self, query: &str) {
        self.raw |= !query.is_empty();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            self.push(&k, &v);
        }
    }

    /// A query string without parameters (`?&`): both query maps are `{}` in `event`, as
    /// the devstack always sent them (the typed maps cannot tell this from no query).
    pub(crate) fn restore_empty(&self, event: &mut Value) {
        if !self.raw || !self.params.is_empty() {
            return;
        }
        if let Some(event) = event.as_object_mut() {
            for key in ["queryStringParameters", "multiValueQueryStringParameters"] {
                event.insert(key.to_string(), Value::Object(Map::new()));
            }
        }
    }

    /// `(queryStringParameters, multiValueQueryStringParameters)`: the last value of each
    /// parameter (as API Gateway keeps it), and all of them.
    pub(crate) fn maps(&self) -> (QueryMap, QueryMap) {
        let mut single: HashMap<String, Vec<String>> = HashMap::new();
        let mut multi: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in &self.params {
            single.insert(k.clone(), vec![v.clone()]);
            multi.entry(k.clone()).or_default().push(v.clone());
        }
        (QueryMap::from(single), QueryMap::from(multi))
    }
}

/// A body as API Gateway passes it: the text, or base64 (`isBase64Encoded: true`) when it is
/// not UTF-8.
pub(crate) fn encode_body(body: &[u8]) -> (String, bool) {
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    }
}

/// Serialize a typed event (see [`EventJson::to_value`] for the panic).
pub(crate) fn serialize<T: serde::Serialize>(event: &T, what: &str) -> Value {
    match serde_json::to_value(event) {
        Ok(v) => v,
        Err(e) => panic!("cannot serialize the {what}: {e}"),
    }
}

/// True for `null` and `{}`.
pub(crate) fn is_empty_map(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// `obj[key] = null` where it is an empty map.
pub(crate) fn null_if_empty(obj: &mut Map<String, Value>, key: &str) {
    if let Some(v) = obj.get_mut(key) {
        if is_empty_map(v) {
            *v = Value::Null;
        }
    }
}

/// Remove `obj[key]` where it is `null` or an empty map.
pub(crate) fn remove_if_empty(obj: &mut Map<String, Value>, key: &str) {
    if obj.get(key).is_some_and(is_empty_map) {
        obj.remove(key);
    }
}

/// The builder methods every API Gateway event shares (the REST request and the WebSocket
/// route events), written once over the fields of the same names: `headers`, `query`,
/// `source_ip`, `user_agent`, `domain_name`, `stage`, `request_id`, `time` and `api_id`.
macro_rules! envelope_builders {
    () => {
        /// Add a header value (a repeated name adds a value: `headers` gets the last one,
        /// `multiValueHeaders` all). Values that are not UTF-8 are taken lossily.
        ///
        /// # Panics
        ///
        /// On an invalid header name, or a value with control characters.
        pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
            self.headers.push(name.as_ref(), value.as_ref());
            self
        }

        /// Add every value of a header map.
        pub fn headers(mut self, headers: &http::HeaderMap) -> Self {
            self.headers.extend(headers);
            self
        }

        /// Add a (decoded) query parameter (of the upgrade URL, for WebSocket events); a
        /// repeated name adds a value (`queryStringParameters` gets the last one,
        /// `multiValueQueryStringParameters` all).
        pub fn query(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
            self.query.push(name.as_ref(), value.as_ref());
            self
        }

        /// Add the parameters of a raw query string (`a=1&b=x%20y`).
        pub fn raw_query(mut self, query: &str) -> Self {
            self.query.push_raw(query);
            self
        }

        /// `requestContext.identity.sourceIp` (default `127.0.0.1`).
        pub fn source_ip(mut self, ip: impl ToString) -> Self {
            self.source_ip = ip.to_string();
            self
        }

        /// `requestContext.identity.userAgent` (default: the `user-agent` header).
        pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
            self.user_agent = Some(user_agent.into());
            self
        }

        /// `requestContext.domainName`, `host:port` the client called (default: the `host`
        /// header, else `localhost`); `domainPrefix` is its first label.
        pub fn domain_name(mut self, domain_name: impl Into<String>) -> Self {
            self.domain_name = Some(domain_name.into());
            self
        }

        /// The stage (default [`STAGE`](crate::events::STAGE)): `requestContext.stage`, and
        /// for REST the first segment of `requestContext.path`.
        pub fn stage(mut self, stage: impl Into<String>) -> Self {
            self.stage = stage.into();
            self
        }

        /// `requestContext.requestId` (and `extendedRequestId`); default: a random id.
        pub fn request_id(mut self, id: impl Into<String>) -> Self {
            self.request_id = id.into();
            self
        }

        /// When API Gateway received the event (`requestTime`, `requestTimeEpoch`);
        /// default: now.
        pub fn time(mut self, time: chrono::DateTime<chrono::Utc>) -> Self {
            self.time = time;
            self
        }

        /// The event as API Gateway sends it (JSON text).
        pub fn to_json(&self) -> String {
            self.to_value().to_string()
        }

        /// `requestContext.apiId` (default: the REST or the WebSocket API's sample id).
        pub fn api_id(mut self, api_id: impl Into<String>) -> Self {
            self.api_id = api_id.into();
            self
        }
    };
}
pub(crate) use envelope_builders;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_api_gateway_ids() {
        for _ in 0..100 {
            let id = aws_id();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.ends_with('=') && !id.ends_with("=="), "{id}");
        }
        assert_ne!(aws_id(), aws_id());
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("wh%20abc"), "wh abc");
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn request_time_is_api_gateways_format() {
        let t = DateTime::from_timestamp_millis(1_723_075_200_123).unwrap();
        assert_eq!(request_time(t), "08/Aug/2024:00:00:00 +0000");
    }

    #[test]
    fn header_list_keeps_order_last_value_and_spelling() {
        let mut h = HeaderList::default();
        h.push("X-Multi", b"one");
        h.push("x-multi", b"two");
        h.push("host", b"h:1");
        h.push("x-bytes", &[b'a', 0xff, b'b']);
        assert_eq!(h.first("x-MULTI"), Some("one"));
        let (single, multi) = h.maps();
        assert_eq!(single["x-multi"], "two");
        let all: Vec<_> = multi.get_all("x-multi").iter().collect();
        assert_eq!(all, ["one", "two"]);
        // Not UTF-8: taken lossily.
        assert_eq!(single["x-bytes"].as_bytes(), "a\u{fffd}b".as_bytes());

        let mut v = serde_json::json!({
            "headers": {"x-multi": "two", "host": "h:1"},
            "multiValueHeaders": {"x-multi": ["one", "two"], "host": ["h:1"]},
        });
        h.restore_spelling(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "headers": {"X-Multi": "two", "host": "h:1"},
                "multiValueHeaders": {"X-Multi": ["one", "two"], "host": ["h:1"]},
            })
        );
    }

    #[test]
    #[should_panic(expected = "invalid header name")]
    fn invalid_header_names_are_refused() {
        HeaderList::default().push("bad name", b"x");
    }

    #[test]
    fn query_list_decodes_and_keeps_the_last_single_value() {
        let mut q = QueryList::default();
        q.push_raw("client_order_id=demo%201&x=1&x=2&plus=a+b");
        let (single, multi) = q.maps();
        assert_eq!(single.first("client_order_id"), Some("demo 1"));
        assert_eq!(single.all("x"), Some(vec!["2"]));
        assert_eq!(multi.all("x"), Some(vec!["1", "2"]));
        assert_eq!(single.first("plus"), Some("a b"));

        let mut v = serde_json::json!({"queryStringParameters": null});
        q.restore_empty(&mut v);
        assert_eq!(v["queryStringParameters"], Value::Null);
        let mut empty = QueryList::default();
        empty.push_raw("&");
        empty.restore_empty(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"queryStringParameters": {}, "multiValueQueryStringParameters": {}})
        );
    }
}
