//! API Gateway WebSocket API emulation (Lambda proxy integrations on
//! `$connect`, `$default` and `$disconnect`, all routed to one `ws` function).
//!
//! - An upgrade request on any path (AWS uses `/{stage}`) gets a connection id
//!   and invokes `$connect` *before* the upgrade is accepted: a 2xx
//!   `statusCode` (or none at all) accepts it, anything else is the HTTP
//!   answer to the upgrade request (the client sees a failed handshake), and an
//!   invocation failure is a 500 `{"message":"Internal server error"}`.
//! - Every text or binary message becomes a `$default` `MESSAGE` event. A 2xx
//!   response with a non-empty `body` is sent back as one message (the route
//!   response our template configures on `$default`). A connection's messages
//!   are invoked one at a time, in order; connections run concurrently.
//! - The connection ends by a client close frame or TCP loss, a server close
//!   (idle timeout, maximum connection duration, message too big, `DELETE
//!   @connections/{id}`, slow client), and then `$disconnect` is invoked once,
//!   after the connection's pending messages.
//!
//! API Gateway's limits are enforced: an inbound message over 128 KB closes
//! the connection with 1009; no frame from the client (text, binary, ping) for
//! the idle timeout (10 min) closes it with 1001, and so does reaching the
//! maximum connection duration (2 h). Messages the server pushes do not count
//! as activity, as on AWS. Frames up to 16 MiB are read whole before the
//! 128 KB check so the close handshake stays clean; a bigger one drops the TCP
//! connection (and is reported to `$disconnect` as 1009 too).
//!
//! The `@connections` management API and the test control endpoints live in
//! [`crate::connections`] and share this listener; the state both sides use
//! (connections, their queues, counters, limits) is in [`crate::ws_state`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::runtime::{lock, InvokeError};
use crate::ws_events::{
    connect_event, disconnect_event, message_event, new_aws_id, ConnectionContext, DisconnectInfo,
    InboundBody,
};
use crate::ws_state::{Conn, Control, Outbound};
// The shared state and limits live in `ws_state` (which `connections` uses too); they stay
// reachable under `devstack::ws::*`.
pub use crate::ws_state::{WsSettings, WsState, MAX_MESSAGE_BYTES, OUTBOUND_QUEUE};

/// API Gateway's idle connection timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// API Gateway's maximum connection duration.
pub const DEFAULT_MAX_CONNECTION: Duration = Duration::from_secs(2 * 60 * 60);
/// Largest frame/message read at all (see the module docs).
const HARD_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long a closing side waits for the peer's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The whole WebSocket listener: management API, control endpoints, and
/// upgrades on every other path.
pub fn router(state: Arc<WsState>) -> Router {
    crate::connections::routes()
        .fallback(upgrade)
        .with_state(state)
}

fn header_str(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// `statusCode` of a proxy integration response; a function that returns
/// nothing (or no `statusCode`) counts as 200, as on AWS.
fn integration_status(v: &Value) -> Result<u16, String> {
    let code = match v.get("statusCode") {
        None | Some(Value::Null) => return Ok(200),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(other) => return Err(format!("invalid statusCode {other}")),
    };
    code.and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| format!("invalid statusCode {v}"))
}

fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({"message": "Internal server error"})),
    )
        .into_response()
}

/// An upgrade request: `$connect`, then accept or reject.
async fn upgrade(
    State(st): State<Arc<WsState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            // The path only: the query can carry a session token.
            debug!("ws: {} is not a WebSocket upgrade: {rejection}", uri.path());
            return rejection.into_response();
        }
    };
    let started = std::time::Instant::now();
    let connection_id = new_aws_id();
    let request_id = new_aws_id();
    let domain_name = headers
        .get(header::HOST)
        .map(header_str)
        .unwrap_or_else(|| st.local_addr.to_string());
    let ctx = ConnectionContext {
        connection_id: connection_id.clone(),
        connected_at: Utc::now(),
        source_ip: peer.ip().to_string(),
        user_agent: headers.get(header::USER_AGENT).map(header_str),
        domain_name,
        stage: st.settings.stage.clone(),
    };
    let event = connect_event(
        &ctx,
        &headers,
        uri.query(),
        st.local_addr.port(),
        &request_id,
        ctx.connected_at,
    );
    let result = st.function.invoke(&event, st.settings.timeout).await;
    let elapsed = started.elapsed().as_millis();
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            warn!("ws CONNECT {connection_id}: $connect invocation failed: {e}");
            bump(&st.stats.rejected_connects);
            return internal_error();
        }
    };
    let status = match integration_status(&value) {
        Ok(s) => s,
        Err(why) => {
            warn!("ws CONNECT {connection_id}: malformed $connect response: {why}");
            bump(&st.stats.rejected_connects);
            return internal_error();
        }
    };
    if !(200..300).contains(&status) {
        info!("ws CONNECT {connection_id} rejected {status} {elapsed}ms");
        bump(&st.stats.rejected_connects);
        return crate::rest::proxy_response_to_http(value, &request_id).unwrap_or_else(|_| {
            StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response()
        });
    }
    // A subprotocol chosen by the $connect function goes into the 101.
    let protocol = value
        .get("headers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
        })
        .and_then(|(_, v)| v.as_str())
        .and_then(|v| HeaderValue::from_str(v).ok());

    // Registered before the 101 goes out, so a POST racing the client's
    // first message is queued rather than answered 410.
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn::new(
        connection_id.clone(),
        ctx.connected_at,
        ctx.source_ip.clone(),
        ctx.user_agent.clone(),
        out_tx,
        control_tx,
    ));
    lock(&st.connections).insert(connection_id.clone(), conn.clone());
    bump(&st.stats.connects);
    info!("ws CONNECT {connection_id} {status} {elapsed}ms");

    let failed_st = st.clone();
    let failed_id = connection_id.clone();
    let mut resp = ws
        .max_message_size(HARD_MAX_MESSAGE_BYTES)
        .max_frame_size(HARD_MAX_MESSAGE_BYTES)
        .on_failed_upgrade(move |e| {
            warn!("ws {failed_id}: upgrade failed: {e}");
            failed_st.forget(&failed_id);
        })
        .on_upgrade(move |socket| run_connection(st, conn, ctx, socket, out_rx, control_rx));
    if let Some(p) = protocol {
        resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

/// How a connection's socket loop ended.
enum End {
    /// Closed (by either side or lost): invoke `$disconnect`.
    Disconnect(DisconnectInfo),
    /// `/__control/vanish`: no `$disconnect`.
    Vanish,
    /// The devstack is stopping (its functions too): no `$disconnect`.
    Shutdown,
}

fn disconnect(code: u16, reason: impl Into<String>) -> End {
    End::Disconnect(DisconnectInfo {
        status_code: code,
        reason: reason.into(),
    })
}

/// Send a close frame and wait (briefly) for the client's, so the client
/// reads our close code before the TCP connection goes away.
async fn close_handshake(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        // Whatever the client still sends is not invoked any more.
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Finish a close the client started: reading on flushes our reply frame.
async fn finish_client_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Resolves once the devstack stops (or is gone). Returns `()` because the
/// `watch::Ref` that `wait_for` yields is not `Send`.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A job for a connection's invoker task.
enum Job {
    Message(InboundBody),
    Disconnect(DisconnectInfo),
}

/// The socket side of one connection: reads frames, writes queued messages,
/// enforces the limits, obeys control orders. Invocations run in a separate
/// task ([`run_invoker`]) so pings, pushes and timers are served while a
/// message is being handled.
async fn run_connection(
    st: Arc<WsState>,
    conn: Arc<Conn>,
    ctx: ConnectionContext,
    mut socket: WebSocket,
    mut out_rx: mpsc::Receiver<Outbound>,
    mut control_rx: mpsc::UnboundedReceiver<Control>,
) {
    let id = conn.id.clone();
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    tokio::spawn(run_invoker(st.clone(), ctx, conn.out.clone(), jobs_rx));

    let idle = st.settings.idle_timeout;
    let max_deadline = Instant::now() + st.settings.max_connection;
    let mut idle_deadline = Instant::now() + idle;
    let mut shutdown = st.shutdown.clone();

    let end = loop {
        tokio::select! {
            frame = socket.recv() => {
                let msg = match frame {
                    None => break disconnect(1006, "Client connection lost"),
                    Some(Err(e)) => {
                        let text = e.to_string();
                        debug!("ws {id}: read error: {text}");
                        if text.contains("too long") || text.contains("too big") {
                            break disconnect(1009, "Message too big");
                        }
                        break disconnect(1006, "Client connection lost");
                    }
                    Some(Ok(msg)) => msg,
                };
                idle_deadline = Instant::now() + idle;
                conn.touch();
                let body = match msg {
                    Message::Text(t) => InboundBody::Text(t.as_str().to_string()),
                    Message::Binary(b) => InboundBody::from_binary(b.to_vec()),
                    // tungstenite answers pings itself.
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(frame) => {
                        finish_client_close(&mut socket).await;
                        break match frame {
                            Some(f) => disconnect(f.code, f.reason.as_str()),
                            None => disconnect(1005, "Client-side close frame status not set"),
                        };
                    }
                };
                if body.len() > MAX_MESSAGE_BYTES {
                    info!("ws {id}: inbound message of {} bytes is too big; closing", body.len());
                    close_handshake(&mut socket, 1009, "Message too big").await;
                    break disconnect(1009, "Message too big");
                }
                bump(&st.stats.messages_in);
                let _ = jobs_tx.send(Job::Message(body));
            }
            Some(out) = out_rx.recv() => {
                if let Err(e) = socket.send(out.into_message()).await {
                    debug!("ws {id}: write error: {e}");
                    break disconnect(1006, "Client connection lost");
                }
            }
            Some(order) = control_rx.recv() => match order {
                Control::Close { code, reason } => {
                    close_handshake(&mut socket, code, reason).await;
                    break disconnect(code, reason);
                }
                Control::Vanish => break End::Vanish,
            },
            _ = tokio::time::sleep_until(idle_deadline) => {
                info!("ws {id}: idle for {idle:?}; closing");
                close_handshake(&mut socket, 1001, "Going away").await;
                break disconnect(1001, "Going away");
            }
            _ = tokio::time::sleep_until(max_deadline) => {
                info!("ws {id}: maximum connection duration reached; closing");
                close_handshake(&mut socket, 1001, "Going away").await;
                break disconnect(1001, "Going away");
            }
            _ = stopping(&mut shutdown) => {
                close_handshake(&mut socket, 1001, "Going away").await;
                break End::Shutdown;
            }
        }
    };
    // Drop the socket first: a vanished client must lose its TCP connection
    // now, not after pending invocations.
    drop(socket);
    st.forget(&id);
    match end {
        End::Disconnect(why) => {
            info!(
                "ws {id}: closed {} {:?}; invoking $disconnect",
                why.status_code, why.reason
            );
            let _ = jobs_tx.send(Job::Disconnect(why));
        }
        End::Vanish => info!("ws {id}: vanished (no $disconnect)"),
        End::Shutdown => debug!("ws {id}: closed for shutdown"),
    }
}

/// Invoke a connection's messages one at a time, then `$disconnect` (once,
/// after every message already received).
async fn run_invoker(
    st: Arc<WsState>,
    ctx: ConnectionContext,
    out: mpsc::Sender<Outbound>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let id = ctx.connection_id.clone();
    while let Some(job) = jobs.recv().await {
        let request_id = new_aws_id();
        let started = std::time::Instant::now();
        match job {
            Job::Message(body) => {
                let event = message_event(&ctx, &body, &request_id, &new_aws_id(), Utc::now());
                let result = st.function.invoke(&event, st.settings.timeout).await;
                let ms = started.elapsed().as_millis();
                match result {
                    Ok(v) => {
                        let reply = route_response(&v);
                        info!(
                            "ws MESSAGE {id} {} bytes -> {} {ms}ms",
                            body.len(),
                            if reply.is_some() { "reply" } else { "no reply" }
                        );
                        if let Some(reply) = reply {
                            let _ = out.send(reply).await;
                        }
                    }
                    Err(e) => {
                        warn!("ws MESSAGE {id}: invocation failed: {e}");
                        let message = match e {
                            InvokeError::Timeout(_) => "Endpoint request timed out",
                            _ => "Internal server error",
                        };
                        let err = json!({
                            "message": message,
                            "connectionId": id,
                            "requestId": request_id,
                        });
                        let _ = out.send(Outbound::Text(err.to_string())).await;
                    }
                }
            }
            Job::Disconnect(why) => {
                let event = disconnect_event(&ctx, &why, &request_id, Utc::now());
                match st.function.invoke(&event, st.settings.timeout).await {
                    Ok(_) => info!(
                        "ws DISCONNECT {id} {} {}ms",
                        why.status_code,
                        started.elapsed().as_millis()
                    ),
                    Err(e) => warn!("ws DISCONNECT {id}: invocation failed: {e}"),
                }
                bump(&st.stats.disconnects);
                return;
            }
        }
    }
}

/// The route response of a `$default` invocation: the `body` of a 2xx (or
/// status-less) proxy response, if not empty.
fn route_response(v: &Value) -> Option<Outbound> {
    let status = integration_status(v).ok()?;
    if !(200..300).contains(&status) {
        return None;
    }
    let body = v.get("body")?.as_str().filter(|b| !b.is_empty())?;
    if v.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        let data = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .ok()?;
        return Some(Outbound::from_data(Bytes::from(data)));
    }
    Some(Outbound::Text(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_defaults_to_200_and_parses_strings() {
        assert_eq!(integration_status(&Value::Null), Ok(200));
        assert_eq!(integration_status(&json!({})), Ok(200));
        assert_eq!(integration_status(&json!({"statusCode": 401})), Ok(401));
        assert_eq!(integration_status(&json!({"statusCode": "429"})), Ok(429));
        assert!(integration_status(&json!({"statusCode": 7})).is_err());
        assert!(integration_status(&json!({"statusCode": true})).is_err());
    }

    #[test]
    fn route_response_needs_2xx_and_a_body() {
        assert!(route_response(&json!({"statusCode": 200})).is_none());
        assert!(route_response(&json!({"statusCode": 200, "body": ""})).is_none());
        assert!(route_response(&json!({"statusCode": 500, "body": "x"})).is_none());
        assert!(matches!(
            route_response(&json!({"statusCode": 200, "body": "x"})),
            Some(Outbound::Text(t)) if t == "x"
        ));
        assert!(matches!(
            route_response(&json!({"statusCode": 200, "body": "AJ//", "isBase64Encoded": true})),
            Some(Outbound::Binary(b)) if b.as_ref() == [0, 159, 255]
        ));
    }
}
