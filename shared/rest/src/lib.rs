//! The API Gateway REST edge shared by the `api` and `webhook` functions: reading
//! `lambda_http` requests (bodies, query parameters, credentials, the source address) and
//! answering JSON or an [`ApiError`], the one way every REST failure is rendered.
//!
//! Depends on `app` (for [`ApiError`]), `adapters` (credentials) and `domain`; the function
//! crates depend on it, never the other way.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod cors;

use adapters::auth::Credentials;
use app::ApiError;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use domain::RejectCode;
use lambda_http::http::{header, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;

pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::Text(value.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Response::new(Body::Text(e.body()));
    *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = e.retry_after {
        if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Parses a JSON body, which must be an object (every route's body is one; serde would also
/// read a struct from an array of its fields in order); a syntax or shape error is a 400
/// that says where.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes = body_bytes(req);
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::new(
                400,
                RejectCode::MalformedJson,
                "request body is empty; a JSON object is required",
            ))
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::new(
                400,
                RejectCode::MalformedJson,
                "request body must be a JSON object",
            ))
        }
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            400,
            RejectCode::MalformedJson,
            format!("request body is not valid JSON for this route: {e}"),
        )
    })
}

pub fn query(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
}

/// Refuses a request whose query holds a NUL character (400 `invalid_parameter`): no
/// parameter may carry one (PostgreSQL's text cannot hold it, so a lookup would fail as if
/// the database were down).
pub fn refuse_nul_in_query(req: &Request) -> Result<(), ApiError> {
    let Some(params) = req.query_string_parameters_ref() else {
        return Ok(());
    };
    match params
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        Some((name, _)) => Err(ApiError::new(
            400,
            RejectCode::InvalidParameter,
            format!(
                "query parameter {} holds a NUL character",
                name.replace('\0', "\\0")
            ),
        )),
        None => Ok(()),
    }
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn invalid_param(name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::new(
        422,
        RejectCode::InvalidParameter,
        format!("query parameter {name}='{value}' is invalid: expected {expected}"),
    )
}

/// A timestamp parameter: RFC 3339 or a date (midnight UTC), with a four-digit year as RFC
/// 3339 has it (0000 to 9999). Years beyond (chrono reads `+262143-12-31` or `-5000-01-01`
/// as dates) are refused here: the day after one overflowed chrono, and PostgreSQL refuses
/// timestamps before 4713 BC.
pub fn query_time(req: &Request, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = query(req, name) else {
        return Ok(None);
    };
    let invalid = || {
        invalid_param(
            name,
            &v,
            "an RFC 3339 timestamp or a YYYY-MM-DD date (years 0000 to 9999)",
        )
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    match NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
        Ok(d) if (0..=9999).contains(&d.year()) => d
            .and_hms_opt(0, 0, 0)
            .map(|t| Some(t.and_utc()))
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

pub fn query_int(
    req: &Request,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match query(req, name) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid_param(
                name,
                &v,
                &format!("an integer from {min} to {max}"),
            )),
        },
    }
}

/// `direction=asc|desc` (default desc): true when ascending.
pub fn query_ascending(req: &Request) -> Result<bool, ApiError> {
    match query(req, "direction").as_deref() {
        None | Some("desc") => Ok(false),
        Some("asc") => Ok(true),
        Some(v) => Err(invalid_param("direction", v, "asc or desc")),
    }
}

pub fn invalid_query(name: &str, value: &str, expected: &str) -> ApiError {
    invalid_param(name, value, expected)
}

/// A `true`/`false` query parameter (absent = false), in any case: alpaca-py sends Python's
/// `True`/`False`.
pub fn query_bool(req: &Request, name: &str) -> Result<bool, ApiError> {
    match query(req, name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) => Err(invalid_param(name, &v, "true or false")),
    }
}

/// The client's address as API Gateway saw it (`requestContext.identity.sourceIp`).
pub fn source_ip(req: &Request) -> String {
    match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV1(c)) => {
            c.identity.source_ip.clone().unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// The body as text; `None` when it is not UTF-8.
pub fn body_text(req: &Request) -> Option<&str> {
    match req.body() {
        Body::Text(t) => Some(t),
        Body::Binary(b) => std::str::from_utf8(b).ok(),
        _ => Some(""),
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer(req: &Request) -> Option<String> {
    let h = header(req, "authorization")?;
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The request's credentials: a bearer session token or Alpaca's
/// `APCA-API-KEY-ID` + `APCA-API-SECRET-KEY`.
pub fn credentials(req: &Request) -> Credentials {
    Credentials::from_parts(
        bearer(req),
        header(req, "apca-api-key-id"),
        header(req, "apca-api-secret-key"),
    )
}

/// A JSON body, or the default when the body is empty (routes whose every field is optional).
pub fn optional_json_body<T: DeserializeOwned + Default>(req: &Request) -> Result<T, ApiError> {
    match req.body() {
        Body::Empty => Ok(T::default()),
        Body::Text(t) if t.trim().is_empty() => Ok(T::default()),
        _ => json_body(req),
    }
}
