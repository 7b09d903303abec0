//! A WebSocket client of the devstack's API Gateway WebSocket endpoint, as a browser or a
//! trading app would be: connect with credentials in the query, send JSON actions, read
//! JSON messages.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{wait_limit, Stack, User};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open client connection.
pub struct WsClient {
    socket: Socket,
    /// Every message received so far, in order (JSON).
    pub received: Vec<Value>,
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

impl Stack {
    /// Opens a WebSocket with `query` (e.g. `token=…`). `Err((status, body))` when the
    /// handshake is refused.
    pub async fn ws_connect(&self, query: &str) -> Result<WsClient, (u16, String)> {
        let url = format!("{}/?{query}", self.ws_url);
        match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _)) => Ok(WsClient {
                socket,
                received: Vec::new(),
            }),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(e) => self.fail(&format!("WebSocket connect to {}: {e}", self.ws_url)),
        }
    }

    /// A connection of `user` by API key; panics when refused.
    pub async fn ws_connect_as(&self, user: &User) -> WsClient {
        let query = format!("key_id={}&secret_key={}", user.key_id, user.secret_key);
        match self.ws_connect(&query).await {
            Ok(c) => c,
            Err((status, body)) => self.fail(&format!("WebSocket refused: {status} {body}")),
        }
    }

    /// The devstack's WebSocket counters (`GET /__control/stats` on the WebSocket listener).
    pub async fn ws_stats(&self) -> Value {
        let url = format!(
            "{}/__control/stats",
            self.ws_url.replacen("ws://", "http://", 1)
        );
        let r = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| self.fail(&format!("GET {url}: {e}")));
        r.json().await.unwrap_or(Value::Null)
    }

    /// Drops a client's connection in the devstack without a `$disconnect`, as when a
    /// client vanishes and API Gateway's disconnect event is lost.
    pub async fn ws_vanish(&self, connection_id: &str) {
        // Ids are base64: `/`, `+` and `=` must be escaped in a path.
        let id = connection_id
            .replace('%', "%25")
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D");
        let url = format!(
            "{}/__control/vanish/{id}",
            self.ws_url.replacen("ws://", "http://", 1)
        );
        let r = reqwest::Client::new()
            .post(&url)
            .send()
            .await
            .unwrap_or_else(|e| self.fail(&format!("POST {url}: {e}")));
        if !r.status().is_success() {
            self.fail(&format!("POST {url}: {}", r.status()));
        }
    }
}

impl WsClient {
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("sending a WebSocket message: {e}"));
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next JSON message within `within` (`Ok(None)` if none came), or how the
    /// connection ended.
    pub async fn try_next(&mut self, within: Duration) -> Result<Option<Value>, Closed> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return Ok(None);
            };
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("a non-JSON message {t:?}: {e}"));
                    self.received.push(v.clone());
                    return Ok(Some(v));
                }
                Some(Ok(Message::Close(c))) => {
                    return Err(Closed::Code(c.map(|f| u16::from(f.code)).unwrap_or(1005)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Closed::Dropped),
            }
        }
    }

    /// The next JSON message within `within`, or `None`. Panics if the connection closes.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        match self.try_next(within).await {
            Ok(v) => v,
            Err(closed) => panic!(
                "the connection closed ({closed:?}); received: {}",
                serde_json::to_string(&self.received).unwrap_or_default()
            ),
        }
    }

    /// Waits (at most the e2e wait limit) for a message of `ty` that satisfies `pred`.
    pub async fn wait_for(&mut self, ty: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_matching(&format!("{ty} message {what}"), |v| {
            v["type"] == ty && pred(v)
        })
        .await
    }

    /// The next message of any of `types`.
    pub async fn wait_for_any(&mut self, types: &[&str], what: &str) -> Value {
        self.wait_matching(&format!("{types:?} message {what}"), |v| {
            types.iter().any(|t| v["type"] == *t)
        })
        .await
    }

    /// Waits (at most the e2e wait limit) for a message that satisfies `pred`; panics with
    /// `no {what}` and every message received.
    async fn wait_matching(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + wait_limit();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no {what}; received: {}",
                    serde_json::to_string(&self.received).unwrap_or_default()
                );
            }
            if let Some(v) = self.next_within(left).await {
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    /// Every message that arrives within `within`.
    pub async fn drain(&mut self, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Some(v) = self
            .next_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            out.push(v);
        }
        out
    }

    /// Sends a ping action and returns the server's pong.
    pub async fn ping(&mut self) -> Value {
        self.send_json(&serde_json::json!({"action": "ping"})).await;
        self.wait_for("pong", "after a ping", |_| true).await
    }

    /// Subscribes and returns the snapshot reply.
    pub async fn subscribe(&mut self, symbols: &[&str], max_rate_ms: Option<u32>) -> Value {
        let mut v = serde_json::json!({"action": "subscribe", "symbols": symbols});
        if let Some(ms) = max_rate_ms {
            v["max_rate_ms"] = ms.into();
        }
        self.send_json(&v).await;
        self.wait_for("snapshot", "after a subscribe", |_| true)
            .await
    }

    /// Waits for the server to close the connection; what it ended with.
    pub async fn closed_within(&mut self, within: Duration) -> Closed {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => panic!("the connection was not closed within {within:?}"),
                Ok(Some(Ok(Message::Close(c)))) => {
                    return Closed::Code(c.map(|f| u16::from(f.code)).unwrap_or(1005));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return Closed::Dropped,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}
