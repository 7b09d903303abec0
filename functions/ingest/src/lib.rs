//! `ingest`: Binance combined stream → latest quote per symbol → Redis every flush interval.
//!
//! - [`parse`]: borrowed, allocation-free parsing of bookTicker and trade messages.
//! - [`book`]: latest bid/ask/last per symbol plus a dirty set (coalescing).
//! - [`flush`]: pipelined Redis writer with TTL; outages are logged and retried.
//! - [`stream`]: WebSocket client with ping answers and jittered exponential backoff.

pub mod book;
pub mod flush;
pub mod parse;
pub mod stream;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::Parser;
use tokio::task::JoinHandle;

/// Locks a mutex, ignoring poisoning (no critical section leaves the book half-updated).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Configuration, from the environment (or flags).
#[derive(Debug, Clone, Parser)]
#[command(name = "ingest", version, about)]
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
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of every Redis key (`{KEY_PREFIX}px:{SYMBOL}`).
    #[arg(long, env = "KEY_PREFIX", default_value = "")]
    pub key_prefix: String,
    #[arg(long, env = "FLUSH_INTERVAL_MS", default_value_t = 100)]
    pub flush_interval_ms: u64,
    #[arg(long, env = "PRICE_TTL_MS", default_value_t = 60_000)]
    pub price_ttl_ms: u64,
    /// How often counters are logged, in seconds (0 = never).
    #[arg(long, env = "STATS_INTERVAL_SECS", default_value_t = 60)]
    pub stats_interval_secs: u64,
}

impl Config {
    /// Defaults, as if no environment variable were set.
    pub fn defaults() -> Self {
        Self {
            binance_ws_url: "wss://stream.binance.com:9443".into(),
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: String::new(),
            flush_interval_ms: 100,
            price_ttl_ms: 60_000,
            stats_interval_secs: 60,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.symbols.iter().all(|s| s.trim().is_empty()) {
            anyhow::bail!("SYMBOLS must name at least one symbol");
        }
        if self.flush_interval_ms == 0 || self.price_ttl_ms == 0 {
            anyhow::bail!("FLUSH_INTERVAL_MS and PRICE_TTL_MS must be > 0");
        }
        Ok(())
    }
}

/// A running ingest. Dropping it stops its tasks.
pub struct Ingest {
    pub book: Arc<Mutex<Book>>,
    pub stream_stats: Arc<stream::StreamStats>,
    pub flush_stats: Arc<flush::FlushStats>,
    tasks: Vec<JoinHandle<()>>,
    flusher_parts: (String, String, u64),
}

pub use book::Book;

impl Ingest {
    /// Writes whatever is still dirty once more (used at shutdown).
    pub async fn final_flush(&self) {
        let (url, prefix, ttl) = &self.flusher_parts;
        match flush::Flusher::new(url, prefix, *ttl) {
            Ok(mut f) => {
                f.flush_once(&self.book).await;
            }
            Err(e) => tracing::warn!(error = %e, "final flush skipped"),
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

/// Starts the reader, the flusher and the stats logger as separate tasks.
pub fn spawn(config: &Config) -> anyhow::Result<Ingest> {
    config.validate()?;
    let url = stream::stream_url(&config.binance_ws_url, &config.symbols);
    let book = Arc::new(Mutex::new(Book::new()));
    let stream_stats = Arc::new(stream::StreamStats::default());
    let flusher = flush::Flusher::new(&config.redis_url, &config.key_prefix, config.price_ttl_ms)?;
    let flush_stats = flusher.stats.clone();
    tracing::info!(%url, prefix = %config.key_prefix, flush_ms = config.flush_interval_ms,
        ttl_ms = config.price_ttl_ms, "ingest starting");
    let mut tasks = vec![
        tokio::spawn(stream::run(url, book.clone(), stream_stats.clone())),
        tokio::spawn(flush::run(
            flusher,
            book.clone(),
            Duration::from_millis(config.flush_interval_ms),
        )),
    ];
    if config.stats_interval_secs > 0 {
        let (ss, fs) = (stream_stats.clone(), flush_stats.clone());
        let every = Duration::from_secs(config.stats_interval_secs);
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(
                    connects = ss.connects.load(Relaxed),
                    messages = ss.messages.load(Relaxed),
                    updates = ss.updates.load(Relaxed),
                    ignored = ss.ignored.load(Relaxed),
                    parse_errors = ss.errors.load(Relaxed),
                    flushes = fs.flushes.load(Relaxed),
                    keys_written = fs.keys_written.load(Relaxed),
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
        tasks,
        flusher_parts: (
            config.redis_url.clone(),
            config.key_prefix.clone(),
            config.price_ttl_ms,
        ),
    })
}
