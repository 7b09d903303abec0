//! API Gateway REST proxy events (Lambda proxy integration, payload format 1.0).

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyRequestContext, ApiGatewayRequestIdentity,
};
use chrono::{DateTime, Utc};
use http::Method;
use serde_json::Value;

use super::base::{
    encode_body, null_if_empty, percent_decode, request_time, serialize, EventJson, HeaderList,
    QueryList, ACCOUNT_ID, PROXY_RESOURCE, PROXY_RESOURCE_ID, REST_API_ID, STAGE,
};

/// A request to a REST API's Lambda proxy integration, as API Gateway passes it
/// ([`ApiGatewayProxyRequest`], which `lambda_http` turns into the `http::Request` the
/// handler gets).
///
/// By default the request goes to the `/{proxy+}` resource (`/` for the root path) with
/// `pathParameters: {"proxy": <the path without its leading />, percent-decoded>}`;
/// [`resource`](Self::resource) and [`path_parameter`](Self::path_parameter) make it any
/// other resource. Defaults: stage [`STAGE`], source IP `127.0.0.1`, a random request id,
/// the current time, `domainName` from the `host` header (else `localhost`),
/// `identity.userAgent` from the `user-agent` header. Headers are taken as given: API
/// Gateway's own (`x-forwarded-for` and the like) are the caller's to add.
///
/// ```
/// use testkit::events::{Method, RestEvent};
///
/// let event = RestEvent::new(Method::POST, "/v2/hooks/tradingview/wh_1")
///     .resource("/v2/hooks/tradingview/{webhook_id}", "hook01")
///     .path_parameter("webhook_id", "wh_1")
///     .body("{}")
///     .build();
/// assert_eq!(event.path_parameters["webhook_id"], "wh_1");
/// assert_eq!(event.request_context.resource_path.as_deref(), Some("/v2/hooks/tradingview/{webhook_id}"));
/// ```
#[derive(Debug, Clone)]
pub struct RestEvent {
    method: Method,
    path: String,
    query: QueryList,
    headers: HeaderList,
    body: Vec<u8>,
    /// `(resource, resource id)`, when not the `/{proxy+}` default.
    resource: Option<(String, String)>,
    path_parameters: Vec<(String, String)>,
    stage: String,
    request_id: String,
    source_ip: String,
    user_agent: Option<String>,
    domain_name: Option<String>,
    time: DateTime<Utc>,
    account_id: String,
    api_id: String,
}

impl RestEvent {
    super::base::envelope_builders!();

    /// A request for `path`, which may carry a query string (`/v2/orders?status=open`,
    /// decoded as a form: `%20` and `+` are spaces). The path itself stays as given
    /// (percent-encoded, as API Gateway passes it).
    pub fn new(method: Method, path: &str) -> Self {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut event = Self {
            method,
            path: if path.is_empty() { "/" } else { path }.to_string(),
            query: QueryList::default(),
            headers: HeaderList::default(),
            body: Vec::new(),
            resource: None,
            path_parameters: Vec::new(),
            stage: STAGE.to_string(),
            request_id: uuid::Uuid::new_v4().to_string(),
            source_ip: "127.0.0.1".to_string(),
            user_agent: None,
            domain_name: None,
            time: Utc::now(),
            account_id: ACCOUNT_ID.to_string(),
            api_id: REST_API_ID.to_string(),
        };
        if let Some(q) = query {
            event.query.push_raw(q);
        }
        event
    }

    /// The body: text, or base64 with `isBase64Encoded: true` when it is not UTF-8; an empty
    /// body is `null`.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// A JSON body (the `content-type` header is the caller's to set).
    pub fn json_body(self, body: &impl serde::Serialize) -> Self {
        let text = serde_json::to_vec(body).expect("a JSON body serializes");
        self.body(text)
    }

    /// The resource and its id, instead of `/{proxy+}` and its `proxy` path parameter.
    pub fn resource(mut self, resource: impl Into<String>, resource_id: impl Into<String>) -> Self {
        self.resource = Some((resource.into(), resource_id.into()));
        self
    }

    /// Add a path parameter (the value as the function gets it, i.e. decoded).
    pub fn path_parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.path_parameters.push((name.into(), value.into()));
        self
    }

    /// `requestContext.accountId` (default [`ACCOUNT_ID`]).
    pub fn account_id(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = account_id.into();
        self
    }

    /// The typed event.
    pub fn build(&self) -> ApiGatewayProxyRequest {
        let (resource, resource_id) = match &self.resource {
            Some((r, id)) => (r.clone(), id.clone()),
            None if self.path == "/" => ("/".to_string(), PROXY_RESOURCE_ID.to_string()),
            None => (PROXY_RESOURCE.to_string(), PROXY_RESOURCE_ID.to_string()),
        };
        let mut path_parameters = HashMap::new();
        if self.resource.is_none() && self.path != "/" {
            path_parameters.insert(
                "proxy".to_string(),
                percent_decode(self.path.trim_start_matches('/')),
            );
        }
        for (k, v) in &self.path_parameters {
            path_parameters.insert(k.clone(), v.clone());
        }
        let (headers, multi_value_headers) = self.headers.maps();
        let (query, multi_query) = self.query.maps();
        let domain_name = self
            .domain_name
            .clone()
            .or_else(|| self.headers.first("host").map(str::to_string))
            .unwrap_or_else(|| "localhost".to_string());
        let domain_prefix = domain_name
            .split(['.', ':'])
            .next()
            .unwrap_or_default()
            .to_string();

        let mut identity = ApiGatewayRequestIdentity::default();
        identity.source_ip = Some(self.source_ip.clone());
        identity.user_agent = self
            .user_agent
            .clone()
            .or_else(|| self.headers.first("user-agent").map(str::to_string));

        let mut rc = ApiGatewayProxyRequestContext::default();
        rc.account_id = Some(self.account_id.clone());
        rc.resource_id = Some(resource_id);
        rc.stage = Some(self.stage.clone());
        rc.domain_name = Some(domain_name);
        rc.domain_prefix = Some(domain_prefix);
        rc.request_id = Some(self.request_id.clone());
        rc.protocol = Some("HTTP/1.1".to_string());
        rc.identity = identity;
        rc.resource_path = Some(resource.clone());
        rc.path = Some(format!("/{}{}", self.stage, self.path));
        rc.http_method = self.method.clone();
        rc.request_time = Some(request_time(self.time));
        rc.request_time_epoch = self.time.timestamp_millis();
        rc.apiid = Some(self.api_id.clone());

        let mut event = ApiGatewayProxyRequest::default();
        event.resource = Some(resource);
        event.path = Some(self.path.clone());
        event.http_method = self.method.clone();
        event.headers = headers;
        event.multi_value_headers = multi_value_headers;
        event.query_string_parameters = query;
        event.multi_value_query_string_parameters = multi_query;
        event.path_parameters = path_parameters;
        event.request_context = rc;
        if !self.body.is_empty() {
            let (body, is_base64) = encode_body(&self.body);
            event.body = Some(body);
            event.is_base64_encoded = is_base64;
        }
        event
    }

    /// The event as API Gateway sends it (JSON value).
    pub fn to_value(&self) -> Value {
        let mut v = self.build().to_value();
        self.query.restore_empty(&mut v);
        self.headers.restore_spelling(&mut v);
        v
    }
}

impl EventJson for ApiGatewayProxyRequest {
    fn to_value(&self) -> Value {
        let mut v = serialize(self, "REST proxy event");
        let Some(event) = v.as_object_mut() else {
            return v;
        };
        // Empty maps are null on AWS.
        for key in [
            "pathParameters",
            "stageVariables",
            "queryStringParameters",
            "multiValueQueryStringParameters",
        ] {
            null_if_empty(event, key);
        }
        if let Some(rc) = event
            .get_mut("requestContext")
            .and_then(Value::as_object_mut)
        {
            // Not in the struct: the devstack's extended request id is the request id.
            if let Some(id) = rc.get("requestId").filter(|id| !id.is_null()).cloned() {
                rc.entry("extendedRequestId").or_insert(id);
            }
            if let Some(identity) = rc.get_mut("identity").and_then(Value::as_object_mut) {
                identity.entry("principalOrgId").or_insert(Value::Null);
                for key in ["apiKey", "apiKeyId"] {
                    if identity.get(key).is_some_and(Value::is_null) {
                        identity.remove(key);
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::apigw::ApiGatewayProxyRequest;
    use chrono::TimeZone;
    use lambda_http::RequestExt;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_723_075_200_123).unwrap()
    }

    /// The request behind `EXPECTED`: POST /v2/orders from 127.0.0.9 with an X-Forwarded-For
    /// and the headers API Gateway adds, as the devstack passes them.
    fn representative() -> RestEvent {
        RestEvent::new(
            Method::POST,
            "/v2/orders?client_order_id=demo%201&x=1&x=2&plus=a+b",
        )
        .header("host", "127.0.0.1:3000")
        .header("user-agent", "alpaca-py/0.30")
        .header("apca-api-key-id", "PK1")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("content-type", "application/json")
        .header(
            "x-amzn-trace-id",
            "Root=1-66b4a000-000000000000000000000001;Parent=0000000000000001;Sampled=0",
        )
        .header("x-forwarded-for", "203.0.113.7, 127.0.0.9")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-port", "3000")
        .body(r#"{"symbol":"BTCUSDT","qty":"0.01"}"#)
        .source_ip("127.0.0.9")
        .stage("local")
        .request_id("11111111-2222-3333-4444-555555555555")
        .time(at())
    }

    /// What the devstack's hand-written `build_proxy_event` sent for this request before it
    /// used the builder (captured from it).
    fn expected() -> Value {
        json!({
            "body": "{\"symbol\":\"BTCUSDT\",\"qty\":\"0.01\"}",
            "headers": {
                "apca-api-key-id": "PK1",
                "content-type": "application/json",
                "host": "127.0.0.1:3000",
                "user-agent": "alpaca-py/0.30",
                "x-amzn-trace-id": "Root=1-66b4a000-000000000000000000000001;Parent=0000000000000001;Sampled=0",
                "x-forwarded-for": "203.0.113.7, 127.0.0.9",
                "x-forwarded-port": "3000",
                "x-forwarded-proto": "http",
                "x-multi": "two"
            },
            "httpMethod": "POST",
            "isBase64Encoded": false,
            "multiValueHeaders": {
                "apca-api-key-id": ["PK1"],
                "content-type": ["application/json"],
                "host": ["127.0.0.1:3000"],
                "user-agent": ["alpaca-py/0.30"],
                "x-amzn-trace-id": ["Root=1-66b4a000-000000000000000000000001;Parent=0000000000000001;Sampled=0"],
                "x-forwarded-for": ["203.0.113.7, 127.0.0.9"],
                "x-forwarded-port": ["3000"],
                "x-forwarded-proto": ["http"],
                "x-multi": ["one", "two"]
            },
            "multiValueQueryStringParameters": {
                "client_order_id": ["demo 1"],
                "plus": ["a b"],
                "x": ["1", "2"]
            },
            "path": "/v2/orders",
            "pathParameters": {"proxy": "v2/orders"},
            "queryStringParameters": {
                "client_order_id": "demo 1",
                "plus": "a b",
                "x": "2"
            },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "devstack01",
                "domainName": "127.0.0.1:3000",
                "domainPrefix": "127",
                "extendedRequestId": "11111111-2222-3333-4444-555555555555",
                "httpMethod": "POST",
                "identity": {
                    "accessKey": null,
                    "accountId": null,
                    "caller": null,
                    "cognitoAuthenticationProvider": null,
                    "cognitoAuthenticationType": null,
                    "cognitoIdentityId": null,
                    "cognitoIdentityPoolId": null,
                    "principalOrgId": null,
                    "sourceIp": "127.0.0.9",
                    "user": null,
                    "userAgent": "alpaca-py/0.30",
                    "userArn": null
                },
                "path": "/local/v2/orders",
                "protocol": "HTTP/1.1",
                "requestId": "11111111-2222-3333-4444-555555555555",
                "requestTime": "08/Aug/2024:00:00:00 +0000",
                "requestTimeEpoch": 1723075200123_i64,
                "resourceId": "proxy0",
                "resourcePath": "/{proxy+}",
                "stage": "local"
            },
            "resource": "/{proxy+}",
            "stageVariables": null
        })
    }

    #[test]
    fn json_is_what_the_devstack_sent_before() {
        assert_eq!(representative().to_value(), expected());
        let text: Value = serde_json::from_str(&representative().to_json()).unwrap();
        assert_eq!(text, expected());
    }

    #[test]
    fn deserializes_with_aws_lambda_events_to_the_built_event() {
        let event = representative();
        let built = event.build();
        let parsed: ApiGatewayProxyRequest = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(parsed, built);
        // ... and so does the devstack's JSON of before.
        let before: ApiGatewayProxyRequest = serde_json::from_value(expected()).unwrap();
        assert_eq!(before, built);

        assert_eq!(parsed.http_method, Method::POST);
        assert_eq!(parsed.path.as_deref(), Some("/v2/orders"));
        assert_eq!(parsed.resource.as_deref(), Some("/{proxy+}"));
        assert_eq!(parsed.path_parameters["proxy"], "v2/orders");
        assert_eq!(parsed.headers["x-multi"], "two");
        let all: Vec<_> = parsed
            .multi_value_headers
            .get_all("x-multi")
            .iter()
            .collect();
        assert_eq!(all, ["one", "two"]);
        assert_eq!(parsed.query_string_parameters.first("x"), Some("2"));
        assert_eq!(
            parsed.multi_value_query_string_parameters.all("x"),
            Some(vec!["1", "2"])
        );
        assert_eq!(
            parsed.query_string_parameters.first("client_order_id"),
            Some("demo 1")
        );
        let rc = &parsed.request_context;
        assert_eq!(rc.stage.as_deref(), Some("local"));
        assert_eq!(
            rc.request_id.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(rc.identity.source_ip.as_deref(), Some("127.0.0.9"));
        assert_eq!(rc.identity.user_agent.as_deref(), Some("alpaca-py/0.30"));
        assert_eq!(rc.path.as_deref(), Some("/local/v2/orders"));
        assert_eq!(rc.http_method, Method::POST);
        assert_eq!(rc.request_time_epoch, 1_723_075_200_123);
        assert!(!parsed.is_base64_encoded);
    }

    #[test]
    fn lambda_http_gives_the_handler_the_request() {
        let req = lambda_http::request::from_str(&representative().to_json()).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.raw_http_path(), "/v2/orders");
        assert_eq!(req.headers()["apca-api-key-id"], "PK1");
        // lambda_http lets `headers` replace a header's `multiValueHeaders`: the handler sees
        // the last value, as on AWS (the struct's own serializer would have made it "one").
        let multi: Vec<_> = req.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["two"]);
        assert_eq!(
            req.query_string_parameters().first("client_order_id"),
            Some("demo 1")
        );
        assert_eq!(req.query_string_parameters().all("x"), Some(vec!["1", "2"]));
        assert_eq!(req.path_parameters().first("proxy"), Some("v2/orders"));
        // The only variant with lambda_http's `apigw_rest` feature alone.
        #[allow(irrefutable_let_patterns)]
        let lambda_http::request::RequestContext::ApiGatewayV1(rc) = req.request_context() else {
            panic!("not a REST API request context");
        };
        assert_eq!(rc.identity.source_ip.as_deref(), Some("127.0.0.9"));
        assert_eq!(rc.stage.as_deref(), Some("local"));
        assert_eq!(req.body().as_ref(), br#"{"symbol":"BTCUSDT","qty":"0.01"}"#);
    }

    #[test]
    fn binary_empty_and_root() {
        let bin = RestEvent::new(Method::PUT, "/upload").body([0, 159, 146, 150, 255]);
        let v = bin.to_value();
        assert_eq!(v["body"], "AJ+Slv8=");
        assert_eq!(v["isBase64Encoded"], true);
        let req = lambda_http::request::from_str(&bin.to_json()).unwrap();
        assert_eq!(req.body().as_ref(), &[0, 159, 146, 150, 255]);

        let root = RestEvent::new(Method::GET, "/").stage("prod");
        let v = root.to_value();
        assert_eq!(v["resource"], "/");
        assert_eq!(v["pathParameters"], Value::Null);
        assert_eq!(v["queryStringParameters"], Value::Null);
        assert_eq!(v["multiValueQueryStringParameters"], Value::Null);
        assert_eq!(v["body"], Value::Null);
        assert_eq!(v["isBase64Encoded"], false);
        assert_eq!(v["requestContext"]["path"], "/prod/");
        assert_eq!(v["requestContext"]["domainName"], "localhost");
        let parsed: ApiGatewayProxyRequest = serde_json::from_value(v).unwrap();
        assert_eq!(parsed, root.build());
        assert!(parsed.path_parameters.is_empty() && parsed.body.is_none());
        let req = lambda_http::request::from_str(&root.to_json()).unwrap();
        assert_eq!(req.raw_http_path(), "/");
        assert!(req.body().is_empty());

        // A query string without parameters: empty maps, not null (deserialized the same).
        let bare = RestEvent::new(Method::GET, "/v2/orders?&");
        let v = bare.to_value();
        assert_eq!(v["queryStringParameters"], json!({}));
        assert_eq!(v["multiValueQueryStringParameters"], json!({}));
        let parsed: ApiGatewayProxyRequest = serde_json::from_value(v).unwrap();
        assert_eq!(parsed, bare.build());
    }

    #[test]
    fn other_resources_and_header_spelling() {
        let event = RestEvent::new(Method::POST, "/v2/hooks/tradingview/wh%20abc")
            .resource("/v2/hooks/tradingview/{webhook_id}", "hook01")
            .path_parameter("webhook_id", "wh abc")
            .header("Content-Type", "text/plain")
            .json_body(&json!({"ticker": "BTCUSDT"}))
            .source_ip(std::net::IpAddr::from([203, 0, 113, 7]));
        let v = event.to_value();
        assert_eq!(v["pathParameters"], json!({"webhook_id": "wh abc"}));
        assert_eq!(v["path"], "/v2/hooks/tradingview/wh%20abc");
        assert_eq!(v["requestContext"]["resourceId"], "hook01");
        assert_eq!(v["requestContext"]["identity"]["sourceIp"], "203.0.113.7");
        // AWS passes header names as the client spelled them.
        assert_eq!(v["headers"]["Content-Type"], "text/plain");
        assert_eq!(
            v["multiValueHeaders"]["Content-Type"],
            json!(["text/plain"])
        );
        let parsed: ApiGatewayProxyRequest = serde_json::from_value(v).unwrap();
        assert_eq!(parsed, event.build());
        let req = lambda_http::request::from_str(&event.to_json()).unwrap();
        assert_eq!(req.path_parameters().first("webhook_id"), Some("wh abc"));
        assert_eq!(req.headers()["content-type"], "text/plain");
        assert_eq!(req.body().as_ref(), br#"{"ticker":"BTCUSDT"}"#);
    }

    #[test]
    fn typed_events_serialize_as_aws_sends_them() {
        let mut event = RestEvent::new(Method::GET, "/v2/account").build();
        event.stage_variables.insert("env".into(), "test".into());
        let v = event.to_value();
        assert_eq!(v["stageVariables"], json!({"env": "test"}));
        assert_eq!(v["queryStringParameters"], Value::Null);
        assert_eq!(
            v["requestContext"]["extendedRequestId"],
            v["requestContext"]["requestId"]
        );
        let parsed: ApiGatewayProxyRequest = serde_json::from_value(v).unwrap();
        assert_eq!(parsed, event);
    }
}
