//! API Gateway REST API emulation (Lambda proxy integration, payload 1.0).
//!
//! The REST API has two integrations:
//!
//! - `POST /v2/hooks/tradingview/{webhook_id}` → the `webhook` function, on
//!   that resource with `pathParameters: {"webhook_id": ...}`; any other
//!   method on that resource gets API Gateway's answer for a method that does
//!   not exist (403 `{"message":"Missing Authentication Token"}`);
//! - every other request on any method and path (except `/__devstack/*`) →
//!   the `api` function, on the `/{proxy+}` resource (`/` for the root).
//!
//! Each request becomes an `ApiGatewayProxyRequest` event (built with
//! `testkit::events::RestEvent`); the function's `ApiGatewayProxyResponse`
//! becomes the HTTP answer. See [`route`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::body::{read_limited, BodyError};
use crate::forwarded::{add_proxy_headers, header_str};
use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use testkit::events::{percent_decode, RestEvent};
use tracing::{info, warn};

use crate::runtime::{FunctionHandle, InvokeError, ACCOUNT_ID};

/// API Gateway's maximum request payload (10 MB).
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// API Gateway REST's maximum integration timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(29);

/// The made-up REST API id.
pub const API_ID: &str = testkit::events::REST_API_ID;
/// The made-up resource id of `/{proxy+}` (and `/`), which the event builder uses.
pub const RESOURCE_ID: &str = testkit::events::PROXY_RESOURCE_ID;
/// The webhook function's resource.
pub use crate::topology::WEBHOOK_RESOURCE;
/// The made-up resource id of [`WEBHOOK_RESOURCE`].
pub const WEBHOOK_RESOURCE_ID: &str = "hook01";
/// The paths of [`WEBHOOK_RESOURCE`] are this prefix and one segment.
const WEBHOOK_PATH_PREFIX: &str = "/v2/hooks/tradingview/";

#[derive(Clone)]
pub struct RestState {
    pub api: Option<FunctionHandle>,
    /// The function behind [`WEBHOOK_RESOURCE`] (None: its requests get 502).
    pub webhook: Option<FunctionHandle>,
    pub stage: String,
    pub timeout: Duration,
    pub max_body: usize,
    /// Take `sourceIp` from the first `X-Forwarded-For` address (a test aid;
    /// API Gateway takes it from the TCP peer).
    pub trust_forwarded_for: bool,
}

/// Where API Gateway sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `ANY /{proxy+}` (and `ANY /`): the `api` function.
    Api,
    /// `POST /v2/hooks/tradingview/{webhook_id}`: the `webhook` function;
    /// `webhook_id` is percent-decoded.
    Webhook { webhook_id: String },
    /// A method the matching resource does not have: API Gateway answers 403
    /// `Missing Authentication Token` without invoking anything.
    MissingMethod,
}

/// Route a request as API Gateway would with the two resources
/// `/{proxy+}` (ANY) and `/v2/hooks/tradingview/{webhook_id}` (POST only):
/// the more specific resource wins, and a path parameter is exactly one
/// non-empty segment. `path` is the raw (not decoded) URI path.
pub fn route(method: &Method, path: &str) -> Route {
    let Some(id) = path.strip_prefix(WEBHOOK_PATH_PREFIX) else {
        return Route::Api;
    };
    if id.is_empty() || id.contains('/') {
        return Route::Api;
    }
    if method != Method::POST {
        return Route::MissingMethod;
    }
    Route::Webhook {
        webhook_id: percent_decode(id),
    }
}

/// The first address of the request's `X-Forwarded-For` header(s), if it is
/// an IP address (`1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`).
pub fn first_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let first = headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = first.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/__devstack/health", get(health))
        .fallback(proxy)
        .with_state(state)
}

async fn health(State(st): State<RestState>) -> Response {
    let function = |f: &Option<FunctionHandle>| {
        f.as_ref().map(|a| {
            json!({
                "name": a.name(),
                "running": a.running_instances(),
                "idle": a.idle_instances(),
            })
        })
    };
    (
        StatusCode::OK,
        axum::Json(json!({
            "status": "ok",
            "stage": st.stage,
            "api": function(&st.api),
            "webhook": function(&st.webhook),
            "trust_forwarded_for": st.trust_forwarded_for,
        })),
    )
        .into_response()
}

/// The parts of an HTTP request that become the proxy event.
pub struct IncomingRequest<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// `requestContext.identity.sourceIp`.
    pub source_ip: IpAddr,
    /// `source_ip` was taken from the request's `X-Forwarded-For`
    /// (`--trust-forwarded-for`): that header is passed on as received
    /// instead of getting `source_ip` appended.
    pub source_ip_from_forwarded_for: bool,
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
    // The API Gateway resource, as its access log's `$context.resourcePath` shows it: never
    // the path or the query, which can hold secrets (a webhook's id is its URL's secret).
    let resource = match route(&method, req.uri().path()) {
        Route::Webhook { .. } | Route::MissingMethod => "/v2/hooks/tradingview/{id}",
        Route::Api => "/{proxy+}",
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let resp = handle(&st, peer, req, &request_id).await;
    info!(
        "{method} {resource} {} {}ms",
        resp.status().as_u16(),
        started.elapsed().as_millis()
    );
    resp
}

async fn handle(st: &RestState, peer: SocketAddr, req: Request, request_id: &str) -> Response {
    let routed = route(req.method(), req.uri().path());
    if routed == Route::MissingMethod {
        return gateway_error(
            StatusCode::FORBIDDEN,
            "Missing Authentication Token",
            "MissingAuthenticationTokenException",
            request_id,
        );
    }
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
    let body = match read_limited(body, st.max_body).await {
        Ok(b) => b,
        Err(BodyError::TooLong) => return too_long(),
        Err(BodyError::Broken) => {
            return gateway_error(
                StatusCode::BAD_REQUEST,
                "Bad request body",
                "BadRequestException",
                request_id,
            )
        }
    };
    let local_port = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80);
    let forwarded = if st.trust_forwarded_for {
        first_forwarded_for(&parts.headers)
    } else {
        None
    };
    let incoming = IncomingRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
        source_ip: forwarded.unwrap_or(peer.ip()),
        source_ip_from_forwarded_for: forwarded.is_some(),
        local_port,
    };
    let now = Utc::now();
    let (function, flag, event) = match &routed {
        Route::Webhook { webhook_id } => (
            &st.webhook,
            "--webhook-bin",
            build_webhook_event(&incoming, webhook_id, &st.stage, request_id, now),
        ),
        _ => (
            &st.api,
            "--api-bin",
            build_proxy_event(&incoming, &st.stage, request_id, now),
        ),
    };
    let Some(function) = function else {
        warn!("no function configured for this route ({flag})");
        return gateway_error(
            StatusCode::BAD_GATEWAY,
            "Internal server error",
            "InternalServerErrorException",
            request_id,
        );
    };
    match function.invoke(&event, st.timeout).await {
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
            warn!("{} invocation failed: {e}", function.name());
            gateway_error(
                StatusCode::BAD_GATEWAY,
                "Internal server error",
                "InternalServerErrorException",
                request_id,
            )
        }
    }
}

/// Build the API Gateway REST proxy event (payload format 1.0) for a request
/// to the `api` function (resource `/{proxy+}` with `pathParameters:
/// {"proxy": ...}`, or `/` for the root), as
/// `aws_lambda_events::apigw::ApiGatewayProxyRequest` (de)serializes it.
pub fn build_proxy_event(
    req: &IncomingRequest<'_>,
    stage: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    // The builder's default resource is this one: `/{proxy+}` ([`RESOURCE_ID`]).
    rest_event(req, stage, request_id, now).to_value()
}

/// Build the proxy event for a request to the `webhook` function (resource
/// [`WEBHOOK_RESOURCE`], `pathParameters: {"webhook_id": webhook_id}`).
pub fn build_webhook_event(
    req: &IncomingRequest<'_>,
    webhook_id: &str,
    stage: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    rest_event(req, stage, request_id, now)
        .resource(WEBHOOK_RESOURCE, WEBHOOK_RESOURCE_ID)
        .path_parameter("webhook_id", webhook_id)
        .to_value()
}

/// The event of a request, on the `/{proxy+}` resource: the request's
/// headers plus the ones API Gateway adds in front of the integration, its
/// query and body, and the request context.
fn rest_event(
    req: &IncomingRequest<'_>,
    stage: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> RestEvent {
    let path = req.uri.path();
    let path = if path.is_empty() { "/" } else { path };

    let mut headers = req.headers.clone();
    let source_ip = req.source_ip.to_string();
    let xff = match headers.get("x-forwarded-for") {
        Some(prev) if req.source_ip_from_forwarded_for => header_str(prev),
        Some(prev) => format!("{}, {source_ip}", header_str(prev)),
        None => source_ip.clone(),
    };
    add_proxy_headers(&mut headers, xff, req.local_port);

    // `domainName` and `identity.userAgent` default to the `host` and
    // `user-agent` headers (which the added ones leave alone).
    RestEvent::new(req.method.clone(), path)
        .headers(&headers)
        .raw_query(req.uri.query().unwrap_or_default())
        .body(req.body)
        .source_ip(source_ip)
        .stage(stage)
        .request_id(request_id)
        .time(now)
        .account_id(ACCOUNT_ID)
        .api_id(API_ID)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::API_HEALTH_RESOURCE;

    // Moved here from `topology` so that `topology` depends on nothing else in the crate.
    #[test]
    fn rest_routing_agrees_with_the_described_routes() {
        assert_eq!(
            route(&Method::POST, "/v2/hooks/tradingview/wh_1"),
            Route::Webhook {
                webhook_id: "wh_1".into()
            }
        );
        assert_eq!(route(&Method::GET, API_HEALTH_RESOURCE), Route::Api);
        assert_eq!(route(&Method::DELETE, "/v2/orders/1"), Route::Api);
    }
}
