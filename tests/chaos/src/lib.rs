//! The chaos suite (`make chaos`; a smoke run in `make test`): the whole local stack
//! (devstack and its functions, executor, ingest, feed, PostgreSQL, Redis, moto) driven by
//! a seeded mix of clients over many accounts while faults are injected on a schedule, then
//! drained and audited.
//!
//! - [`driver`]: the clients (orders of every kind, replaces and cancels racing fills,
//!   alerts re-sent, the kill switch) and the scripted prices, recording what they saw;
//! - [`faults`]: the faults, each its own switch;
//! - [`snapshot`] and [`audit`]: the independent auditor, which reads PostgreSQL with its
//!   own SQL and recomputes the books with its own arithmetic;
//! - [`soak`]: the soak's sampler (memory, keys, table sizes, latency every 10 s);
//! - [`report`]: the figures of a run, as Markdown for RELIABILITY.md.

pub mod audit;
pub mod driver;
pub mod faults;
pub mod record;
pub mod report;
pub mod snapshot;
pub mod soak;
