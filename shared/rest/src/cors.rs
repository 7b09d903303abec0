//! CORS for the REST API: which browsers may call it (`CORS_ALLOWED_ORIGINS`, see
//! [`CorsSettings`]), answered by the function itself (API Gateway's `ANY /{proxy+}` hands it
//! the preflights, so what a browser sees is what the tests see).
//!
//! A preflight from an allowed origin gets `204` with the methods and the credential headers
//! the API reads; one from any other origin a `403` JSON error without CORS headers, so the
//! browser refuses the call. Answers to allowed origins carry `Access-Control-Allow-Origin`
//! (the origin itself: credentials travel in headers, never cookies, so no
//! `Allow-Credentials`) and expose `Retry-After`. CORS is not authorization: a request from
//! another origin is served as any other (without the headers a browser needs to read it).

use adapters::config::CorsSettings;
use app::ApiError;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};

/// The methods of the route table.
pub const ALLOWED_METHODS: &str = "GET, POST, PATCH, DELETE, OPTIONS";
/// The request headers the API reads: the session or key, Alpaca's key pair, the body type.
pub const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, APCA-API-KEY-ID, APCA-API-SECRET-KEY";
/// The response headers a browser's script may read besides the simple ones.
pub const EXPOSED_HEADERS: &str = "Retry-After";
/// How long a browser may cache a preflight (Chromium caps it at 2 hours).
pub const MAX_AGE_SECS: &str = "600";

/// The `Origin` of a request, if it has one a browser could have sent.
pub fn origin(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
}

/// The answer to an `OPTIONS` request (a preflight when it has an `Origin`), whatever its
/// path.
pub fn preflight(settings: &CorsSettings, req: &Request) -> Result<Response<Body>, ApiError> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    let Some(origin) = origin(req) else {
        return Ok(r);
    };
    if !settings.allows(origin) {
        return Err(ApiError::forbidden(
            "this origin may not call the API from a browser (CORS_ALLOWED_ORIGINS)",
        ));
    }
    allow(h, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    Ok(r)
}

/// Adds the CORS headers an answer to `origin` needs, if `origin` is allowed; with any
/// origins configured, every answer varies by `Origin` (a cache must not hand one origin's
/// answer to another).
pub fn decorate(settings: &CorsSettings, origin: Option<&str>, response: &mut Response<Body>) {
    if settings.allowed_origins.is_empty() {
        return;
    }
    let h = response.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin.filter(|o| settings.allows(o)) {
        allow(h, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}

fn allow(h: &mut lambda_http::http::HeaderMap, origin: &str) {
    // An allowed origin is plain ASCII (it matched a validated entry).
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}
