//! The trading domain, free of I/O: exact decimal amounts, the instrument catalog and its
//! filters, orders, average-cost accounting, the execution engine and risk rules, the
//! trigger index, and the commands that flow through the queue.
//!
//! Depends on no other crate of the workspace, and on nothing that does I/O (no tokio, no
//! AWS, no database or Redis client). Wire formats of outside systems live at the edges
//! (`alpaca`, `tradingview`); every other crate depends on this one.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod accounting;
pub mod amount;
pub mod bar;
pub mod catalog;
pub mod command;
pub mod decimal;
pub mod engine;
pub mod error;
pub mod order;
pub mod quote;
pub mod realtime;
pub mod risk;
pub mod trigger;
pub mod trigger_index;

pub use error::{RejectCode, RuleViolation};
