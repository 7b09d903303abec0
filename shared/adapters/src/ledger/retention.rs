//! The bookkeeping's retention (migration 0006): processed command ids, webhook deliveries
//! and dead letters older than a cutoff are deleted in batches, so one prune never holds
//! long locks or a long transaction, and a prune that stops halfway is simply resumed by
//! the next. The ledger's facts (orders, fills, positions, accounts) are never pruned.

use chrono::{DateTime, Utc};

use super::{pg, Ledger};
use crate::error::DependencyError;

/// Rows deleted per statement.
const BATCH: i64 = 5_000;

/// Statements per table per prune: a prune deletes at most `BATCH × MAX_BATCHES` rows of a
/// table (a backlog is worked off over several runs).
const MAX_BATCHES: usize = 200;

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub processed_commands: u64,
    pub webhook_deliveries: u64,
    pub dead_letters: u64,
}

/// Each table with its time column.
const TABLES: [(&str, &str); 3] = [
    ("processed_commands", "processed_at"),
    ("webhook_deliveries", "received_at"),
    ("dead_letters", "dead_at"),
];

impl Ledger {
    /// Deletes the bookkeeping rows older than `before`.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<Pruned, DependencyError> {
        let mut counts = [0u64; 3];
        for ((table, column), count) in TABLES.iter().zip(counts.iter_mut()) {
            let sql = format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(\
                   SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
            );
            for _ in 0..MAX_BATCHES {
                let deleted = sqlx::query(&sql)
                    .bind(before)
                    .bind(BATCH)
                    .execute(self.pool())
                    .await
                    .map_err(pg)?
                    .rows_affected();
                *count += deleted;
                if deleted < BATCH as u64 {
                    break;
                }
            }
        }
        let [processed_commands, webhook_deliveries, dead_letters] = counts;
        Ok(Pruned {
            processed_commands,
            webhook_deliveries,
            dead_letters,
        })
    }
}
