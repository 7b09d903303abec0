//! `feed`: a Binance-protocol replay server for local development and tests.
//!
//! A dev tool with no workspace dependency: it speaks Binance's protocol, not ours.
//!
//! - `GET /stream?streams=a/b/c` — WebSocket speaking Binance's combined-stream protocol,
//!   replaying recorded data in a loop (plus live-style `SUBSCRIBE`/`UNSUBSCRIBE`).
//! - `POST /quotes`, `GET /quotes`, `DELETE /quotes/{symbol}` — script control of exact prices.
//! - `GET /health`.
//! - Test faults, each applied to the connections open at the time: `POST /__control/drop`
//!   (close without a close frame), `POST /__control/shutdown?grace_ms=` (a `serverShutdown`
//!   event, then close after the grace period), `POST /__control/burst?n=[&symbol=]` (`n`
//!   bookTickers as fast as the client reads), `POST /__control/stall?ms=[&all=true]` (send
//!   nothing, pings included; `all=true` stalls the whole feed, new connections too), and
//!   `GET /__control/connections` (open and recently closed connections, close reasons,
//!   pings sent and pongs matched).
//!
//! Keepalive as Binance: a ping every `ping_interval_secs` with a payload; a pong must carry
//! the payload of an outstanding ping, and a client that leaves a ping unanswered for
//! `pong_timeout_secs` is dropped.
//!
//! Modules: [`recording`] (loader), [`replay`] (paced loop), [`hub`] (fan-out with bounded
//! per-client queues, fault commands, connection records), [`control`] (scripted quotes),
//! [`faults`] (bursts, serverShutdown), [`routes`] (HTTP + WebSocket), [`util`] (clock and
//! locking helpers, at the bottom of the module graph).

pub mod config;
pub mod control;
pub mod faults;
pub mod hub;
pub mod recording;
pub mod replay;
pub mod routes;
pub mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::Config;

/// A running feed. Dropping it stops every task it started.
pub struct Feed {
    addr: SocketAddr,
    server: Option<JoinHandle<std::io::Result<()>>>,
    tasks: Vec<JoinHandle<()>>,
    hub: Arc<hub::Hub>,
    control: Arc<control::Control>,
}

impl Feed {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://host:port`, the value to give ingest as `BINANCE_WS_URL`.
    pub fn ws_base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// `http://host:port`, the base of the control API.
    pub fn http_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts a symbol under script control and emits it at once, as `POST /quotes` does
    /// (in-process callers such as benches use this to time the emission exactly).
    pub fn set_quote(&self, quote: control::ScriptedQuote) {
        self.control.set(quote, &self.hub);
    }

    /// Open and recently closed connections, as `GET /__control/connections` shows them.
    pub fn connections(&self) -> Vec<hub::ConnectionInfo> {
        self.hub.connections()
    }

    /// Waits until the HTTP server stops (it normally never does).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(handle) => Ok(handle.await??),
            None => Ok(()),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(h) = &self.server {
            h.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
        // WebSocket connections run in their own tasks: close them too.
        self.hub.close_all();
    }
}

/// Binds `config.listen`, starts replay, the repeater and the HTTP server, and returns at
/// once; recordings load in the background.
pub async fn spawn(config: Config) -> anyhow::Result<Feed> {
    config.validate()?;
    let found = recording::discover(&config.data_dir, &config.symbols)?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;

    let hub = hub::Hub::new();
    let control = control::Control::new();
    let mut tasks = Vec::new();
    for (symbol, files) in &found {
        let (symbol, files) = (symbol.clone(), files.clone());
        let (hub, control, speed) = (hub.clone(), control.clone(), config.speed);
        tasks.push(tokio::spawn(async move {
            let loaded = {
                let symbol = symbol.clone();
                tokio::task::spawn_blocking(move || recording::load(&symbol, &files)).await
            };
            match loaded {
                Ok(Ok(rec)) => {
                    tracing::info!(symbol = %rec.symbol, events = rec.events.len(),
                        skipped = rec.skipped, speed, "recording loaded; replaying");
                    replay::run(Arc::new(rec), speed, hub, control).await;
                }
                Ok(Err(e)) => {
                    tracing::error!(%symbol, error = %format!("{e:#}"), "loading recording")
                }
                Err(e) => tracing::error!(%symbol, error = %e, "loading recording"),
            }
        }));
    }
    tasks.push(tokio::spawn(control::run_repeater(
        control.clone(),
        hub.clone(),
        Duration::from_millis(config.repeat_ms),
    )));

    let state = routes::AppState {
        hub: hub.clone(),
        control: control.clone(),
        replaying: Arc::new(found.iter().map(|(s, _)| s.clone()).collect()),
        ping_interval: Duration::from_secs(config.ping_interval_secs),
        pong_timeout: Duration::from_secs(config.pong_timeout_secs),
        client_buffer: config.client_buffer,
    };
    let app = routes::router(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(%addr, symbols = ?found.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        "feed listening");
    Ok(Feed {
        addr,
        server: Some(server),
        tasks,
        hub,
        control,
    })
}
