//! devstack: the local stand-in for API Gateway REST and WebSocket (with the
//! `@connections` management API), Lambda and the SQS event source, running
//! the real function binaries as child processes under an emulated Lambda
//! Runtime API. See `start`.
//!
//! A dev tool: runs the function binaries as processes (never links them); depends on
//! `testkit` (the events it sends) and the AWS SDK clients of moto.

pub mod body;
pub mod cli;
pub mod connections;
pub mod forwarded;
pub mod rest;
pub mod runtime;
pub mod sqs;
pub mod topology;
pub mod ws;
pub mod ws_events;
pub mod ws_state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use runtime::{FunctionConfig, FunctionHandle, InvokeError, LambdaFunction};
pub use sqs::SqsSourceConfig;

/// Everything the devstack runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where API Gateway REST listens (port 0 for an ephemeral port).
    pub rest_listen: SocketAddr,
    /// API Gateway stage name.
    pub stage: String,
    /// The `api` function behind API Gateway's `/{proxy+}` (None: its
    /// requests get 502).
    pub api: Option<FunctionConfig>,
    /// The `webhook` function behind `POST /v2/hooks/tradingview/{webhook_id}`
    /// (None: its requests get 502).
    pub webhook: Option<FunctionConfig>,
    /// Take REST events' `sourceIp` from the first `X-Forwarded-For` address
    /// when there is one (a test aid: API Gateway takes it from the TCP peer).
    pub trust_forwarded_for: bool,
    /// API Gateway integration timeout (29 s on AWS).
    pub api_timeout: Duration,
    /// API Gateway's maximum request body.
    pub max_request_body: usize,
    /// The `executor` function behind the SQS event source.
    pub executor: Option<FunctionConfig>,
    /// How often the executor gets EventBridge's `Scheduled Event` (its bookkeeping prune);
    /// `None`: never.
    pub executor_schedule: Option<Duration>,
    /// The SQS event source (needs `executor`).
    pub sqs: Option<SqsSourceConfig>,
    /// Where API Gateway WebSocket and `@connections` listen (port 0 for an
    /// ephemeral port); bound only when `ws` is set.
    pub ws_listen: SocketAddr,
    /// The `ws` function behind the WebSocket API's `$connect`, `$default`
    /// and `$disconnect` routes (None: no WebSocket API).
    pub ws: Option<FunctionConfig>,
    /// WebSocket route integration timeout (29 s on AWS).
    pub ws_timeout: Duration,
    /// Idle connection timeout (10 min on AWS).
    pub ws_idle_timeout: Duration,
    /// Maximum connection duration (2 h on AWS).
    pub ws_max_connection: Duration,
}

impl Config {
    /// Defaults: ephemeral REST port on 127.0.0.1, stage `local`, no functions.
    pub fn new() -> Self {
        Self {
            rest_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            stage: "local".into(),
            api: None,
            webhook: None,
            trust_forwarded_for: false,
            api_timeout: rest::DEFAULT_TIMEOUT,
            max_request_body: rest::MAX_REQUEST_BODY,
            executor: None,
            executor_schedule: None,
            sqs: None,
            ws_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws: None,
            ws_timeout: rest::DEFAULT_TIMEOUT,
            ws_idle_timeout: ws::DEFAULT_IDLE_TIMEOUT,
            ws_max_connection: ws::DEFAULT_MAX_CONNECTION,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// A running devstack. Dropping it aborts its tasks, which kills every
/// function process (`kill_on_drop`); `shutdown` does so gracefully.
pub struct Devstack {
    rest_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    functions: Vec<LambdaFunction>,
    api: Option<FunctionHandle>,
    webhook: Option<FunctionHandle>,
    executor: Option<FunctionHandle>,
    ws_addr: Option<SocketAddr>,
    ws: Option<FunctionHandle>,
    ws_state: Option<Arc<ws::WsState>>,
}

impl Devstack {
    /// The bound API Gateway REST address.
    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    /// `http://<rest_addr>`.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest_addr)
    }

    pub fn api(&self) -> Option<&FunctionHandle> {
        self.api.as_ref()
    }

    pub fn webhook(&self) -> Option<&FunctionHandle> {
        self.webhook.as_ref()
    }

    pub fn executor(&self) -> Option<&FunctionHandle> {
        self.executor.as_ref()
    }

    /// The bound WebSocket / `@connections` address (None without a `ws` function).
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// `http://<ws_addr>`: `ws://<ws_addr>/<stage>` for clients,
    /// `<ws_url>/<stage>` as the management API's endpoint URL.
    pub fn ws_url(&self) -> Option<String> {
        self.ws_addr.map(|a| format!("http://{a}"))
    }

    pub fn ws(&self) -> Option<&FunctionHandle> {
        self.ws.as_ref()
    }

    /// The WebSocket API's counters (as `GET /__control/stats` answers them).
    pub fn ws_stats(&self) -> Option<serde_json::Value> {
        self.ws_state.as_ref().map(|s| s.stats_json())
    }

    /// Stop pollers and the REST server, kill every function process and
    /// wait for them (at most ~5 s).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        let functions = std::mem::take(&mut self.functions);
        let tasks = std::mem::take(&mut self.tasks);
        let wait = async move {
            for f in functions {
                f.join().await;
            }
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            warn!("devstack: shutdown took longer than 5 s; abandoning");
        }
    }
}

impl Drop for Devstack {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Start the devstack: bind the REST (and WebSocket) listeners, start the
/// function instances and the SQS pollers. Returns once the listeners are
/// bound; function instances become ready in the background (requests wait
/// for them).
pub async fn start(mut config: Config) -> anyhow::Result<Devstack> {
    let mut listens = vec![("--rest-listen", config.rest_listen)];
    if config.ws.is_some() {
        listens.push(("--ws-listen", config.ws_listen));
    }
    for (flag, addr) in listens {
        if !addr.ip().is_loopback() {
            warn!("devstack: {flag} {addr} is not a loopback address");
        }
    }
    if config.sqs.is_some() && config.executor.is_none() {
        anyhow::bail!("an SQS queue is configured but no executor function (--executor-bin)");
    }
    let listener = TcpListener::bind(config.rest_listen)
        .await
        .with_context(|| format!("binding {}", config.rest_listen))?;
    let rest_addr = listener.local_addr()?;

    // The WebSocket listener is bound before any function starts, since
    // every function learns its address (WS_MANAGEMENT_URL).
    let ws_listener = match &config.ws {
        Some(_) => Some(
            TcpListener::bind(config.ws_listen)
                .await
                .with_context(|| format!("binding {}", config.ws_listen))?,
        ),
        None => None,
    };
    let ws_addr = ws_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(addr) = ws_addr {
        let url = format!("http://{addr}/{}", config.stage);
        for fc in [
            &mut config.api,
            &mut config.webhook,
            &mut config.executor,
            &mut config.ws,
        ]
        .into_iter()
        .flatten()
        {
            // First, so an explicit entry in `env` still wins.
            fc.env
                .insert(0, ("WS_MANAGEMENT_URL".to_string(), url.clone()));
        }
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut functions = Vec::new();
    let mut tasks = Vec::new();

    let api = config.api.clone().map(|fc| {
        let f = LambdaFunction::start(fc, shutdown_rx.clone());
        let h = f.handle();
        functions.push(f);
        h
    });
    let webhook = config.webhook.clone().map(|fc| {
        let f = LambdaFunction::start(fc, shutdown_rx.clone());
        let h = f.handle();
        functions.push(f);
        h
    });
    let executor = config.executor.clone().map(|fc| {
        let f = LambdaFunction::start(fc, shutdown_rx.clone());
        let h = f.handle();
        functions.push(f);
        h
    });
    let ws_fn = config.ws.clone().map(|fc| {
        let f = LambdaFunction::start(fc, shutdown_rx.clone());
        let h = f.handle();
        functions.push(f);
        h
    });

    if let (Some(sqs_cfg), Some(exec)) = (config.sqs.clone(), executor.clone()) {
        let client = sqs::client_from_env(&sqs_cfg.region).await;
        for i in 0..sqs_cfg.pollers.max(1) {
            tasks.push(tokio::spawn(sqs::run_poller(
                i,
                client.clone(),
                sqs_cfg.clone(),
                exec.clone(),
                shutdown_rx.clone(),
            )));
        }
    }

    if let (Some(every), Some(exec)) = (config.executor_schedule, executor.clone()) {
        tasks.push(tokio::spawn(run_schedule(every, exec, shutdown_rx.clone())));
    }

    let app = rest::router(rest::RestState {
        api: api.clone(),
        webhook: webhook.clone(),
        stage: config.stage.clone(),
        timeout: config.api_timeout,
        max_body: config.max_request_body,
        trust_forwarded_for: config.trust_forwarded_for,
    });
    tasks.push(serve(listener, app, shutdown_rx.clone(), "REST"));
    info!("devstack: API Gateway REST bound on http://{rest_addr}");
    if config.trust_forwarded_for {
        warn!("devstack: --trust-forwarded-for: REST sourceIp comes from X-Forwarded-For (test aid, not API Gateway's behaviour)");
    }

    let mut ws_state = None;
    if let (Some(listener), Some(addr), Some(function)) = (ws_listener, ws_addr, ws_fn.clone()) {
        let state = ws::WsState::new(
            function,
            ws::WsSettings {
                stage: config.stage.clone(),
                timeout: config.ws_timeout,
                idle_timeout: config.ws_idle_timeout,
                max_connection: config.ws_max_connection,
            },
            addr,
            shutdown_rx.clone(),
        );
        ws_state = Some(state.clone());
        let app = ws::router(state);
        tasks.push(serve(listener, app, shutdown_rx.clone(), "WebSocket"));
        info!(
            "devstack: API Gateway WebSocket bound on ws://{addr}/{}, @connections at http://{addr}/{}",
            config.stage, config.stage
        );
    }

    Ok(Devstack {
        rest_addr,
        shutdown_tx,
        tasks,
        functions,
        api,
        webhook,
        executor,
        ws_addr,
        ws: ws_fn,
        ws_state,
    })
}

/// Serves `app` on `listener` (with the peer address, as API Gateway's `sourceIp` needs)
/// until the shutdown signal.
fn serve(
    listener: TcpListener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
        if let Err(e) = serve.await {
            warn!("devstack: {what} server stopped: {e}");
        }
    })
}

/// The stack's EventBridge schedule rule: the executor gets a `Scheduled Event` every
/// `every` (the first one after `every`, as a rule's first run comes after its period).
async fn run_schedule(
    every: Duration,
    executor: FunctionHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        let event = serde_json::json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": runtime::ACCOUNT_ID,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "region": "us-east-1",
            "resources": [format!("arn:aws:events:us-east-1:{}:rule/prune", runtime::ACCOUNT_ID)],
            "detail": {}
        });
        match executor.invoke(&event, Duration::from_secs(60)).await {
            Ok(answer) => info!("devstack: scheduled prune: {answer}"),
            Err(e) => warn!("devstack: scheduled prune failed: {e}"),
        }
    }
}
