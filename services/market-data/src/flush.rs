//! The Redis writer: every flush interval, every changed symbol in one pipelined round trip
//! (`MULTI`/`EXEC`, so a reader never sees half a flush).
//!
//! A flush writes `SET {prefix}px:{SYMBOL} <Quote JSON> PX <ttl>` for each changed symbol,
//! and the stale-marker transitions: `SET {prefix}stale:{SYMBOL} 1 PX <ttl>` for a symbol
//! that became stale (stream disconnected, or no update for the stall timeout) and
//! `DEL {prefix}stale:{SYMBOL}` with the first fresh quote written after that.
//! After a successful write the [`FlushHook`], if any, sees the quotes just written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::keyspace::Keyspace;
use domain::quote::Quote;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use crate::book::{Batch, Book, Staleness};
use crate::lock;
use crate::stream::{now_ms, StreamStats};

/// Called after every successful flush with the quotes just written (one per changed symbol).
///
/// It runs synchronously in the flush task, after the Redis write succeeded and before the
/// next flush: keep it short (hand heavy work to another task), or flushes fall behind.
/// Each quote carries its receive time `ts`; a quote whose write had failed before is
/// passed when it is finally written, so a consumer that must not act on an old price
/// compares `ts` with its clock. A flush that writes only stale markers calls no hook.
pub trait FlushHook: Send + 'static {
    fn on_flush(&mut self, quotes: &[domain::quote::Quote]);
}

/// Several hooks called in turn (the trigger engine's and the fan-out's taps): each sees
/// every flush.
#[derive(Default)]
pub struct Hooks(pub Vec<Box<dyn FlushHook>>);

impl Hooks {
    /// `None` without hooks, the hook itself when there is one, else all of them in turn.
    pub fn boxed(mut hooks: Vec<Box<dyn FlushHook>>) -> Option<Box<dyn FlushHook>> {
        match hooks.len() {
            0 => None,
            1 => hooks.pop(),
            _ => Some(Box::new(Hooks(hooks))),
        }
    }
}

impl FlushHook for Hooks {
    fn on_flush(&mut self, quotes: &[Quote]) {
        for h in &mut self.0 {
            h.on_flush(quotes);
        }
    }
}

/// Counters of the flush loop.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Successful non-empty flushes.
    pub flushes: AtomicU64,
    /// Price keys written.
    pub keys_written: AtomicU64,
    pub failures: AtomicU64,
    /// Stale markers set / deleted.
    pub stale_marked: AtomicU64,
    pub stale_cleared: AtomicU64,
}

/// A request for an immediate flush; the reply says whether it succeeded.
pub type FlushRequest = oneshot::Sender<bool>;

pub struct Flusher {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    keys: Keyspace,
    ttl_ms: u64,
    op_timeout: Duration,
    consecutive_failures: u64,
    last_warn: Option<Instant>,
    /// Stall timeout (ms) and the stream's counters (whose open-connection gauge says
    /// whether it is connected); `None`: no stale markers.
    staleness: Option<(i64, Arc<StreamStats>)>,
    hook: Option<Box<dyn FlushHook>>,
    pub stats: Arc<FlushStats>,
}

impl Flusher {
    pub fn new(redis_url: &str, prefix: &str, ttl_ms: u64) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)?;
        Ok(Self {
            client,
            conn: None,
            keys: Keyspace::new(prefix),
            ttl_ms,
            op_timeout: Duration::from_secs(2),
            consecutive_failures: 0,
            last_warn: None,
            staleness: None,
            hook: None,
            stats: Arc::default(),
        })
    }

    /// Writes stale markers: a symbol is stale when `stream` has no open connection or the
    /// symbol had no update for `stall`.
    pub fn with_staleness(mut self, stall: Duration, stream: Arc<StreamStats>) -> Self {
        self.staleness = Some((stall.as_millis() as i64, stream));
        self
    }

    /// Calls `hook` after every successful flush that wrote quotes.
    pub fn with_hook(mut self, hook: Option<Box<dyn FlushHook>>) -> Self {
        self.hook = hook;
        self
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
        self.write_batch(&Batch {
            quotes: quotes.to_vec(),
            ..Batch::default()
        })
        .await
    }

    /// Writes a batch (quotes, then stale-marker transitions) in one `MULTI`/`EXEC` pipeline.
    pub async fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for q in &batch.quotes {
            pipe.cmd("SET")
                .arg(self.keys.price(&q.symbol))
                .arg(serde_json::to_string(q)?)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
        for s in &batch.mark_stale {
            pipe.cmd("SET")
                .arg(self.keys.stale(s))
                .arg("1")
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
        for s in &batch.clear_stale {
            pipe.cmd("DEL").arg(self.keys.stale(s)).ignore();
        }
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.op_timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| anyhow::anyhow!("Redis pipeline timed out"))??;
        Ok(())
    }

    /// One flush: takes the dirty quotes and the stale-marker transitions, writes them, and
    /// on failure marks the quotes dirty again so the next flush retries with whatever is
    /// latest then (marker transitions are recomputed then too).
    pub async fn flush_once(&mut self, book: &Mutex<Book>) -> bool {
        let staleness = self.staleness.as_ref().map(|(stall_ms, stream)| Staleness {
            stall_ms: *stall_ms,
            connected: stream.open_connections.load(Ordering::Relaxed) > 0,
        });
        let batch = lock(book).take_batch(now_ms(), staleness);
        if batch.is_empty() {
            return true;
        }
        match self.write_batch(&batch).await {
            Ok(()) => {
                lock(book).commit(&batch);
                let st = &self.stats;
                st.flushes.fetch_add(1, Ordering::Relaxed);
                st.keys_written
                    .fetch_add(batch.quotes.len() as u64, Ordering::Relaxed);
                st.stale_marked
                    .fetch_add(batch.mark_stale.len() as u64, Ordering::Relaxed);
                st.stale_cleared
                    .fetch_add(batch.clear_stale.len() as u64, Ordering::Relaxed);
                if !batch.mark_stale.is_empty() {
                    tracing::info!(symbols = ?batch.mark_stale, "prices marked stale");
                }
                if self.consecutive_failures > 0 {
                    tracing::info!(
                        failed_flushes = self.consecutive_failures,
                        "Redis writes recovered"
                    );
                }
                self.consecutive_failures = 0;
                if let Some(hook) = self.hook.as_mut() {
                    if !batch.quotes.is_empty() {
                        hook.on_flush(&batch.quotes);
                    }
                }
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
                        symbols = batch.quotes.len(), "Redis write failed; will retry with the latest state");
                    self.last_warn = Some(Instant::now());
                }
                lock(book).mark_dirty(batch.quotes.iter().map(|q| q.symbol.as_str()));
                false
            }
        }
    }
}

/// Flushes every `interval`, and at once on each request (answering whether it succeeded),
/// until the task is aborted.
pub async fn run(
    mut flusher: Flusher,
    book: Arc<Mutex<Book>>,
    interval: Duration,
    mut requests: mpsc::Receiver<FlushRequest>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                flusher.flush_once(&book).await;
            }
            req = requests.recv(), if requests_open => match req {
                Some(reply) => {
                    let ok = flusher.flush_once(&book).await;
                    let _ = reply.send(ok);
                }
                None => requests_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::quote_channel;

    #[test]
    fn hooks_each_see_every_flush() {
        assert!(Hooks::boxed(Vec::new()).is_none());
        let (a, mut ra) = quote_channel();
        let (b, mut rb) = quote_channel();
        let mut one = Hooks::boxed(vec![Box::new(a.clone())]).unwrap();
        let mut both = Hooks::boxed(vec![Box::new(a), Box::new(b)]).unwrap();
        let q = Quote::new("BTCUSDT", "1".parse().unwrap(), "2".parse().unwrap(), 1);
        one.on_flush(std::slice::from_ref(&q));
        both.on_flush(std::slice::from_ref(&q));
        assert_eq!(ra.try_recv().unwrap(), vec![q.clone()]);
        assert_eq!(ra.try_recv().unwrap(), vec![q.clone()]);
        assert_eq!(rb.try_recv().unwrap(), vec![q]);
        assert!(ra.try_recv().is_err() && rb.try_recv().is_err());
    }
}
