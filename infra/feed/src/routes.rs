//! HTTP routes: the Binance combined stream over WebSocket and the script-control API.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::control::{now_ms, Control, ScriptedQuote};
use crate::hub::Hub;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub control: Arc<Control>,
    pub replaying: Arc<Vec<String>>,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub client_buffer: usize,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/stream", get(stream_ws))
        .route("/quotes", get(list_quotes).post(post_quote))
        .route("/quotes/{symbol}", delete(delete_quote))
        .route("/health", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// A JSON error `{"code","message"}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

async fn health(State(st): State<AppState>) -> Response {
    let stats = st.hub.stats();
    Json(json!({
        "status": "ok",
        "clients": stats.clients,
        "sent": stats.sent,
        "dropped": stats.dropped,
        "replaying": st.replaying.as_slice(),
        "controlled": st.control.list().into_iter().map(|q| q.symbol).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn list_quotes(State(st): State<AppState>) -> Response {
    Json(st.control.list()).into_response()
}

async fn delete_quote(State(st): State<AppState>, Path(symbol): Path<String>) -> Response {
    let symbol = symbol.trim().to_ascii_uppercase();
    match st.control.release(&symbol) {
        Some(_) => {
            tracing::info!(%symbol, "script control released; replay resumes");
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_controlled",
            format!("{symbol} is not under script control"),
        ),
    }
}

async fn post_quote(State(st): State<AppState>, body: Bytes) -> Response {
    match parse_quote(&body) {
        Ok(quote) => {
            tracing::info!(symbol = %quote.symbol, bid = %quote.bid, ask = %quote.ask,
                last = ?quote.last.map(|d| d.to_string()), "scripted quote set");
            st.control.set(quote.clone(), &st.hub);
            (StatusCode::OK, Json(quote)).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, "invalid_quote", message),
    }
}

/// Parses and validates a `POST /quotes` body. Decimals may be JSON strings or JSON numbers;
/// numbers are parsed exactly from their text (serde_json's `arbitrary_precision`).
pub fn parse_quote(body: &[u8]) -> Result<ScriptedQuote, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "body must be a JSON object".to_string())?;
    let symbol = match obj.get("symbol") {
        Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
        _ => return Err("symbol is required and must be a string".into()),
    };
    if symbol.is_empty() || symbol.len() > 32 || !symbol.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err("symbol must be 1 to 32 ASCII letters or digits".into());
    }
    let bid = decimal_field(obj, "bid")?.ok_or("bid is required")?;
    let ask = decimal_field(obj, "ask")?.ok_or("ask is required")?;
    let last = decimal_field(obj, "last")?;
    for (name, v) in [("bid", Some(bid)), ("ask", Some(ask)), ("last", last)] {
        if let Some(v) = v {
            if v <= Decimal::ZERO {
                return Err(format!("{name} must be positive, got {v}"));
            }
        }
    }
    if bid > ask {
        return Err(format!("bid {bid} must not be above ask {ask}"));
    }
    Ok(ScriptedQuote {
        symbol,
        bid,
        ask,
        last,
        set_at_ms: now_ms(),
    })
}

fn decimal_field(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<Decimal>, String> {
    let text = match obj.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        // With arbitrary_precision this is the number's original text, never an f64.
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(format!("{name} must be a decimal string or number")),
    };
    parse_decimal(&text)
        .map(Some)
        .ok_or_else(|| format!("{name} is not a valid decimal: {text:?}"))
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        // Exact: too many digits is an error, never a silent rounding.
        Decimal::from_str_exact(text).ok()
    }
}

async fn stream_ws(
    ws: WebSocketUpgrade,
    Query(query): Query<HashMap<String, String>>,
    State(st): State<AppState>,
) -> Response {
    let streams: HashSet<String> = query
        .get("streams")
        .map(|s| parse_streams(s.split('/')))
        .unwrap_or_default();
    ws.on_upgrade(move |socket| client_loop(socket, streams, st))
}

fn parse_streams<'a>(names: impl Iterator<Item = &'a str>) -> HashSet<String> {
    names
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(Deserialize)]
struct Request {
    method: String,
    #[serde(default)]
    params: Vec<Value>,
    #[serde(default)]
    id: Value,
}

/// Answers a live-API request (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`).
fn handle_request(text: &str, subs: &crate::hub::Subscriptions) -> Value {
    let req: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return json!({"error": {"code": 3, "msg": format!("Invalid JSON: {e}")}, "id": null})
        }
    };
    let names = || parse_streams(req.params.iter().filter_map(|p| p.as_str()));
    let mut set = subs.write().unwrap_or_else(|e| e.into_inner());
    match req.method.as_str() {
        "SUBSCRIBE" => {
            set.extend(names());
            json!({"result": null, "id": req.id})
        }
        "UNSUBSCRIBE" => {
            for n in names() {
                set.remove(&n);
            }
            json!({"result": null, "id": req.id})
        }
        "LIST_SUBSCRIPTIONS" => {
            let mut list: Vec<&String> = set.iter().collect();
            list.sort();
            json!({"result": list, "id": req.id})
        }
        "SET_PROPERTY" | "GET_PROPERTY" => json!({"result": null, "id": req.id}),
        other => json!({
            "error": {"code": 2, "msg": format!("Invalid request: unknown method {other}")},
            "id": req.id
        }),
    }
}

async fn client_loop(mut socket: WebSocket, streams: HashSet<String>, st: AppState) {
    let mut client = st.hub.register(streams, st.client_buffer);
    let id = client.id;
    tracing::info!(client = id, "client connected");
    let mut ping = tokio::time::interval_at(Instant::now() + st.ping_interval, st.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pong = Instant::now();
    let send_timeout = st.pong_timeout;
    let reason: &str = loop {
        let out = tokio::select! {
            msg = client.rx.recv() => match msg {
                Some(text) => Message::Text(text),
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
                    break "feed shutting down";
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_request(text.as_str(), &client.subs);
                    Message::Text(Utf8Bytes::from(reply.to_string()))
                }
                Some(Ok(Message::Pong(_))) => {
                    last_pong = Instant::now();
                    continue;
                }
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_))) | Some(Ok(Message::Binary(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break "closed by client",
                Some(Err(_)) => break "read error",
            },
            _ = ping.tick() => {
                if last_pong.elapsed() >= st.pong_timeout {
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
                    break "no pong in time";
                }
                Message::Ping(Bytes::from(now_ms().to_string()))
            }
        };
        match tokio::time::timeout(send_timeout, socket.send(out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break "write error",
            Err(_) => break "write timed out",
        }
    };
    tracing::info!(
        client = id,
        reason,
        dropped = client.dropped.load(Ordering::Relaxed),
        "client disconnected"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_exactly() {
        let q = parse_quote(
            br#"{"symbol":"btcusdt","bid":"61000.10","ask":61000.20,"last":"61000.15"}"#,
        )
        .unwrap();
        assert_eq!(q.symbol, "BTCUSDT");
        assert_eq!(q.bid.to_string(), "61000.10");
        assert_eq!(q.ask.to_string(), "61000.20");
        assert_eq!(q.last.map(|d| d.to_string()).as_deref(), Some("61000.15"));
        let q = parse_quote(br#"{"symbol":"X","bid":"1","ask":"2"}"#).unwrap();
        assert_eq!(q.last, None);
    }

    #[test]
    fn rejects_bad_quotes() {
        for body in [
            &br#"not json"#[..],
            br#"[]"#,
            br#"{"bid":"1","ask":"2"}"#,
            br#"{"symbol":"","bid":"1","ask":"2"}"#,
            br#"{"symbol":"B/X","bid":"1","ask":"2"}"#,
            br#"{"symbol":"X","ask":"2"}"#,
            br#"{"symbol":"X","bid":"0","ask":"2"}"#,
            br#"{"symbol":"X","bid":"-1","ask":"2"}"#,
            br#"{"symbol":"X","bid":"3","ask":"2"}"#,
            br#"{"symbol":"X","bid":"NaN","ask":"2"}"#,
            br#"{"symbol":"X","bid":"1","ask":"2","last":"0"}"#,
            br#"{"symbol":"X","bid":true,"ask":"2"}"#,
            br#"{"symbol":"X","bid":"1","ask":"123456789012345678901234567890123"}"#,
        ] {
            assert!(
                parse_quote(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
