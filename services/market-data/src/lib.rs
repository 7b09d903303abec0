//! Market data: Binance combined stream → latest quote per symbol → Redis every flush
//! interval, and the [`tap`] through which the trigger engine and the WebSocket fan-out
//! follow the flushed quotes. One of the three services the `ingest` task runs.
//!
//! Depends on `domain` and `adapters` (the Redis connection and key names, the configuration
//! sections); never on a function crate or on the other services.
//!
//! - [`parse`]: borrowed, allocation-free parsing of bookTicker and trade messages (and
//!   `serverShutdown` events).
//! - [`book`]: latest bid/ask/last per symbol plus a dirty set (coalescing).
//! - [`flush`]: pipelined Redis writer with TTL; outages are logged and retried; stale
//!   markers; the [`flush::FlushHook`] that sees every flush.
//! - [`tap`]: the flush hook that copies every flush to a consumer (the `triggers` and
//!   `fanout` services).
//! - [`stream`]: WebSocket client: pings answered, connections rotated without a gap (max
//!   age, `serverShutdown`, stall), jittered exponential backoff after a loss.
//! - [`health`]: the heartbeat file behind `ingest health`, and the `ingest
//!   heartbeat` log line with the age of the freshest price.
//!
//! # What is in Redis
//!
//! - `{KEY_PREFIX}px:{SYMBOL}`: the latest [`domain::quote::Quote`] as JSON, `PX PRICE_TTL_MS`;
//!   its `ts` is when ingest received the newest update of the symbol.
//! - `{KEY_PREFIX}stale:{SYMBOL}` = `"1"` (same TTL): ingest knows this price is not being
//!   kept fresh. Set by the first flush after the market stream is disconnected (no open
//!   connection), or after the symbol had no update for `STALL_TIMEOUT_MS` (a stalled
//!   stream stalls every symbol); deleted in the same `MULTI`/`EXEC` as the first fresh
//!   quote written after that. A consumer treats a price as fresh only when the stale key
//!   is absent *and* `ts` is recent enough for its purpose. When ingest itself stops, no
//!   marker is written (a replacement task may already be writing); the TTLs and `ts` tell.
//!
//! # Backpressure
//!
//! The reader never waits for Redis: it applies each update to the [`Book`] (one entry per
//! symbol) and the flusher writes whatever changed every `FLUSH_INTERVAL_MS`. A burst or a
//! slow Redis only makes more updates overwrite each other before a write (counted as
//! `coalesced`); memory does not grow with the tick rate. A failed write keeps the symbols
//! dirty and the next flush writes their latest state. Updates that arrive on a connection
//! already replaced by a newer one are dropped (`superseded`): the newer one carries them.
//!
//! # Counters
//!
//! [`stream::StreamStats`], [`flush::FlushStats`] and [`Book::coalesced`], logged every
//! `STATS_INTERVAL_SECS` as `ingest stats`.
//!
//! # Health and price freshness
//!
//! - Container health check: `ingest health` exits 0 while the heartbeat file
//!   (`HEARTBEAT_FILE`), rewritten at most once a second after successful flushes, is at
//!   most `HEALTH_MAX_AGE_SECS` old, and 1 otherwise; it prints why. In an ECS task
//!   definition: `["CMD", "/usr/local/bin/ingest", "health"]`.
//! - Every `HEARTBEAT_INTERVAL_SECS` one `ingest heartbeat` line: `price_age_ms` (now minus
//!   the receive time of the freshest price written; from the process start until the
//!   first write), `symbols`, `stale`, and the interval's `flushes` (that wrote prices) and
//!   `flush_failures`. With `LOG_FORMAT=json` (see `adapters::telemetry`) the line is
//!   `{"level":"INFO","fields":{"message":"ingest heartbeat","price_age_ms":42,...}}`:
//!   CloudWatch metric filter pattern `{ $.fields.message = "ingest heartbeat" }`, metric
//!   value `$.fields.price_age_ms`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod book;
pub mod flush;
pub mod health;
pub mod parse;
pub mod stream;
pub mod tap;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use adapters::config::RedisSettings;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Locks a mutex, ignoring poisoning (no critical section leaves the book half-updated).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The market-data section of the ingest configuration, from the environment (or flags):
/// flattened into the `ingest` binary's command line. Redis comes from the shared
/// [`RedisSettings`] section (filled in by the binary), so `REDIS_URL` and `KEY_PREFIX` are
/// read in one place for every process.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Base URL of a Binance-compatible WebSocket API; `/stream?streams=...` is appended.
    #[arg(
        long,
        env = "BINANCE_WS_URL",
        default_value = "wss://stream.binance.com:9443"
    )]
    pub binance_ws_url: String,
    /// Symbols to follow, comma separated.
    #[arg(
        long,
        env = "SYMBOLS",
        value_delimiter = ',',
        default_value = "BTCUSDT,ETHUSDT"
    )]
    pub symbols: Vec<String>,
    /// `REDIS_URL` of the [`RedisSettings`] section.
    #[arg(skip)]
    pub redis_url: String,
    /// Prefix of every Redis key (`{KEY_PREFIX}px:{SYMBOL}`), of the [`RedisSettings`]
    /// section.
    #[arg(skip)]
    pub key_prefix: String,
    #[arg(long, env = "FLUSH_INTERVAL_MS", default_value_t = 100)]
    pub flush_interval_ms: u64,
    #[arg(long, env = "PRICE_TTL_MS", default_value_t = 60_000)]
    pub price_ttl_ms: u64,
    /// How often counters are logged, in seconds (0 = never).
    #[arg(long, env = "STATS_INTERVAL_SECS", default_value_t = 60)]
    pub stats_interval_secs: u64,
    /// Rotate a market-stream connection this old (Binance closes them at 24 h), opening the
    /// new one before closing the old.
    #[arg(long, env = "CONNECTION_MAX_AGE_SECS", default_value_t = 84_600)]
    pub connection_max_age_secs: u64,
    /// No update for this long: the stream (or a symbol) is stalled; prices are marked stale
    /// and another connection is opened.
    #[arg(long, env = "STALL_TIMEOUT_MS", default_value_t = 5_000)]
    pub stall_timeout_ms: u64,
    /// Rewritten (at most once a second) after flushes that wrote prices to Redis; read by
    /// `ingest health`.
    #[arg(long, env = "HEARTBEAT_FILE", default_value = DEFAULT_HEARTBEAT_FILE, global = true)]
    pub heartbeat_file: PathBuf,
    /// `ingest health` fails when the heartbeat file is older than this.
    #[arg(long, env = "HEALTH_MAX_AGE_SECS", default_value_t = 15, global = true)]
    pub health_max_age_secs: u64,
    /// How often the `ingest heartbeat` line (price age, flushes) is logged, in seconds
    /// (0 = never).
    #[arg(long, env = "HEARTBEAT_INTERVAL_SECS", default_value_t = 10)]
    pub heartbeat_interval_secs: u64,
}

/// Where the heartbeat file is unless `HEARTBEAT_FILE` says otherwise.
pub const DEFAULT_HEARTBEAT_FILE: &str = "/tmp/ingest-heartbeat";

impl Config {
    /// Defaults, as if no environment variable were set.
    pub fn defaults() -> Self {
        let redis = RedisSettings::default();
        Self {
            binance_ws_url: "wss://stream.binance.com:9443".into(),
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            redis_url: redis.url,
            key_prefix: redis.key_prefix,
            flush_interval_ms: 100,
            price_ttl_ms: 60_000,
            stats_interval_secs: 60,
            connection_max_age_secs: 84_600,
            stall_timeout_ms: 5_000,
            heartbeat_file: DEFAULT_HEARTBEAT_FILE.into(),
            health_max_age_secs: 15,
            heartbeat_interval_secs: 10,
        }
    }

    /// With the shared Redis section.
    pub fn with_redis(mut self, redis: &RedisSettings) -> Self {
        self.redis_url = redis.url.clone();
        self.key_prefix = redis.key_prefix.clone();
        self
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.symbols.iter().all(|s| s.trim().is_empty()) {
            anyhow::bail!("SYMBOLS must name at least one symbol");
        }
        if self.flush_interval_ms == 0 || self.price_ttl_ms == 0 {
            anyhow::bail!("FLUSH_INTERVAL_MS and PRICE_TTL_MS must be > 0");
        }
        if self.connection_max_age_secs == 0 || self.stall_timeout_ms == 0 {
            anyhow::bail!("CONNECTION_MAX_AGE_SECS and STALL_TIMEOUT_MS must be > 0");
        }
        Ok(())
    }
}

/// A running ingest. Dropping it stops its tasks.
pub struct Ingest {
    pub book: Arc<Mutex<Book>>,
    pub stream_stats: Arc<stream::StreamStats>,
    pub flush_stats: Arc<flush::FlushStats>,
    pub freshness: Arc<health::Freshness>,
    tasks: Vec<JoinHandle<()>>,
    flush_requests: mpsc::Sender<flush::FlushRequest>,
}

pub use book::Book;
pub use flush::{FlushHook, Hooks};

impl Ingest {
    /// Flushes whatever is still dirty now, through the running flusher (so the hook sees
    /// it too); used at shutdown. Returns whether the write succeeded (false after 5 s).
    pub async fn final_flush(&self) -> bool {
        let (reply, done) = oneshot::channel();
        if self.flush_requests.send(reply).await.is_err() {
            tracing::warn!("final flush skipped: the flusher is gone");
            return false;
        }
        match tokio::time::timeout(Duration::from_secs(5), done).await {
            Ok(Ok(ok)) => ok,
            _ => {
                tracing::warn!("final flush did not complete");
                false
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the reader, the flusher, the heartbeat writer and the loggers as separate tasks.
pub fn spawn(config: &Config) -> anyhow::Result<Ingest> {
    spawn_with_hook(config, None)
}

/// [`spawn`], with a hook called after every successful flush with the quotes just written
/// (synchronously, in the flush task: see [`FlushHook`]).
pub fn spawn_with_hook(
    config: &Config,
    hook: Option<Box<dyn FlushHook>>,
) -> anyhow::Result<Ingest> {
    config.validate()?;
    let url = stream::stream_url(&config.binance_ws_url, &config.symbols);
    let book = Arc::new(Mutex::new(Book::with_symbols(
        config.symbols.iter().map(String::as_str),
        stream::now_ms(),
    )));
    let stream_stats = Arc::new(stream::StreamStats::default());
    let stall = Duration::from_millis(config.stall_timeout_ms);
    let freshness = Arc::new(health::Freshness::new(stream::now_ms()));
    // The caller's hooks first: they act on prices; the freshness tap only takes note.
    let mut hooks: Vec<Box<dyn FlushHook>> = hook.into_iter().collect();
    hooks.push(Box::new(health::FreshnessTap(freshness.clone())));
    let flusher = flush::Flusher::new(&config.redis_url, &config.key_prefix, config.price_ttl_ms)?
        .with_staleness(stall, stream_stats.clone())
        .with_hook(Hooks::boxed(hooks));
    let flush_stats = flusher.stats.clone();
    tracing::info!(%url, prefix = %config.key_prefix, flush_ms = config.flush_interval_ms,
        ttl_ms = config.price_ttl_ms, max_age_secs = config.connection_max_age_secs,
        stall_ms = config.stall_timeout_ms, "ingest starting");
    let stream_config = stream::StreamConfig {
        url,
        max_age: Duration::from_secs(config.connection_max_age_secs),
        stall_timeout: stall,
    };
    let (flush_requests, requests) = mpsc::channel(4);
    let mut tasks = vec![
        tokio::spawn(stream::run(
            stream_config,
            book.clone(),
            stream_stats.clone(),
        )),
        tokio::spawn(flush::run(
            flusher,
            book.clone(),
            Duration::from_millis(config.flush_interval_ms),
            requests,
        )),
        tokio::spawn(health::write_heartbeats(
            freshness.clone(),
            config.heartbeat_file.clone(),
        )),
    ];
    if config.heartbeat_interval_secs > 0 {
        tasks.push(tokio::spawn(health::log_heartbeats(
            freshness.clone(),
            flush_stats.clone(),
            book.clone(),
            Duration::from_secs(config.heartbeat_interval_secs),
        )));
    }
    if config.stats_interval_secs > 0 {
        let (ss, fs, book) = (stream_stats.clone(), flush_stats.clone(), book.clone());
        let every = Duration::from_secs(config.stats_interval_secs);
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (symbols, coalesced, stale) = {
                    let b = lock(&book);
                    (b.symbols(), b.coalesced(), b.stale_symbols().len())
                };
                tracing::info!(
                    connects = ss.connects.load(Relaxed),
                    open_connections = ss.open_connections.load(Relaxed),
                    rotations = ss.rotations.load(Relaxed),
                    reconnects = ss.reconnects.load(Relaxed),
                    server_shutdowns = ss.server_shutdowns.load(Relaxed),
                    stalls = ss.stalls.load(Relaxed),
                    pings = ss.pings.load(Relaxed),
                    messages = ss.messages.load(Relaxed),
                    updates = ss.updates.load(Relaxed),
                    coalesced,
                    superseded = ss.superseded.load(Relaxed),
                    ignored = ss.ignored.load(Relaxed),
                    parse_errors = ss.errors.load(Relaxed),
                    symbols,
                    stale,
                    flushes = fs.flushes.load(Relaxed),
                    keys_written = fs.keys_written.load(Relaxed),
                    stale_marked = fs.stale_marked.load(Relaxed),
                    stale_cleared = fs.stale_cleared.load(Relaxed),
                    flush_failures = fs.failures.load(Relaxed),
                    "ingest stats"
                );
            }
        }));
    }
    Ok(Ingest {
        book,
        stream_stats,
        flush_stats,
        freshness,
        tasks,
        flush_requests,
    })
}
