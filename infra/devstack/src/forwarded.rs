//! The headers API Gateway adds to what a client sent before it hands a request (REST) or a
//! WebSocket upgrade (`$connect`) to a function: `X-Forwarded-For` with the client's
//! address appended, `X-Forwarded-Proto`, `X-Forwarded-Port` and `X-Amzn-Trace-Id`.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// A header value as text, lossily (a client may send any bytes).
pub fn header_str(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// Sets `x-forwarded-for` to `forwarded_for`, and the other proxy headers unless the client
/// sent them.
pub fn add_proxy_headers(headers: &mut HeaderMap, forwarded_for: String, local_port: u16) {
    let mut add = |name: &'static str, value: String, overwrite: bool| {
        if overwrite || !headers.contains_key(name) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    };
    add("x-forwarded-for", forwarded_for, true);
    add("x-forwarded-proto", "http".into(), false);
    add("x-forwarded-port", local_port.to_string(), false);
    add("x-amzn-trace-id", crate::runtime::new_trace_id(), false);
}
