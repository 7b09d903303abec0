//! Ports and their implementations: the ledger (PostgreSQL), the cache (Redis: prices,
//! sessions, pending orders, positions snapshots and connection notifications), the command
//! queue (SQS FIFO), the WebSocket connection table (DynamoDB), pushes to WebSocket clients
//! (API Gateway management API), credentials, configuration and telemetry.
//!
//! Depends on `domain` only among the workspace crates; every connection, key name and SQL
//! statement of the platform lives here, and nothing here knows HTTP or Lambda events.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod auth;
pub mod aws;
pub mod cache;
pub mod config;
pub mod connections;
pub mod error;
pub mod keyspace;
pub mod ledger;
pub mod live;
pub mod push;
pub mod queue;
pub mod ratelimit;
pub mod redis_conn;
pub mod schema;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod webhooks;

pub use error::DependencyError;

/// Milliseconds since the Unix epoch, the clock prices are stamped with.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
