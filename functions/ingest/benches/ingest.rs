//! Ingest figures for BENCHMARKS.md (`make bench`, infra/scripts/bench.sh):
//!
//! 1. Parse + coalesce throughput, in-process, one thread: every combined-stream message
//!    recorded in `infra/feed/data` through the reader's per-message work
//!    (`parse::parse_message`, receive time, book lock + `Book::apply`, counters).
//! 2. End to end over loopback WebSocket: the feed (in-process) writes a burst of
//!    bookTickers (`POST /__control/burst`) to a running ingest (`market_data::spawn`, real Redis,
//!    100 ms flushes); messages/s = burst size / time until ingest has applied all of it.
//! 3. Tick → Redis latency: scripted quotes set in the feed (`Feed::set_quote`, which
//!    publishes at once) on 20 symbols, each at a random phase of the flush cycle; the time
//!    until a [`market_data::FlushHook`] sees that quote, i.e. until the `MULTI`/`EXEC` that
//!    wrote it to Redis has been acknowledged (it is readable from then on).
//!
//! Env: REDIS_URL (required), BENCH_SECS (default 5; the parse run and each latency
//! symbol's run scale with it), BENCH_E2E_MESSAGES (default 1,000,000 per burst, 3 bursts),
//! BENCH_REPORT (a file to write the markdown to; stdout otherwise).
//! Run: `cargo bench -p ingest --bench ingest`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::quote::Quote;
use market_data::parse::{parse_message, Parsed};
use market_data::Book;
use rand::Rng;
use rust_decimal::Decimal;

const FLUSH_MS: u64 = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("REDIS_URL is not set: run `make bench` (infra/scripts/bench.sh), which starts the services and exports it")
        })
}

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/feed/data")
}

/// Every combined-stream message of the recordings, without the receive timestamp.
fn recorded_messages() -> Vec<String> {
    let mut out = Vec::new();
    for name in ["btcusdt_20240808.gz", "ethusdt_20240808.gz"] {
        let file = std::fs::File::open(data_dir().join(name)).expect("recording");
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some((_, json)) = line.split_once(' ') {
                if json.starts_with("{\"stream\"") {
                    out.push(json.to_string());
                }
            }
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- 1. parse + coalesce ------------------------------------------------------------

struct ParseResult {
    label: &'static str,
    messages: u64,
    secs: f64,
}

/// The reader's per-message work, on one thread, over `msgs` in a loop for `secs`.
fn parse_and_coalesce(label: &'static str, msgs: &[&str], secs: f64) -> ParseResult {
    let book = Mutex::new(Book::new());
    let (messages, updates) = (AtomicU64::new(0), AtomicU64::new(0));
    // Warm-up: one pass.
    for m in msgs {
        if let Ok(Parsed::Update(u)) = parse_message(m) {
            book.lock()
                .unwrap()
                .apply(&u, market_data::stream::now_ms());
        }
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for m in msgs {
            messages.fetch_add(1, Ordering::Relaxed);
            match parse_message(std::hint::black_box(m)) {
                Ok(Parsed::Update(u)) => {
                    let now = market_data::stream::now_ms();
                    book.lock().unwrap().apply(&u, now);
                    updates.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        n += msgs.len() as u64;
        // What the flusher does every 100 ms (here once per pass over the data).
        std::hint::black_box(book.lock().unwrap().take_dirty());
    }
    ParseResult {
        label,
        messages: n,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn bench_parse(secs: f64, md: &mut String) {
    let all = recorded_messages();
    let kind = |m: &str| -> &'static str {
        if m.contains("@bookTicker") {
            "bookTicker"
        } else if m.contains("@trade") {
            "trade"
        } else {
            "depth"
        }
    };
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let subscribed: Vec<&str> = refs
        .iter()
        .copied()
        .filter(|m| kind(m) != "depth")
        .collect();
    let books: Vec<&str> = refs
        .iter()
        .copied()
        .filter(|m| kind(m) == "bookTicker")
        .collect();
    let trades: Vec<&str> = refs
        .iter()
        .copied()
        .filter(|m| kind(m) == "trade")
        .collect();
    let avg_len =
        subscribed.iter().map(|m| m.len()).sum::<usize>() as f64 / subscribed.len() as f64;
    eprintln!("[ingest bench] parse + coalesce, {secs} s per row");
    let rows = [
        parse_and_coalesce(
            "bookTicker + trade (what ingest subscribes to)",
            &subscribed,
            secs,
        ),
        parse_and_coalesce("bookTicker only", &books, secs / 2.0),
        parse_and_coalesce("trade only", &trades, secs / 2.0),
        parse_and_coalesce(
            "every recorded message (depth skipped by prefix)",
            &refs,
            secs / 2.0,
        ),
    ];
    let _ = writeln!(
        md,
        "#### Ingest: parse + coalesce, in-process, one thread\n"
    );
    let _ = writeln!(
        md,
        "The reader's per-message work (`parse::parse_message`, receive time, book lock + `Book::apply`, two counters; `take_dirty` once per pass) over the recorded messages of `infra/feed/data` ({} messages: {} bookTicker, {} trade, {} depth; bookTicker + trade average {:.0} bytes), looped for {secs} s on one thread. No socket, no Redis.\n",
        refs.len(),
        books.len(),
        trades.len(),
        refs.len() - subscribed.len(),
        avg_len
    );
    let _ = writeln!(md, "| messages | messages/s (one core) | ns/message |");
    let _ = writeln!(md, "|---|---:|---:|");
    for r in &rows {
        let rate = r.messages as f64 / r.secs;
        let _ = writeln!(md, "| {} | **{:.0}** | {:.0} |", r.label, rate, 1e9 / rate);
    }
    let _ = writeln!(
        md,
        "\nGoal ≥ 1,000,000 messages/s per core: **{:.0}** on what ingest subscribes to.\n",
        rows[0].messages as f64 / rows[0].secs
    );
}

// ---- shared setup for 2 and 3 -------------------------------------------------------

async fn start_feed() -> feed::Feed {
    // No recordings: only what the bench scripts and bursts reaches ingest.
    let empty =
        std::env::temp_dir().join(format!("ingest-bench-no-recordings-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    feed::spawn(feed::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: empty,
        repeat_ms: 600_000,
        ..feed::Config::default()
    })
    .await
    .unwrap()
}

fn ingest_config(feed: &feed::Feed, symbols: Vec<String>, prefix: &str) -> market_data::Config {
    market_data::Config {
        binance_ws_url: feed.ws_base_url(),
        symbols,
        redis_url: redis_url(),
        key_prefix: prefix.to_string(),
        flush_interval_ms: FLUSH_MS,
        stats_interval_secs: 0,
        ..market_data::Config::defaults()
    }
}

fn quote(symbol: &str, bid: Decimal) -> feed::control::ScriptedQuote {
    feed::control::ScriptedQuote {
        symbol: symbol.to_string(),
        bid,
        ask: bid + Decimal::new(1, 2),
        last: None,
        set_at_ms: feed::control::now_ms(),
    }
}

async fn wait_until(what: &str, within: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !pred() {
        assert!(Instant::now() < deadline, "bench setup: never {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn prefix(name: &str) -> String {
    format!("bench-ingest-{name}-{}:", std::process::id())
}

// ---- 2. end to end over loopback -----------------------------------------------------

async fn bench_e2e(md: &mut String) {
    let n: u64 = env_or("BENCH_E2E_MESSAGES", 1_000_000);
    let feed = start_feed().await;
    let symbols = ["BTCUSDT", "ETHUSDT"];
    feed.set_quote(quote("BTCUSDT", "61000.10".parse().unwrap()));
    feed.set_quote(quote("ETHUSDT", "2600.10".parse().unwrap()));
    let ingest = market_data::spawn(&ingest_config(
        &feed,
        symbols.iter().map(|s| s.to_string()).collect(),
        &prefix("e2e"),
    ))
    .unwrap();
    let stats = ingest.stream_stats.clone();
    wait_until("connected", Duration::from_secs(10), || {
        feed.connections().iter().any(|c| c.closed_at_ms.is_none())
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/__control/burst?n={n}", feed.http_base_url());
    eprintln!("[ingest bench] end to end: 3 bursts of {n} messages");
    let mut rows = Vec::new();
    for _ in 0..3 {
        let before = stats.updates.load(Ordering::Relaxed);
        let coalesced0 = ingest.book.lock().unwrap().coalesced();
        let flushes0 = ingest.flush_stats.flushes.load(Ordering::Relaxed);
        let cpu0 = process_cpu_secs();
        let start = Instant::now();
        let resp = http.post(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        wait_until("read the burst", Duration::from_secs(120), || {
            stats.updates.load(Ordering::Relaxed) >= before + n
        })
        .await;
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu_secs() - cpu0;
        let coalesced = ingest.book.lock().unwrap().coalesced() - coalesced0;
        let flushes = ingest.flush_stats.flushes.load(Ordering::Relaxed) - flushes0;
        rows.push((secs, cpu, coalesced, flushes));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let superseded = stats.superseded.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let _ = writeln!(
        md,
        "#### Ingest: end to end from the feed over loopback WebSocket\n"
    );
    let _ = writeln!(
        md,
        "The feed (in-process, same tokio runtime) writes a burst of {n} bookTickers for BTCUSDT and ETHUSDT (`POST /__control/burst`, prices walking over 100 levels) to one ingest connection; ingest (`market_data::spawn`, real Redis, {FLUSH_MS} ms flushes) reads, parses and coalesces them. Time from the burst request until ingest has applied all {n}; CPU is this process (feed + ingest) over that time.\n"
    );
    let _ = writeln!(
        md,
        "| burst | messages/s | seconds | CPU-s (feed + ingest) | coalesced | flushes |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    let mut rates = Vec::new();
    for (i, (secs, cpu, coalesced, flushes)) in rows.iter().enumerate() {
        let rate = n as f64 / secs;
        rates.push(rate);
        let _ = writeln!(
            md,
            "| {} | **{rate:.0}** | {secs:.2} | {cpu:.2} | {coalesced} | {flushes} |",
            i + 1
        );
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let _ = writeln!(
        md,
        "\nMedian **{:.0} messages/s** (goal ≥ 200,000). Superseded: {superseded}, parse errors: {errors}; the book stayed at {} entries.\n",
        rates[1],
        ingest.book.lock().unwrap().symbols()
    );
}

/// CPU seconds (user + system) of this process so far, from /proc.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is index 0, utime 11, stime 12. 100 ticks/s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

// ---- 3. tick -> Redis latency ---------------------------------------------------------

#[derive(Default)]
struct Pending {
    /// symbol -> (bid of the tick in flight, when it was sent, who to wake)
    inflight: HashMap<String, (Decimal, Instant, Arc<tokio::sync::Notify>)>,
    samples_ms: Vec<f64>,
}

struct LatencyHook(Arc<Mutex<Pending>>);

impl market_data::FlushHook for LatencyHook {
    fn on_flush(&mut self, quotes: &[Quote]) {
        let now = Instant::now();
        let mut p = self.0.lock().unwrap();
        for q in quotes {
            let hit = matches!(p.inflight.get(&q.symbol), Some((bid, _, _)) if *bid == q.bid);
            if hit {
                if let Some((_, sent, wake)) = p.inflight.remove(&q.symbol) {
                    p.samples_ms
                        .push(now.duration_since(sent).as_secs_f64() * 1e3);
                    wake.notify_one();
                }
            }
        }
    }
}

async fn bench_latency(secs: f64, md: &mut String) {
    const SYMBOLS: usize = 20;
    let feed = Arc::new(start_feed().await);
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("LAT{i:02}USDT")).collect();
    let pending = Arc::new(Mutex::new(Pending::default()));
    let ingest = market_data::spawn_with_hook(
        &ingest_config(&feed, symbols.clone(), &prefix("latency")),
        Some(Box::new(LatencyHook(pending.clone()))),
    )
    .unwrap();
    wait_until("connected", Duration::from_secs(10), || {
        ingest.stream_stats.open_connections.load(Ordering::Relaxed) > 0
    })
    .await;
    // Let the connection settle (first flushes, stale-marker deletes) before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run_secs = (secs * 4.0).max(5.0);
    eprintln!("[ingest bench] tick -> Redis latency, {SYMBOLS} symbols for {run_secs} s");
    let deadline = Instant::now() + Duration::from_secs_f64(run_secs);
    let mut tasks = Vec::new();
    for (i, symbol) in symbols.into_iter().enumerate() {
        let (feed, pending) = (feed.clone(), pending.clone());
        tasks.push(tokio::spawn(async move {
            let wake = Arc::new(tokio::sync::Notify::new());
            let mut seq: i64 = 0;
            while Instant::now() < deadline {
                // A uniformly random phase of the flush cycle.
                let pause = rand::rng().random_range(0..FLUSH_MS * 1000);
                tokio::time::sleep(Duration::from_micros(pause)).await;
                seq += 1;
                let bid = Decimal::new(100_000 + (i as i64) * 1_000_000 + seq, 2);
                let sent = Instant::now();
                pending
                    .lock()
                    .unwrap()
                    .inflight
                    .insert(symbol.clone(), (bid, sent, wake.clone()));
                feed.set_quote(quote(&symbol, bid));
                if tokio::time::timeout(Duration::from_secs(5), wake.notified())
                    .await
                    .is_err()
                {
                    panic!("{symbol}: tick {bid} never reached Redis");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut samples = std::mem::take(&mut pending.lock().unwrap().samples_ms);
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let p = |q| percentile(&samples, q);
    let _ = writeln!(md, "#### Ingest: tick → Redis latency\n");
    let _ = writeln!(
        md,
        "{SYMBOLS} symbols scripted in the feed (in-process `Feed::set_quote`, published at once), each sending a new price at a uniformly random point of the {FLUSH_MS} ms flush cycle once its previous one is in Redis; timed from just before the feed publishes until the flush hook runs, i.e. until the `MULTI`/`EXEC` that wrote it was acknowledged by Redis (the value is readable from then on). {run_secs:.0} s, {} samples, ms:\n",
        samples.len()
    );
    let _ = writeln!(md, "| flush interval | n | mean | p50 | p90 | p99 | max |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {FLUSH_MS} ms | {} | {mean:.1} | **{:.1}** | {:.1} | **{:.1}** | {:.1} |",
        samples.len(),
        p(50.0),
        p(90.0),
        p(99.0),
        samples.last().copied().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        md,
        "\nGoal p99 ≤ flush interval + 10 ms = {} ms: **{:.1} ms**.\n",
        FLUSH_MS + 10,
        p(99.0)
    );
    drop(ingest);
}

#[tokio::main]
async fn main() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let mut md = String::new();
    bench_parse(secs, &mut md);
    bench_e2e(&mut md).await;
    bench_latency(secs, &mut md).await;
    match std::env::var("BENCH_REPORT") {
        Ok(path) if !path.is_empty() => std::fs::write(&path, &md).expect("write BENCH_REPORT"),
        _ => println!("{md}"),
    }
}
