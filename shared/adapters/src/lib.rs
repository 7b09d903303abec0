//! Ports and their implementations: the ledger (PostgreSQL), the cache (Redis: prices,
//! sessions, pending orders), the command queue (SQS FIFO), credentials, configuration,
//! telemetry and the mapping of errors to HTTP answers.

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod ledger;
pub mod queue;
pub mod redis_conn;
pub mod telemetry;
pub mod watch;

pub mod testkit;

pub use error::{ApiError, DependencyError};

/// Milliseconds since the Unix epoch, the clock prices are stamped with.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
