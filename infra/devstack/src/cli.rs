//! Command line (every flag can also come from the environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::runtime::{default_region, FunctionConfig};
use crate::sqs::SqsSourceConfig;
use crate::Config;

/// Local API Gateway REST + WebSocket (+ @connections) + Lambda Runtime API +
/// SQS event source.
#[derive(Debug, Clone, Parser)]
#[command(name = "devstack", version, about)]
pub struct Cli {
    /// Print what the devstack emulates (routes, queue source, functions) as JSON and
    /// exit; the tests compare it with template.yaml.
    #[arg(long)]
    pub describe: bool,

    /// Address for API Gateway REST.
    #[arg(long, env = "DEVSTACK_REST_LISTEN", default_value = "127.0.0.1:3000")]
    pub rest_listen: SocketAddr,

    /// API Gateway stage name.
    #[arg(long, env = "DEVSTACK_STAGE", default_value = "local")]
    pub stage: String,

    /// The `api` Lambda binary (lambda_http, REST proxy events).
    #[arg(long, env = "DEVSTACK_API_BIN")]
    pub api_bin: Option<PathBuf>,

    /// Number of `api` instances (processes).
    #[arg(long, env = "DEVSTACK_API_INSTANCES", default_value_t = 2)]
    pub api_instances: usize,

    /// The `webhook` Lambda binary (lambda_http, REST proxy events for
    /// `POST /v2/hooks/tradingview/{webhook_id}`).
    #[arg(long, env = "DEVSTACK_WEBHOOK_BIN")]
    pub webhook_bin: Option<PathBuf>,

    /// Number of `webhook` instances (processes).
    #[arg(long, env = "DEVSTACK_WEBHOOK_INSTANCES", default_value_t = 1)]
    pub webhook_instances: usize,

    /// Test aid: take REST events' `requestContext.identity.sourceIp` from
    /// the first address of the request's X-Forwarded-For header (API
    /// Gateway takes it from the TCP peer). Never in front of real clients.
    #[arg(long, env = "DEVSTACK_TRUST_FORWARDED_FOR", default_value_t = false,
          value_parser = boolish_or_empty)]
    pub trust_forwarded_for: bool,

    /// API Gateway integration timeout in seconds (29 on AWS), REST and WebSocket.
    #[arg(long, env = "DEVSTACK_API_TIMEOUT_SECS", default_value_t = 29)]
    pub api_timeout_secs: u64,

    /// The `executor` Lambda binary (lambda_runtime, SQS events).
    #[arg(long, env = "DEVSTACK_EXECUTOR_BIN")]
    pub executor_bin: Option<PathBuf>,

    /// Number of `executor` instances (processes).
    #[arg(long, env = "DEVSTACK_EXECUTOR_INSTANCES", default_value_t = 2)]
    pub executor_instances: usize,

    /// Executor timeout in seconds (default: the visibility timeout, since
    /// Lambda requires visibility timeout >= function timeout).
    #[arg(long, env = "DEVSTACK_EXECUTOR_TIMEOUT_SECS")]
    pub executor_timeout_secs: Option<u64>,

    /// Invoke the executor with EventBridge's `Scheduled Event` (the bookkeeping prune)
    /// every this many seconds, as the stack's schedule rule does hourly; 0: never.
    #[arg(long, env = "DEVSTACK_EXECUTOR_SCHEDULE_SECS", default_value_t = 3600)]
    pub executor_schedule_secs: u64,

    /// Memory size reported to the functions (AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
    #[arg(long, env = "DEVSTACK_MEMORY_MB", default_value_t = 512)]
    pub memory_mb: u32,

    /// The SQS FIFO commands queue polled for the executor.
    #[arg(long, env = "COMMANDS_QUEUE_URL")]
    pub queue_url: Option<String>,

    /// Messages per executor invocation (1..=10).
    #[arg(long, env = "DEVSTACK_BATCH_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=10))]
    pub batch_size: i32,

    /// Visibility timeout of received messages, in seconds.
    #[arg(long, env = "DEVSTACK_VISIBILITY_TIMEOUT_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(0..=43200))]
    pub visibility_timeout_secs: i32,

    /// Number of concurrent SQS pollers.
    #[arg(long, env = "DEVSTACK_SQS_POLLERS", default_value_t = 2)]
    pub sqs_pollers: usize,

    /// Fault injection (the chaos suite): lose the deletes of one successful batch in every
    /// N, so that its messages come back after the visibility timeout and are delivered
    /// again, as SQS's at-least-once delivery allows. 0 (the default) never does.
    #[arg(long, env = "DEVSTACK_LOSE_DELETE_EVERY", default_value_t = 0)]
    pub lose_delete_every: u64,

    /// Address for API Gateway WebSocket and the @connections API (only
    /// bound with --ws-bin).
    #[arg(long, env = "DEVSTACK_WS_LISTEN", default_value = "127.0.0.1:3001")]
    pub ws_listen: SocketAddr,

    /// The `ws` Lambda binary ($connect / $default / $disconnect events).
    #[arg(long, env = "DEVSTACK_WS_BIN")]
    pub ws_bin: Option<PathBuf>,

    /// Number of `ws` instances (processes).
    #[arg(long, env = "DEVSTACK_WS_INSTANCES", default_value_t = 2)]
    pub ws_instances: usize,

    /// WebSocket idle timeout in seconds (600 on AWS).
    #[arg(long, env = "DEVSTACK_WS_IDLE_TIMEOUT_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_idle_timeout_secs: u64,

    /// The database URL of the api, webhook and ws functions (their own role, as each has
    /// its own secret on AWS); unset, they inherit `DATABASE_URL`.
    #[arg(long, env = "DEVSTACK_API_DATABASE_URL")]
    pub api_database_url: Option<String>,

    /// The executor's database URL (the ledger writer's role); unset, it inherits
    /// `DATABASE_URL`.
    #[arg(long, env = "DEVSTACK_EXECUTOR_DATABASE_URL")]
    pub executor_database_url: Option<String>,

    /// Maximum WebSocket connection duration in seconds (7200 on AWS).
    #[arg(long, env = "DEVSTACK_WS_MAX_CONNECTION_SECS", default_value_t = 7200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_max_connection_secs: u64,
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`; empty is false (an
/// exported but empty environment variable).
fn boolish_or_empty(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" | "n" | "off" | "f" => Ok(false),
        "true" | "1" | "yes" | "y" | "on" | "t" => Ok(true),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

impl Cli {
    pub fn into_config(self) -> Config {
        let region = default_region();
        let function = |name: &str, bin: PathBuf, instances: usize, database: &Option<String>| {
            let mut f = FunctionConfig::new(name, bin, instances);
            f.memory_mb = self.memory_mb;
            f.region = region.clone();
            if let Some(url) = database.as_ref().filter(|u| !u.is_empty()) {
                f.env.push(("DATABASE_URL".into(), url.clone()));
            }
            f
        };
        let api_database = &self.api_database_url;
        let api = self
            .api_bin
            .clone()
            .map(|b| function("api", b, self.api_instances, api_database));
        let webhook = self
            .webhook_bin
            .clone()
            .map(|b| function("webhook", b, self.webhook_instances, api_database));
        let executor = self.executor_bin.clone().map(|b| {
            function(
                "executor",
                b,
                self.executor_instances,
                &self.executor_database_url,
            )
        });
        let ws = self
            .ws_bin
            .clone()
            .map(|b| function("ws", b, self.ws_instances, api_database));
        let executor_timeout = Duration::from_secs(
            self.executor_timeout_secs
                .unwrap_or(self.visibility_timeout_secs.max(1) as u64),
        );
        let sqs = self
            .queue_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(|queue_url| SqsSourceConfig {
                queue_url,
                batch_size: self.batch_size,
                visibility_timeout_secs: self.visibility_timeout_secs,
                wait_time_secs: 1,
                pollers: self.sqs_pollers,
                function_timeout: executor_timeout,
                region: region.clone(),
                lose_delete_every: self.lose_delete_every,
            });
        Config {
            rest_listen: self.rest_listen,
            stage: self.stage,
            api,
            webhook,
            trust_forwarded_for: self.trust_forwarded_for,
            api_timeout: Duration::from_secs(self.api_timeout_secs),
            max_request_body: crate::rest::MAX_REQUEST_BODY,
            executor,
            executor_schedule: (self.executor_schedule_secs > 0)
                .then(|| Duration::from_secs(self.executor_schedule_secs)),
            sqs,
            ws_listen: self.ws_listen,
            ws,
            ws_timeout: Duration::from_secs(self.api_timeout_secs),
            ws_idle_timeout: Duration::from_secs(self.ws_idle_timeout_secs),
            ws_max_connection: Duration::from_secs(self.ws_max_connection_secs),
        }
    }
}
