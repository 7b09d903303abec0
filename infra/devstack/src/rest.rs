//! API Gateway REST API emulation (Lambda proxy integration, payload 1.0).
//!
//! Every request on any method and path (except `/__devstack/*`) becomes an
//! `ApiGatewayProxyRequest` event for the `api` function, on a `/{proxy+}`
//! resource; the function's `ApiGatewayProxyResponse` becomes the HTTP answer.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use crate::runtime::{FunctionHandle, InvokeError, ACCOUNT_ID};

/// API Gateway's maximum request payload (10 MB).
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// API Gateway REST's maximum integration timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(29);

/// The made-up REST API id.
pub const API_ID: &str = "devstack01";
/// The made-up resource id of `/{proxy+}`.
pub const RESOURCE_ID: &str = "proxy0";

#[derive(Clone)]
pub struct RestState {
    pub api: Option<FunctionHandle>,
    pub stage: String,
    pub timeout: Duration,
    pub max_body: usize,
}

pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/__devstack/health", get(health))
        .fallback(proxy)
        .with_state(state)
}

async fn health(State(st): State<RestState>) -> Response {
    let api = st.api.as_ref().map(|a| {
        json!({
            "name": a.name(),
            "running": a.running_instances(),
            "idle": a.idle_instances(),
        })
    });
    (
        StatusCode::OK,
        axum::Json(json!({"status": "ok", "stage": st.stage, "api": api})),
    )
        .into_response()
}

/// The parts of an HTTP request that become the proxy event.
pub struct IncomingRequest<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: IpAddr,
    /// Port the client connected to (for `X-Forwarded-Port`).
    pub local_port: u16,
}

fn gateway_error(
    status: StatusCode,
    message: &str,
    error_type: &str,
    request_id: &str,
) -> Response {
    let mut resp = (status, axum::Json(json!({ "message": message }))).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(error_type) {
        h.insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

async fn proxy(
    State(st): State<RestState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let request_id = uuid::Uuid::new_v4().to_string();
    let resp = handle(&st, peer, req, &request_id).await;
    info!(
        "{method} {target} {} {}ms",
        resp.status().as_u16(),
        started.elapsed().as_millis()
    );
    resp
}

async fn handle(st: &RestState, peer: SocketAddr, req: Request, request_id: &str) -> Response {
    let too_long = || {
        gateway_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Too Long",
            "RequestTooLongException",
            request_id,
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.max_body as u64) {
        return too_long();
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, st.max_body).await {
        Ok(b) => b,
        Err(e) => {
            // to_bytes fails on the length limit or on a broken client stream.
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit")
            {
                return too_long();
            }
            return gateway_error(
                StatusCode::BAD_REQUEST,
                "Bad request body",
                "BadRequestException",
                request_id,
            );
        }
    };
    let local_port = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80);
    let event = build_proxy_event(
        &IncomingRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body: &body,
            source_ip: peer.ip(),
            local_port,
        },
        &st.stage,
        request_id,
        Utc::now(),
    );
    let Some(api) = &st.api else {
        warn!("no api function configured (--api-bin)");
        return gateway_error(
            StatusCode::BAD_GATEWAY,
            "Internal server error",
            "InternalServerErrorException",
            request_id,
        );
    };
    match api.invoke(&event, st.timeout).await {
        Ok(v) => match proxy_response_to_http(v, request_id) {
            Ok(resp) => resp,
            Err(why) => {
                warn!("malformed Lambda proxy response: {why}");
                gateway_error(
                    StatusCode::BAD_GATEWAY,
                    "Internal server error",
                    "InternalServerErrorException",
                    request_id,
                )
            }
        },
        Err(InvokeError::Timeout(_)) => gateway_error(
            StatusCode::GATEWAY_TIMEOUT,
            "Endpoint request timed out",
            "InternalServerErrorException",
            request_id,
        ),
        Err(e) => {
            warn!("api invocation failed: {e}");
            gateway_error(
                StatusCode::BAD_GATEWAY,
                "Internal server error",
                "InternalServerErrorException",
                request_id,
            )
        }
    }
}

/// Percent-decode a path segment string (invalid escapes are kept as-is).
fn percent_decode(s: &str) -> String {
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

fn header_str(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// Build the API Gateway REST proxy event (payload format 1.0) for a request,
/// as `aws_lambda_events::apigw::ApiGatewayProxyRequest` (de)serializes it.
pub fn build_proxy_event(
    req: &IncomingRequest<'_>,
    stage: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let path = req.uri.path();
    let path = if path.is_empty() { "/" } else { path };

    // Headers, plus the ones API Gateway adds in front of the integration.
    let mut headers = req.headers.clone();
    let source_ip = req.source_ip.to_string();
    let xff = match headers.get("x-forwarded-for") {
        Some(prev) => format!("{}, {source_ip}", header_str(prev)),
        None => source_ip.clone(),
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
    add("x-forwarded-port", req.local_port.to_string(), false);
    add("x-amzn-trace-id", crate::runtime::new_trace_id(), false);

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

    // Query string: decoded, last value wins in the single-valued map.
    let (query_single, query_multi) = match req.uri.query() {
        Some(q) if !q.is_empty() => {
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
            (Value::Object(s), Value::Object(m))
        }
        _ => (Value::Null, Value::Null),
    };

    let (resource, path_parameters) = if path == "/" {
        ("/", Value::Null)
    } else {
        (
            "/{proxy+}",
            json!({ "proxy": percent_decode(path.trim_start_matches('/')) }),
        )
    };

    let (body, is_base64) = if req.body.is_empty() {
        (Value::Null, false)
    } else {
        match std::str::from_utf8(req.body) {
            Ok(s) => (Value::String(s.to_string()), false),
            Err(_) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(req.body)),
                true,
            ),
        }
    };

    let host = req
        .headers
        .get(header::HOST)
        .map(header_str)
        .unwrap_or_else(|| "localhost".into());
    let domain_prefix = host
        .split(['.', ':'])
        .next()
        .unwrap_or_default()
        .to_string();
    let user_agent = req.headers.get(header::USER_AGENT).map(header_str);
    let method = req.method.as_str();

    json!({
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": Value::Object(single),
        "multiValueHeaders": Value::Object(multi),
        "queryStringParameters": query_single,
        "multiValueQueryStringParameters": query_multi,
        "pathParameters": path_parameters,
        "stageVariables": Value::Null,
        "requestContext": {
            "resourceId": RESOURCE_ID,
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "path": format!("/{stage}{path}"),
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": domain_prefix,
            "requestTimeEpoch": now.timestamp_millis(),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": null,
                "accountId": null,
                "cognitoIdentityId": null,
                "caller": null,
                "sourceIp": source_ip,
                "principalOrgId": null,
                "accessKey": null,
                "cognitoAuthenticationType": null,
                "cognitoAuthenticationProvider": null,
                "userArn": null,
                "userAgent": user_agent,
                "user": null
            },
            "domainName": host,
            "apiId": API_ID
        },
        "body": body,
        "isBase64Encoded": is_base64
    })
}

/// Turn the function's `ApiGatewayProxyResponse` into the HTTP response,
/// as API Gateway does (merging `headers` into `multiValueHeaders`).
pub fn proxy_response_to_http(v: Value, request_id: &str) -> Result<Response, String> {
    if !v.is_object() {
        return Err(format!("response is not an object: {v}"));
    }
    let r: ApiGatewayProxyResponse =
        serde_json::from_value(v).map_err(|e| format!("not an ApiGatewayProxyResponse: {e}"))?;
    let status = u16::try_from(r.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.as_u16() >= 100)
        .ok_or_else(|| format!("invalid statusCode {}", r.status_code))?;

    let mut headers = r.multi_value_headers.clone();
    for name in r.headers.keys() {
        if !headers.contains_key(name) {
            for v in r.headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
    }
    for hop in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(hop);
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }

    let body: Vec<u8> = match r.body {
        None | Some(LambdaBody::Empty) => Vec::new(),
        Some(LambdaBody::Text(s)) if r.is_base64_encoded => {
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|e| format!("isBase64Encoded body is not base64: {e}"))?
        }
        Some(LambdaBody::Text(s)) => s.into_bytes(),
        Some(LambdaBody::Binary(b)) => b,
        Some(_) => Vec::new(),
    };

    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}
