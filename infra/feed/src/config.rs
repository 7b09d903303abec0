//! Command-line / environment configuration of the feed.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Binance-protocol replay server for local development and tests.
#[derive(Debug, Clone, Parser)]
#[command(name = "feed", version, about)]
pub struct Config {
    /// Address to listen on (HTTP + WebSocket on one port).
    #[arg(long, env = "FEED_LISTEN", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,

    /// Directory holding `<symbol>_<date>.gz` recordings.
    #[arg(long, env = "FEED_DATA_DIR", default_value = default_data_dir())]
    pub data_dir: PathBuf,

    /// Replay speed multiplier (1 = real time, 10 = ten times faster, 0 = as fast as possible).
    #[arg(long, env = "FEED_SPEED", default_value_t = 1.0)]
    pub speed: f64,

    /// Recorded symbols to replay, comma separated (e.g. `btcusdt,ethusdt`). Default: all found.
    #[arg(long, env = "FEED_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<String>,

    /// How often (ms) a script-controlled quote is re-emitted while it stays controlled.
    #[arg(long, env = "FEED_REPEAT_MS", default_value_t = 1000)]
    pub repeat_ms: u64,

    /// Interval between server pings to each client, in seconds.
    #[arg(long, env = "FEED_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ping_interval_secs: u64,

    /// A client that has not answered a ping (nor sent any pong) for this long is dropped.
    #[arg(long, env = "FEED_PONG_TIMEOUT_SECS", default_value_t = 60)]
    pub pong_timeout_secs: u64,

    /// Messages buffered per client before new ones are dropped (and counted).
    #[arg(long, env = "FEED_CLIENT_BUFFER", default_value_t = 4096)]
    pub client_buffer: usize,
}

fn default_data_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/data")
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            data_dir: PathBuf::from(default_data_dir()),
            speed: 1.0,
            symbols: Vec::new(),
            repeat_ms: 1000,
            ping_interval_secs: 20,
            pong_timeout_secs: 60,
            client_buffer: 4096,
        }
    }
}

impl Config {
    /// Rejects values that cannot work (negative or non-finite speed, zero intervals).
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.speed.is_finite() || self.speed < 0.0 {
            anyhow::bail!("--speed must be a finite number >= 0, got {}", self.speed);
        }
        if self.repeat_ms == 0 {
            anyhow::bail!("--repeat-ms must be > 0");
        }
        if self.ping_interval_secs == 0 || self.pong_timeout_secs == 0 {
            anyhow::bail!("--ping-interval-secs and --pong-timeout-secs must be > 0");
        }
        if self.client_buffer == 0 {
            anyhow::bail!("--client-buffer must be > 0");
        }
        Ok(())
    }
}
