//! Configuration from the environment, read once at start. Every variable is documented
//! in the README.

use std::str::FromStr;

use rust_decimal::Decimal;

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the ledger.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` (default 5): pool size per process.
    pub database_max_connections: u32,
    /// `REDIS_URL`: prices, sessions, pending orders.
    pub redis_url: String,
    /// `KEY_PREFIX` (default empty): prefix of every Redis key, so deployments or test runs
    /// can share one Redis.
    pub key_prefix: String,
    /// `COMMANDS_QUEUE_URL`: the SQS FIFO queue of trade commands.
    pub queue_url: String,
    /// `FEE_BPS` (default 10): paper fee in basis points of the notional.
    pub fee_bps: Decimal,
    /// `MAX_PRICE_AGE_MS` (default 5000): an older price is no price.
    pub max_price_age_ms: i64,
    /// `INITIAL_CASH` (default 100000): paper USDT of a new account.
    pub initial_cash: Decimal,
    /// `SESSION_TTL_SECS` (default 86400): sliding expiry of login sessions.
    pub session_ttl_secs: u64,
    /// `CONNECTIONS_TABLE` (default `connections`): the DynamoDB WebSocket connection table.
    pub connections_table: String,
    /// `WS_MAX_CONNECTIONS_PER_USER` (default 5): open WebSocket connections per account.
    pub ws_max_connections_per_user: usize,
    /// `WS_MAX_SYMBOLS` (default 50): symbols one WebSocket connection may subscribe to.
    pub ws_max_symbols: usize,
    /// `RATE_REQUESTS_PER_MINUTE` (default 1200) and `RATE_REQUESTS_BURST` (default 200):
    /// the token bucket of every authenticated request of an account; 0 switches it off.
    pub rate_requests: crate::ratelimit::BucketSpec,
    /// `RATE_ORDERS_PER_MINUTE` (default 300) and `RATE_ORDERS_BURST` (default 50): the
    /// token bucket of new and replaced orders of an account (REST and webhooks).
    pub rate_orders: crate::ratelimit::BucketSpec,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parsed<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| ConfigError(format!("{name}={v}: {e}"))),
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "postgres://trading:trading@127.0.0.1:5432/trading".into()),
            database_max_connections: parsed("DATABASE_MAX_CONNECTIONS", 5)?,
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379/".into()),
            key_prefix: var("KEY_PREFIX").unwrap_or_default(),
            queue_url: var("COMMANDS_QUEUE_URL").unwrap_or_default(),
            fee_bps: parsed("FEE_BPS", Decimal::TEN)?,
            max_price_age_ms: parsed("MAX_PRICE_AGE_MS", 5_000)?,
            initial_cash: parsed("INITIAL_CASH", Decimal::from(100_000))?,
            session_ttl_secs: parsed("SESSION_TTL_SECS", 86_400)?,
            connections_table: var("CONNECTIONS_TABLE").unwrap_or_else(|| "connections".into()),
            ws_max_connections_per_user: parsed("WS_MAX_CONNECTIONS_PER_USER", 5)?,
            ws_max_symbols: parsed("WS_MAX_SYMBOLS", domain::realtime::DEFAULT_MAX_SYMBOLS)?,
            rate_requests: crate::ratelimit::BucketSpec {
                burst: parsed("RATE_REQUESTS_BURST", 200)?,
                per_minute: parsed("RATE_REQUESTS_PER_MINUTE", 1200)?,
            },
            rate_orders: crate::ratelimit::BucketSpec {
                burst: parsed("RATE_ORDERS_BURST", 50)?,
                per_minute: parsed("RATE_ORDERS_PER_MINUTE", 300)?,
            },
        })
    }

    pub fn execution_params(&self) -> domain::execution::ExecutionParams {
        domain::execution::ExecutionParams {
            fee_bps: self.fee_bps,
            max_price_age_ms: self.max_price_age_ms,
        }
    }
}
