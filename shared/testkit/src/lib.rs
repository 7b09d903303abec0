//! Dev-only helpers: never a dependency of a deployed function's code, only of tests,
//! benches and the local devstack.
//!
//! May depend on `domain`, `adapters` and `app` (feature `services`); never on a function
//! crate, and no deployed crate depends on it.
//!
//! - [`events`]: typed API Gateway (REST and WebSocket) and SQS events, built with
//!   `aws_lambda_events`, as AWS would send them. Always available; needs no AWS SDK and
//!   no project crate (`domain`, `adapters`).
//! - [`wait`] (feature `wait`, part of `web` and `services`): [`wait::poll`], a condition
//!   polled until it holds, within a bound.
//! - [`web`] (feature `web`): a test HTTP client with a timeout, and `get_json`.
//! - [`fuzz`] (feature `fuzz`): `proptest` strategies for hostile input (text with
//!   multi-byte characters, numbers and dates past every limit, deep and odd JSON).
//! - [`services`] (feature `services`): fixtures against the real PostgreSQL, Redis and
//!   moto that `make test` starts: the ledger, the cache, a FIFO queue of one's own, the
//!   use cases' `Deps`, quotes, accounts, a loopback SQS stub and the bench timer.
//!
//! Heavier helpers go in modules of their own behind a Cargo feature, declared here as
//! `#[cfg(feature = "<name>")] pub mod <name>;` with the feature (and its optional
//! dependencies) in `Cargo.toml`, so that the default build stays light.

pub mod events;
#[cfg(feature = "fuzz")]
pub mod fuzz;
#[cfg(feature = "wait")]
pub mod wait;
#[cfg(feature = "web")]
pub mod web;

#[cfg(feature = "services")]
pub mod services;
#[cfg(feature = "services")]
pub use services::*;
