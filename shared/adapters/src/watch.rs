//! The trigger index in Redis: every resting order's [`Watch`], a derived copy of the ledger
//! that the executor keeps current after each commit and the ingest task reads. It can be
//! rebuilt from the ledger at any time (at start, or when Redis lost it).
//!
//! Layout under the key prefix `{p}`:
//! - `{p}watch:{SYMBOL}`: hash, order id → watch JSON;
//! - `{p}watch:symbols`: set of the symbols that have (or had) a hash;
//! - `{p}watch:log`: stream of changes, `XADD MAXLEN ~ 100000`; entries are
//!   `op=put symbol=… order_id=… json=…` or `op=del symbol=… order_id=…`;
//! - `{p}watch:built`: marker (build time in ms) set by a complete build. Its absence means
//!   Redis was flushed or never built: the copy must be rebuilt from the ledger.
//!
//! Symbols are upper case (`BTCUSDT`), so they never collide with the lower-case names of the
//! other keys. The scripts touch keys they derive from the prefix, which is fine on a single
//! Redis (ElastiCache with cluster mode off), not on Redis Cluster.
//!
//! Readers take a snapshot with [`WatchIndex::load`] and follow the log from the stream id
//! it returns with [`WatchIndex::poll`] / [`WatchIndex::changes_since`]; replaying a change
//! twice is harmless (puts and deletes are idempotent, and the last change of an order wins).

use std::collections::BTreeMap;
use std::time::Duration;

use domain::trigger::Watch;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::error::DependencyError;
use crate::redis_conn::LazyRedis;

/// The change log keeps about this many entries (`XADD MAXLEN ~`).
pub const LOG_MAXLEN: usize = 100_000;
/// The stream id before every entry.
pub const START_ID: &str = "0-0";
/// Entries read per `XRANGE` call.
const READ_BATCH: usize = 10_000;
/// Watches written per pipeline when rebuilding.
const WRITE_BATCH: usize = 2_000;
/// Symbols read per pipeline when loading.
const LOAD_BATCH: usize = 100;

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    Put(Watch),
    Remove { symbol: String, order_id: Uuid },
}

impl WatchChange {
    pub fn order_id(&self) -> Uuid {
        match self {
            WatchChange::Put(w) => w.order_id,
            WatchChange::Remove { order_id, .. } => *order_id,
        }
    }
}

/// What [`WatchIndex::poll`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// Changes after the given id, oldest first.
    pub changes: Vec<WatchChange>,
    /// The id to poll from next time (the given one when there was nothing new).
    pub last_id: String,
    /// The build marker is present. When it is not, the copy must be rebuilt.
    pub built: bool,
    /// The oldest entry still in the log is newer than the given id: entries may have been
    /// trimmed unread, so the reader should reload the snapshot.
    pub gap: bool,
}

/// Applies a change log entry in Redis; used by rebuilds to replay what happened while the
/// ledger was read. KEYS: log, symbols set, marker. ARGV: since (exclusive), hash key prefix,
/// marker value.
const REPLAY_AND_MARK: &str = r#"
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
for _, e in ipairs(entries) do
  local f = e[2]
  local m = {}
  for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
  if m['symbol'] and m['order_id'] then
    local key = ARGV[2] .. m['symbol']
    if m['op'] == 'put' and m['json'] then
      redis.call('HSET', key, m['order_id'], m['json'])
      redis.call('SADD', KEYS[2], m['symbol'])
    elseif m['op'] == 'del' then
      redis.call('HDEL', key, m['order_id'])
    end
  end
end
redis.call('SET', KEYS[3], ARGV[3])
return #entries
"#;

/// HSET only where the field exists (a moved mark must not resurrect a removed order).
/// KEYS: hashes; ARGV: order id and JSON per key.
const SET_IF_PRESENT: &str = r#"
local n = 0
for i, key in ipairs(KEYS) do
  local id = ARGV[2 * i - 1]
  if redis.call('HEXISTS', key, id) == 1 then
    redis.call('HSET', key, id, ARGV[2 * i])
    n = n + 1
  end
end
return n
"#;

/// Stream ids compare as (milliseconds, sequence).
fn parse_id(id: &str) -> (u64, u64) {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let seq = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ms, seq)
}

fn parse_entry(fields: &[String]) -> Option<WatchChange> {
    let mut op = None;
    let mut symbol = None;
    let mut order_id = None;
    let mut json = None;
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            "op" => op = Some(pair[1].as_str()),
            "symbol" => symbol = Some(pair[1].clone()),
            "order_id" => order_id = Uuid::parse_str(&pair[1]).ok(),
            "json" => json = Some(pair[1].as_str()),
            _ => {}
        }
    }
    match op? {
        "put" => serde_json::from_str(json?).ok().map(WatchChange::Put),
        "del" => Some(WatchChange::Remove {
            symbol: symbol?,
            order_id: order_id?,
        }),
        _ => None,
    }
}

type StreamEntries = Vec<(String, Vec<String>)>;

pub struct WatchIndex {
    redis: LazyRedis,
    keys: crate::keyspace::Keyspace,
}

/// Up to [`READ_BATCH`] entries of the log after `id` (exclusive), oldest first.
fn entries_after(log: &str, id: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(log)
        .arg(format!("({id}"))
        .arg("+")
        .arg("COUNT")
        .arg(READ_BATCH);
    cmd
}

impl WatchIndex {
    /// Creates the client; connects lazily on first use.
    pub fn new(url: &str, prefix: &str) -> Result<WatchIndex, DependencyError> {
        Ok(WatchIndex {
            // Rebuilds write up to 100k entries in one round trip: allow them the time.
            redis: LazyRedis::new(url, Duration::from_secs(5))?,
            keys: crate::keyspace::Keyspace::new(prefix),
        })
    }

    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    async fn conn(&self) -> Result<ConnectionManager, DependencyError> {
        self.redis.conn().await
    }

    /// The symbols that have a hash in the index.
    async fn indexed_symbols(
        &self,
        c: &mut ConnectionManager,
    ) -> Result<Vec<String>, DependencyError> {
        redis::cmd("SMEMBERS")
            .arg(self.symbols_key())
            .query_async(c)
            .await
            .map_err(DependencyError::redis)
    }

    /// `{p}watch:` — the prefix of the per-symbol hashes.
    fn hash_prefix(&self) -> String {
        self.keys.watch_hash_prefix()
    }

    /// The hash of one symbol's watches.
    pub fn symbol_key(&self, symbol: &str) -> String {
        self.keys.watch(symbol)
    }

    pub fn symbols_key(&self) -> String {
        self.keys.watch_symbols()
    }

    pub fn log_key(&self) -> String {
        self.keys.watch_log()
    }

    pub fn marker_key(&self) -> String {
        self.keys.watch_built()
    }

    /// Every key of the index (the hashes of the symbols in the set, the set, the log and the
    /// marker), for tests and tools.
    pub async fn keys(&self) -> Result<Vec<String>, DependencyError> {
        let mut c = self.conn().await?;
        let symbols = self.indexed_symbols(&mut c).await?;
        let mut keys: Vec<String> = symbols.iter().map(|s| self.symbol_key(s)).collect();
        keys.extend([self.symbols_key(), self.log_key(), self.marker_key()]);
        Ok(keys)
    }

    /// Records what one commit changed, in one atomic round trip: the hashes and the log.
    /// `removes` are `(symbol, order id)`.
    pub async fn apply(
        &self,
        puts: &[Watch],
        removes: &[(String, Uuid)],
    ) -> Result<(), DependencyError> {
        if puts.is_empty() && removes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let (log, symbols) = (self.log_key(), self.symbols_key());
        for w in puts {
            let json = serde_json::to_string(w).map_err(DependencyError::redis)?;
            let id = w.order_id.to_string();
            pipe.cmd("HSET")
                .arg(self.symbol_key(&w.symbol))
                .arg(&id)
                .arg(&json)
                .ignore();
            pipe.cmd("SADD").arg(&symbols).arg(&w.symbol).ignore();
            log_entry(&mut pipe, &log, "put", &w.symbol, &id)
                .arg("json")
                .arg(&json)
                .ignore();
        }
        for (symbol, order_id) in removes {
            let id = order_id.to_string();
            pipe.cmd("HDEL")
                .arg(self.symbol_key(symbol))
                .arg(&id)
                .ignore();
            log_entry(&mut pipe, &log, "del", symbol, &id).ignore();
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    /// The id of the newest log entry (`0-0` for an empty or missing log).
    pub async fn last_id(&self) -> Result<String, DependencyError> {
        let mut c = self.conn().await?;
        let newest: StreamEntries = redis::cmd("XREVRANGE")
            .arg(self.log_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(newest
            .into_iter()
            .next()
            .map(|(id, _)| id)
            .unwrap_or_else(|| START_ID.to_string()))
    }

    /// True when a complete build is in Redis.
    pub async fn is_built(&self) -> Result<bool, DependencyError> {
        let mut c = self.conn().await?;
        redis::cmd("EXISTS")
            .arg(self.marker_key())
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    /// Every watch and the log id to follow changes from, or `None` when the copy is not
    /// built. The id is taken before the hashes are read, so replaying the log from it
    /// misses nothing (and repeats, harmlessly, what the hashes already showed).
    pub async fn load(&self) -> Result<Option<(Vec<Watch>, String)>, DependencyError> {
        let mut c = self.conn().await?;
        let (built, newest, symbols): (bool, StreamEntries, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(self.marker_key())
            .cmd("XREVRANGE")
            .arg(self.log_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("SMEMBERS")
            .arg(self.symbols_key())
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        if !built {
            return Ok(None);
        }
        let id = newest
            .into_iter()
            .next()
            .map(|(id, _)| id)
            .unwrap_or_else(|| START_ID.to_string());
        let mut watches = Vec::new();
        let mut unreadable = 0usize;
        for chunk in symbols.chunks(LOAD_BATCH) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.cmd("HVALS").arg(self.symbol_key(s));
            }
            let values: Vec<Vec<String>> = pipe
                .query_async(&mut c)
                .await
                .map_err(DependencyError::redis)?;
            for raw in values.iter().flatten() {
                match serde_json::from_str::<Watch>(raw) {
                    Ok(w) => watches.push(w),
                    Err(_) => unreadable += 1,
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(unreadable, "unreadable watches skipped");
        }
        Ok(Some((watches, id)))
    }

    /// The changes after `since` (exclusive), oldest first, and the id to continue from.
    pub async fn changes_since(
        &self,
        since: &str,
    ) -> Result<(Vec<WatchChange>, String), DependencyError> {
        let poll = self.poll(since).await?;
        Ok((poll.changes, poll.last_id))
    }

    /// The changes after `since` (exclusive) with the marker's presence and a gap check, in
    /// one round trip when fewer than 10,000 changes are waiting.
    pub async fn poll(&self, since: &str) -> Result<Poll, DependencyError> {
        let mut c = self.conn().await?;
        let log = self.log_key();
        let (built, oldest, mut batch): (bool, StreamEntries, StreamEntries) = redis::pipe()
            .cmd("EXISTS")
            .arg(self.marker_key())
            .cmd("XRANGE")
            .arg(&log)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .add_command(entries_after(&log, since))
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        let gap = since != START_ID
            && oldest
                .first()
                .is_some_and(|(id, _)| parse_id(id) > parse_id(since));
        let mut last_id = since.to_string();
        let mut changes = Vec::new();
        loop {
            let full = batch.len() == READ_BATCH;
            for (id, fields) in &batch {
                match parse_entry(fields) {
                    Some(change) => changes.push(change),
                    None => tracing::warn!(%id, "unreadable watch log entry skipped"),
                }
            }
            if let Some((id, _)) = batch.last() {
                last_id = id.clone();
            }
            if !full {
                break;
            }
            batch = entries_after(&log, &last_id)
                .query_async(&mut c)
                .await
                .map_err(DependencyError::redis)?;
        }
        Ok(Poll {
            changes,
            last_id,
            built,
            gap,
        })
    }

    /// Replaces the whole copy with `watches` and sets the marker. Changes logged while it
    /// runs are replayed on top. To also keep changes made between reading `watches` from the
    /// ledger and this call, take [`WatchIndex::last_id`] before reading the ledger and use
    /// [`WatchIndex::rebuild_since`].
    pub async fn rebuild(&self, watches: Vec<Watch>) -> Result<(), DependencyError> {
        let since = self.last_id().await?;
        self.rebuild_since(watches, &since).await
    }

    /// Replaces the whole copy with `watches` (read from the ledger after `since` was the
    /// newest log id), then, atomically, replays every change logged after `since` (the
    /// executor's commits since the ledger read, which the snapshot may lack) and sets the
    /// marker. The log itself is kept, so readers following it miss nothing.
    pub async fn rebuild_since(
        &self,
        watches: Vec<Watch>,
        since: &str,
    ) -> Result<(), DependencyError> {
        let mut c = self.conn().await?;
        // 1. Drop the old copy (and the marker, so readers know it is incomplete).
        let symbols = self.indexed_symbols(&mut c).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.marker_key()).ignore();
        pipe.cmd("DEL").arg(self.symbols_key()).ignore();
        for s in &symbols {
            pipe.cmd("DEL").arg(self.symbol_key(s)).ignore();
        }
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        // 2. Write the snapshot, a pipeline per batch.
        for chunk in watches.chunks(WRITE_BATCH) {
            let mut by_symbol: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
            for w in chunk {
                let json = serde_json::to_string(w).map_err(DependencyError::redis)?;
                by_symbol
                    .entry(w.symbol.as_str())
                    .or_default()
                    .push((w.order_id.to_string(), json));
            }
            let mut pipe = redis::pipe();
            for (symbol, fields) in &by_symbol {
                pipe.cmd("HSET")
                    .arg(self.symbol_key(symbol))
                    .arg(fields)
                    .ignore();
            }
            let names: Vec<&str> = by_symbol.keys().copied().collect();
            if !names.is_empty() {
                pipe.cmd("SADD").arg(self.symbols_key()).arg(names).ignore();
            }
            pipe.query_async::<()>(&mut c)
                .await
                .map_err(DependencyError::redis)?;
        }
        // 3. Replay what was logged since, and mark the copy complete, atomically.
        // (EVAL with the text: the scripts are small, and the redis crate's `script` feature
        // is not enabled in this workspace.)
        let replayed: i64 = redis::cmd("EVAL")
            .arg(REPLAY_AND_MARK)
            .arg(3)
            .arg(self.log_key())
            .arg(self.symbols_key())
            .arg(self.marker_key())
            .arg(since)
            .arg(self.hash_prefix())
            .arg(crate::now_ms())
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        tracing::info!(
            watches = watches.len(),
            replayed,
            "trigger index rebuilt in redis"
        );
        Ok(())
    }

    /// Writes moved trailing marks back: each watch replaces the stored one only if the
    /// order is still there. Not logged: marks are the reader's own bookkeeping.
    pub async fn save_marks(&self, watches: &[Watch]) -> Result<usize, DependencyError> {
        let mut c = self.conn().await?;
        let mut saved = 0usize;
        for chunk in watches.chunks(500) {
            let mut call = redis::cmd("EVAL");
            call.arg(SET_IF_PRESENT).arg(chunk.len());
            for w in chunk {
                call.arg(self.symbol_key(&w.symbol));
            }
            for w in chunk {
                let json = serde_json::to_string(w).map_err(DependencyError::redis)?;
                call.arg(w.order_id.to_string()).arg(json);
            }
            let n: i64 = call
                .query_async(&mut c)
                .await
                .map_err(DependencyError::redis)?;
            saved += n as usize;
        }
        Ok(saved)
    }

    /// Deletes every key of the index (tests and tools: what a Redis flush does to it).
    pub async fn drop_all(&self) -> Result<(), DependencyError> {
        self.redis.del(self.keys().await?).await?;
        Ok(())
    }
}

/// Starts the `XADD` of one log entry (`op`, `symbol`, `order_id`; a put adds its `json`),
/// the log capped at about [`LOG_MAXLEN`] entries.
fn log_entry<'p>(
    pipe: &'p mut redis::Pipeline,
    log: &str,
    op: &str,
    symbol: &str,
    order_id: &str,
) -> &'p mut redis::Pipeline {
    pipe.cmd("XADD")
        .arg(log)
        .arg("MAXLEN")
        .arg("~")
        .arg(LOG_MAXLEN)
        .arg("*")
        .arg("op")
        .arg(op)
        .arg("symbol")
        .arg(symbol)
        .arg("order_id")
        .arg(order_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(parse_id("1700000000000-10") > parse_id("1700000000000-9"));
        assert!(parse_id("10-0") > parse_id("9-5"));
        assert_eq!(parse_id("0-0"), (0, 0));
    }

    #[test]
    fn log_entries_parse() {
        let id = Uuid::new_v4();
        let del = parse_entry(&[
            "op".into(),
            "del".into(),
            "symbol".into(),
            "BTCUSDT".into(),
            "order_id".into(),
            id.to_string(),
        ]);
        assert_eq!(
            del,
            Some(WatchChange::Remove {
                symbol: "BTCUSDT".into(),
                order_id: id
            })
        );
        assert_eq!(parse_entry(&["op".into(), "put".into()]), None);
    }
}
