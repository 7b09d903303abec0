//! Lambda Runtime API emulation and function instance supervision.
//!
//! Each function gets N instances (child processes running the real function
//! binary built with `lambda_runtime` / `lambda_http`). Every instance
//! *generation* (one process lifetime) gets its own Runtime API listener on an
//! ephemeral 127.0.0.1 port, like each Lambda execution environment has its own
//! Runtime API endpoint. All listeners of a function share one invocation queue,
//! so the per-port split only serves to know which process holds which
//! invocation: when a process exits, exactly its in-flight invocation fails
//! (like a crashed Lambda), and when an invocation times out, exactly the
//! process running it is killed and restarted.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

/// The account id used in every ARN the devstack makes up.
pub const ACCOUNT_ID: &str = "123456789012";

/// Lambda's limit on a synchronous invocation's response payload.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// How one Lambda function is run.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// Function name (`AWS_LAMBDA_FUNCTION_NAME`), e.g. `api`.
    pub name: String,
    /// Path of the function binary.
    pub bin: PathBuf,
    /// Number of concurrently running instances (processes).
    pub instances: usize,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`.
    pub memory_mb: u32,
    /// Region reported to the function when `AWS_REGION` is not set.
    pub region: String,
    /// Extra environment for the function processes (on top of the inherited one).
    pub env: Vec<(String, String)>,
}

impl FunctionConfig {
    pub fn new(name: impl Into<String>, bin: impl Into<PathBuf>, instances: usize) -> Self {
        Self {
            name: name.into(),
            bin: bin.into(),
            instances,
            memory_mb: 512,
            region: default_region(),
            env: Vec::new(),
        }
    }
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
pub fn default_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// Why an invocation produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The function reported an error through `/invocation/{id}/error`
    /// (a handler `Err`, a caught panic, an unparsable event, ...).
    #[error("function error {error_type}: {error_message}")]
    Function {
        error_type: String,
        error_message: String,
    },
    /// No response within the timeout; the instance running it (if any) is killed.
    #[error("invocation timed out after {0:?}")]
    Timeout(Duration),
    /// The instance running the invocation exited before answering.
    #[error("function instance crashed: {0}")]
    Crashed(String),
    /// The event could not be serialized or the devstack is shutting down.
    #[error("invocation could not be submitted: {0}")]
    Rejected(String),
}

type Reply = oneshot::Sender<Result<Value, InvokeError>>;

struct Pending {
    id: String,
    payload: Bytes,
    deadline_ms: u64,
    trace_id: String,
    reply: Reply,
}

struct Inflight {
    reply: Reply,
    generation: u64,
    kill: Arc<Notify>,
}

struct Shared {
    name: String,
    arn: String,
    queue_tx: mpsc::UnboundedSender<Pending>,
    queue_rx: Mutex<mpsc::UnboundedReceiver<Pending>>,
    inflight: StdMutex<HashMap<String, Inflight>>,
    /// Instances currently long-polling `/next` (i.e. idle and ready).
    polling: AtomicUsize,
    /// Instance processes currently running.
    running: AtomicUsize,
    next_generation: AtomicU64,
}

/// Lock a std mutex, recovering from poisoning (the maps stay consistent:
/// every critical section is a single insert/remove).
pub(crate) fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cheap, cloneable handle to invoke a function.
#[derive(Clone)]
pub struct FunctionHandle {
    shared: Arc<Shared>,
}

impl FunctionHandle {
    /// Function name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Instances currently waiting for an invocation.
    pub fn idle_instances(&self) -> usize {
        self.shared.polling.load(Ordering::Relaxed)
    }

    /// Instance processes currently running.
    pub fn running_instances(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Invoke the function synchronously (RequestResponse) with `event`.
    ///
    /// The timeout covers waiting for a free instance as well as running
    /// the handler. On timeout the instance running the invocation is killed
    /// (and restarted), as Lambda does with a timed-out execution environment.
    pub async fn invoke(&self, event: &Value, timeout: Duration) -> Result<Value, InvokeError> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| InvokeError::Rejected(format!("event not serializable: {e}")))?;
        let id = uuid::Uuid::new_v4().to_string();
        let deadline = SystemTime::now() + timeout;
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        self.shared
            .queue_tx
            .send(Pending {
                id: id.clone(),
                payload: Bytes::from(payload),
                deadline_ms,
                trace_id: new_trace_id(),
                reply: tx,
            })
            .map_err(|_| InvokeError::Rejected("function queue closed".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InvokeError::Crashed(
                "instance exited before answering".into(),
            )),
            Err(_) => {
                let inflight = lock(&self.shared.inflight).remove(&id);
                if let Some(inflight) = inflight {
                    warn!(
                        function = %self.shared.name,
                        request_id = %id,
                        "invocation timed out after {timeout:?}; killing its instance"
                    );
                    inflight.kill.notify_one();
                }
                Err(InvokeError::Timeout(timeout))
            }
        }
    }
}

/// A running function: its instances' supervisors.
pub struct LambdaFunction {
    handle: FunctionHandle,
    supervisors: Vec<JoinHandle<()>>,
}

impl LambdaFunction {
    /// Start `config.instances` supervised instances. Returns at once; the
    /// instances become ready when they first poll `/next`.
    pub fn start(config: FunctionConfig, shutdown: watch::Receiver<bool>) -> Self {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let region = config.region.clone();
        let shared = Arc::new(Shared {
            arn: format!(
                "arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{}",
                config.name
            ),
            name: config.name.clone(),
            queue_tx,
            queue_rx: Mutex::new(queue_rx),
            inflight: StdMutex::new(HashMap::new()),
            polling: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            next_generation: AtomicU64::new(1),
        });
        let config = Arc::new(config);
        let supervisors = (0..config.instances.max(1))
            .map(|index| {
                tokio::spawn(supervise(
                    shared.clone(),
                    config.clone(),
                    index,
                    shutdown.clone(),
                ))
            })
            .collect();
        Self {
            handle: FunctionHandle { shared },
            supervisors,
        }
    }

    pub fn handle(&self) -> FunctionHandle {
        self.handle.clone()
    }

    /// Wait for the supervisors to finish (after the shutdown signal was sent):
    /// each kills its child and waits for it.
    pub async fn join(self) {
        for s in self.supervisors {
            let _ = s.await;
        }
    }
}

/// One process lifetime of one instance.
struct Generation {
    shared: Arc<Shared>,
    generation: u64,
    kill: Arc<Notify>,
    alive: AtomicBool,
}

impl Generation {
    /// Mark the generation dead and fail its in-flight invocations.
    fn end(&self, why: &str) {
        let mut inflight = lock(&self.shared.inflight);
        self.alive.store(false, Ordering::SeqCst);
        let ids: Vec<String> = inflight
            .iter()
            .filter(|(_, f)| f.generation == self.generation)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(f) = inflight.remove(&id) {
                warn!(function = %self.shared.name, request_id = %id, "invocation failed: instance {why}");
                let _ = f.reply.send(Err(InvokeError::Crashed(why.to_string())));
            }
        }
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

async fn supervise(
    shared: Arc<Shared>,
    config: Arc<FunctionConfig>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let label = format!("{}#{index}", config.name);
    let mut backoff = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(l) => l,
            Err(e) => {
                error!("{label}: cannot bind a Runtime API listener: {e}");
                if sleep_or_shutdown(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => {
                error!("{label}: listener has no address: {e}");
                continue;
            }
        };
        let generation = Arc::new(Generation {
            shared: shared.clone(),
            generation: shared.next_generation.fetch_add(1, Ordering::Relaxed),
            kill: Arc::new(Notify::new()),
            alive: AtomicBool::new(true),
        });
        let server = tokio::spawn(serve_runtime_api(listener, generation.clone()));

        let mut cmd = Command::new(&config.bin);
        cmd.env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", &config.name)
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                config.memory_mb.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", config.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name())
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand");
        if std::env::var_os("AWS_REGION").is_none() {
            cmd.env("AWS_REGION", &config.region);
        }
        if std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            cmd.env("AWS_DEFAULT_REGION", &config.region);
        }
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "{label}: cannot start {}: {e}; retrying in {backoff:?}",
                    config.bin.display()
                );
                generation.end("could not start");
                server.abort();
                if sleep_or_shutdown(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        shared.running.fetch_add(1, Ordering::Relaxed);
        debug!(
            "{label}: started pid {:?} with runtime API on 127.0.0.1:{port}",
            child.id()
        );
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, label.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, label.clone(), true));
        }

        let (why, stopping) = tokio::select! {
            status = child.wait() => (match status {
                Ok(s) => format!("exited ({s})"),
                Err(e) => format!("lost ({e})"),
            }, false),
            _ = generation.kill.notified() => {
                let _ = child.kill().await;
                ("was killed after an invocation timeout".to_string(), false)
            }
            _ = shutdown.changed() => {
                let _ = child.kill().await;
                ("was stopped (devstack shutting down)".to_string(), true)
            }
        };
        shared.running.fetch_sub(1, Ordering::Relaxed);
        generation.end(&why);
        server.abort();
        if stopping {
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        warn!("{label}: instance {why}; restarting in {backoff:?}");
        if sleep_or_shutdown(backoff, &mut shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Copy a child's output to ours, one prefixed line at a time.
async fn forward_lines(stream: impl AsyncRead + Unpin, label: String, is_stderr: bool) {
    use std::io::Write;
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Write errors (closed stdout) are ignored: logging must not kill us.
        if is_stderr {
            let _ = writeln!(std::io::stderr().lock(), "[{label}] {line}");
        } else {
            let _ = writeln!(std::io::stdout().lock(), "[{label}] {line}");
        }
    }
}

/// Accept loop for one generation's Runtime API. Connection tasks live in a
/// JoinSet owned by this future, so aborting the task drops every pending
/// handler (e.g. a dead process's `/next` long-poll) at once.
async fn serve_runtime_api(listener: TcpListener, generation: Arc<Generation>) {
    let app = runtime_router(generation);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let svc = TowerToHyperService::new(app.clone());
                    conns.spawn(async move {
                        let io = TokioIo::new(stream);
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                        {
                            debug!("runtime API connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!("runtime API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn runtime_router(generation: Arc<Generation>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(generation)
}

struct PollGuard<'a>(&'a AtomicUsize);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn next_invocation(State(g): State<Arc<Generation>>) -> Response {
    let shared = &g.shared;
    shared.polling.fetch_add(1, Ordering::Relaxed);
    let guard = PollGuard(&shared.polling);
    loop {
        let pending = {
            let mut rx = shared.queue_rx.lock().await;
            rx.recv().await
        };
        let Some(p) = pending else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "queue closed").into_response();
        };
        if p.reply.is_closed() {
            // The caller gave up (timed out while queued): skip it.
            continue;
        }
        {
            let mut inflight = lock(&shared.inflight);
            if !g.alive.load(Ordering::SeqCst) {
                let _ = p
                    .reply
                    .send(Err(InvokeError::Crashed("instance exited".into())));
                return (StatusCode::GONE, "instance is gone").into_response();
            }
            inflight.insert(
                p.id.clone(),
                Inflight {
                    reply: p.reply,
                    generation: g.generation,
                    kill: g.kill.clone(),
                },
            );
        }
        drop(guard);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("lambda-runtime-aws-request-id", header(&p.id));
        headers.insert(
            "lambda-runtime-deadline-ms",
            header(&p.deadline_ms.to_string()),
        );
        headers.insert("lambda-runtime-invoked-function-arn", header(&shared.arn));
        headers.insert("lambda-runtime-trace-id", header(&p.trace_id));
        return (StatusCode::OK, headers, Body::from(p.payload)).into_response();
    }
}

fn invalid_request_id() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"errorType": "InvalidRequestID", "errorMessage": "Invalid request ID"})),
    )
        .into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn invocation_response(
    State(g): State<Arc<Generation>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let bytes = axum::body::to_bytes(body, MAX_RESPONSE_BYTES + 1).await;
    let Some(inflight) = lock(&g.shared.inflight).remove(&id) else {
        return invalid_request_id();
    };
    let result = match bytes {
        Ok(b) if b.len() > MAX_RESPONSE_BYTES => Err(too_large()),
        Err(_) => Err(too_large()),
        Ok(b) if b.is_empty() => Ok(Value::Null),
        Ok(b) => serde_json::from_slice::<Value>(&b).map_err(|e| InvokeError::Function {
            error_type: "Runtime.InvalidResponse".into(),
            error_message: format!("response is not JSON: {e}"),
        }),
    };
    let is_too_large = matches!(&result, Err(InvokeError::Function { error_type, .. }) if error_type == "Function.ResponseSizeTooLarge");
    let _ = inflight.reply.send(result);
    if is_too_large {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(json!({"errorType": "RequestEntityTooLarge", "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes)."})),
        )
            .into_response();
    }
    accepted()
}

fn too_large() -> InvokeError {
    InvokeError::Function {
        error_type: "Function.ResponseSizeTooLarge".into(),
        error_message: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
    }
}

/// Parse a Runtime API error body (`{"errorType","errorMessage"}`).
fn parse_error_body(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let error_type = field("errorType")
        .or(header_type)
        .unwrap_or_else(|| "Unhandled".into());
    let error_message =
        field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, error_message)
}

async fn invocation_error(
    State(g): State<Arc<Generation>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = axum::body::to_bytes(body, MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_default();
    let Some(inflight) = lock(&g.shared.inflight).remove(&id) else {
        return invalid_request_id();
    };
    let (error_type, error_message) = parse_error_body(&headers, &body);
    info!(function = %g.shared.name, request_id = %id, "function error {error_type}: {error_message}");
    let _ = inflight.reply.send(Err(InvokeError::Function {
        error_type,
        error_message,
    }));
    accepted()
}

async fn init_error(State(g): State<Arc<Generation>>, headers: HeaderMap, body: Body) -> Response {
    let body = axum::body::to_bytes(body, MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_default();
    let (error_type, error_message) = parse_error_body(&headers, &body);
    error!(function = %g.shared.name, "init error {error_type}: {error_message}");
    accepted()
}

/// An X-Ray style trace id: `Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=0`.
pub fn new_trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &a[..24],
        &b[..16]
    )
}

fn log_stream_name() -> String {
    let date = chrono::Utc::now().format("%Y/%m/%d");
    format!("{date}/[$LATEST]{}", uuid::Uuid::new_v4().simple())
}
