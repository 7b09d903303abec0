//! Executor throughput: `executor::handle_batch` called directly (no Lambda runtime, no SQS)
//! against the Postgres and Redis of `DATABASE_URL` / `REDIS_URL`, with SQS batches of 10
//! market-order commands, N batches in flight at once (N simulated executor instances, each
//! with its own `Deps`: its own pool of `DATABASE_MAX_CONNECTIONS` (default 5, as deployed)
//! connections and its own Redis connection).
//!
//! Then, to show where the time goes:
//! - CPU seconds per fill of this process, of the Postgres server (postmaster + backends)
//!   and of redis-server, read from /proc and `INFO cpu`, plus machine-wide busy time;
//! - one command at a time, timed per stage (Redis quote read, the ledger transaction,
//!   Redis pending-copy delete), the same calls `executor::apply` makes;
//! - round trips per fill, counted by a loopback TCP proxy in front of Postgres and Redis;
//! - single round-trip latency (`SELECT 1` on a connection, through the pool, Redis PING);
//! - the round-trip ceiling of this machine: `SELECT 1` round trips per second at the
//!   highest concurrency, i.e. fills/s if a fill cost k trivial round trips.
//!
//! Bounded: every timed cell runs `BENCH_SECS` (default 5) seconds.
//! Env: DATABASE_URL, REDIS_URL (required), BENCH_SECS, BENCH_CONCURRENCY (default "1,4,16"),
//! DATABASE_MAX_CONNECTIONS (default 5), BENCH_REPORT (a file to write the markdown to).
//! Run: `cargo bench -p executor --bench fills` (see infra/scripts/bench.sh).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::cache::Cache;
use adapters::ledger::Ledger;
use adapters::now_ms;
use aws_lambda_events::sqs::SqsMessage;
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::engine::ExecutionParams;
use domain::order::{NewOrder, OrderRequest};
use executor::{handle_batch, Deps};
use rust_decimal_macros::dec;
use sqlx::Connection;
use testkit::bench_env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const BATCH: usize = 10;
const SYMBOLS: [(&str, &str); 2] = [("BTCUSDT", "0.001"), ("ETHUSDT", "0.01")];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    db: String,
    redis: String,
    prefix: String,
    pool: u32,
    secs: f64,
}

impl Setup {
    fn deps(&self, db: &str, redis: &str) -> Deps {
        Deps {
            ledger: Ledger::connect_lazy(db, self.pool).expect("database url"),
            cache: Cache::new(redis, &self.prefix).expect("redis url"),
            catalog: Catalog::builtin(),
            params: ExecutionParams::default(),
            watches: adapters::watch::WatchIndex::new(redis, &self.prefix).expect("redis url"),
            connections: adapters::connections::ConnectionTable::new("unused"),
            pusher: None,
            queue: None,
            retries: adapters::config::RetrySettings::default(),
            retention: adapters::config::RetentionSettings { days: 30 },
        }
    }
}

fn command(account: Uuid, symbol: &str, qty: &str, client_order_id: &str) -> Command {
    let json = format!(
        r#"{{"symbol":"{symbol}","qty":"{qty}","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"{client_order_id}"}}"#
    );
    let req: OrderRequest = serde_json::from_str(&json).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    Command::place(NewOrder::new(account, v, inst.asset_id, Utc::now()))
}

fn record(id: String, cmd: &Command) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.receipt_handle = Some(format!("rh-{id}"));
    m.message_id = Some(id);
    m.body = Some(serde_json::to_string(cmd).unwrap());
    m.attributes = HashMap::from([
        ("MessageGroupId".to_string(), cmd.message_group_id()),
        ("MessageDeduplicationId".to_string(), cmd.deduplication_id()),
        ("ApproximateReceiveCount".to_string(), "1".to_string()),
    ]);
    m.event_source = Some("aws:sqs".into());
    m
}

/// A batch of 10 market buys; `accounts` holds the message groups used round robin.
fn batch(accounts: &[Uuid], tag: &str, seq: u64) -> Vec<SqsMessage> {
    (0..BATCH)
        .map(|i| {
            let account = accounts[(seq as usize * BATCH + i) % accounts.len()];
            let (symbol, qty) = SYMBOLS[i % SYMBOLS.len()];
            let coid = format!("{tag}-{seq}-{i}");
            record(
                format!("{tag}-{seq}-{i}"),
                &command(account, symbol, qty, &coid),
            )
        })
        .collect()
}

// ---- CPU accounting -------------------------------------------------------------------

fn ticks_per_sec() -> f64 {
    100.0 // USER_HZ on Linux
}

/// (ppid, utime+stime, cutime+cstime) of a process, in ticks.
fn proc_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after "(comm) ": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some((n(1) as u32, n(11) + n(12), n(13) + n(14)))
}

/// CPU seconds of the postmaster and all its children (backends, walwriter, ...), counting
/// children that exited through the postmaster's cutime.
fn postgres_cpu(postmaster: u32) -> f64 {
    let mut ticks = 0;
    if let Some((_, own, children)) = proc_stat(postmaster) {
        ticks += own + children;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ppid, own, _)) = proc_stat(pid) {
                    if ppid == postmaster {
                        ticks += own;
                    }
                }
            }
        }
    }
    ticks as f64 / ticks_per_sec()
}

fn self_cpu() -> f64 {
    proc_stat(std::process::id())
        .map(|(_, own, _)| own as f64 / ticks_per_sec())
        .unwrap_or(0.0)
}

/// Busy CPU seconds of the whole machine (all processes, all cores).
fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 8 && *i != 3 && *i != 4)
        .map(|(_, x)| *x)
        .sum();
    busy as f64 / ticks_per_sec()
}

fn host_port(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let after_auth = after_scheme
        .rsplit_once('@')
        .map(|x| x.1)
        .unwrap_or(after_scheme);
    after_auth
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .to_string()
}

fn with_host_port(url: &str, hp: &str) -> String {
    url.replacen(&host_port(url), hp, 1)
}

/// used_cpu_sys + used_cpu_user of redis-server, by a raw RESP `INFO cpu`.
async fn redis_cpu(redis_url: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(host_port(redis_url)).await else {
        return f64::NAN;
    };
    if s.write_all(b"INFO cpu\r\n").await.is_err() {
        return f64::NAN;
    }
    let mut buf = vec![0u8; 4096];
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !text.contains("used_cpu_user:") || !text.ends_with("\r\n") {
        if Instant::now() > deadline {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    get("used_cpu_sys:") + get("used_cpu_user:")
}

struct Cpu {
    bench: f64,
    postgres: f64,
    redis: f64,
    machine: f64,
}

async fn cpu_now(postmaster: u32, redis_url: &str) -> Cpu {
    Cpu {
        bench: self_cpu(),
        postgres: postgres_cpu(postmaster),
        redis: redis_cpu(redis_url).await,
        machine: machine_busy(),
    }
}

// ---- throughput cells ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// 10 messages from 10 accounts (10 message groups) per batch.
    TenGroups,
    /// 10 messages of one account (one message group, applied in order).
    OneGroup,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::TenGroups => "10 groups × 1",
            Shape::OneGroup => "1 group × 10",
        }
    }
}

struct Cell {
    shape: Shape,
    concurrency: usize,
    wall: f64,
    messages: u64,
    fills: i64,
    other: String,
    batch_p50_ms: f64,
    batch_p99_ms: f64,
    cpu: Cpu,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn create_accounts(ledger: &Ledger, n: usize) -> Vec<Uuid> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let email = format!("bench-{}@example.com", Uuid::new_v4().simple());
        let (_, account) = ledger
            .create_user(&email, "bench-not-a-hash", dec!(1000000000000))
            .await
            .expect("account");
        v.push(account);
    }
    v
}

async fn run_cell(
    setup: &Setup,
    admin: &Ledger,
    postmaster: u32,
    shape: Shape,
    concurrency: usize,
    run_tag: &str,
) -> Cell {
    let per_worker = match shape {
        Shape::TenGroups => 2 * BATCH,
        Shape::OneGroup => 1,
    };
    let accounts = create_accounts(admin, per_worker * concurrency).await;
    let tag = format!(
        "{run_tag}-{}-c{concurrency}",
        if shape == Shape::OneGroup {
            "g1"
        } else {
            "g10"
        }
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let stop = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let deps = setup.deps(&setup.db, &setup.redis);
        let mine: Vec<Uuid> = accounts[w * per_worker..(w + 1) * per_worker].to_vec();
        let barrier = barrier.clone();
        let stop = stop.clone();
        let tag = format!("{tag}-w{w}");
        tasks.push(tokio::spawn(async move {
            // Warm up: connections open, statements prepared (as in a warm Lambda).
            let warm = batch(&mine, &format!("{tag}-warm"), 0);
            let r = handle_batch(&deps, &warm).await.expect("batch");
            assert!(r.batch_item_failures.is_empty(), "warm-up batch failed");
            barrier.wait().await;
            let mut lat = Vec::new();
            let mut messages = 0u64;
            let mut failed = 0u64;
            let mut seq = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                let records = batch(&mine, &tag, seq);
                let t = Instant::now();
                let r = handle_batch(&deps, &records).await.expect("batch");
                lat.push(t.elapsed().as_micros() as u64);
                failed += r.batch_item_failures.len() as u64;
                messages += records.len() as u64;
                seq += 1;
            }
            (lat, messages, failed)
        }));
    }
    barrier.wait().await;
    let before = cpu_now(postmaster, &setup.redis).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(setup.secs)).await;
    stop.store(1, Ordering::Relaxed);
    let mut lat = Vec::new();
    let (mut messages, mut failed) = (0, 0);
    for t in tasks {
        let (l, m, f) = t.await.expect("worker");
        lat.extend(l);
        messages += m;
        failed += f;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = cpu_now(postmaster, &setup.redis).await;
    lat.sort_unstable();
    // What the ledger says happened to the timed (not warm-up) orders.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM orders WHERE account_id = ANY($1) AND client_order_id LIKE $2 AND client_order_id NOT LIKE '%-warm-%' GROUP BY status",
    )
    .bind(&accounts)
    .bind(format!("{tag}-%"))
    .fetch_all(admin.pool())
    .await
    .expect("count orders");
    let fills = rows.iter().filter(|r| r.0 == "filled").map(|r| r.1).sum();
    let other = rows
        .iter()
        .filter(|r| r.0 != "filled")
        .map(|r| format!("{} {}", r.1, r.0))
        .collect::<Vec<_>>()
        .join(", ");
    let other = if failed > 0 {
        format!("{other} {failed} reported failures")
    } else {
        other
    };
    Cell {
        shape,
        concurrency,
        wall,
        messages,
        fills,
        other,
        batch_p50_ms: pct(&lat, 0.50) as f64 / 1000.0,
        batch_p99_ms: pct(&lat, 0.99) as f64 / 1000.0,
        cpu: Cpu {
            bench: after.bench - before.bench,
            postgres: after.postgres - before.postgres,
            redis: after.redis - before.redis,
            machine: after.machine - before.machine,
        },
    }
}

// ---- stage timing, round trips ---------------------------------------------------------

#[derive(Default)]
struct Stages {
    quote: Vec<u64>,
    ledger: Vec<u64>,
    clear: Vec<u64>,
    total: Vec<u64>,
}

/// One command at a time, the calls `executor::apply` makes, each timed.
async fn stages(deps: &Deps, account: Uuid, secs: f64, tag: &str) -> Stages {
    let mut s = Stages::default();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut i = 0u64;
    while Instant::now() < deadline {
        let cmd = command(account, "BTCUSDT", "0.001", &format!("{tag}-{i}"));
        let Command::PlaceOrder { command_id, order } = &cmd else {
            unreachable!()
        };
        let t0 = Instant::now();
        let quote = deps.cache.quote("BTCUSDT").await.expect("quote");
        let t1 = Instant::now();
        let out = deps
            .ledger
            .place_order(*command_id, order, quote.as_ref(), now_ms(), &deps.params)
            .await
            .expect("place");
        let t2 = Instant::now();
        deps.cache
            .clear_pending_order(domain::order::OrderRef {
                account_id: order.account_id,
                order_id: order.id,
            })
            .await
            .expect("clear");
        let t3 = Instant::now();
        assert!(
            out.fill.is_some(),
            "stage loop: order did not fill: {:?}",
            out.order.map(|o| o.reject_reason)
        );
        s.quote.push((t1 - t0).as_micros() as u64);
        s.ledger.push((t2 - t1).as_micros() as u64);
        s.clear.push((t3 - t2).as_micros() as u64);
        s.total.push((t3 - t0).as_micros() as u64);
        i += 1;
    }
    for v in [&mut s.quote, &mut s.ledger, &mut s.clear, &mut s.total] {
        v.sort_unstable();
    }
    s
}

/// A loopback TCP proxy that counts the client's writes as they arrive (one per round trip
/// when the client waits for each answer) and the server's answers.
struct CountingProxy {
    addr: String,
    client_chunks: Arc<AtomicU64>,
    server_chunks: Arc<AtomicU64>,
}

/// Copies `from` to `to` until either side closes, counting the chunks read.
async fn copy_counting(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    chunks: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        chunks.fetch_add(1, Ordering::Relaxed);
    }
}

async fn counting_proxy(target: String) -> CountingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let client_chunks = Arc::new(AtomicU64::new(0));
    let server_chunks = Arc::new(AtomicU64::new(0));
    let (cc, sc) = (client_chunks.clone(), server_chunks.clone());
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            let (cc, sc) = (cc.clone(), sc.clone());
            tokio::spawn(copy_counting(ir, ow, cc));
            tokio::spawn(copy_counting(or, iw, sc));
        }
    });
    CountingProxy {
        addr,
        client_chunks,
        server_chunks,
    }
}

/// Round trips per fill of `handle_batch` for one-message batches applied one at a time.
async fn round_trips(setup: &Setup, account: Uuid, n: u64) -> (f64, f64, f64, f64) {
    let pg = counting_proxy(host_port(&setup.db)).await;
    let rd = counting_proxy(host_port(&setup.redis)).await;
    let deps = setup.deps(
        &with_host_port(&setup.db, &pg.addr),
        &with_host_port(&setup.redis, &rd.addr),
    );
    // Warm: connect, prepare statements.
    for i in 0..3 {
        let cmd = command(
            account,
            "BTCUSDT",
            "0.001",
            &format!("rt-warm-{}-{i}", Uuid::new_v4().simple()),
        );
        handle_batch(&deps, &[record(format!("w{i}"), &cmd)])
            .await
            .unwrap();
    }
    let (pc0, ps0, rc0, rs0) = (
        pg.client_chunks.load(Ordering::SeqCst),
        pg.server_chunks.load(Ordering::SeqCst),
        rd.client_chunks.load(Ordering::SeqCst),
        rd.server_chunks.load(Ordering::SeqCst),
    );
    let tag = Uuid::new_v4().simple().to_string();
    for i in 0..n {
        let cmd = command(account, "BTCUSDT", "0.001", &format!("rt-{tag}-{i}"));
        let r = handle_batch(&deps, &[record(format!("m{i}"), &cmd)])
            .await
            .unwrap();
        assert!(r.batch_item_failures.is_empty());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let per = |a: &AtomicU64, b: u64| (a.load(Ordering::SeqCst) - b) as f64 / n as f64;
    (
        per(&pg.client_chunks, pc0),
        per(&pg.server_chunks, ps0),
        per(&rd.client_chunks, rc0),
        per(&rd.server_chunks, rs0),
    )
}

async fn rtt_probes(setup: &Setup, deps: &Deps) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let mut conn = sqlx::PgConnection::connect(&setup.db)
        .await
        .expect("connect");
    let pool = deps.ledger.pool();
    let (mut direct, mut pooled, mut redis) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..50 {
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT 1").execute(pool).await.unwrap();
        deps.cache.ping().await.unwrap();
    }
    for _ in 0..2000 {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        direct.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(pool).await.unwrap();
        pooled.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        deps.cache.ping().await.unwrap();
        redis.push(t.elapsed().as_micros() as u64);
    }
    for v in [&mut direct, &mut pooled, &mut redis] {
        v.sort_unstable();
    }
    (direct, pooled, redis)
}

/// `SELECT 1` round trips per second with `concurrency` connections each looping: the
/// most round trips this machine's Postgres answers, whatever the statements.
async fn round_trip_ceiling(db: &str, concurrency: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicU64::new(0));
    let count = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (stop, count, barrier, db) =
            (stop.clone(), count.clone(), barrier.clone(), db.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&db).await.expect("connect");
            sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
            barrier.wait().await;
            while stop.load(Ordering::Relaxed) == 0 {
                sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    barrier.wait().await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(1, Ordering::Relaxed);
    let n = count.load(Ordering::Relaxed);
    let wall = t.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / wall
}

fn us(v: &[u64], p: f64) -> String {
    format!("{:.0}", pct(v, p))
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

async fn run() -> String {
    let setup = Setup {
        db: bench_env("DATABASE_URL"),
        redis: bench_env("REDIS_URL"),
        prefix: format!("bench{}:", Uuid::new_v4().simple()),
        pool: env_or("DATABASE_MAX_CONNECTIONS", 5u32),
        secs: env_or("BENCH_SECS", 5.0f64),
    };
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let admin = Ledger::connect_lazy(&setup.db, 4).expect("database url");
    admin.migrate().await.expect("migrations apply");
    let postmaster: u32 = {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(admin.pool())
            .await
            .unwrap();
        proc_stat(backend as u32).map(|s| s.0).unwrap_or(0)
    };
    let quotes = setup.deps(&setup.db, &setup.redis);
    testkit::put_bench_quotes(&quotes.cache).await;
    // Fresh prices all along, as the ingest task keeps them (an order on a price older than
    // 5 s would be rejected, not filled).
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            testkit::put_bench_quotes(&quotes.cache).await;
        }
    });
    let run_tag = format!("bench{}", &Uuid::new_v4().simple().to_string()[..8]);

    let mut md = String::new();
    writeln!(
        md,
        "#### Executor: `executor::handle_batch` with SQS batches of {BATCH} market orders"
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(
        md,
        "Each of N concurrent workers is one simulated executor instance with its own `Deps` \
         (Postgres pool of {} connections, as `DATABASE_MAX_CONNECTIONS` defaults; one Redis connection), \
         looping over batches for {} s after a warm-up batch. Fills are counted in the ledger afterwards. \
         CPU columns are CPU-seconds per 1,000 fills (2 cores = 2 CPU-seconds per second).",
        setup.pool, setup.secs
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(md, "| batch shape | N in flight | fills/s | batch p50 ms | batch p99 ms | not filled | CPU/1k fills: bench | postgres | redis | machine busy % |").unwrap();
    writeln!(md, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|").unwrap();
    let mut best = 0.0f64;
    for shape in [Shape::TenGroups, Shape::OneGroup] {
        for &c in &levels {
            let cell = run_cell(&setup, &admin, postmaster, shape, c, &run_tag).await;
            let fps = cell.fills as f64 / cell.wall;
            best = best.max(fps);
            let k = 1000.0 / cell.fills.max(1) as f64;
            let line = format!(
                "| {} | {} | **{:.0}** | {:.1} | {:.1} | {} | {:.3} | {:.3} | {:.3} | {:.0} |",
                cell.shape.label(),
                cell.concurrency,
                fps,
                cell.batch_p50_ms,
                cell.batch_p99_ms,
                if cell.other.is_empty() {
                    "0".to_string()
                } else {
                    cell.other.clone()
                },
                cell.cpu.bench * k,
                cell.cpu.postgres * k,
                cell.cpu.redis * k,
                100.0 * cell.cpu.machine / cell.wall / num_cores() as f64,
            );
            eprintln!(
                "{line}   ({} messages in {:.2} s)",
                cell.messages, cell.wall
            );
            writeln!(md, "{line}").unwrap();
        }
    }
    writeln!(md).unwrap();
    writeln!(md, "Best: **{best:.0} fills/s** (goal 10,000).").unwrap();
    writeln!(md).unwrap();

    // Where the time goes.
    let probe = setup.deps(&setup.db, &setup.redis);
    let account = create_accounts(&admin, 1).await[0];
    let s = stages(
        &probe,
        account,
        (setup.secs / 2.0).max(1.0),
        &format!("{run_tag}-stages"),
    )
    .await;
    let (direct, pooled, redis) = rtt_probes(&setup, &probe).await;
    let (pg_c, pg_s, rd_c, rd_s) = round_trips(&setup, account, 200).await;
    let top = *levels.iter().max().unwrap_or(&16);
    let conns = top * setup.pool as usize;
    let ceiling_1 = round_trip_ceiling(&setup.db, 1, (setup.secs / 2.0).max(1.0)).await;
    let ceiling = round_trip_ceiling(&setup.db, conns.min(64), (setup.secs / 2.0).max(1.0)).await;
    refresher.abort();

    writeln!(md, "#### Where the executor's time goes").unwrap();
    writeln!(md).unwrap();
    writeln!(md, "One command at a time on a warm connection (the calls `executor::apply` makes), {} commands:", s.total.len()).unwrap();
    writeln!(md).unwrap();
    writeln!(md, "| stage | mean µs | p50 µs | p99 µs |").unwrap();
    writeln!(md, "|---|---:|---:|---:|").unwrap();
    for (name, v) in [
        ("Redis `GET` quote", &s.quote),
        (
            "`Ledger::place_order` (the Postgres transaction)",
            &s.ledger,
        ),
        ("Redis `HDEL` pending copy", &s.clear),
        ("total per command", &s.total),
    ] {
        writeln!(
            md,
            "| {name} | {:.0} | {} | {} |",
            mean(v),
            us(v, 0.5),
            us(v, 0.99)
        )
        .unwrap();
    }
    writeln!(md).unwrap();
    writeln!(md, "Single round trips (2,000 each, sequential):").unwrap();
    writeln!(md).unwrap();
    writeln!(md, "| round trip | p50 µs | p99 µs |").unwrap();
    writeln!(md, "|---|---:|---:|").unwrap();
    writeln!(
        md,
        "| Postgres `SELECT 1` on a dedicated connection | {} | {} |",
        us(&direct, 0.5),
        us(&direct, 0.99)
    )
    .unwrap();
    writeln!(
        md,
        "| Postgres `SELECT 1` through the sqlx pool (acquire + ping + query) | {} | {} |",
        us(&pooled, 0.5),
        us(&pooled, 0.99)
    )
    .unwrap();
    writeln!(
        md,
        "| Redis `PING` | {} | {} |",
        us(&redis, 0.5),
        us(&redis, 0.99)
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(
        md,
        "Round trips per fill, counted by a loopback proxy in front of each server (200 one-message batches): \
         **Postgres {pg_c:.1}** client flights ({pg_s:.1} server answers), **Redis {rd_c:.1}** ({rd_s:.1})."
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(
        md,
        "Round-trip ceiling of this Postgres on this machine (`SELECT 1` loops, nothing else): \
         {ceiling_1:.0}/s on 1 connection, **{ceiling:.0}/s on {} connections**; at {pg_c:.1} round trips per fill \
         that alone caps throughput near **{:.0} fills/s**, before any statement does real work.",
        conns.min(64),
        ceiling / pg_c.max(1.0)
    )
    .unwrap();
    md
}

fn num_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    testkit::bench_main(tokio::runtime::Builder::new_multi_thread(), run());
}
