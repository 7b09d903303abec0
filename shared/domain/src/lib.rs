//! The trading domain, free of I/O: exact decimal amounts, the instrument catalog and its
//! filters, orders, average-cost accounting, and the commands that flow through the queue.

pub mod accounting;
pub mod alert;
pub mod amount;
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
