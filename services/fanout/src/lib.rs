//! WebSocket fan-out: after every flush, push the changed prices (and the account's PnL) to
//! the WebSocket clients subscribed to them, through API Gateway's `@connections` API.
//!
//! - [`plan`]: the index (symbol → connections, account → connections, positions snapshots)
//!   and the planner (which connection gets what message at `now_ms`), free of I/O.
//! - [`run`]: the runner: Redis pub/sub, table scans, snapshot loads, pushes.
//!
//! # How the index stays fresh without a read per flush
//!
//! The runner SUBSCRIBEs to `{prefix}connections` ([`domain::realtime::ConnectionChange`]s
//! from the ws function) and `{prefix}positions` (snapshots from the executor) *before* it
//! scans the connection table (`ConnectionTable::scan`), so no change made during the scan is
//! missed; the scan's result is merged so that a notification applied after the scan began
//! wins. After a pub/sub reconnect (changes may have been missed while disconnected) it scans
//! again, and every `FANOUT_RESCAN_SECS` as a repair. Items whose `ttl` passed are ignored
//! and dropped. An account's snapshot is loaded (`Cache::snapshots`) when its first
//! connection appears, then replaced by the notifications; every re-scan reads all of them
//! back as well (a snapshot is whole, so the newest read wins).
//!
//! # Messages
//!
//! At most one message per connection per flush and per `max_rate_ms` (at least
//! [`domain::realtime::MIN_RATE_MS`]), and only if something changed: every subscribed symbol
//! that changed since its last message (latest quote each) plus the account's PnL when its
//! text changed; `pnl` alone when only the PnL moved. Changes that arrive while a connection
//! must wait (rate, push in flight, retry backoff) accumulate and go out at the first tick
//! (every `FLUSH_INTERVAL_MS`) that allows it, with or without a new flush.
//!
//! # Pushes
//!
//! One [`adapters::push::Pusher`] (one SDK client, its HTTP connections reused), at most
//! `FANOUT_CONCURRENCY` posts at once; planned messages beyond that wait in an outbox (at
//! most one per connection). A connection with a push in flight or waiting is not planned
//! again, so its messages stay in order. 410 Gone: the item is deleted from the table and
//! the connection dropped from the index. Other failures: the content is pending again and
//! retried after 100 ms · 2^(n−1), at most 5 s. The flush hook only copies the quotes into a
//! channel; nothing here ever delays a flush.
//!
//! One of the three services the `ingest` task runs. Depends on `domain`, `adapters` and
//! `market_data` (for the [`market_data::tap::QuoteFeed`] of flushed quotes); never on a
//! function crate.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod plan;
pub mod run;

pub use plan::{Fanout, Outcome, Outgoing};
pub use run::{spawn, FanoutArgs, FanoutConfig, FanoutCounts, FanoutHandle, FanoutStats};
