//! The Redis writer: every flush interval, every changed symbol in one pipelined round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::quote::{price_key, Quote};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::book::Book;
use crate::lock;

/// Counters of the flush loop.
#[derive(Debug, Default)]
pub struct FlushStats {
    pub flushes: AtomicU64,
    pub keys_written: AtomicU64,
    pub failures: AtomicU64,
}

pub struct Flusher {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    prefix: String,
    ttl_ms: u64,
    op_timeout: Duration,
    consecutive_failures: u64,
    last_warn: Option<Instant>,
    pub stats: Arc<FlushStats>,
}

impl Flusher {
    pub fn new(redis_url: &str, prefix: &str, ttl_ms: u64) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)?;
        Ok(Self {
            client,
            conn: None,
            prefix: prefix.to_string(),
            ttl_ms,
            op_timeout: Duration::from_secs(2),
            consecutive_failures: 0,
            last_warn: None,
            stats: Arc::default(),
        })
    }

    async fn connection(&mut self) -> anyhow::Result<ConnectionManager> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.op_timeout)
            .set_response_timeout(self.op_timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let conn = tokio::time::timeout(
            self.op_timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to Redis"))??;
        tracing::info!("connected to Redis");
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Writes `quotes` as `SET {prefix}px:{SYMBOL} <json> PX <ttl>` in one pipeline.
    pub async fn write(&mut self, quotes: &[Quote]) -> anyhow::Result<()> {
        if quotes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for q in quotes {
            pipe.cmd("SET")
                .arg(price_key(&self.prefix, &q.symbol))
                .arg(serde_json::to_string(q)?)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.op_timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| anyhow::anyhow!("Redis pipeline timed out"))??;
        Ok(())
    }

    /// One flush: takes the dirty quotes, writes them, and on failure marks them dirty again
    /// so the next flush retries with whatever is latest then.
    pub async fn flush_once(&mut self, book: &Mutex<Book>) -> bool {
        let quotes = lock(book).take_dirty();
        if quotes.is_empty() {
            return true;
        }
        match self.write(&quotes).await {
            Ok(()) => {
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .keys_written
                    .fetch_add(quotes.len() as u64, Ordering::Relaxed);
                if self.consecutive_failures > 0 {
                    tracing::info!(
                        failed_flushes = self.consecutive_failures,
                        "Redis writes recovered"
                    );
                }
                self.consecutive_failures = 0;
                true
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures += 1;
                // Rate-limit the warning: the first failure, then at most every 10 s.
                let due = self
                    .last_warn
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                if self.consecutive_failures == 1 || due {
                    tracing::warn!(error = %format!("{e:#}"), failed_flushes = self.consecutive_failures,
                        symbols = quotes.len(), "Redis write failed; will retry with the latest state");
                    self.last_warn = Some(Instant::now());
                }
                lock(book).mark_dirty(quotes.iter().map(|q| q.symbol.as_str()));
                false
            }
        }
    }
}

/// Flushes every `interval` until the task is aborted.
pub async fn run(mut flusher: Flusher, book: Arc<Mutex<Book>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flusher.flush_once(&book).await;
    }
}
