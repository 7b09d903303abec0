//! Is ingest doing its job? Two signals, both fed by a [`FlushHook`] that sees every
//! successful flush that wrote prices:
//!
//! - **Heartbeat file** (`HEARTBEAT_FILE`, default `/tmp/ingest-heartbeat`): rewritten at
//!   most once a second while flushes succeed, so its modification time says when prices
//!   last reached Redis. `ingest health` ([`check_heartbeat`]) exits 0 while it is
//!   younger than `HEALTH_MAX_AGE_SECS` and 1 otherwise: the container health check, run
//!   in the task's own container (same environment, same file), with no network call. A
//!   stream without updates writes nothing, so a feed silent for longer than the limit
//!   makes the task unhealthy as well as a Redis that refuses writes: either way no fresh
//!   prices reach Redis, and a replacement task is the remedy.
//! - **`ingest heartbeat` log line** every `HEARTBEAT_INTERVAL_SECS`: `price_age_ms` (how
//!   old the freshest price in Redis is), `symbols`, `stale`, and the `flushes` (that wrote
//!   prices) and `flush_failures` of the interval. With `LOG_FORMAT=json` a CloudWatch metric filter
//!   turns `price_age_ms` into a metric to alarm on (pattern and JSON path: crate docs).
//!
//! Binance's spot `bookTicker` carries no event time, so a price's age is measured from when
//! ingest received it (the quote's `ts`); the network delay from the exchange is not in it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use domain::quote::Quote;

use crate::flush::{FlushHook, FlushStats};
use crate::stream::now_ms;
use crate::{lock, Book};

/// What the flushes have achieved so far; shared by the hook and the reporting tasks.
#[derive(Debug)]
pub struct Freshness {
    /// Wall-clock ms of the last successful flush that wrote prices (0: none yet).
    last_flush_ms: AtomicI64,
    /// The newest receive time (`ts`) among all prices written; the process start until the
    /// first write, so that "no price yet" ages like a price that stopped coming.
    newest_price_ms: AtomicI64,
    /// Successful flushes that wrote prices.
    flushes: AtomicU64,
}

impl Freshness {
    /// Nothing written yet, as of `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self {
            last_flush_ms: AtomicI64::new(0),
            newest_price_ms: AtomicI64::new(start_ms),
            flushes: AtomicU64::new(0),
        }
    }

    /// Records a successful flush at `now_ms` that wrote `quotes`.
    pub fn record(&self, quotes: &[Quote], now_ms: i64) {
        if let Some(newest) = quotes.iter().map(|q| q.ts).max() {
            // A retried write can carry an older `ts` than one already written: keep the max.
            self.newest_price_ms.fetch_max(newest, Relaxed);
        }
        self.last_flush_ms.fetch_max(now_ms, Relaxed);
        self.flushes.fetch_add(1, Relaxed);
    }

    /// Wall-clock ms of the last successful flush that wrote prices, if any.
    pub fn last_flush_ms(&self) -> Option<i64> {
        Some(self.last_flush_ms.load(Relaxed)).filter(|&t| t > 0)
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Relaxed)
    }

    /// How old the freshest price written is at `now_ms`.
    pub fn price_age_ms(&self, now_ms: i64) -> i64 {
        price_age_ms(now_ms, self.newest_price_ms.load(Relaxed))
    }
}

/// `now_ms - newest_ms`, never negative: a price stamped ahead of our clock (a clock step
/// between receive and report) counts as brand new rather than as a negative age.
pub fn price_age_ms(now_ms: i64, newest_ms: i64) -> i64 {
    now_ms.saturating_sub(newest_ms).max(0)
}

/// The flush hook feeding a [`Freshness`]: a max and two stores per flush.
pub struct FreshnessTap(pub Arc<Freshness>);

impl FlushHook for FreshnessTap {
    fn on_flush(&mut self, quotes: &[Quote]) {
        self.0.record(quotes, now_ms());
    }
}

/// How often the heartbeat file may be rewritten: often enough for any sensible maximum
/// age, rarely enough to cost nothing.
pub const HEARTBEAT_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Rewrites `path` (content: the last flush's wall-clock ms, for people) whenever a flush
/// succeeded since the previous write, checking every [`HEARTBEAT_WRITE_INTERVAL`]. A file
/// left by an earlier process is removed first, so only this process's flushes count.
pub async fn write_heartbeats(freshness: Arc<Freshness>, path: PathBuf) {
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e,
            "cannot remove an old heartbeat file"),
    }
    let mut tick = tokio::time::interval(HEARTBEAT_WRITE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = 0;
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(last) = freshness.last_flush_ms().filter(|&t| t > written) else {
            continue;
        };
        match tokio::fs::write(&path, format!("{last}\n")).await {
            Ok(()) => {
                if failing {
                    tracing::info!(path = %path.display(), "heartbeat file written again");
                }
                written = last;
                failing = false;
            }
            Err(e) => {
                // Once per failing spell: the health check reports it every time anyway.
                if !failing {
                    tracing::warn!(path = %path.display(), error = %e,
                        "cannot write the heartbeat file; the health check will fail");
                }
                failing = true;
            }
        }
    }
}

/// Logs `ingest heartbeat` every `every`: the alarm's input (see the module doc).
pub async fn log_heartbeats(
    freshness: Arc<Freshness>,
    flush_stats: Arc<FlushStats>,
    book: Arc<Mutex<Book>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let (mut flushes, mut failures) = (freshness.flushes(), flush_stats.failures.load(Relaxed));
    loop {
        tick.tick().await;
        let (now_flushes, now_failures) = (freshness.flushes(), flush_stats.failures.load(Relaxed));
        let (symbols, stale) = {
            let b = lock(&book);
            (b.symbols(), b.stale_symbols().len())
        };
        tracing::info!(
            price_age_ms = freshness.price_age_ms(now_ms()),
            symbols,
            stale,
            flushes = now_flushes - flushes,
            flush_failures = now_failures - failures,
            "ingest heartbeat"
        );
        (flushes, failures) = (now_flushes, now_failures);
    }
}

/// Why the health check fails.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("no heartbeat file at {0}: no flush has written prices to Redis yet")]
    Missing(PathBuf),
    #[error("cannot read the heartbeat file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "last flush to Redis {:.1} s ago (heartbeat {path}), more than the {} s allowed",
        age.as_secs_f64(),
        max_age.as_secs()
    )]
    Stale {
        path: PathBuf,
        age: Duration,
        max_age: Duration,
    },
}

/// The age of the heartbeat at `path` when it is at most `max_age` old at `now`, else why not.
/// A modification time ahead of `now` (a clock step) counts as age zero.
pub fn check_heartbeat(
    path: &Path,
    max_age: Duration,
    now: SystemTime,
) -> Result<Duration, Unhealthy> {
    let modified =
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => Unhealthy::Missing(path.to_path_buf()),
                _ => Unhealthy::Unreadable {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
    let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
    if age > max_age {
        return Err(Unhealthy::Stale {
            path: path.to_path_buf(),
            age,
            max_age,
        });
    }
    Ok(age)
}

/// `ingest health`: prints the verdict and returns the exit code (0 healthy, 1 not).
pub fn health_check_command(path: &Path, max_age: Duration) -> std::process::ExitCode {
    match check_heartbeat(path, max_age, SystemTime::now()) {
        Ok(age) => {
            println!(
                "healthy: last flush to Redis {:.1} s ago",
                age.as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(why) => {
            println!("unhealthy: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(symbol: &str, ts: i64) -> Quote {
        Quote::new(symbol, "1".parse().unwrap(), "2".parse().unwrap(), ts)
    }

    #[test]
    fn price_age_is_measured_from_the_freshest_price_written() {
        let f = Freshness::new(1_000);
        // Nothing written yet: the age counts from the start.
        assert_eq!(f.price_age_ms(1_500), 500);
        assert_eq!(f.last_flush_ms(), None);

        f.record(&[quote("BTCUSDT", 2_000), quote("ETHUSDT", 2_300)], 2_350);
        assert_eq!(f.price_age_ms(2_400), 100);
        assert_eq!(f.last_flush_ms(), Some(2_350));
        assert_eq!(f.flushes(), 1);

        // A retried, older quote does not make the freshest price older.
        f.record(&[quote("BTCUSDT", 1_900)], 2_500);
        assert_eq!(f.price_age_ms(2_600), 300);
        assert_eq!(f.last_flush_ms(), Some(2_500));
        assert_eq!(f.flushes(), 2);

        // No prices for a while: the age keeps growing.
        assert_eq!(f.price_age_ms(12_300), 10_000);
    }

    #[test]
    fn price_age_is_never_negative() {
        assert_eq!(price_age_ms(1_000, 1_250), 0);
        assert_eq!(price_age_ms(1_000, 1_000), 0);
        assert_eq!(price_age_ms(i64::MIN, i64::MAX), 0);
        assert_eq!(price_age_ms(i64::MAX, i64::MIN), i64::MAX);
    }

    #[test]
    fn heartbeat_verdicts() {
        let dir = std::env::temp_dir().join(format!("ingest-health-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heartbeat");
        let _ = std::fs::remove_file(&path);
        let max = Duration::from_secs(15);

        let missing = check_heartbeat(&path, max, SystemTime::now()).unwrap_err();
        assert!(matches!(missing, Unhealthy::Missing(_)), "{missing}");

        std::fs::write(&path, "1\n").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let age = check_heartbeat(&path, max, modified + Duration::from_secs(3)).unwrap();
        assert_eq!(age, Duration::from_secs(3));
        // Exactly at the limit is still healthy; past it is not, and the message says why.
        assert!(check_heartbeat(&path, max, modified + max).is_ok());
        let stale = check_heartbeat(&path, max, modified + Duration::from_secs(16)).unwrap_err();
        assert!(matches!(stale, Unhealthy::Stale { .. }));
        assert!(stale.to_string().contains("16.0 s ago"), "{stale}");
        // A clock that went back: age zero, healthy.
        let before = modified - Duration::from_secs(60);
        assert_eq!(check_heartbeat(&path, max, before).unwrap(), Duration::ZERO);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
