//! The WebSocket client loop: connect, read, apply to the book, reconnect with backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio_tungstenite::tungstenite::Message;

use crate::book::Book;
use crate::lock;
use crate::parse;

/// Counters of the reader.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub connects: AtomicU64,
    pub messages: AtomicU64,
    pub updates: AtomicU64,
    pub ignored: AtomicU64,
    pub errors: AtomicU64,
}

/// `{base}/stream?streams=btcusdt@bookTicker/btcusdt@trade/...` (lowercase symbols).
pub fn stream_url(base: &str, symbols: &[String]) -> String {
    let streams: Vec<String> = symbols
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .flat_map(|s| [format!("{s}@bookTicker"), format!("{s}@trade")])
        .collect();
    format!(
        "{}/stream?streams={}",
        base.trim_end_matches('/'),
        streams.join("/")
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff with jitter: 100 ms doubling to a 5 s cap, each wait drawn from
/// [base/2, base].
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            base: min,
            min,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.base = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        let half = base / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// With no frame at all for this long (Binance pings every 20 s), the connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and reads forever, reconnecting after any error or close.
pub async fn run(url: String, book: Arc<Mutex<Book>>, stats: Arc<StreamStats>) {
    let mut backoff = Backoff::default();
    loop {
        let healthy = match connect_and_read(&url, &book, &stats).await {
            Ok(received) => {
                tracing::warn!(%url, "stream closed; reconnecting");
                received
            }
            Err((received, e)) => {
                tracing::warn!(%url, error = %format!("{e:#}"), "stream failed; reconnecting");
                received
            }
        };
        if healthy {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after backoff"
        );
        tokio::time::sleep(delay).await;
    }
}

/// One connection. Returns whether any data message was received (then the backoff resets).
async fn connect_and_read(
    url: &str,
    book: &Mutex<Book>,
    stats: &StreamStats,
) -> Result<bool, (bool, anyhow::Error)> {
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| (false, anyhow::anyhow!("connect timed out")))?
        .map_err(|e| (false, anyhow::Error::from(e)))?;
    let n = stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(%url, connects = n, "connected to market stream");
    let mut received = false;
    loop {
        let frame = match tokio::time::timeout(READ_TIMEOUT, ws.next()).await {
            Err(_) => return Err((received, anyhow::anyhow!("no frame for {READ_TIMEOUT:?}"))),
            Ok(None) => return Ok(received),
            Ok(Some(Err(e))) => return Err((received, e.into())),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(text) => {
                received = true;
                stats.messages.fetch_add(1, Ordering::Relaxed);
                let now = now_ms();
                match parse::parse(text.as_str()) {
                    Ok(Some(update)) => {
                        lock(book).apply(&update, now);
                        stats.updates.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        stats.ignored.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if stats.errors.fetch_add(1, Ordering::Relaxed) < 10 {
                            tracing::warn!(error = %e, "unparseable message ignored");
                        }
                    }
                }
            }
            Message::Ping(_) => {
                // tungstenite queues the matching pong (same payload) on read; flush it now
                // rather than waiting for our next write, which may never come.
                ws.flush().await.map_err(|e| (received, e.into()))?;
            }
            Message::Close(frame) => {
                tracing::info!(?frame, "server closed the stream");
                return Ok(received);
            }
            Message::Binary(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_combined_stream_url() {
        assert_eq!(
            stream_url("ws://127.0.0.1:9100/", &["BTCUSDT".into(), " ethusdt".into()]),
            "ws://127.0.0.1:9100/stream?streams=btcusdt@bookTicker/btcusdt@trade/ethusdt@bookTicker/ethusdt@trade"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::default();
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(101));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(5001), "{d:?}");
        }
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(101));
    }
}
