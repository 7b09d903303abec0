//! The cache (Redis / ElastiCache): latest prices written by the ingest task, login
//! sessions, and orders accepted by the api but not yet applied by the executor. Everything
//! here is derived or ephemeral; the ledger in Postgres is the truth.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use domain::order::{NewOrder, OrderRef};
use domain::quote::Quote;

use crate::keyspace::Keyspace;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::SessionSettings;
use crate::error::DependencyError;
use crate::redis_conn::LazyRedis;

/// How long an accepted order waits for the executor before its pending copy is dropped.
const PENDING_TTL_SECS: i64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Uuid,
    pub account_id: Uuid,
}

/// A session as stored: with its absolute deadline (Unix ms).
#[derive(Serialize, Deserialize)]
struct StoredSession {
    user_id: Uuid,
    account_id: Uuid,
    deadline_ms: u64,
}

/// Returns the session and slides its expiry to ARGV[1] ms, never past its deadline; a
/// session past its deadline (or without one: written before deadlines existed) is deleted.
/// KEYS[1] the session. Redis' clock, so instances with skewed clocks agree.
const TOUCH_SESSION_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, s = pcall(cjson.decode, v)
local deadline = ok and type(s) == 'table' and tonumber(s.deadline_ms) or nil
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if deadline == nil or deadline <= now then
  redis.call('DEL', KEYS[1])
  return false
end
local ttl = tonumber(ARGV[1])
if deadline - now < ttl then ttl = deadline - now end
redis.call('PEXPIRE', KEYS[1], ttl)
return v
";

static TOUCH_SESSION: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(TOUCH_SESSION_LUA));

/// The outcome of recording an accepted order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingPut {
    Created,
    /// An order with this id is already pending: here it is.
    Exists(Box<NewOrder>),
}

pub struct Cache {
    redis: LazyRedis,
    keys: Keyspace,
}

impl Cache {
    /// Creates the cache client; connects lazily on first use, so Lambda init stays lean.
    pub fn new(url: &str, prefix: &str) -> Result<Cache, DependencyError> {
        Ok(Cache {
            redis: LazyRedis::new(url, Duration::from_secs(2))?,
            keys: Keyspace::new(prefix),
        })
    }

    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The key names this cache reads and writes.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    pub async fn conn(&self) -> Result<ConnectionManager, DependencyError> {
        self.redis.conn().await
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        let mut c = self.conn().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(())
    }

    // ---- prices --------------------------------------------------------------------

    pub async fn quote(&self, symbol: &str) -> Result<Option<Quote>, DependencyError> {
        let mut c = self.conn().await?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.keys.price(symbol))
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// The latest quotes of several symbols in one round trip; missing symbols are absent.
    pub async fn quotes(
        &self,
        symbols: &[String],
    ) -> Result<HashMap<String, Quote>, DependencyError> {
        if symbols.is_empty() {
            return Ok(HashMap::new());
        }
        let mut c = self.conn().await?;
        let keys: Vec<String> = symbols.iter().map(|s| self.keys.price(s)).collect();
        let raws: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(raws
            .into_iter()
            .flatten()
            .filter_map(|r| serde_json::from_str::<Quote>(&r).ok())
            .map(|q| (q.symbol.clone(), q))
            .collect())
    }

    /// Writes a quote (used by tests and tools; the ingest task writes its own batches).
    pub async fn put_quote(&self, quote: &Quote, ttl_ms: u64) -> Result<(), DependencyError> {
        self.set_json(self.keys.price(&quote.symbol), quote, ttl_ms)
            .await
    }

    /// Writes `value` as JSON under `key`, to expire `ttl_ms` from now.
    async fn set_json(
        &self,
        key: String,
        value: &impl serde::Serialize,
        ttl_ms: u64,
    ) -> Result<(), DependencyError> {
        let mut c = self.conn().await?;
        let value = serde_json::to_string(value).map_err(DependencyError::redis)?;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    // ---- sessions ------------------------------------------------------------------
    //
    // A session is `{p}sess:{digest}`: JSON of its user, account and absolute deadline
    // (`deadline_ms`, Unix ms), expiring after the sliding TTL but never after the deadline.
    // `{p}usess:{user}` is the set of the user's session digests, so that revoking them all
    // is one call; it lives as long as the newest session may. A digest in the set whose
    // session has expired is harmless (revoking deletes a missing key).

    fn session_key(&self, token_digest: &str) -> String {
        self.keys.session(token_digest)
    }

    /// Opens a session: it slides by `times.ttl_secs` on use and ends at the latest
    /// `times.max_lifetime_secs` from now, whatever its use.
    pub async fn put_session(
        &self,
        token_digest: &str,
        s: &Session,
        times: &SessionSettings,
    ) -> Result<(), DependencyError> {
        let lifetime_ms = times.max_lifetime_secs.saturating_mul(1000).max(1);
        let ttl_ms = times.ttl_secs.saturating_mul(1000).clamp(1, lifetime_ms);
        let mut c = self.conn().await?;
        let (now_s, now_us): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        let now_ms = now_s.saturating_mul(1000).saturating_add(now_us / 1000);
        let stored = StoredSession {
            user_id: s.user_id,
            account_id: s.account_id,
            deadline_ms: now_ms.saturating_add(lifetime_ms),
        };
        let value = serde_json::to_string(&stored).map_err(DependencyError::redis)?;
        let index = self.keys.user_sessions(s.user_id);
        // Two keys in two hash slots: separate commands (ElastiCache Serverless refuses a
        // transaction across slots); the index is written first, so no session exists that
        // a revocation cannot find.
        redis::pipe()
            .cmd("SADD")
            .arg(&index)
            .arg(token_digest)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(lifetime_ms)
            .ignore()
            .cmd("SET")
            .arg(self.session_key(token_digest))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    /// Looks a session up and slides its expiry forward (never past its deadline), in one
    /// round trip.
    pub async fn touch_session(
        &self,
        token_digest: &str,
        ttl_secs: u64,
    ) -> Result<Option<Session>, DependencyError> {
        let mut c = self.conn().await?;
        let raw: Option<String> = TOUCH_SESSION
            .key(self.session_key(token_digest))
            .arg(ttl_secs.saturating_mul(1000).max(1))
            .invoke_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(raw
            .and_then(|r| serde_json::from_str::<StoredSession>(&r).ok())
            .map(|s| Session {
                user_id: s.user_id,
                account_id: s.account_id,
            }))
    }

    pub async fn delete_session(&self, token_digest: &str) -> Result<bool, DependencyError> {
        Ok(self.redis.del(self.session_key(token_digest)).await? > 0)
    }

    /// Ends every session of the user; returns how many were live.
    pub async fn revoke_user_sessions(&self, user_id: Uuid) -> Result<u64, DependencyError> {
        let mut c = self.conn().await?;
        let index = self.keys.user_sessions(user_id);
        let digests: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        if digests.is_empty() {
            return Ok(0);
        }
        // One DEL per session (each its own slot), then only the digests read are taken
        // out of the index: a session opened meanwhile stays in it, revocable.
        let mut pipe = redis::pipe();
        for d in &digests {
            pipe.cmd("DEL").arg(self.session_key(d));
        }
        pipe.cmd("SREM").arg(&index).arg(&digests).ignore();
        let deleted: Vec<u64> = pipe
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(deleted.iter().sum())
    }

    // ---- orders accepted but not yet applied -----------------------------------------

    fn pending_key(&self, account_id: Uuid) -> String {
        self.keys.pending_orders(account_id)
    }

    /// Records an accepted order unless one with the same id is already pending
    /// (HSETNX: the first request wins, a retry sees what the first one recorded).
    pub async fn put_pending_order(&self, order: &NewOrder) -> Result<PendingPut, DependencyError> {
        let mut c = self.conn().await?;
        let key = self.pending_key(order.account_id);
        let value = serde_json::to_string(order).map_err(DependencyError::redis)?;
        let (created, existing, _): (bool, Option<String>, i64) = redis::pipe()
            .atomic()
            .cmd("HSETNX")
            .arg(&key)
            .arg(order.id.to_string())
            .arg(&value)
            .cmd("HGET")
            .arg(&key)
            .arg(order.id.to_string())
            .cmd("EXPIRE")
            .arg(&key)
            .arg(PENDING_TTL_SECS)
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        if created {
            return Ok(PendingPut::Created);
        }
        match existing.and_then(|e| serde_json::from_str(&e).ok()) {
            Some(o) => Ok(PendingPut::Exists(Box::new(o))),
            None => Ok(PendingPut::Created),
        }
    }

    pub async fn pending_order(
        &self,
        order: OrderRef,
    ) -> Result<Option<NewOrder>, DependencyError> {
        let mut c = self.conn().await?;
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.pending_key(order.account_id))
            .arg(order.order_id.to_string())
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    pub async fn pending_orders(&self, account_id: Uuid) -> Result<Vec<NewOrder>, DependencyError> {
        let mut c = self.conn().await?;
        let raws: Vec<String> = redis::cmd("HVALS")
            .arg(self.pending_key(account_id))
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(raws
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Drops the pending copy once the ledger holds the order (or the enqueue failed).
    pub async fn clear_pending_order(&self, order: OrderRef) -> Result<(), DependencyError> {
        self.clear_pending_orders(order.account_id, &[order.order_id])
            .await
    }

    /// Drops the pending copies of orders of several accounts in one round trip.
    pub async fn clear_pending_many(
        &self,
        by_account: &HashMap<Uuid, Vec<Uuid>>,
    ) -> Result<(), DependencyError> {
        if by_account.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for (account, ids) in by_account {
            let fields: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            pipe.cmd("HDEL")
                .arg(self.pending_key(*account))
                .arg(fields)
                .ignore();
        }
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(DependencyError::redis)
    }

    /// Drops the pending copies of several orders of one account in one round trip.
    pub async fn clear_pending_orders(
        &self,
        account_id: Uuid,
        order_ids: &[Uuid],
    ) -> Result<(), DependencyError> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let fields: Vec<String> = order_ids.iter().map(Uuid::to_string).collect();
        redis::cmd("HDEL")
            .arg(self.pending_key(account_id))
            .arg(&fields)
            .query_async::<i64>(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(())
    }
}
