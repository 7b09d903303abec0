//! The use cases of the platform, free of transport: what a request *does* once an edge
//! (the REST `api`, the TradingView `webhook`, the `ws` WebSocket) has read it.
//!
//! Depends on `domain` (the rules) and `adapters` (the ledger, cache, queue and limiter);
//! never on a function crate, HTTP types or Lambda events. Inputs are plain values
//! (credentials, parsed bodies, ids as text); outputs are domain values or [`ApiError`],
//! which every edge renders the same way.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod alerts;
pub mod auth;
pub mod close;
pub mod error;
pub mod orders;
pub mod panics;
pub mod realtime;
pub mod risk;
pub mod webhooks;

use adapters::cache::Cache;
use adapters::config::Config;
use adapters::connections::ConnectionTable;
use adapters::ledger::Ledger;
use adapters::push::Pusher;
use adapters::queue::CommandQueue;
use adapters::ratelimit::{LoginGuard, LoginPolicy, RateLimiter};
use domain::catalog::Catalog;

pub use auth::Principal;
pub use error::ApiError;

/// Everything a use case needs, built once per process.
pub struct Deps {
    pub config: Config,
    pub ledger: Ledger,
    pub cache: Cache,
    pub queue: CommandQueue,
    pub catalog: &'static Catalog,
    /// Per-account token buckets (requests, orders).
    pub limiter: RateLimiter,
    /// Login backoff per email and per source address.
    pub login_guard: LoginGuard,
    /// The WebSocket connections, and the management API that closes them (none without a
    /// WebSocket API): revoking a credential closes what it opened.
    pub connections: ConnectionTable,
    pub pusher: Option<Pusher>,
}

impl Deps {
    /// Builds clients without connecting: connections open on first use.
    pub fn from_config(config: Config) -> anyhow::Result<Deps> {
        let ledger = Ledger::connect_lazy(&config.database.url, config.database.max_connections)?;
        let cache = Cache::new(&config.redis.url, &config.redis.key_prefix)?;
        let queue = CommandQueue::new(config.queue.url_or_empty());
        Ok(Deps::with(config, ledger, cache, queue)?)
    }

    /// From clients built elsewhere (tests, benchmarks); the rate limiter shares the
    /// configuration's Redis and key prefix.
    pub fn with(
        config: Config,
        ledger: Ledger,
        cache: Cache,
        queue: CommandQueue,
    ) -> Result<Deps, adapters::DependencyError> {
        let limiter = RateLimiter::new(&config.redis.url, &config.redis.key_prefix)?;
        Ok(Deps {
            ledger,
            cache,
            queue,
            catalog: Catalog::builtin(),
            login_guard: limiter.login_guard(LoginPolicy::default()),
            limiter,
            connections: ConnectionTable::new(&config.connections.table),
            pusher: Pusher::configured(&config.connections),
            config,
        })
    }
}
