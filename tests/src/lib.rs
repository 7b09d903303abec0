//! End-to-end test harness: a [`Stack`] runs the real binaries — `feed`, `ingest`,
//! `devstack` (which runs `api` and `executor` under its Lambda Runtime API) — as child
//! processes on free ports of 127.0.0.1, and tests drive it exactly as a client would:
//! REST through the devstack, prices through the feed's `POST /quotes` → ingest → Redis,
//! orders through API → SQS FIFO (moto) → devstack poller → executor → Postgres.
//!
//! Dev-only: runs the binaries as a client would (never links a function crate); depends on
//! `testkit`, `domain` and `adapters` for fixtures.
//!
//! Isolation between stacks running at once: a Redis key prefix and an SQS FIFO queue of
//! their own; Postgres is shared (users have unique emails).
//!
//! Service addresses come from the environment that `make test` exports (`DATABASE_URL`,
//! `REDIS_URL`, `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`); a missing one is a panic naming it, never a skipped test.
//!
//! Binaries come from `$E2E_BIN_DIR`, else `$TRADING_BIN_DIR` (set by `make test`), else
//! `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`. Build them first:
//! `cargo build --bins`.
//!
//! Waits are bounded (default 60 s, `E2E_WAIT_SECS` overrides) and never asserted on:
//! moto is slow and the machine is shared. When a child process dies or a wait runs out,
//! the panic message carries the last lines of every process's log; the logs stay in the
//! directory the message names.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod procfs;
pub mod ws;

use adapters::cache::Cache;
use adapters::schema::FunctionRole;
use domain::quote::Quote;
use procfs::process_group_members;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use testkit::service_env;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Symbols the ingest of every stack follows: the two the feed replays, plus SOLUSDT, which
/// has no recording and so only ever carries scripted prices.
pub const SYMBOLS: &str = "BTCUSDT,ETHUSDT,SOLUSDT";

/// How often the feed re-emits a scripted quote. Short, so a scripted price stays fresh
/// even in a stack with a small `MAX_PRICE_AGE_MS`.
const FEED_REPEAT_MS: u64 = 200;

/// Lines of each log shown when something goes wrong.
const LOG_TAIL_LINES: usize = 40;

/// The bound on every wait: `E2E_WAIT_SECS` or 60 s.
pub fn wait_limit() -> Duration {
    let secs = std::env::var("E2E_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Where the binaries are.
pub fn bin_dir() -> PathBuf {
    for var in ["E2E_BIN_DIR", "TRADING_BIN_DIR"] {
        if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return PathBuf::from(dir);
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        let target = PathBuf::from(target);
        let target = if target.is_absolute() {
            target
        } else {
            workspace_dir().join(target)
        };
        return target.join("debug");
    }
    workspace_dir().join("target").join("debug")
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "binary {} is missing: build the binaries first (`cargo build --bins`), or point E2E_BIN_DIR at them",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (free when asked; a lost race is retried by the caller).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Migrates the shared ledger once per test process.
/// A database of the stack's own, migrated: the ingest task's trigger engine watches every
/// live resting order in its database, so stacks sharing one would trigger each other's
/// orders on their own prices.
async fn stack_database(base_url: &str, id: &str) -> String {
    let name = format!("e2e_{id}");
    let admin = sqlx::PgPool::connect(base_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {base_url}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    admin.close().await;
    let url = in_database(base_url, &name);
    // As the deploy does: migrations, then the function roles' logins.
    let logins: Vec<_> = FunctionRole::ALL
        .into_iter()
        .map(|role| {
            adapters::config::role_login_from_url(role, &service_env(&role_env(role)))
                .expect("the role's URL names its user and password")
        })
        .collect();
    adapters::schema::apply_migrations(&url, Duration::from_secs(30), &logins)
        .await
        .expect("migrations apply");
    url
}

/// `url` pointing at the database `name`.
fn in_database(url: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(url).expect("a database URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The variable `make test` exports with a function role's URL (`DATABASE_API_URL`, ...).
fn role_env(role: FunctionRole) -> String {
    format!("DATABASE_{}_URL", role.env_name())
}

/// The stack database's URL for a function role: each function connects as its own role,
/// as on AWS, so a missing grant fails the end-to-end tests.
fn role_url(role: FunctionRole, stack_database_url: &str) -> String {
    let database = reqwest::Url::parse(stack_database_url).expect("a database URL");
    in_database(
        &service_env(&role_env(role)),
        database.path().trim_start_matches('/'),
    )
}

async fn sqs_client() -> aws_sdk_sqs::Client {
    testkit::aws_env();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sqs::Client::new(&config)
}

/// Per-stack settings.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// `MAX_PRICE_AGE_MS` of the api and executor (default: theirs, 5000).
    pub max_price_age_ms: Option<u64>,
    /// More environment for the devstack and the functions it runs.
    pub function_env: Vec<(String, String)>,
    /// More environment for the ingest task.
    pub ingest_env: Vec<(String, String)>,
    /// More environment for the devstack itself (e.g. `DEVSTACK_WS_IDLE_TIMEOUT_SECS`).
    pub devstack_env: Vec<(String, String)>,
    /// How often the feed re-emits a scripted quote (default 200 ms).
    pub feed_repeat_ms: Option<u64>,
    /// Instances (processes) of the `ws` function (default 2).
    pub ws_instances: Option<usize>,
    /// Instances of the `api` function (default 2).
    pub api_instances: Option<usize>,
    /// Instances of the executor and SQS pollers feeding them (default 1 and 1).
    pub executor_instances: Option<usize>,
    /// The visibility timeout of received commands, in seconds (default 2).
    pub visibility_timeout_secs: Option<u32>,
}

struct Proc {
    name: &'static str,
    /// Also its process group id.
    pid: u32,
    child: Child,
    log: PathBuf,
    /// How it was started, to start it again ([`Stack::restart`]).
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
}

/// A running system. Dropping it stops every process it started and deletes its queue;
/// the logs are kept when the test failed.
pub struct Stack {
    /// `http://127.0.0.1:<port>`: API Gateway REST of the devstack.
    pub rest_url: String,
    /// `http://127.0.0.1:<port>`: the feed (control API and WebSocket).
    pub feed_url: String,
    /// The Redis key prefix of this stack.
    pub prefix: String,
    /// The SQS FIFO queue of this stack.
    pub queue_url: String,
    /// `ws://127.0.0.1:<port>`: API Gateway WebSocket of the devstack (its `@connections`
    /// management API is at `http://127.0.0.1:<port>/local`).
    pub ws_url: String,
    /// The DynamoDB connection table of this stack.
    pub connections_table: String,
    /// The price cache as the functions see it (same Redis, same prefix).
    pub cache: Cache,
    /// The stack's own database, as its owner (the migrations' user) reaches it.
    pub database_url: String,
    http: reqwest::Client,
    procs: Mutex<Vec<Proc>>,
    log_dir: PathBuf,
    /// The Redis users the stack's processes log in as: (URL, ACL rules).
    redis_users: Vec<(String, String)>,
    /// Keep the logs when the stack is dropped (as after a failed test).
    keep_logs: std::sync::atomic::AtomicBool,
}

impl Stack {
    /// Starts a stack with default options.
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    /// Creates the queue, starts feed, ingest and devstack, and waits until the API's
    /// `GET /health` answers 200.
    pub async fn start_with(options: StackOptions) -> Stack {
        let shared_database_url = service_env("DATABASE_URL");
        let redis_url = service_env("REDIS_URL");
        let [feed_bin, ingest_bin, devstack_bin, api_bin, executor_bin, ws_bin, webhook_bin] = [
            "feed", "ingest", "devstack", "api", "executor", "ws", "webhook",
        ]
        .map(binary);
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("e2e{}:", &id[..12]);
        let database_url = stack_database(&shared_database_url, &id[..12]).await;
        let (_, queue_url) = testkit::fifo_queue("e2e").await;

        let log_dir = std::env::temp_dir().join(format!("e2e-{}", &id[..12]));
        std::fs::create_dir_all(&log_dir).expect("create the log directory");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build()
            .expect("http client");
        let cache = Cache::new(&redis_url, &prefix).expect("REDIS_URL parses");
        // Redis users as ElastiCache RBAC has them: the functions read prices and cannot
        // write them, only the ingest task does.
        let keyspace = adapters::keyspace::Keyspace::new(&prefix);
        let functions_redis_url = testkit::redis_acl_user(&keyspace.functions_access()).await;
        let ingest_redis_url = testkit::redis_acl_user(&keyspace.ingest_access()).await;
        let redis_users = vec![
            (functions_redis_url.clone(), keyspace.functions_access()),
            (ingest_redis_url.clone(), keyspace.ingest_access()),
        ];
        let connections_table = testkit::connection_table();
        let mut stack = Stack {
            rest_url: String::new(),
            feed_url: String::new(),
            prefix: prefix.clone(),
            queue_url: queue_url.clone(),
            ws_url: String::new(),
            connections_table: connections_table.clone(),
            cache,
            database_url: database_url.clone(),
            http,
            procs: Mutex::new(Vec::new()),
            log_dir,
            redis_users,
            keep_logs: std::sync::atomic::AtomicBool::new(false),
        };

        // The feed, then the devstack, then ingest (it needs the devstack's @connections).
        let feed_port = stack
            .spawn_listening("feed", |port| {
                let mut c = Command::new(&feed_bin);
                c.arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--speed")
                    .arg("1")
                    .arg("--repeat-ms")
                    .arg(options.feed_repeat_ms.unwrap_or(FEED_REPEAT_MS).to_string());
                c
            })
            .await;
        stack.feed_url = format!("http://127.0.0.1:{feed_port}");

        // The devstack's second listener (WebSocket + @connections) gets a port of its own;
        // the attempt that binds both is the one kept.
        let ws_port = std::cell::Cell::new(0u16);
        let rest_port = stack
            .spawn_listening("devstack", |port| {
                let mut c = Command::new(&devstack_bin);
                ws_port.set(free_port());
                c.arg("--rest-listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--ws-listen")
                    .arg(format!("127.0.0.1:{}", ws_port.get()))
                    .arg("--ws-bin")
                    .arg(&ws_bin)
                    .arg("--ws-instances")
                    .arg(options.ws_instances.unwrap_or(2).to_string())
                    .arg("--api-bin")
                    .arg(&api_bin)
                    .arg("--webhook-bin")
                    .arg(&webhook_bin)
                    // Tests pick the source address of webhook alerts (IP allowlists).
                    .arg("--trust-forwarded-for")
                    .arg("--executor-bin")
                    .arg(&executor_bin)
                    .arg("--queue-url")
                    .arg(&queue_url)
                    .arg("--visibility-timeout-secs")
                    .arg(options.visibility_timeout_secs.unwrap_or(2).to_string())
                    .arg("--api-instances")
                    .arg(options.api_instances.unwrap_or(2).to_string())
                    .arg("--executor-instances")
                    .arg(options.executor_instances.unwrap_or(1).to_string())
                    .arg("--sqs-pollers")
                    .arg(options.executor_instances.unwrap_or(1).to_string())
                    .arg("--api-database-url")
                    .arg(role_url(FunctionRole::Api, &database_url))
                    .arg("--executor-database-url")
                    .arg(role_url(FunctionRole::Executor, &database_url))
                    // Inherited by the functions: the environment is their configuration.
                    .env("DATABASE_URL", &database_url)
                    .env("DATABASE_MAX_CONNECTIONS", "3")
                    .env("REDIS_URL", &functions_redis_url)
                    .env("KEY_PREFIX", &prefix)
                    .env("COMMANDS_QUEUE_URL", &queue_url)
                    .env("CONNECTIONS_TABLE", &connections_table)
                    // Tests poll; the rate limit tests set their own limits.
                    .env("RATE_REQUESTS_BURST", "100000")
                    .env("RATE_ORDERS_BURST", "100000")
                    .envs(testkit::aws_env());
                if let Some(ms) = options.max_price_age_ms {
                    c.env("MAX_PRICE_AGE_MS", ms.to_string());
                }
                for (k, v) in options.function_env.iter().chain(&options.devstack_env) {
                    c.env(k, v);
                }
                c
            })
            .await;
        stack.rest_url = format!("http://127.0.0.1:{rest_port}");
        stack.ws_url = format!("ws://127.0.0.1:{}", ws_port.get());

        let mut ingest = Command::new(&ingest_bin);
        ingest
            .env("BINANCE_WS_URL", format!("ws://127.0.0.1:{feed_port}"))
            .env("SYMBOLS", SYMBOLS)
            .env("REDIS_URL", &ingest_redis_url)
            .env("KEY_PREFIX", &prefix)
            // The trigger engine: it reads resting orders from the ledger to rebuild its
            // index and sends trigger commands to this stack's queue.
            .env(
                "DATABASE_URL",
                role_url(FunctionRole::Ingest, &database_url),
            )
            .env("COMMANDS_QUEUE_URL", &queue_url)
            // The fan-out: connections from this stack's table, pushes to its devstack.
            .env("CONNECTIONS_TABLE", &connections_table)
            .env(
                "WS_MANAGEMENT_URL",
                format!("{}/local", stack.ws_url.replacen("ws://", "http://", 1)),
            )
            .envs(testkit::aws_env())
            .envs(options.ingest_env.iter().cloned());
        stack.spawn("ingest", ingest);

        // The devstack answers before its function instances are up; the API's own health
        // check goes through the api Lambda to Postgres, Redis and the queue.
        let deadline = Instant::now() + wait_limit();
        loop {
            let r = stack
                .request(Method::GET, "/health", &Auth::None, None)
                .await;
            if r.status == 200 {
                break;
            }
            if Instant::now() > deadline {
                stack.fail(&format!(
                    "GET /health through the devstack never answered 200; last answer: {r}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stack
    }

    /// Everything every process of the stack has logged so far (the functions log through
    /// the devstack's output), for tests that check what reaches a log.
    pub fn logs(&self) -> String {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .iter()
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Spawns a child process logging to `<log_dir>/<name>.log` (appended to, so that a
    /// restarted process keeps the log of the one before).
    fn spawn(&self, name: &'static str, mut cmd: Command) {
        let log = self.log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create a log file");
        let std_cmd = cmd.as_std();
        let program = std_cmd.get_program().to_os_string();
        let args = std_cmd.get_args().map(|a| a.to_os_string()).collect();
        let envs = std_cmd
            .get_envs()
            .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
            .collect();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("clone log file")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            // Its own process group, so that stopping it stops whatever it started.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let pid = child.id().expect("a just-spawned child has a pid");
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Proc {
                name,
                pid,
                child,
                log,
                program,
                args,
                envs,
            });
    }

    /// Kills a process of the stack (`ingest`, say) with SIGKILL, with whatever it started,
    /// and starts it again as it was first started (a crashed task that ECS replaces).
    /// Only for processes that listen on no port of their own.
    pub async fn restart(&self, name: &str) {
        let old = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(i) = procs.iter().position(|p| p.name == name) else {
                drop(procs);
                self.fail(&format!("no process {name} to restart"));
            };
            procs.remove(i)
        };
        let Proc {
            name,
            pid,
            mut child,
            program,
            args,
            envs,
            ..
        } = old;
        for member in process_group_members(pid) {
            signal(member, "KILL");
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        self.spawn(name, cmd);
    }

    /// Keeps the logs when the stack is dropped (and says where they are), as a failed test
    /// does: for a caller that fails without panicking.
    pub fn keep_logs(&self) {
        self.keep_logs
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends `SIGname` (`KILL`, `STOP`, `CONT`) to one process of the stack by its id.
    pub fn signal(&self, pid: u32, name: &str) {
        signal(pid, name);
    }

    /// The live processes running `binary` (a file name: `executor`, `api`) that the
    /// devstack started, as it restarts them.
    pub fn function_pids(&self, binary: &str) -> Vec<u32> {
        let Some(devstack) = self.pid_of("devstack") else {
            return Vec::new();
        };
        process_group_members(devstack)
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .and_then(|p| p.file_name().map(|f| f == binary))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Creates the Redis users of the stack again, with the same names, passwords and rules
    /// (after Redis restarted without them, as ElastiCache would have kept them).
    pub async fn restore_redis_users(&self) -> Result<(), String> {
        for (url, rules) in &self.redis_users {
            testkit::redis_acl_user_restore(url, rules).await?;
        }
        Ok(())
    }

    /// Spawns a process that listens on a port of its own and waits for its health route;
    /// a lost race for the port is retried with another one.
    async fn spawn_listening(&self, name: &'static str, make: impl Fn(u16) -> Command) -> u16 {
        let health = if name == "devstack" {
            "/__devstack/health"
        } else {
            "/health"
        };
        for _attempt in 0..5 {
            let port = free_port();
            self.spawn(name, make(port));
            let url = format!("http://127.0.0.1:{port}{health}");
            let deadline = Instant::now() + wait_limit();
            loop {
                if let Some((status, log)) = self.exited(name) {
                    if log.contains("in use") {
                        self.procs
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .retain(|p| p.name != name);
                        break;
                    }
                    self.fail(&format!("{name} exited ({status}) while starting"));
                }
                if let Ok(r) = self
                    .http
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    if r.status().is_success() {
                        return port;
                    }
                }
                if Instant::now() > deadline {
                    self.fail(&format!("{name} never answered {health}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.fail(&format!("{name} could not bind a free port in 5 attempts"))
    }

    /// The exit status and log of a process of this stack that has exited.
    fn exited(&self, name: &str) -> Option<(ExitStatus, String)> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let p = procs.iter_mut().find(|p| p.name == name)?;
        match p.child.try_wait() {
            Ok(Some(status)) => Some((status, std::fs::read_to_string(&p.log).unwrap_or_default())),
            _ => None,
        }
    }

    /// Panics with the last log lines of every process if one of them has died.
    pub fn check_alive(&self) {
        let dead: Vec<String> = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            procs
                .iter_mut()
                .filter_map(|p| match p.child.try_wait() {
                    Ok(Some(status)) => Some(format!("{} exited ({status})", p.name)),
                    _ => None,
                })
                .collect()
        };
        if !dead.is_empty() {
            self.fail(&dead.join("; "));
        }
    }

    /// Panics with `what` and the tail of every log.
    pub fn fail(&self, what: &str) -> ! {
        let mut msg = format!("{what}\nlogs in {}:\n", self.log_dir.display());
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter() {
            msg.push_str(&format!(
                "---- {} (last {LOG_TAIL_LINES} lines) ----\n{}\n",
                p.name,
                tail(&p.log, LOG_TAIL_LINES)
            ));
        }
        drop(procs);
        panic!("{msg}");
    }

    // ---- REST ---------------------------------------------------------------------------

    /// One request to the REST API. `body` is sent as is (JSON content type).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<String>,
    ) -> Resp {
        let body = body.map(|b| ("application/json", b));
        self.request_with(method, path, auth, &[], body).await
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Resp {
        self.request(Method::GET, path, auth, None).await
    }

    pub async fn delete(&self, path: &str, auth: &Auth) -> Resp {
        self.request(Method::DELETE, path, auth, None).await
    }

    pub async fn patch(&self, path: &str, auth: &Auth, body: &Value) -> Resp {
        self.request(Method::PATCH, path, auth, Some(body.to_string()))
            .await
    }

    /// Polls the order until its status is `status`, and returns it.
    pub async fn wait_status(&self, auth: &Auth, id: &str, status: &str) -> Value {
        self.wait_for_order(auth, id, status, |o| o["status"] == status)
            .await
    }

    /// Deletes this stack's Redis keys matching `pattern` (after the prefix), as a flush or a
    /// failover would lose them.
    pub async fn delete_keys(&self, pattern: &str) {
        let client = redis::Client::open(service_env("REDIS_URL")).expect("REDIS_URL parses");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| self.fail(&format!("connecting to Redis: {e}")));
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}{pattern}", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| self.fail(&format!("KEYS: {e}")));
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| self.fail(&format!("DEL: {e}")));
        }
    }

    /// One request to the feed: its status and body text. A transport error fails the test.
    async fn feed_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, String) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.feed_url));
        if let Some(body) = body {
            req = req.json(body);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| self.fail(&format!("{method} {path} on the feed: {e}")));
        let status = r.status();
        (status, r.text().await.unwrap_or_default())
    }

    /// POSTs to the feed's control API (`/__control/...`), failing the test on an error.
    pub async fn feed_control(&self, path: &str) -> Value {
        let (status, text) = self.feed_request(Method::POST, path, None).await;
        if !status.is_success() {
            self.fail(&format!("POST {path} to the feed: {status} {text}"));
        }
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: &Value) -> Resp {
        self.request(Method::POST, path, auth, Some(body.to_string()))
            .await
    }

    /// POST with a body sent byte for byte (malformed JSON, JSON numbers as written).
    pub async fn post_raw(&self, path: &str, auth: &Auth, body: &str) -> Resp {
        self.request(Method::POST, path, auth, Some(body.to_string()))
            .await
    }

    /// Signs a new user up, logs in and creates an API key.
    pub async fn new_user(&self) -> User {
        let email = format!("e2e-{}@example.com", Uuid::new_v4().simple());
        let password = "correct horse battery staple".to_string();
        let creds = json!({ "email": email, "password": password });
        self.post("/v2/auth/signup", &Auth::None, &creds)
            .await
            .expect(202);
        let r = self.post("/v2/auth/login", &Auth::None, &creds).await;
        r.expect(200);
        let user_id = r.str("user_id").to_string();
        let account_id = r.str("account_id").to_string();
        let token = r.str("token").to_string();
        assert!(
            token.len() >= 43,
            "a session token carries at least 256 bits: {r}"
        );
        let r = self
            .post("/v2/api_keys", &Auth::Bearer(token.clone()), &json!({}))
            .await;
        r.expect(201);
        User {
            email,
            password,
            user_id,
            account_id,
            token,
            key_id: r.str("key_id").to_string(),
            secret_key: r.str("secret_key").to_string(),
        }
    }

    // ---- orders -------------------------------------------------------------------------

    /// Polls `GET /v2/orders/{id}` until `pred` holds for the order, and returns it.
    pub async fn wait_for_order(
        &self,
        auth: &Auth,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + wait_limit();
        loop {
            let r = self.get(&format!("/v2/orders/{id}"), auth).await;
            if r.status == 200 && pred(&r.json) {
                return r.json;
            }
            if Instant::now() > deadline {
                self.fail(&format!("order {id} never became {what}; last answer: {r}"));
            }
            self.check_alive();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls the order until its status is terminal (filled, rejected, canceled).
    pub async fn wait_terminal(&self, auth: &Auth, id: &str) -> Value {
        self.wait_for_order(auth, id, "terminal (filled, rejected or canceled)", |o| {
            matches!(
                o["status"].as_str(),
                Some("filled" | "rejected" | "canceled" | "expired" | "replaced")
            )
        })
        .await
    }

    // ---- prices -------------------------------------------------------------------------

    /// Scripts `symbol` at `bid`/`ask` on the feed (and a trade at the bid), then waits
    /// until ingest has written that exact quote, received after the script was set, to
    /// this stack's Redis.
    pub async fn set_quote(&self, symbol: &str, bid: &str, ask: &str) -> Quote {
        let (want_bid, want_ask) = (dec(bid), dec(ask));
        let since = adapters::now_ms();
        self.script_quote(symbol, bid, ask).await;
        let what = format!("{bid}/{ask}, received after it was scripted");
        self.wait_for_quote(symbol, &what, |q| {
            q.bid == want_bid && q.ask == want_ask && q.ts >= since
        })
        .await
    }

    /// Scripts `symbol` at `bid`/`ask` on the feed without waiting for it to reach Redis
    /// (benches drive many symbols at once).
    pub async fn script_quote(&self, symbol: &str, bid: &str, ask: &str) {
        let quote = json!({ "symbol": symbol, "bid": bid, "ask": ask, "last": bid });
        let (status, text) = self
            .feed_request(Method::POST, "/quotes", Some(&quote))
            .await;
        if !status.is_success() {
            self.fail(&format!(
                "POST /quotes {symbol} {bid}/{ask}: {status} {text}"
            ));
        }
    }

    /// The process id of one of this stack's processes (`ingest`, `devstack`, `feed`).
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.pid)
    }

    /// Releases a scripted symbol (`DELETE /quotes/{symbol}`): the feed replays it again,
    /// or, without a recording, sends nothing more for it.
    pub async fn release_quote(&self, symbol: &str) {
        let path = format!("/quotes/{symbol}");
        let (status, text) = self.feed_request(Method::DELETE, &path, None).await;
        if status.as_u16() != 204 {
            self.fail(&format!("DELETE {path}: {status} {text}"));
        }
    }

    /// Polls Redis until `pred` holds for the quote of `symbol`, and returns it.
    pub async fn wait_for_quote(
        &self,
        symbol: &str,
        what: &str,
        pred: impl Fn(&Quote) -> bool,
    ) -> Quote {
        let deadline = Instant::now() + wait_limit();
        let mut last = None;
        loop {
            match self.cache.quote(symbol).await {
                Ok(Some(q)) if pred(&q) => return q,
                Ok(q) => last = q.or(last),
                Err(e) => self.fail(&format!("reading the {symbol} quote from Redis: {e}")),
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "the {symbol} quote in Redis never became {what}; last seen: {last:?}"
                ));
            }
            self.check_alive();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages in the stack's queue, visible and in flight (`None` when SQS does not answer).
    pub async fn queue_depth(&self) -> Option<u64> {
        let attrs = sqs_client()
            .await
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await
            .ok()?;
        let attrs = attrs.attributes()?;
        Some(attrs.values().filter_map(|v| v.parse::<u64>().ok()).sum())
    }

    /// Waits until the system is quiescent: the stack's queue (visible and in flight) has
    /// stayed empty for longer than the trigger cooldown, so that no command is on its way
    /// and no trigger is waiting out its cooldown to fire again. "Exactly once" is checked
    /// after this, never after a fixed sleep.
    pub async fn quiescent(&self) {
        let quiet_for = Duration::from_millis(
            u64::try_from(domain::trigger_index::DEFAULT_COOLDOWN_MS).unwrap_or(1_000) + 500,
        );
        let deadline = Instant::now() + wait_limit();
        let mut empty_since: Option<Instant> = None;
        loop {
            let in_queue = self.queue_depth().await;
            if in_queue == Some(0) {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= quiet_for {
                    return;
                }
            } else {
                empty_since = None;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "the queue never stayed empty for {quiet_for:?}: {in_queue:?} messages"
                ));
            }
            self.check_alive();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /health` of the feed.
    pub async fn feed_health(&self) -> Value {
        let (_, text) = self.feed_request(Method::GET, "/health", None).await;
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        // Gracefully first: the devstack stops its function processes, ingest flushes.
        for p in procs.iter_mut() {
            if matches!(p.child.try_wait(), Ok(None)) {
                signal(p.pid, "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in procs.iter_mut() {
            while Instant::now() < deadline && matches!(p.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for p in procs.iter_mut() {
            // Whatever is left in the process group this child leads (e.g. function
            // processes of a devstack that did not stop them), one process id at a time.
            for pid in process_group_members(p.pid) {
                signal(pid, "KILL");
            }
            let _ = p.child.start_kill();
        }
        // Delete the queue on a thread of its own: this may run inside the test's runtime.
        let queue_url = self.queue_url.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let sqs = sqs_client().await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        sqs.delete_queue().queue_url(queue_url).send(),
                    )
                    .await;
                });
            }
        })
        .join();
        if std::thread::panicking() || self.keep_logs.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "e2e: logs of the failed stack are in {}",
                self.log_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Sends `SIGname` to one process of ours, by its (positive) id.
///
/// Never a negative id (a process group) through `kill(1)`: procps-ng 4.0.2 misparses
/// `kill -KILL -<pgid>` as `kill(-9, …)`/`kill(-1, …)`, which signals every process.
fn signal(pid: u32, name: &str) {
    if pid <= 1 {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-s", name, "--", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a log file (reading at most its last 64 KiB).
fn tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return "(no log)".into();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses a decimal literal of a test.
pub fn dec(s: &str) -> Decimal {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not a decimal: {e}"))
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// Alpaca's `APCA-API-KEY-ID` + `APCA-API-SECRET-KEY`.
    Key {
        id: String,
        secret: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl Auth {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Key { id, secret } => req
                .header("APCA-API-KEY-ID", id)
                .header("APCA-API-SECRET-KEY", secret),
            Auth::Bearer(token) => req.header("Authorization", format!("Bearer {token}")),
        }
    }
}

/// A signed-up user with a session and an API key.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
    pub user_id: String,
    pub account_id: String,
    pub token: String,
    pub key_id: String,
    pub secret_key: String,
}

impl User {
    pub fn account_uuid(&self) -> Uuid {
        self.account_id.parse().expect("account ids are UUIDs")
    }

    /// Authenticates with the API key.
    pub fn key(&self) -> Auth {
        Auth::Key {
            id: self.key_id.clone(),
            secret: self.secret_key.clone(),
        }
    }

    /// Authenticates with the login session.
    pub fn bearer(&self) -> Auth {
        Auth::Bearer(self.token.clone())
    }
}

/// An answer of the REST API.
#[derive(Debug, Clone)]
pub struct Resp {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    pub retry_after: Option<String>,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.text.chars().take(2000).collect();
        write!(
            f,
            "{} {} → {} {}",
            self.method, self.path, self.status, body
        )
    }
}

impl Resp {
    /// Asserts the status.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }

    /// Asserts an error answer: this status, a JSON `{"code","message"}` with this code and
    /// a non-empty message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        assert_eq!(
            self.json["code"].as_str(),
            Some(code),
            "unexpected error code: {self}"
        );
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error has a message: {self}"
        );
        self
    }

    /// The error code, if the body is a JSON error.
    pub fn code(&self) -> Option<&str> {
        self.json["code"].as_str()
    }

    /// A string field of a JSON object answer; panics when absent.
    #[track_caller]
    pub fn str(&self, field: &str) -> &str {
        self.json[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string field {field:?} in {self}"))
    }

    /// The answer as a JSON array; panics otherwise.
    #[track_caller]
    pub fn array(&self) -> &Vec<Value> {
        self.json
            .as_array()
            .unwrap_or_else(|| panic!("not a JSON array: {self}"))
    }
}

/// A string field of a JSON value; panics when absent.
#[track_caller]
pub fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name:?} in {v}"))
}

// ---- requests with headers of their own ---------------------------------------------------

impl Stack {
    /// One request with extra `headers` (e.g. `X-Forwarded-For`, the source address when the
    /// devstack trusts it) and, optionally, a body sent byte for byte under its own content
    /// type, `(content_type, body)` (e.g. a TradingView alert sent as `text/plain`).
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Resp {
        let mut req = auth.apply(
            self.http
                .request(method.clone(), format!("{}{path}", self.rest_url)),
        );
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some((content_type, b)) = body {
            req = req.header("content-type", content_type).body(b);
        }
        let r = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.check_alive();
                self.fail(&format!("{method} {path}: {e}"))
            }
        };
        answer(method, path, r).await
    }

    /// One request that may fail: no answer within `timeout` (or a connection refused) is
    /// an `Err` describing it, never a panic (the chaos driver records it).
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<(&str, String)>,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let mut req = auth.apply(
            self.http
                .request(method.clone(), format!("{}{path}", self.rest_url)),
        );
        if let Some((content_type, b)) = body {
            req = req.header("content-type", content_type).body(b);
        }
        match req.timeout(timeout).send().await {
            Ok(r) => Ok(answer(method, path, r).await),
            Err(e) if e.is_timeout() => Err(format!("no answer within {timeout:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// An HTTP answer read whole.
async fn answer(method: Method, path: &str, r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    Resp {
        method: method.to_string(),
        path: path.to_string(),
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        retry_after,
    }
}
