//! The WebSocket API's shared state: the live connections (each with its
//! outbound queue and control channel), the counters behind
//! `GET /__control/stats`, and API Gateway's limits that both sides of the
//! listener enforce.
//!
//! It sits below both users in the module graph: `ws` (upgrades and the
//! socket loops) and `connections` (the `@connections` management API and
//! the control endpoints) depend on it, it depends on neither.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use axum::extract::ws::Message;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::runtime::{lock, FunctionHandle};

/// API Gateway's maximum WebSocket message (inbound, and `PostToConnection` data).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Messages queued for one connection before it counts as a slow client.
pub const OUTBOUND_QUEUE: usize = 1024;

/// How the WebSocket API behaves.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub stage: String,
    /// Integration timeout of every route invocation (29 s on AWS).
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connection: Duration,
}

/// A message for a client.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    Text(String),
    Binary(Bytes),
}

impl Outbound {
    /// UTF-8 data goes out as a text frame, anything else as binary.
    pub(crate) fn from_data(data: Bytes) -> Self {
        match std::str::from_utf8(&data) {
            Ok(s) => Self::Text(s.to_string()),
            Err(_) => Self::Binary(data),
        }
    }

    pub(crate) fn into_message(self) -> Message {
        match self {
            Self::Text(s) => Message::text(s),
            Self::Binary(b) => Message::Binary(b),
        }
    }
}

/// An order to a connection's task from outside (management API, control).
#[derive(Debug)]
pub(crate) enum Control {
    /// Close handshake with this code, then `$disconnect`.
    Close { code: u16, reason: &'static str },
    /// Drop the TCP connection without a close frame and without `$disconnect`.
    Vanish,
}

/// One live connection as the management API sees it.
pub(crate) struct Conn {
    pub(crate) id: String,
    pub(crate) connected_at: DateTime<Utc>,
    last_active_ms: AtomicI64,
    pub(crate) source_ip: String,
    pub(crate) user_agent: Option<String>,
    /// Bounded: a full queue means the client does not keep up.
    pub(crate) out: mpsc::Sender<Outbound>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
}

impl Conn {
    /// A connection that was last active when it connected.
    pub(crate) fn new(
        id: String,
        connected_at: DateTime<Utc>,
        source_ip: String,
        user_agent: Option<String>,
        out: mpsc::Sender<Outbound>,
        control: mpsc::UnboundedSender<Control>,
    ) -> Self {
        Self {
            id,
            connected_at,
            last_active_ms: AtomicI64::new(connected_at.timestamp_millis()),
            source_ip,
            user_agent,
            out,
            control,
        }
    }

    pub(crate) fn touch(&self) {
        self.last_active_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub(crate) fn last_active_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.last_active_ms.load(Ordering::Relaxed))
            .unwrap_or(self.connected_at)
    }
}

/// Counters behind `GET /__control/stats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) connects: AtomicU64,
    pub(crate) rejected_connects: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) vanished: AtomicU64,
    pub(crate) posts: AtomicU64,
    pub(crate) posts_gone: AtomicU64,
    pub(crate) gone_by_connection: StdMutex<HashMap<String, u64>>,
}

/// Shared by the upgrade handler, the connection tasks and the management API.
pub struct WsState {
    pub(crate) function: FunctionHandle,
    pub(crate) settings: WsSettings,
    pub(crate) local_addr: SocketAddr,
    pub(crate) connections: StdMutex<HashMap<String, Arc<Conn>>>,
    pub(crate) stats: Stats,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl WsState {
    pub fn new(
        function: FunctionHandle,
        settings: WsSettings,
        local_addr: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            function,
            settings,
            local_addr,
            connections: StdMutex::new(HashMap::new()),
            stats: Stats::default(),
            shutdown,
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Conn>> {
        lock(&self.connections).get(id).cloned()
    }

    /// Forget a connection; true if it was still known. From then on the
    /// management API answers 410 for it.
    pub(crate) fn forget(&self, id: &str) -> Option<Arc<Conn>> {
        lock(&self.connections).remove(id)
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.connections).len()
    }

    /// The stats JSON, as `GET /__control/stats` answers it.
    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        let gone: serde_json::Map<String, Value> = lock(&s.gone_by_connection)
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "connections": self.connection_count(),
            "connects": s.connects.load(Ordering::Relaxed),
            "rejected_connects": s.rejected_connects.load(Ordering::Relaxed),
            "messages_in": s.messages_in.load(Ordering::Relaxed),
            "disconnects": s.disconnects.load(Ordering::Relaxed),
            "vanished": s.vanished.load(Ordering::Relaxed),
            "posts": s.posts.load(Ordering::Relaxed),
            "posts_gone": s.posts_gone.load(Ordering::Relaxed),
            "gone_by_connection": Value::Object(gone),
        })
    }
}
