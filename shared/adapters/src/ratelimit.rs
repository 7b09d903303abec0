//! Token-bucket rate limits and login backoff, in Redis.
//!
//! Both live in Redis rather than in memory because every Lambda instance must see the same
//! counts: a limit kept per instance would multiply by the number of warm instances. Both use
//! Redis' own clock (`TIME`), never the caller's, so instances with skewed clocks agree.
//!
//! # Rate limits ([`RateLimiter`])
//!
//! A token bucket per `(name, subject)` at `{prefix}rl:{name}:{subject}`: a hash holding the
//! tokens left (`tokens`, fractional) and when they were counted (`ts`, ms). A bucket starts
//! full with `burst` tokens and refills continuously at `per_minute / 60` tokens a second, up
//! to `burst`; each request takes one token or is refused. One Lua script per take refills,
//! takes and stores atomically, so concurrent takes never both get the last token. Lua
//! numbers are doubles, which is fine for request counts. A refused take writes nothing. The
//! key expires (`PEXPIRE`) when the bucket would be full again, so an idle subject costs no
//! memory, and a missing key reads as a full bucket, which is the same thing.
//!
//! # Login backoff ([`LoginGuard`])
//!
//! Login attempts are counted per email *from one address* and per source address, each
//! under its own [`Backoff`]:
//! - an attempt is counted before its password is verified, by one Lua script per counter
//!   that checks the block and counts in one step, so N parallel guesses get no more
//!   verifications than N sequential ones; a success then takes its attempt back (the
//!   address's count) or clears the count (the email's from that address);
//! - the first `free_attempts` failures are free; failure number `n > free_attempts`
//!   blocks the subject for `base_secs * 2^(n - free_attempts)` seconds from that failure,
//!   capped at `max_secs` (with the defaults: failures 1–5 free, the 6th blocks 2 s, the 7th
//!   4 s, …, the 14th and later 900 s);
//! - the count is forgotten once `window_secs` pass without an attempt (the key lives
//!   `max(window_secs, max_secs)` after the last one, so no block is cut short);
//! - the email is counted per address, not globally: someone guessing at a victim's email
//!   from their addresses blocks those addresses, while the victim can still log in from an
//!   address that has not failed. The per-address count bounds what one address can guess
//!   across all emails.
//!
//! Defaults ([`LoginPolicy::default`]): per email and address 5 free attempts, per address
//! 20 (many users may share an address behind a NAT or proxy); both with base 1 s, cap
//! 900 s, window 900 s.
//!
//! An attempt refused while blocked (429 with `Retry-After`) is neither verified nor
//! counted. The guard knows nothing about users: an unknown email is counted and blocked
//! exactly like a known one, so its answers never reveal whether an account exists. Emails
//! are normalized (trimmed, lower case) and hashed with the address (SHA-256, hex) before
//! they become part of a key, so no email address is stored in Redis.
//!
//! Layout under the key prefix `{p}`: `{p}login:email:{sha256 hex of email and address}` and
//! `{p}login:ip:{ip}`, hashes with the attempt count `n` and the time of the last attempt
//! `last` (ms). Each script touches one key, as ElastiCache Serverless requires.

use crate::keyspace::Keyspace;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use sha2::{Digest, Sha256};

use crate::error::DependencyError;
use crate::redis_conn::LazyRedis;

/// Redis commands slower than this fail: a limiter must not hold requests up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Refills a bucket, then takes one token if there is one (with ARGV[3] = 0 only looks:
/// nothing is taken or written).
/// KEYS[1] bucket; ARGV[1] burst, ARGV[2] per_minute (both > 0), ARGV[3] 1 to take.
/// Returns `{1, tokens left (floored)}` or `{0, ms until one token is back (ceiled)}`.
const TAKE_LUA: &str = r"
local burst = tonumber(ARGV[1])
local per_minute = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
-- A clock that stepped back refills nothing rather than blocking until it catches up.
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = tokens + elapsed * per_minute / 60000
-- Also clamps a bucket stored under a larger burst than today's.
if tokens > burst then tokens = burst end
if tokens >= 1 and ARGV[3] == '0' then
  return {1, math.floor(tokens)}
end
if tokens >= 1 then
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
  local full_ms = math.ceil((burst - tokens) * 60000 / per_minute)
  if full_ms < 1 then full_ms = 1 end
  redis.call('PEXPIRE', KEYS[1], full_ms)
  return {1, math.floor(tokens)}
end
local wait_ms = math.ceil((1 - tokens) * 60000 / per_minute)
if wait_ms < 1 then wait_ms = 1 end
return {0, wait_ms}
";

/// Checks a subject's block and, unless blocked, counts the attempt, in one step.
/// KEYS[1] the subject's hash; ARGV[1] its lifetime in ms; ARGV[2], ARGV[3], … the block in
/// ms after the (free+1)th, (free+2)th, … failure ([`Backoff::block_secs`]; the last one
/// holds for every later failure; none: blocking off); ARGV[#ARGV] the free attempts.
/// Returns 0 (counted) or the ms left of the block (refused, not counted).
const ATTEMPT_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'n', 'last')
local n = tonumber(state[1]) or 0
local last = tonumber(state[2]) or 0
local free = tonumber(ARGV[#ARGV])
local blocks = #ARGV - 2
local beyond = n - free
if beyond > 0 and blocks > 0 then
  local i = beyond
  if i > blocks then i = blocks end
  local until_ms = last + tonumber(ARGV[1 + i])
  if until_ms > now then return until_ms - now end
end
redis.call('HSET', KEYS[1], 'n', n + 1, 'last', now)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
";

/// Takes one counted attempt back. KEYS[1] the subject's hash.
const UNCOUNT_LUA: &str = r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
if n and n > 0 then redis.call('HINCRBY', KEYS[1], 'n', -1) end
return 1
";

// Built once: `Script::new` hashes the text, and EVALSHA sends only the hash.
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_LUA));
static ATTEMPT: LazyLock<Script> = LazyLock::new(|| Script::new(ATTEMPT_LUA));
static UNCOUNT: LazyLock<Script> = LazyLock::new(|| Script::new(UNCOUNT_LUA));

/// A token bucket's size and refill rate. Integers, so configuration never carries floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    /// Tokens a full bucket holds: how many requests may come at once.
    pub burst: u32,
    /// Tokens added per minute: the sustained rate.
    pub per_minute: u32,
}

impl BucketSpec {
    /// A `burst` or `per_minute` of 0 switches the limit off.
    pub fn is_off(&self) -> bool {
        self.burst == 0 || self.per_minute == 0
    }
}

/// The answer to a take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `remaining` whole tokens are left (`u32::MAX` when the limit is off).
    Allowed { remaining: u32 },
    /// Refused; one token is back after `retry_after_secs` (rounded up, at least 1), the
    /// value for a `Retry-After` header.
    Limited { retry_after_secs: u64 },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// Token buckets in Redis, shared by every instance. See the module documentation.
pub struct RateLimiter {
    redis: Arc<LazyRedis>,
    keys: Keyspace,
}

impl RateLimiter {
    /// Creates the limiter; connects lazily on first use, so Lambda init stays lean.
    pub fn new(redis_url: &str, key_prefix: &str) -> Result<RateLimiter, DependencyError> {
        Ok(RateLimiter {
            redis: Arc::new(LazyRedis::new(redis_url, RESPONSE_TIMEOUT)?),
            keys: Keyspace::new(key_prefix),
        })
    }

    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// A login guard on the same connection and key prefix.
    pub fn login_guard(&self, policy: LoginPolicy) -> LoginGuard {
        LoginGuard {
            redis: Arc::clone(&self.redis),
            keys: self.keys.clone(),
            policy,
        }
    }

    /// The key of `subject`'s bucket for the limit `name`.
    pub fn key(&self, name: &str, subject: &str) -> String {
        self.keys.rate_bucket(name, subject)
    }

    /// Takes one token from `subject`'s bucket for the limit `name`. A switched-off `spec`
    /// allows without asking Redis.
    pub async fn take(
        &self,
        name: &str,
        subject: &str,
        spec: BucketSpec,
    ) -> Result<Decision, DependencyError> {
        self.invoke(name, subject, spec, true).await
    }

    /// What [`take`](Self::take) would answer now, taking nothing.
    pub async fn peek(
        &self,
        name: &str,
        subject: &str,
        spec: BucketSpec,
    ) -> Result<Decision, DependencyError> {
        self.invoke(name, subject, spec, false).await
    }

    async fn invoke(
        &self,
        name: &str,
        subject: &str,
        spec: BucketSpec,
        take: bool,
    ) -> Result<Decision, DependencyError> {
        if spec.is_off() {
            return Ok(Decision::Allowed {
                remaining: u32::MAX,
            });
        }
        let mut c = self.redis.conn().await?;
        let (allowed, value): (i64, i64) = TAKE
            .key(self.key(name, subject))
            .arg(spec.burst)
            .arg(spec.per_minute)
            .arg(u8::from(take))
            .invoke_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(if allowed == 1 {
            Decision::Allowed {
                remaining: u32::try_from(value.max(0)).unwrap_or(u32::MAX),
            }
        } else {
            Decision::Limited {
                retry_after_secs: ceil_secs(value),
            }
        })
    }
}

/// Milliseconds as whole seconds for `Retry-After`: rounded up, at least 1.
fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1)
}

/// Exponential backoff after a number of free failures. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures in a window that block nothing.
    pub free_attempts: u32,
    /// The block after the first failure beyond the free ones is twice this; each further
    /// failure doubles it. 0 switches blocking off.
    pub base_secs: u64,
    /// The longest block.
    pub max_secs: u64,
    /// Failures are forgotten after this long without one.
    pub window_secs: u64,
}

impl Backoff {
    /// How long the `failures`-th failure in a window blocks: 0 while it is free, else
    /// `base_secs * 2^(failures - free_attempts)` capped at `max_secs`.
    pub fn block_secs(&self, failures: u64) -> u64 {
        let Some(beyond) = failures.checked_sub(u64::from(self.free_attempts)) else {
            return 0;
        };
        if beyond == 0 || self.base_secs == 0 {
            return 0;
        }
        let doubled = u32::try_from(beyond)
            .ok()
            .and_then(|e| 2u64.checked_pow(e))
            .and_then(|f| self.base_secs.checked_mul(f))
            .unwrap_or(u64::MAX);
        doubled.min(self.max_secs)
    }

    /// Seconds until a subject with `failures` failures, the last at `last_ms`, may try
    /// again at `now_ms` (rounded up), or `None` if it is not blocked.
    pub fn retry_after_secs(&self, failures: u64, last_ms: u64, now_ms: u64) -> Option<u64> {
        let block_ms = self.block_secs(failures).saturating_mul(1000);
        let until_ms = last_ms.saturating_add(block_ms);
        (until_ms > now_ms).then(|| (until_ms - now_ms).div_ceil(1000))
    }

    /// The blocks (ms) after the first failure beyond the free ones, the second…, up to
    /// the first that reaches the cap (which holds from then on); empty when blocking is off.
    fn block_table_ms(&self) -> Vec<u64> {
        let mut table = Vec::new();
        if self.base_secs == 0 {
            return table;
        }
        let free = u64::from(self.free_attempts);
        for beyond in 1..=64u64 {
            let secs = self.block_secs(free.saturating_add(beyond));
            table.push(secs.saturating_mul(1000));
            if secs >= self.max_secs {
                break;
            }
        }
        table
    }

    /// How long a subject's failures are kept after the last one: the window, but never
    /// less than the longest block so a block is never cut short.
    fn ttl_ms(&self) -> u64 {
        self.window_secs
            .max(self.max_secs)
            .max(1)
            .saturating_mul(1000)
    }
}

/// Login backoff per email from one address, and per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    pub email: Backoff,
    pub ip: Backoff,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            email: Backoff {
                free_attempts: 5,
                base_secs: 1,
                max_secs: 900,
                window_secs: 900,
            },
            // Many users may share an address (NAT, corporate proxies): a larger allowance.
            ip: Backoff {
                free_attempts: 20,
                base_secs: 1,
                max_secs: 900,
                window_secs: 900,
            },
        }
    }
}

/// Login backoff in Redis. See the module documentation for the policy.
pub struct LoginGuard {
    redis: Arc<LazyRedis>,
    keys: Keyspace,
    policy: LoginPolicy,
}

impl LoginGuard {
    /// Creates the guard; connects lazily on first use. To share a [`RateLimiter`]'s
    /// connection, use [`RateLimiter::login_guard`] instead.
    pub fn new(
        redis_url: &str,
        key_prefix: &str,
        policy: LoginPolicy,
    ) -> Result<LoginGuard, DependencyError> {
        Ok(LoginGuard {
            redis: Arc::new(LazyRedis::new(redis_url, RESPONSE_TIMEOUT)?),
            keys: Keyspace::new(key_prefix),
            policy,
        })
    }

    pub fn policy(&self) -> &LoginPolicy {
        &self.policy
    }

    /// The key counting attempts at `email` from `ip`: the normalized email and the address
    /// hashed together, never the email itself.
    pub fn email_key(&self, email: &str, ip: &str) -> String {
        let normalized = email.trim().to_lowercase();
        let mut h = Sha256::new();
        h.update(normalized.as_bytes());
        h.update([0]);
        h.update(ip.trim().as_bytes());
        self.keys.login_email(&hex::encode(h.finalize()))
    }

    /// The key counting attempts from `ip`.
    pub fn ip_key(&self, ip: &str) -> String {
        self.keys.login_ip(ip.trim())
    }

    async fn conn(&self) -> Result<ConnectionManager, DependencyError> {
        self.redis.conn().await
    }

    /// Counts a login attempt before its password is verified: `Some(retry_after_secs)` if
    /// the address, or the email from this address, is blocked (then nothing is counted),
    /// `None` if the password may be verified. Follow a success with
    /// [`succeeded`](Self::succeeded); a failure needs nothing more.
    pub async fn attempt(&self, email: &str, ip: &str) -> Result<Option<u64>, DependencyError> {
        let mut c = self.conn().await?;
        let ip_key = self.ip_key(ip);
        if let Some(secs) = self.count(&mut c, &ip_key, &self.policy.ip).await? {
            return Ok(Some(secs));
        }
        let email_key = self.email_key(email, ip);
        match self.count(&mut c, &email_key, &self.policy.email).await? {
            None => Ok(None),
            Some(secs) => {
                self.uncount(&mut c, &ip_key).await?;
                Ok(Some(secs))
            }
        }
    }

    /// After a verified password: the email's count from this address is cleared, and the
    /// address gets its attempt back (its other failures stay: one user logging in says
    /// nothing about the other accounts guessed at from there).
    pub async fn succeeded(&self, email: &str, ip: &str) -> Result<(), DependencyError> {
        self.redis.del(self.email_key(email, ip)).await?;
        let mut c = self.conn().await?;
        self.uncount(&mut c, &self.ip_key(ip)).await
    }

    async fn count(
        &self,
        c: &mut ConnectionManager,
        key: &str,
        backoff: &Backoff,
    ) -> Result<Option<u64>, DependencyError> {
        let mut invocation = ATTEMPT.key(key);
        invocation.arg(backoff.ttl_ms());
        for ms in backoff.block_table_ms() {
            invocation.arg(ms);
        }
        invocation.arg(backoff.free_attempts);
        let left_ms: i64 = invocation
            .invoke_async(c)
            .await
            .map_err(DependencyError::redis)?;
        Ok((left_ms > 0).then(|| ceil_secs(left_ms)))
    }

    async fn uncount(&self, c: &mut ConnectionManager, key: &str) -> Result<(), DependencyError> {
        UNCOUNT
            .key(key)
            .invoke_async::<i64>(c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(free_attempts: u32, base_secs: u64, max_secs: u64) -> Backoff {
        Backoff {
            free_attempts,
            base_secs,
            max_secs,
            window_secs: 900,
        }
    }

    #[test]
    fn free_attempts_block_nothing_then_blocks_double() {
        let b = LoginPolicy::default().email;
        for n in 0..=5 {
            assert_eq!(b.block_secs(n), 0, "failure {n} is free");
        }
        assert_eq!(b.block_secs(6), 2);
        assert_eq!(b.block_secs(7), 4);
        assert_eq!(b.block_secs(8), 8);
        assert_eq!(b.block_secs(14), 512);
        assert_eq!(b.block_secs(15), 900, "capped");
    }

    #[test]
    fn huge_counts_saturate_at_the_cap() {
        let b = backoff(5, 3, 900);
        assert_eq!(b.block_secs(69), 900);
        assert_eq!(b.block_secs(70), 900);
        assert_eq!(b.block_secs(u64::MAX), 900);
        assert_eq!(backoff(0, u64::MAX, 10).block_secs(1), 10);
    }

    #[test]
    fn zero_base_switches_blocking_off() {
        assert_eq!(backoff(0, 0, 900).block_secs(50), 0);
    }

    #[test]
    fn the_ip_allowance_is_larger() {
        let p = LoginPolicy::default();
        assert_eq!(p.ip.block_secs(20), 0);
        assert_eq!(p.ip.block_secs(21), 2);
        assert!(p.ip.free_attempts > p.email.free_attempts);
    }

    #[test]
    fn retry_after_counts_from_the_last_failure_and_rounds_up() {
        let b = backoff(1, 1, 900); // the 2nd failure blocks 2 s
        assert_eq!(b.retry_after_secs(1, 10_000, 10_000), None, "free");
        assert_eq!(b.retry_after_secs(2, 10_000, 10_000), Some(2));
        assert_eq!(b.retry_after_secs(2, 10_000, 10_001), Some(2));
        assert_eq!(b.retry_after_secs(2, 10_000, 11_000), Some(1));
        assert_eq!(b.retry_after_secs(2, 10_000, 11_999), Some(1));
        assert_eq!(b.retry_after_secs(2, 10_000, 12_000), None, "over");
        assert_eq!(
            b.retry_after_secs(2, 10_000, 5_000),
            Some(7),
            "clock behind"
        );
    }

    #[test]
    fn failures_outlive_the_longest_block() {
        assert_eq!(backoff(5, 1, 900).ttl_ms(), 900_000);
        let short_window = Backoff {
            window_secs: 60,
            ..backoff(5, 1, 900)
        };
        assert_eq!(short_window.ttl_ms(), 900_000);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(ceil_secs(0), 1);
        assert_eq!(ceil_secs(-5), 1);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1000), 1);
        assert_eq!(ceil_secs(1001), 2);
    }

    #[test]
    fn a_zero_in_a_spec_switches_it_off() {
        assert!(BucketSpec {
            burst: 0,
            per_minute: 60
        }
        .is_off());
        assert!(BucketSpec {
            burst: 5,
            per_minute: 0
        }
        .is_off());
        assert!(!BucketSpec {
            burst: 5,
            per_minute: 60
        }
        .is_off());
    }

    #[test]
    fn block_tables_follow_the_backoff_up_to_the_cap() {
        let b = LoginPolicy::default().email;
        let t = b.block_table_ms();
        assert_eq!(t[..3], [2000, 4000, 8000]);
        assert_eq!(*t.last().unwrap(), 900_000, "ends at the cap");
        assert_eq!(t.len(), 10);
        let off = Backoff { base_secs: 0, ..b };
        assert!(off.block_table_ms().is_empty());
    }

    #[test]
    fn emails_are_normalized_and_hashed_in_keys() {
        let g = LoginGuard::new("redis://127.0.0.1:1", "p:", LoginPolicy::default()).unwrap();
        let k = g.email_key(" Alice@Example.com ", "10.0.0.1");
        assert_eq!(k, g.email_key("alice@example.com", " 10.0.0.1"));
        assert_ne!(
            k,
            g.email_key("alice@example.com", "10.0.0.2"),
            "per address"
        );
        assert!(k.starts_with("p:login:email:"));
        assert!(!k.contains('@') && !k.contains("alice"));
        assert_eq!(k.len(), "p:login:email:".len() + 64);
    }
}
