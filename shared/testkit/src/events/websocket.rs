//! API Gateway WebSocket events (`$connect`, `$default`, `$disconnect` proxy integrations).

use aws_lambda_events::apigw::{
    ApiGatewayRequestIdentity, ApiGatewayWebsocketProxyRequest,
    ApiGatewayWebsocketProxyRequestContext,
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::base::{
    aws_id, encode_body, remove_if_empty, request_time, serialize, EventJson, HeaderList,
    QueryList, STAGE, WEBSOCKET_API_ID,
};

/// The route of a WebSocket event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsRoute {
    /// `$connect` (`eventType: CONNECT`): the upgrade request, with its headers and query.
    Connect,
    /// `$default` (`eventType: MESSAGE`): one message from the client.
    Message,
    /// `$disconnect` (`eventType: DISCONNECT`): the connection is gone.
    Disconnect,
}

impl WsRoute {
    /// `requestContext.routeKey`.
    pub fn route_key(self) -> &'static str {
        match self {
            Self::Connect => "$connect",
            Self::Message => "$default",
            Self::Disconnect => "$disconnect",
        }
    }

    /// `requestContext.eventType`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Message => "MESSAGE",
            Self::Disconnect => "DISCONNECT",
        }
    }
}

/// An event of an API Gateway WebSocket API for its route's Lambda proxy integration
/// ([`ApiGatewayWebsocketProxyRequest`]).
///
/// Shaped field for field like AWS's: `$connect` has the upgrade request's headers and (if
/// any) its query; `$default` has the message body (text, or base64 with
/// `isBase64Encoded: true`) and a `messageId`; `$disconnect` has `disconnectStatusCode`,
/// `disconnectReason` and the few fixed headers AWS sends there (`Host`, `x-api-key`,
/// `X-Forwarded-For`, `x-restapi`). Defaults: stage [`STAGE`], API id
/// [`WEBSOCKET_API_ID`], source IP `127.0.0.1`, random request and message ids in AWS's
/// format, connected and received now, `domainName` from the `host` header (else
/// `localhost`), `identity.userAgent` from the `user-agent` header.
///
/// ```
/// use testkit::events::WsEvent;
///
/// let connect = WsEvent::connect("L0SM9cOFvHcCIhw=")
///     .header("host", "127.0.0.1:3001")
///     .query("token", "t0k")
///     .build();
/// assert_eq!(connect.query_string_parameters.first("token"), Some("t0k"));
/// let message = WsEvent::message("L0SM9cOFvHcCIhw=", r#"{"action":"subscribe"}"#).build();
/// assert_eq!(message.request_context.route_key.as_deref(), Some("$default"));
/// let gone = WsEvent::disconnect("L0SM9cOFvHcCIhw=", 1001, "Going away").build();
/// assert_eq!(gone.request_context.disconnect_status_code, Some(1001));
/// ```
#[derive(Debug, Clone)]
pub struct WsEvent {
    route: WsRoute,
    connection_id: String,
    headers: HeaderList,
    query: QueryList,
    /// `(body, isBase64Encoded)`.
    body: Option<(String, bool)>,
    stage: String,
    request_id: String,
    message_id: Option<String>,
    source_ip: String,
    user_agent: Option<String>,
    domain_name: Option<String>,
    connected_at: Option<DateTime<Utc>>,
    time: DateTime<Utc>,
    api_id: String,
    disconnect: Option<(u16, String)>,
}

impl WsEvent {
    super::base::envelope_builders!();

    /// An event of `route` on connection `connection_id` (no body, no disconnect status:
    /// see [`connect`](Self::connect), [`message`](Self::message),
    /// [`disconnect`](Self::disconnect)).
    pub fn new(route: WsRoute, connection_id: impl Into<String>) -> Self {
        Self {
            route,
            connection_id: connection_id.into(),
            headers: HeaderList::default(),
            query: QueryList::default(),
            body: None,
            stage: STAGE.to_string(),
            request_id: aws_id(),
            message_id: (route == WsRoute::Message).then(aws_id),
            source_ip: "127.0.0.1".to_string(),
            user_agent: None,
            domain_name: None,
            connected_at: None,
            time: Utc::now(),
            api_id: WEBSOCKET_API_ID.to_string(),
            disconnect: None,
        }
    }

    /// The `$connect` event (add the upgrade request's headers and query).
    pub fn connect(connection_id: impl Into<String>) -> Self {
        Self::new(WsRoute::Connect, connection_id)
    }

    /// The `$default` event of one message (see [`body`](Self::body)).
    pub fn message(connection_id: impl Into<String>, body: impl AsRef<[u8]>) -> Self {
        Self::new(WsRoute::Message, connection_id).body(body)
    }

    /// The `$disconnect` event: the close code and reason (AWS: `disconnectStatusCode`,
    /// `disconnectReason`).
    pub fn disconnect(
        connection_id: impl Into<String>,
        status_code: u16,
        reason: impl Into<String>,
    ) -> Self {
        let mut event = Self::new(WsRoute::Disconnect, connection_id);
        event.disconnect = Some((status_code, reason.into()));
        event
    }

    /// The message: text, or base64 with `isBase64Encoded: true` when it is not UTF-8 (an
    /// empty message is `""`).
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = Some(encode_body(body.as_ref()));
        self
    }

    /// A binary message: always base64 with `isBase64Encoded: true`.
    pub fn body_base64(mut self, body: impl AsRef<[u8]>) -> Self {
        let encoded = base64::engine::general_purpose::STANDARD.encode(body.as_ref());
        self.body = Some((encoded, true));
        self
    }

    /// `requestContext.messageId` (`$default` only by default: a random AWS-style id).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// `requestContext.connectedAt` (default: the event's [`time`](Self::time)).
    pub fn connected_at(mut self, connected_at: DateTime<Utc>) -> Self {
        self.connected_at = Some(connected_at);
        self
    }

    fn domain(&self) -> String {
        self.domain_name
            .clone()
            .or_else(|| self.headers.first("host").map(str::to_string))
            .unwrap_or_else(|| "localhost".to_string())
    }

    /// The headers of the event: on `$disconnect`, AWS's fixed ones first.
    fn header_list(&self) -> HeaderList {
        if self.route != WsRoute::Disconnect {
            return self.headers.clone();
        }
        let mut list = HeaderList::default();
        list.push("Host", self.domain().as_bytes());
        list.push("x-api-key", b"");
        list.push("X-Forwarded-For", b"");
        list.push("x-restapi", b"");
        list.append(&self.headers);
        list
    }

    /// The typed event.
    pub fn build(&self) -> ApiGatewayWebsocketProxyRequest {
        let (headers, multi_value_headers) = self.header_list().maps();
        let (query, multi_query) = self.query.maps();

        let mut identity = ApiGatewayRequestIdentity::default();
        identity.source_ip = Some(self.source_ip.clone());
        identity.user_agent = self
            .user_agent
            .clone()
            .or_else(|| self.headers.first("user-agent").map(str::to_string));

        let mut rc = ApiGatewayWebsocketProxyRequestContext::default();
        rc.route_key = Some(self.route.route_key().to_string());
        rc.event_type = Some(self.route.event_type().to_string());
        rc.extended_request_id = Some(self.request_id.clone());
        rc.request_time = Some(request_time(self.time));
        rc.message_direction = Some("IN".to_string());
        rc.stage = Some(self.stage.clone());
        rc.connected_at = self.connected_at.unwrap_or(self.time).timestamp_millis();
        rc.request_time_epoch = self.time.timestamp_millis();
        rc.identity = identity;
        rc.request_id = Some(self.request_id.clone());
        rc.domain_name = Some(self.domain());
        rc.connection_id = Some(self.connection_id.clone());
        rc.apiid = Some(self.api_id.clone());
        rc.message_id = self.message_id.clone();
        if let Some((code, reason)) = &self.disconnect {
            rc.disconnect_status_code = Some(i64::from(*code));
            rc.disconnect_reason = Some(reason.clone());
        }

        let mut event = ApiGatewayWebsocketProxyRequest::default();
        event.headers = headers;
        event.multi_value_headers = multi_value_headers;
        event.query_string_parameters = query;
        event.multi_value_query_string_parameters = multi_query;
        event.request_context = rc;
        if let Some((body, is_base64)) = &self.body {
            event.body = Some(body.clone());
            event.is_base64_encoded = *is_base64;
        }
        event
    }

    /// The event as API Gateway sends it (JSON value).
    pub fn to_value(&self) -> Value {
        let mut v = self.build().to_value();
        self.query.restore_empty(&mut v);
        self.header_list().restore_spelling(&mut v);
        v
    }
}

impl EventJson for ApiGatewayWebsocketProxyRequest {
    fn to_value(&self) -> Value {
        let mut v = serialize(self, "WebSocket event");
        let Some(event) = v.as_object_mut() else {
            return v;
        };
        // AWS leaves out what a WebSocket event does not have.
        for key in [
            "resource",
            "path",
            "pathParameters",
            "stageVariables",
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "body",
        ] {
            remove_if_empty(event, key);
        }
        // Single values are strings (the struct writes lists); the last value, as in REST.
        if let Some(query) = event
            .get_mut("queryStringParameters")
            .and_then(Value::as_object_mut)
        {
            for value in query.values_mut() {
                if let Value::Array(values) = value {
                    *value = values.pop().unwrap_or(Value::Null);
                }
            }
        }
        if let Some(rc) = event
            .get_mut("requestContext")
            .and_then(Value::as_object_mut)
        {
            rc.retain(|_, v| !v.is_null());
            if let Some(identity) = rc.get_mut("identity").and_then(Value::as_object_mut) {
                identity.retain(|k, v| k == "sourceIp" || k == "userAgent" || !v.is_null());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    const ID: &str = "L0SM9cOFvHcCIhw=";

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    fn connect() -> WsEvent {
        WsEvent::connect(ID)
            .header("host", "127.0.0.1:3001")
            .header("user-agent", "test-agent")
            .header("upgrade", "websocket")
            .header("x-amzn-trace-id", "Root=1-x")
            .header("x-forwarded-for", "127.0.0.1")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-port", "3001")
            .raw_query("token=a%3Db&x=1&x=2")
            .source_ip("127.0.0.1")
            .domain_name("127.0.0.1:3001")
            .request_id("req1=")
            .connected_at(at(1_723_075_100_000))
            .time(at(1_723_075_200_123))
    }

    /// The context every event of the connection has (as the devstack sent it before).
    fn context(route: &str, event_type: &str, request_id: &str) -> Value {
        json!({
            "apiId": "local",
            "connectedAt": 1_723_075_100_000_i64,
            "connectionId": ID,
            "domainName": "127.0.0.1:3001",
            "eventType": event_type,
            "extendedRequestId": request_id,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "test-agent"},
            "messageDirection": "IN",
            "requestId": request_id,
            "requestTime": "08/Aug/2024:00:00:00 +0000",
            "requestTimeEpoch": 1_723_075_200_123_i64,
            "routeKey": route,
            "stage": "local"
        })
    }

    #[test]
    fn connect_json_is_what_the_devstack_sent_before() {
        let headers = json!({
            "host": "127.0.0.1:3001",
            "upgrade": "websocket",
            "user-agent": "test-agent",
            "x-amzn-trace-id": "Root=1-x",
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-port": "3001",
            "x-forwarded-proto": "http"
        });
        let multi: serde_json::Map<String, Value> = headers
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect();
        assert_eq!(
            connect().to_value(),
            json!({
                "headers": headers,
                "multiValueHeaders": multi,
                "queryStringParameters": {"token": "a=b", "x": "2"},
                "multiValueQueryStringParameters": {"token": ["a=b"], "x": ["1", "2"]},
                "requestContext": context("$connect", "CONNECT", "req1="),
                "isBase64Encoded": false
            })
        );
        // Without a query, both query fields are left out (as AWS does).
        let no_query = WsEvent::connect(ID).header("host", "h").to_value();
        assert!(no_query.get("queryStringParameters").is_none());
        assert!(no_query.get("multiValueQueryStringParameters").is_none());
        // A query string without parameters: empty maps.
        let bare = WsEvent::connect(ID).raw_query("&").to_value();
        assert_eq!(bare["queryStringParameters"], json!({}));
        assert_eq!(bare["multiValueQueryStringParameters"], json!({}));
    }

    #[test]
    fn message_and_disconnect_json_is_what_the_devstack_sent_before() {
        let message = WsEvent::message(ID, "hi")
            .user_agent("test-agent")
            .domain_name("127.0.0.1:3001")
            .request_id("req2=")
            .message_id("msg2=")
            .connected_at(at(1_723_075_100_000))
            .time(at(1_723_075_200_123));
        let mut rc = context("$default", "MESSAGE", "req2=");
        rc["messageId"] = json!("msg2=");
        assert_eq!(
            message.to_value(),
            json!({"requestContext": rc, "body": "hi", "isBase64Encoded": false})
        );
        // No user agent: `userAgent` is null (not left out).
        let v = WsEvent::message(ID, "").to_value();
        assert_eq!(
            v["requestContext"]["identity"],
            json!({"sourceIp": "127.0.0.1", "userAgent": null})
        );
        assert_eq!(v["body"], "");

        let binary = WsEvent::message(ID, [0, 159, 255]).to_value();
        assert_eq!(binary["body"], "AJ//");
        assert_eq!(binary["isBase64Encoded"], true);
        let forced = WsEvent::message(ID, "").body_base64("ok").to_value();
        assert_eq!(
            (&forced["body"], &forced["isBase64Encoded"]),
            (&json!("b2s="), &json!(true))
        );

        let gone = WsEvent::disconnect(ID, 1001, "Going away")
            .user_agent("test-agent")
            .domain_name("127.0.0.1:3001")
            .request_id("req4=")
            .connected_at(at(1_723_075_100_000))
            .time(at(1_723_075_200_123));
        let mut rc = context("$disconnect", "DISCONNECT", "req4=");
        rc["disconnectStatusCode"] = json!(1001);
        rc["disconnectReason"] = json!("Going away");
        assert_eq!(
            gone.to_value(),
            json!({
                "headers": {
                    "Host": "127.0.0.1:3001",
                    "x-api-key": "",
                    "X-Forwarded-For": "",
                    "x-restapi": ""
                },
                "multiValueHeaders": {
                    "Host": ["127.0.0.1:3001"],
                    "x-api-key": [""],
                    "X-Forwarded-For": [""],
                    "x-restapi": [""]
                },
                "requestContext": rc,
                "isBase64Encoded": false
            })
        );
    }

    #[test]
    fn deserializes_with_aws_lambda_events_to_the_built_event() {
        let message = WsEvent::message(ID, [0, 159, 255]);
        let gone = WsEvent::disconnect(ID, 1006, "Client connection lost");
        for event in [connect(), message, gone] {
            let parsed: ApiGatewayWebsocketProxyRequest =
                serde_json::from_str(&event.to_json()).unwrap();
            assert_eq!(parsed, event.build(), "{}", event.to_json());
        }

        let parsed: ApiGatewayWebsocketProxyRequest =
            serde_json::from_str(&connect().to_json()).unwrap();
        let rc = &parsed.request_context;
        assert_eq!(rc.route_key.as_deref(), Some("$connect"));
        assert_eq!(rc.event_type.as_deref(), Some("CONNECT"));
        assert_eq!(rc.connection_id.as_deref(), Some(ID));
        assert_eq!(rc.identity.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(rc.connected_at, 1_723_075_100_000);
        assert_eq!(parsed.query_string_parameters.first("token"), Some("a=b"));
        assert_eq!(
            parsed.multi_value_query_string_parameters.all("x"),
            Some(vec!["1", "2"])
        );
        assert_eq!(parsed.headers["upgrade"], "websocket");

        let parsed: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(WsEvent::message(ID, "hi").message_id("m1").to_value()).unwrap();
        assert_eq!(parsed.body.as_deref(), Some("hi"));
        assert_eq!(parsed.request_context.message_id.as_deref(), Some("m1"));
        assert!(parsed.headers.is_empty());

        let parsed: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(WsEvent::disconnect(ID, 1001, "Going away").to_value()).unwrap();
        let rc = &parsed.request_context;
        assert_eq!(rc.route_key.as_deref(), Some("$disconnect"));
        assert_eq!(rc.disconnect_status_code, Some(1001));
        assert_eq!(rc.disconnect_reason.as_deref(), Some("Going away"));
        assert_eq!(parsed.headers["host"], "localhost");
        assert!(rc.message_id.is_none());
    }

    #[test]
    fn ids_and_times_default_like_aws() {
        let event = WsEvent::message(ID, "x").build();
        let rc = &event.request_context;
        assert_eq!(rc.request_id.as_ref().unwrap().len(), 16);
        assert_eq!(rc.message_id.as_ref().unwrap().len(), 16);
        assert_ne!(rc.request_id, rc.message_id);
        assert_eq!(rc.extended_request_id, rc.request_id);
        assert_eq!(rc.connected_at, rc.request_time_epoch);
        assert!(WsEvent::connect(ID)
            .build()
            .request_context
            .message_id
            .is_none());
    }
}
