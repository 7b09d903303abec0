//! Price → client latency through the whole real-time path on the devstack, at 100, 1,000
//! and 5,000 WebSocket connections, and the ingest task's memory at the largest size.
//!
//! One stack (release binaries: set `E2E_BIN_DIR`), ingest following 500 symbols. Clients
//! connect through the devstack's API Gateway WebSocket (`$connect` runs the real `ws`
//! function against moto's DynamoDB), subscribe to 10 of the 500 symbols each at
//! `max_rate_ms` 100 (every flush), and read. A driver changes one symbol's price every
//! `BENCH_WS_CHANGE_EVERY_MS` (default 10 ms: 100 changes/s, each symbol every 5 s) through
//! the feed; every price is unique, so each one a client receives is matched to the instant
//! the driver set it. Latency = client receipt − driver's `POST /quotes`: the feed, ingest's
//! parse and 100 ms flush to Redis, the fan-out, PostToConnection over HTTP to the devstack
//! and the WebSocket frame to the client.
//!
//! Environment: `BENCH_WS_CONNECTIONS` (default `100,1000,5000`), `BENCH_WS_SECS` (measured
//! seconds per size, default 20), `BENCH_REPORT` (Markdown output file).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::catalog::Catalog;
use e2e::procfs;
use e2e::ws::WsClient;
use e2e::{Stack, StackOptions, User};
use hdrhistogram::Histogram;

const SYMBOLS: usize = 500;
const PER_CONNECTION: usize = 10;
const CONNECTIONS_PER_USER: usize = 50;

type SetAt = Arc<Mutex<HashMap<(String, String), Instant>>>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (the bench needs no statistical quality, only spread).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }
}

/// Resident memory now and at its peak, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    (procfs::rss_kib(pid), procfs::status_kib(pid, "VmHWM"))
}

struct Shared {
    set_at: SetAt,
    latencies: Mutex<Histogram<u64>>,
    measuring: std::sync::atomic::AtomicBool,
    messages: AtomicU64,
}

/// Reads one client's messages until the bench ends, recording the latency of every price
/// received while measuring.
async fn read(mut client: WsClient, shared: Arc<Shared>) {
    loop {
        let m = match client.try_next(Duration::from_secs(3600)).await {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            // The stack is stopping.
            Err(_) => return,
        };
        client.received.clear();
        if m["type"] != "prices" || !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let now = Instant::now();
        shared.messages.fetch_add(1, Ordering::Relaxed);
        let set_at = shared.set_at.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = shared.latencies.lock().unwrap_or_else(|e| e.into_inner());
        for p in m["prices"].as_array().into_iter().flatten() {
            let key = (
                p["symbol"].as_str().unwrap_or_default().to_string(),
                p["bid"].as_str().unwrap_or_default().to_string(),
            );
            if let Some(t) = set_at.get(&key) {
                let _ = h.record(now.duration_since(*t).as_micros() as u64);
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_WS_CONNECTIONS")
        .unwrap_or_else(|_| "100,1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let secs: u64 = env_or("BENCH_WS_SECS", 20);
    let change_every = Duration::from_millis(env_or("BENCH_WS_CHANGE_EVERY_MS", 10));
    let mut symbols: Vec<String> = Catalog::builtin()
        .tradable()
        .iter()
        .map(|i| i.symbol.clone())
        .collect();
    symbols.sort();
    symbols.truncate(SYMBOLS);

    let stack = Stack::start_with(StackOptions {
        ingest_env: vec![
            ("SYMBOLS".into(), symbols.join(",")),
            ("STATS_INTERVAL_SECS".into(), "0".into()),
        ],
        function_env: vec![
            (
                "WS_MAX_CONNECTIONS_PER_USER".into(),
                CONNECTIONS_PER_USER.to_string(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ],
        devstack_env: vec![("DEVSTACK_LOG".into(), "warn".into())],
        // Scripted prices are not re-sent: every price a client sees is a change.
        feed_repeat_ms: Some(3_600_000),
        ws_instances: Some(4),
        ..Default::default()
    })
    .await;
    // Every symbol gets a first price, so snapshots and PnL have one.
    let mut counter: u64 = 0;
    for s in &symbols {
        counter += 1;
        stack
            .script_quote(s, &format!("100.{counter}1"), "1000")
            .await;
    }

    let shared = Arc::new(Shared {
        set_at: Arc::new(Mutex::new(HashMap::new())),
        latencies: Mutex::new(Histogram::new(3).expect("histogram")),
        measuring: false.into(),
        messages: AtomicU64::new(0),
    });
    let mut readers = Vec::new();
    let mut users: Vec<User> = Vec::new();
    let mut rng = Lcg(42);
    let mut open = 0usize;
    for &size in &sizes {
        // Open connections up to `size`, 32 at a time.
        let connect_started = Instant::now();
        while open < size {
            let batch = (size - open).min(32);
            let mut pending = Vec::new();
            for k in 0..batch {
                let n = open + k;
                while users.len() <= n / CONNECTIONS_PER_USER {
                    users.push(stack.new_user().await);
                }
                let user = users[n / CONNECTIONS_PER_USER].clone();
                let picks: Vec<String> = (0..PER_CONNECTION)
                    .map(|_| symbols[rng.next() % symbols.len()].clone())
                    .collect();
                let stack = &stack;
                pending.push(async move {
                    let mut c = stack.ws_connect_as(&user).await;
                    let refs: Vec<&str> = picks.iter().map(String::as_str).collect();
                    c.subscribe(&refs, Some(100)).await;
                    c
                });
            }
            for c in futures_util::future::join_all(pending).await {
                readers.push(tokio::spawn(read(c, shared.clone())));
            }
            open += batch;
        }
        let connect_secs = connect_started.elapsed().as_secs_f64();
        // Let the fan-out learn every connection, then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
        shared.messages.store(0, Ordering::Relaxed);
        shared.measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let mut tick = tokio::time::interval(change_every);
        let mut changes = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            tick.tick().await;
            counter += 1;
            let symbol = &symbols[rng.next() % symbols.len()];
            let bid = format!("100.{counter}1");
            shared
                .set_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((symbol.clone(), bid.clone()), Instant::now());
            stack.script_quote(symbol, &bid, "1000").await;
            changes += 1;
        }
        // Late deliveries of the last changes still count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        shared.measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let (rss, hwm) = stack.pid_of("ingest").map(rss_kib).unwrap_or((0, 0));
        let messages = shared.messages.load(Ordering::Relaxed);
        let h = shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        eprintln!(
            "[ws bench] {size} connections: {changes} changes, {messages} messages in {elapsed:.1} s, p99 {:.1} ms; ingest RSS {} MiB",
            h.value_at_quantile(0.99) as f64 / 1000.0,
            rss / 1024
        );
        report_row(size, &h, messages, elapsed, connect_secs, rss, hwm);
    }
    for r in readers {
        r.abort();
    }
    drop(stack);
    write_report();
}

static REPORT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn report_row(
    size: usize,
    h: &Histogram<u64>,
    messages: u64,
    elapsed: f64,
    connect_secs: f64,
    rss_kib: u64,
    hwm_kib: u64,
) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_min = messages as f64 / size.max(1) as f64 / elapsed * 60.0;
    REPORT.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
        "| {size} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {per_min:.0} | {:.0} | {:.0} / {:.0} | {connect_secs:.0} s |",
        h.len(),
        messages as f64 / elapsed,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0,
        size as f64 / connect_secs.max(0.001),
        rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0,
    ));
}

fn write_report() {
    let rows = REPORT.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
    let table = format!(
        "| connections | prices received | messages/s | p50 ms | p90 ms | p99 ms | max ms | messages per connection per minute | connects/s | ingest RSS / peak MiB | time to connect |\n|---|---|---|---|---|---|---|---|---|---|---|\n{rows}\n"
    );
    println!("{table}");
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        if let Err(e) = std::fs::write(&path, &table) {
            eprintln!("[ws bench] writing {path}: {e}");
        }
    }
}
