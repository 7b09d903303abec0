//! The faults, each its own switch. They act on the chaos env's own services (never the
//! test env others' tests use: `services.sh` refuses), on the stack's processes, and on the
//! feed's control API.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::Stack;

use crate::record::{now_ms, FaultEvent, Record};

/// Every kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Fault {
    /// The executor killed with SIGKILL mid-batch, every `--executor-kill-every-secs`
    /// (the devstack starts a new one, as Lambda would).
    ExecutorKill,
    /// The executor stopped (SIGSTOP) past its timeout: the devstack kills it, and its
    /// messages come back after the visibility timeout.
    ExecutorHang,
    /// Deliveries of the same SQS message twice: the deletes of one batch in 7 are lost.
    DuplicateDelivery,
    /// PostgreSQL stopped (immediate) for the outage, then started.
    PostgresStop,
    /// Redis stopped for the outage, then started empty (its users restored, as
    /// ElastiCache keeps them).
    RedisStop,
    /// Redis flushed: prices, sessions, pending copies and the trigger index gone.
    RedisFlush,
    /// The queue unreachable for the outage (moto paused with SIGSTOP).
    QueuePause,
    /// The ingest task killed with SIGKILL and started again.
    IngestKill,
    /// The feed dropping every connection.
    FeedDrop,
    /// The feed stalling (sending nothing) for the outage.
    FeedStall,
    /// The feed announcing `serverShutdown`, then closing.
    FeedShutdown,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::ExecutorKill,
        Fault::ExecutorHang,
        Fault::DuplicateDelivery,
        Fault::PostgresStop,
        Fault::RedisStop,
        Fault::RedisFlush,
        Fault::QueuePause,
        Fault::IngestKill,
        Fault::FeedDrop,
        Fault::FeedStall,
        Fault::FeedShutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ExecutorKill => "executor-kill",
            Fault::ExecutorHang => "executor-hang",
            Fault::DuplicateDelivery => "duplicate-delivery",
            Fault::PostgresStop => "postgres-stop",
            Fault::RedisStop => "redis-stop",
            Fault::RedisFlush => "redis-flush",
            Fault::QueuePause => "queue-pause",
            Fault::IngestKill => "ingest-kill",
            Fault::FeedDrop => "feed-drop",
            Fault::FeedStall => "feed-stall",
            Fault::FeedShutdown => "feed-shutdown",
        }
    }

    /// Whether it is injected on the schedule (the others run the whole time).
    pub fn scheduled(self) -> bool {
        !matches!(self, Fault::ExecutorKill | Fault::DuplicateDelivery)
    }
}

/// How faults are injected.
#[derive(Debug, Clone)]
pub struct FaultSettings {
    /// The services env whose services are stopped and started (`chaos`).
    pub services_env: String,
    /// How long PostgreSQL, Redis and the queue stay down, and the feed stalls.
    pub outage: Duration,
    /// The executor's invocation timeout (the devstack's), which a hang outlives.
    pub executor_timeout: Duration,
}

const SERVICES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../infra/scripts/services.sh"
);

/// Runs `services.sh <cmd> <env>`; its stdout.
async fn services(cmd: &str, env: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("bash")
        .arg(SERVICES)
        .arg(cmd)
        .arg(env)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("services.sh {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "services.sh {cmd} {env}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Injects one scheduled fault and returns when it is over (the service back, the process
/// restarted, the stall ended); records it.
pub async fn inject(
    fault: Fault,
    stack: &Stack,
    record: &Record,
    s: &FaultSettings,
) -> Result<FaultEvent, String> {
    let start_ms = now_ms();
    eprintln!("chaos: fault {} begins", fault.name());
    match fault {
        Fault::ExecutorKill => {
            kill_executors(stack);
        }
        Fault::ExecutorHang => {
            let pids = stack.function_pids("executor");
            for &pid in &pids {
                stack.signal(pid, "STOP");
            }
            tokio::time::sleep(s.executor_timeout + Duration::from_secs(2)).await;
            // The devstack has killed them on their timeout by now; any it has not go on.
            for &pid in &pids {
                stack.signal(pid, "CONT");
            }
        }
        Fault::DuplicateDelivery => {}
        Fault::PostgresStop => {
            services("pg-stop", &s.services_env).await?;
            tokio::time::sleep(s.outage).await;
            services("pg-start", &s.services_env).await?;
        }
        Fault::RedisStop => {
            services("redis-stop", &s.services_env).await?;
            tokio::time::sleep(s.outage).await;
            services("redis-start", &s.services_env).await?;
            restore_users(stack).await?;
        }
        Fault::RedisFlush => {
            let mut conn = testkit::try_redis_connection().await?;
            let () = redis::cmd("FLUSHALL")
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("FLUSHALL: {e}"))?;
        }
        Fault::QueuePause => {
            let pid = services("moto-pid", &s.services_env).await?;
            let pid: u32 = pid.parse().map_err(|_| format!("moto pid {pid:?}"))?;
            stack.signal(pid, "STOP");
            tokio::time::sleep(s.outage).await;
            stack.signal(pid, "CONT");
        }
        Fault::IngestKill => stack.restart("ingest").await,
        Fault::FeedDrop => {
            stack.feed_control("/__control/drop").await;
        }
        Fault::FeedStall => {
            let ms = u64::try_from(s.outage.as_millis()).unwrap_or(u64::MAX);
            let from = now_ms();
            stack
                .feed_control(&format!("/__control/stall?ms={ms}&all=true"))
                .await;
            record.feed_silent(from, from + i64::try_from(ms).unwrap_or(i64::MAX));
            tokio::time::sleep(s.outage).await;
        }
        Fault::FeedShutdown => {
            stack.feed_control("/__control/shutdown?grace_ms=500").await;
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    eprintln!("chaos: fault {} ends", fault.name());
    Ok(FaultEvent {
        kind: fault.name(),
        start_ms,
        end_ms: now_ms(),
        recovery_ms: None,
    })
}

/// The Redis users again, after a restart: retried while Redis is still starting.
async fn restore_users(stack: &Stack) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..50 {
        match stack.restore_redis_users().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("restoring the Redis users: {last}"))
}

/// SIGKILLs every executor process; how many.
pub fn kill_executors(stack: &Stack) -> usize {
    let pids = stack.function_pids("executor");
    for &pid in &pids {
        stack.signal(pid, "KILL");
    }
    pids.len()
}

/// Kills the executors every `every` until `stop`; records each kill.
pub async fn executor_killer(
    stack: Arc<Stack>,
    record: Arc<Record>,
    every: Duration,
    stop: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(every).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let at = now_ms();
        let n = kill_executors(&stack);
        if n > 0 {
            record.fault(FaultEvent {
                kind: Fault::ExecutorKill.name(),
                start_ms: at,
                end_ms: at,
                recovery_ms: None,
            });
        }
    }
}
