//! What the real-time fan-out reads from Redis instead of the ledger or the connection table:
//!
//! - `{prefix}positions:{account}`: the account's [`PositionsSnapshot`] (cash and open
//!   positions) as JSON, written by the executor after each commit that moved it, and by the
//!   ws function when a connection opens and none is there yet. Published on
//!   `{prefix}positions` too, so the fan-out updates its copy without polling.
//! - `{prefix}connections`: [`ConnectionChange`]s published by the ws function on connect,
//!   subscribe, unsubscribe and disconnect, so the fan-out index follows the connection table
//!   without reading it.
//!
//! Both are derived copies: a missed notification is repaired by the next one (a snapshot is
//! whole, a connection change carries the whole record) or by the fan-out's periodic re-scan.

use std::collections::HashMap;

use domain::realtime::{ConnectionChange, PositionsSnapshot};
use uuid::Uuid;

use crate::cache::Cache;
use crate::error::DependencyError;

/// Snapshots outlive any connection (2 h) and are rewritten on every change.
const SNAPSHOT_TTL_SECS: u64 = 7 * 24 * 3600;

fn encode<T: serde::Serialize>(v: &T) -> Result<String, DependencyError> {
    serde_json::to_string(v).map_err(DependencyError::redis)
}

impl Cache {
    /// Announces a change of the connection table.
    pub async fn publish_connection_change(
        &self,
        change: &ConnectionChange,
    ) -> Result<(), DependencyError> {
        let mut c = self.conn().await?;
        redis::cmd("PUBLISH")
            .arg(self.keys().connections_channel())
            .arg(encode(change)?)
            .query_async::<i64>(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(())
    }

    /// Stores and announces snapshots, in one round trip.
    pub async fn put_snapshots(&self, snaps: &[PositionsSnapshot]) -> Result<(), DependencyError> {
        if snaps.is_empty() {
            return Ok(());
        }
        let channel = self.keys().positions_channel();
        let mut pipe = redis::pipe();
        for s in snaps {
            let text = encode(s)?;
            pipe.cmd("SET")
                .arg(self.keys().positions(s.account_id))
                .arg(&text)
                .arg("EX")
                .arg(SNAPSHOT_TTL_SECS)
                .ignore();
            pipe.cmd("PUBLISH").arg(&channel).arg(text).ignore();
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    /// Stores and announces `snap` only if the account has none (a snapshot from the
    /// executor is at least as new as one read from the ledger by someone else).
    pub async fn put_snapshot_if_absent(
        &self,
        snap: &PositionsSnapshot,
    ) -> Result<bool, DependencyError> {
        let text = encode(snap)?;
        let mut c = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys().positions(snap.account_id))
            .arg(&text)
            .arg("NX")
            .arg("EX")
            .arg(SNAPSHOT_TTL_SECS)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        if set.is_some() {
            redis::cmd("PUBLISH")
                .arg(self.keys().positions_channel())
                .arg(text)
                .query_async::<i64>(&mut c)
                .await
                .map_err(DependencyError::redis)?;
        }
        Ok(set.is_some())
    }

    /// The snapshots of `accounts` that exist (unreadable ones are skipped and logged).
    pub async fn snapshots(
        &self,
        accounts: &[Uuid],
    ) -> Result<HashMap<Uuid, PositionsSnapshot>, DependencyError> {
        if accounts.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = accounts.iter().map(|a| self.keys().positions(*a)).collect();
        let mut c = self.conn().await?;
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| match serde_json::from_str::<PositionsSnapshot>(&v) {
                Ok(s) => Some((s.account_id, s)),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable positions snapshot skipped");
                    None
                }
            })
            .collect())
    }
}
