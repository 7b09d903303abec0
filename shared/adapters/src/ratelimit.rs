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
//! Failed logins are counted per email and per source IP, each under its own [`Backoff`]:
//! - the first `free_attempts` failures are free;
//! - failure number `n > free_attempts` blocks the subject for
//!   `base_secs * 2^(n - free_attempts)` seconds from that failure, capped at `max_secs`
//!   (with the defaults: failures 1–5 free, the 6th blocks 2 s, the 7th 4 s, the 8th 8 s, …,
//!   the 14th and later 900 s);
//! - the count is forgotten once `window_secs` pass without a failure (the key lives
//!   `max(window_secs, max_secs)` after the last failure, so no block is cut short);
//! - a success clears the email's count, not the IP's: one user logging in must not lift
//!   a block that an address earned by guessing at other accounts.
//!
//! Defaults ([`LoginPolicy::default`]): per email 5 free attempts, per IP 20 (many users may
//! share an address behind a NAT or proxy); both with base 1 s, cap 900 s, window 900 s.
//!
//! Callers [`check`](LoginGuard::check) before verifying a password and refuse (429 with
//! `Retry-After`) while blocked, so attempts during a block are neither verified nor counted;
//! then they record the outcome. The guard knows nothing about users: an unknown email is
//! counted and blocked exactly like a known one, so its answers never reveal whether an
//! account exists. Emails are normalized (trimmed, lower case) and hashed (SHA-256, hex)
//! before they become part of a key, so no email address is stored in Redis.
//!
//! Layout under the key prefix `{p}`: `{p}login:email:{sha256 hex}` and `{p}login:ip:{ip}`,
//! hashes with the failure count `n` and the time of the last failure `last` (ms).

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

/// Refills a bucket, then takes one token if there is one.
/// KEYS[1] bucket; ARGV[1] burst, ARGV[2] per_minute (both > 0).
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

/// Counts one failure on each key, stamped with Redis' clock.
/// KEYS[i] a subject's hash; ARGV[i] its lifetime in ms.
const FAIL_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, 'last', now)
  redis.call('PEXPIRE', key, ARGV[i])
end
return 1
";

// Built once: `Script::new` hashes the text, and EVALSHA sends only the hash.
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_LUA));
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(FAIL_LUA));

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

    /// How long a subject's failures are kept after the last one: the window, but never
    /// less than the longest block so a block is never cut short.
    fn ttl_ms(&self) -> u64 {
        self.window_secs
            .max(self.max_secs)
            .max(1)
            .saturating_mul(1000)
    }
}

/// Login backoff per email and per source IP.
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

/// A subject's failure count and the time of its last failure (ms), absent if none.
type Failures = (Option<u64>, Option<u64>);

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

    /// The key counting failures for `email`: its normalized form hashed, never the address.
    pub fn email_key(&self, email: &str) -> String {
        let normalized = email.trim().to_lowercase();
        self.keys
            .login_email(&hex::encode(Sha256::digest(normalized.as_bytes())))
    }

    /// The key counting failures from `ip`.
    pub fn ip_key(&self, ip: &str) -> String {
        self.keys.login_ip(ip.trim())
    }

    async fn conn(&self) -> Result<ConnectionManager, DependencyError> {
        self.redis.conn().await
    }

    /// `Some(retry_after_secs)` if the email or the IP is blocked now (the longer of the two
    /// blocks), `None` if a login may be tried.
    pub async fn check(&self, email: &str, ip: &str) -> Result<Option<u64>, DependencyError> {
        let mut c = self.conn().await?;
        let ((email_n, email_last), (ip_n, ip_last), (secs, micros)): (
            Failures,
            Failures,
            (u64, u64),
        ) = redis::pipe()
            .cmd("HMGET")
            .arg(self.email_key(email))
            .arg("n")
            .arg("last")
            .cmd("HMGET")
            .arg(self.ip_key(ip))
            .arg("n")
            .arg("last")
            .cmd("TIME")
            .query_async(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        let now_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
        let blocked = |backoff: &Backoff, n: Option<u64>, last: Option<u64>| match (n, last) {
            (Some(n), Some(last)) => backoff.retry_after_secs(n, last, now_ms),
            _ => None,
        };
        Ok(blocked(&self.policy.email, email_n, email_last)
            .into_iter()
            .chain(blocked(&self.policy.ip, ip_n, ip_last))
            .max())
    }

    /// Counts a failed login against both the email and the IP, in one atomic script.
    pub async fn record_failure(&self, email: &str, ip: &str) -> Result<(), DependencyError> {
        let mut c = self.conn().await?;
        FAIL.key(self.email_key(email))
            .key(self.ip_key(ip))
            .arg(self.policy.email.ttl_ms())
            .arg(self.policy.ip.ttl_ms())
            .invoke_async::<i64>(&mut c)
            .await
            .map_err(DependencyError::redis)?;
        Ok(())
    }

    /// Clears the email's failures after a successful login. The IP's stay: a success by
    /// one user says nothing about the other accounts guessed at from that address.
    pub async fn record_success(&self, email: &str, _ip: &str) -> Result<(), DependencyError> {
        self.redis.del(self.email_key(email)).await?;
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
    fn emails_are_normalized_and_hashed_in_keys() {
        let g = LoginGuard::new("redis://127.0.0.1:1", "p:", LoginPolicy::default()).unwrap();
        let k = g.email_key(" Alice@Example.com ");
        assert_eq!(k, g.email_key("alice@example.com"));
        assert!(k.starts_with("p:login:email:"));
        assert!(!k.contains('@') && !k.contains("alice"));
        assert_eq!(k.len(), "p:login:email:".len() + 64);
    }
}
