//! HTTP routes: the Binance combined stream over WebSocket and the script-control API.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::SinkExt;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::control::{Control, ScriptedQuote};
use crate::faults::{self, Burst};
use crate::hub::{ClientCommand, ClientCounters, Hub};
use crate::util::now_ms;

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
        .route("/__control/drop", post(control_drop))
        .route("/__control/shutdown", post(control_shutdown))
        .route("/__control/burst", post(control_burst))
        .route("/__control/stall", post(control_stall))
        .route("/__control/connections", get(control_connections))
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

type Params = Query<HashMap<String, String>>;

/// An optional unsigned query parameter within `1..=max`.
/// The integer parameter `name` (from 1 to `max`) if given, or why it is bad.
fn param(q: &HashMap<String, String>, name: &str, max: u64) -> Result<Option<u64>, String> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{name} must be an integer from 1 to {max}, got {v:?}"
            )),
        },
    }
}

/// As [`param`], and a missing one is bad too.
fn required(q: &HashMap<String, String>, name: &str, max: u64) -> Result<u64, String> {
    param(q, name, max)?.ok_or_else(|| format!("{name} is required"))
}

fn invalid_parameter(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_parameter", message)
}

fn sent_to(connections: usize) -> Response {
    Json(json!({ "connections": connections })).into_response()
}

/// `POST /__control/drop`: every open connection is closed at once, without a close frame.
async fn control_drop(State(st): State<AppState>) -> Response {
    let n = st.hub.command(ClientCommand::Drop);
    tracing::info!(connections = n, "control: drop");
    sent_to(n)
}

/// `POST /__control/shutdown?grace_ms=1000`: every open connection gets a `serverShutdown`
/// event and is closed `grace_ms` later (default 1000); it streams normally until then.
async fn control_shutdown(State(st): State<AppState>, Query(q): Params) -> Response {
    let grace_ms = match param(&q, "grace_ms", 3_600_000) {
        Ok(v) => v.unwrap_or(1000),
        Err(m) => return invalid_parameter(m),
    };
    let grace = Duration::from_millis(grace_ms);
    let n = st.hub.command(ClientCommand::Shutdown { grace });
    tracing::info!(connections = n, grace_ms, "control: serverShutdown");
    sent_to(n)
}

/// `POST /__control/burst?n=100000[&symbol=BTCUSDT]`: every open connection gets `n`
/// bookTicker messages as fast as it reads them (see [`crate::faults`]).
async fn control_burst(State(st): State<AppState>, Query(q): Params) -> Response {
    let n = match required(&q, "n", 100_000_000) {
        Ok(n) => n,
        Err(m) => return invalid_parameter(m),
    };
    let symbol = q.get("symbol").map(|s| s.trim().to_ascii_uppercase());
    let c = st.hub.command(ClientCommand::Burst {
        n,
        symbol: symbol.clone(),
    });
    tracing::info!(connections = c, n, ?symbol, "control: burst");
    Json(json!({ "connections": c, "messages_per_connection": n })).into_response()
}

/// `POST /__control/stall?ms=3000[&all=true]`: the open connections (with `all=true`: the
/// whole feed, new connections included) send nothing, not even pings, for `ms`.
async fn control_stall(State(st): State<AppState>, Query(q): Params) -> Response {
    let ms = match required(&q, "ms", 3_600_000) {
        Ok(ms) => ms,
        Err(m) => return invalid_parameter(m),
    };
    let until = Instant::now() + Duration::from_millis(ms);
    let all = q.get("all").is_some_and(|v| v == "true" || v == "1");
    let n = st.hub.command(ClientCommand::Stall { until });
    if all {
        st.hub.stall_all(until);
    }
    tracing::info!(connections = n, ms, all, "control: stall");
    sent_to(n)
}

/// `GET /__control/connections`: open connections and the last closed ones, with when and
/// why they closed and their ping/pong counts.
async fn control_connections(State(st): State<AppState>) -> Response {
    Json(st.hub.connections()).into_response()
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

/// What woke the client loop.
enum Wake {
    Command(Result<ClientCommand, broadcast::error::RecvError>),
    CloseDue,
    StallOver,
    Queued(Option<Utf8Bytes>),
    Incoming(Option<Result<Message, axum::Error>>),
    PingDue,
}

/// Messages written per flush when draining a client's queue.
const WRITE_BATCH: usize = 256;

async fn close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
}

/// Writes one message and flushes it.
async fn send_one(
    socket: &mut WebSocket,
    msg: Message,
    limit: Duration,
) -> Result<(), &'static str> {
    match tokio::time::timeout(limit, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write error"),
        Err(_) => Err("write timed out"),
    }
}

/// Writes `first` and whatever else is queued (up to [`WRITE_BATCH`]), then flushes once.
async fn send_queued(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
    counters: &ClientCounters,
    limit: Duration,
) -> Result<(), &'static str> {
    let written = tokio::time::timeout(limit, async {
        socket.feed(Message::Text(first)).await?;
        let mut n = 1u64;
        while n < WRITE_BATCH as u64 {
            match rx.try_recv() {
                Ok(text) => {
                    socket.feed(Message::Text(text)).await?;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        socket.flush().await?;
        Ok::<u64, axum::Error>(n)
    })
    .await;
    match written {
        Ok(Ok(n)) => {
            counters.sent.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(_)) => Err("write error"),
        Err(_) => Err("write timed out"),
    }
}

/// Writes a whole burst, flushing every [`WRITE_BATCH`] messages.
async fn send_burst(
    socket: &mut WebSocket,
    mut burst: Burst,
    counters: &ClientCounters,
    limit: Duration,
) -> Result<(), &'static str> {
    loop {
        let chunk = tokio::time::timeout(limit, async {
            let mut n = 0u64;
            for text in burst.by_ref().take(WRITE_BATCH) {
                socket.feed(Message::Text(text)).await?;
                n += 1;
            }
            socket.flush().await?;
            Ok::<u64, axum::Error>(n)
        })
        .await;
        match chunk {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => {
                counters.burst_sent.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(_)) => return Err("write error"),
            Err(_) => return Err("write timed out"),
        }
    }
}

async fn client_loop(mut socket: WebSocket, streams: HashSet<String>, st: AppState) {
    let mut client = st.hub.register(streams, st.client_buffer);
    let id = client.id;
    let counters = client.counters.clone();
    tracing::info!(client = id, "client connected");
    let mut ping = tokio::time::interval_at(Instant::now() + st.ping_interval, st.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pings not answered yet, oldest first: (payload, sent at).
    let mut outstanding: VecDeque<(Bytes, Instant)> = VecDeque::new();
    let mut own_stall: Option<Instant> = None;
    let mut closing_at: Option<Instant> = None;
    let limit = st.pong_timeout;
    let reason: &str = loop {
        let now = Instant::now();
        let stalled_until = [own_stall, st.hub.stalled_until()]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max();
        let wake = tokio::select! {
            cmd = client.commands.recv() => Wake::Command(cmd),
            _ = tokio::time::sleep_until(closing_at.unwrap_or(now)), if closing_at.is_some() => Wake::CloseDue,
            _ = tokio::time::sleep_until(stalled_until.unwrap_or(now)), if stalled_until.is_some() => Wake::StallOver,
            msg = client.rx.recv() => Wake::Queued(msg),
            incoming = socket.recv() => Wake::Incoming(incoming),
            _ = ping.tick() => Wake::PingDue,
        };
        match wake {
            Wake::Command(Ok(ClientCommand::Drop)) => break "dropped (control)",
            Wake::Command(Ok(ClientCommand::Shutdown { grace })) => {
                if closing_at.is_none() {
                    closing_at = Some(now + grace);
                    let event = Message::Text(faults::server_shutdown_event());
                    if let Err(why) = send_one(&mut socket, event, limit).await {
                        break why;
                    }
                }
            }
            Wake::Command(Ok(ClientCommand::Burst { n, symbol })) => {
                let subs = client
                    .subs
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let first_u = st.control.reserve_update_ids(n);
                let burst = Burst::plan(&st.hub, &subs, symbol.as_deref(), n, first_u);
                tracing::info!(client = id, messages = burst.len(), "burst");
                if let Err(why) = send_burst(&mut socket, burst, &counters, limit).await {
                    break why;
                }
            }
            Wake::Command(Ok(ClientCommand::Stall { until })) => own_stall = Some(until),
            Wake::Command(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Wake::Command(Err(broadcast::error::RecvError::Closed)) => {
                close(&mut socket).await;
                break "feed shutting down";
            }
            Wake::CloseDue => {
                close(&mut socket).await;
                break "server shutdown (control)";
            }
            Wake::StallOver => {}
            Wake::Queued(Some(text)) => {
                if stalled_until.is_some() {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Err(why) =
                    send_queued(&mut socket, text, &mut client.rx, &counters, limit).await
                {
                    break why;
                }
            }
            Wake::Queued(None) => {
                close(&mut socket).await;
                break "feed shutting down";
            }
            Wake::Incoming(Some(Ok(Message::Text(text)))) => {
                let reply = handle_request(text.as_str(), &client.subs);
                let reply = Message::Text(Utf8Bytes::from(reply.to_string()));
                if let Err(why) = send_one(&mut socket, reply, limit).await {
                    break why;
                }
            }
            Wake::Incoming(Some(Ok(Message::Pong(payload)))) => {
                // Binance: a pong must carry the ping's payload. Answering a later ping also
                // answers the earlier ones (a client may coalesce its pongs).
                match outstanding.iter().position(|(p, _)| *p == payload) {
                    Some(i) => {
                        outstanding.drain(..=i);
                        counters.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        counters.unsolicited_pongs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Pings are answered by the WebSocket layer itself.
            Wake::Incoming(Some(Ok(Message::Ping(_) | Message::Binary(_)))) => {}
            Wake::Incoming(Some(Ok(Message::Close(_))) | None) => break "closed by client",
            Wake::Incoming(Some(Err(_))) => break "read error",
            Wake::PingDue => {
                if stalled_until.is_some() {
                    continue;
                }
                if outstanding
                    .front()
                    .is_some_and(|(_, sent)| sent.elapsed() >= st.pong_timeout)
                {
                    close(&mut socket).await;
                    break "no pong in time";
                }
                let payload = Bytes::from(format!(
                    "{}-{}",
                    now_ms(),
                    counters.pings.load(Ordering::Relaxed)
                ));
                if outstanding.len() >= 64 {
                    outstanding.pop_back();
                }
                outstanding.push_back((payload.clone(), Instant::now()));
                counters.pings.fetch_add(1, Ordering::Relaxed);
                if let Err(why) = send_one(&mut socket, Message::Ping(payload), limit).await {
                    break why;
                }
            }
        }
    };
    tracing::info!(
        client = id,
        reason,
        dropped = counters.dropped.load(Ordering::Relaxed),
        "client disconnected"
    );
    client.set_close_reason(reason);
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
