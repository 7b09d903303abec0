//! Rate limits and login backoff against the real Redis of `REDIS_URL` (`make test`), each
//! test under a key prefix of its own. No assertion depends on how long anything took, only
//! on "after waiting long enough, it is allowed again".

use std::time::Duration;

use adapters::ratelimit::{Backoff, BucketSpec, Decision, LoginGuard, LoginPolicy, RateLimiter};
use testkit::{service_env, unique_email};
use uuid::Uuid;

fn prefix() -> String {
    format!("t{}:", Uuid::new_v4().simple())
}

fn limiter() -> RateLimiter {
    RateLimiter::new(&service_env("REDIS_URL"), &prefix()).expect("redis url parses")
}

async fn raw() -> redis::aio::MultiplexedConnection {
    testkit::redis_connection().await
}

async fn keys_under(prefix: &str) -> Vec<String> {
    let mut c = raw().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    keys.sort();
    keys
}

fn unique_ip() -> String {
    let b = Uuid::new_v4().into_bytes();
    format!("10.{}.{}.{}", b[0], b[1], b[2])
}

/// 5 tokens a second: one is back after ~200 ms, long enough that the takes in between
/// never see a refill on a loaded machine.
const FAST: BucketSpec = BucketSpec {
    burst: 3,
    per_minute: 300,
};

#[tokio::test]
async fn a_bucket_allows_its_burst_then_limits_until_it_refills() {
    let rl = limiter();
    for _ in 0..FAST.burst {
        assert!(rl
            .take("orders", "acct-1", FAST)
            .await
            .unwrap()
            .is_allowed());
    }
    match rl.take("orders", "acct-1", FAST).await.unwrap() {
        Decision::Limited { retry_after_secs } => assert!(retry_after_secs >= 1),
        other => panic!("expected Limited, got {other:?}"),
    }

    // One token is back after 200 ms; keep asking, comfortably longer.
    let mut allowed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if rl
            .take("orders", "acct-1", FAST)
            .await
            .unwrap()
            .is_allowed()
        {
            allowed = true;
            break;
        }
    }
    assert!(allowed, "the bucket refilled");
}

#[tokio::test]
async fn a_slow_bucket_counts_down_and_says_how_long_to_wait() {
    let rl = limiter();
    let spec = BucketSpec {
        burst: 3,
        per_minute: 2, // one token every 30 s
    };
    for remaining in [2, 1, 0] {
        assert_eq!(
            rl.take("login", "x", spec).await.unwrap(),
            Decision::Allowed { remaining }
        );
    }
    for _ in 0..3 {
        // Refused takes consume nothing, so the wait does not grow.
        match rl.take("login", "x", spec).await.unwrap() {
            Decision::Limited { retry_after_secs } => {
                assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("expected Limited, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn subjects_and_names_have_buckets_of_their_own() {
    let rl = limiter();
    let spec = BucketSpec {
        burst: 2,
        per_minute: 1,
    };
    for _ in 0..2 {
        assert!(rl.take("orders", "a", spec).await.unwrap().is_allowed());
    }
    assert!(!rl.take("orders", "a", spec).await.unwrap().is_allowed());
    assert_eq!(
        rl.take("orders", "b", spec).await.unwrap(),
        Decision::Allowed { remaining: 1 },
        "another subject is untouched"
    );
    assert_eq!(
        rl.take("quotes", "a", spec).await.unwrap(),
        Decision::Allowed { remaining: 1 },
        "another limit of the same subject is untouched"
    );
    // Another prefix (another test, another deployment) shares nothing.
    assert!(limiter()
        .take("orders", "a", spec)
        .await
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn a_switched_off_spec_always_allows_and_stores_nothing() {
    let rl = limiter();
    for spec in [
        BucketSpec {
            burst: 0,
            per_minute: 60,
        },
        BucketSpec {
            burst: 5,
            per_minute: 0,
        },
    ] {
        for _ in 0..20 {
            assert_eq!(
                rl.take("orders", "a", spec).await.unwrap(),
                Decision::Allowed {
                    remaining: u32::MAX
                }
            );
        }
    }
    assert!(keys_under(rl.prefix()).await.is_empty());
}

#[tokio::test]
async fn a_switched_off_spec_needs_no_redis() {
    let rl = RateLimiter::new("redis://127.0.0.1:1", "p:").unwrap();
    let off = BucketSpec {
        burst: 0,
        per_minute: 0,
    };
    assert!(rl.take("orders", "a", off).await.unwrap().is_allowed());
    assert!(
        rl.take("orders", "a", FAST).await.is_err(),
        "a dead redis is an error"
    );
}

#[tokio::test]
async fn bucket_keys_carry_the_prefix_and_expire_once_full_again() {
    let rl = limiter();
    let spec = BucketSpec {
        burst: 5,
        per_minute: 60, // one token a second: full again 1 s after one take
    };
    rl.take("orders", "acct-9", spec).await.unwrap();
    let key = format!("{}rl:orders:acct-9", rl.prefix());
    assert_eq!(rl.key("orders", "acct-9"), key);
    assert_eq!(keys_under(rl.prefix()).await, vec![key.clone()]);
    let mut c = raw().await;
    let ttl = testkit::pttl(&mut c, &key).await;
    assert!(ttl > 0 && ttl <= 1_000, "expires when full again: {ttl} ms");
}

#[tokio::test]
async fn many_concurrent_takes_never_overspend() {
    let rl = std::sync::Arc::new(limiter());
    let spec = BucketSpec {
        burst: 10,
        per_minute: 1,
    };
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let rl = rl.clone();
            tokio::spawn(async move { rl.take("orders", "hot", spec).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap().is_allowed() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}

// ---- login backoff ------------------------------------------------------------------

fn guard(policy: LoginPolicy) -> LoginGuard {
    LoginGuard::new(&service_env("REDIS_URL"), &prefix(), policy).expect("redis url parses")
}

/// Small allowances so the tests stay short.
fn small_policy() -> LoginPolicy {
    LoginPolicy {
        email: Backoff {
            free_attempts: 2,
            base_secs: 1,
            max_secs: 900,
            window_secs: 900,
        },
        ip: Backoff {
            free_attempts: 5,
            base_secs: 1,
            max_secs: 900,
            window_secs: 900,
        },
    }
}

/// `n` failed attempts (counted, then not followed by a success).
async fn fail(g: &LoginGuard, email: &str, ip: &str, n: usize) {
    for i in 0..n {
        assert_eq!(
            g.attempt(email, ip).await.unwrap(),
            None,
            "attempt {i} allowed"
        );
    }
}

#[tokio::test]
async fn free_attempts_then_blocks_that_grow() {
    let g = guard(LoginPolicy::default());
    let (email, ip) = (unique_email(), unique_ip());
    fail(&g, &email, &ip, 5).await;
    // The 6th attempt is still verified (5 failures are free); it fails too.
    assert_eq!(g.attempt(&email, &ip).await.unwrap(), None);
    let first = g.attempt(&email, &ip).await.unwrap().expect("blocked");
    assert!((1..=2).contains(&first), "{first}");
    // Refused attempts are not counted: the block does not grow while it holds.
    let again = g
        .attempt(&email, &ip)
        .await
        .unwrap()
        .expect("still blocked");
    assert!(again <= first, "{again} <= {first}");

    // The block is the email's from this address: from another address the same email may
    // be tried (a victim locked out by someone else's guesses can still log in).
    assert_eq!(g.attempt(&email, &unique_ip()).await.unwrap(), None);
    // And another email from this address may be tried too.
    assert_eq!(g.attempt(&unique_email(), &ip).await.unwrap(), None);
}

#[tokio::test]
async fn parallel_guesses_get_no_more_tries_than_sequential_ones() {
    let policy = LoginPolicy::default();
    let g = guard(policy);
    let (email, ip) = (unique_email(), unique_ip());
    // 50 guesses at once, each counted before its password would be verified.
    let attempts = futures_util::future::join_all((0..50).map(|_| g.attempt(&email, &ip))).await;
    let verified = attempts
        .iter()
        .filter(|a| a.as_ref().unwrap().is_none())
        .count();
    // Sequentially: the free attempts and the one that earns the first block.
    let sequential = policy.email.free_attempts as usize + 1;
    assert_eq!(verified, sequential, "{attempts:?}");
}

#[tokio::test]
async fn a_block_ends_after_its_time() {
    let g = guard(LoginPolicy {
        email: Backoff {
            free_attempts: 0,
            base_secs: 1,
            max_secs: 1, // the first failure blocks 1 s
            window_secs: 900,
        },
        ..small_policy()
    });
    let (email, ip) = (unique_email(), unique_ip());
    fail(&g, &email, &ip, 1).await;
    assert_eq!(g.attempt(&email, &ip).await.unwrap(), Some(1));
    let mut cleared = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if g.attempt(&email, &ip).await.unwrap().is_none() {
            cleared = true;
            break;
        }
    }
    assert!(cleared, "the block ended");
}

#[tokio::test]
async fn success_clears_the_email_and_gives_the_address_its_attempt_back() {
    let g = guard(small_policy());
    let (email, ip) = (unique_email(), unique_ip());
    fail(&g, &email, &ip, 3).await;
    assert!(g.attempt(&email, &ip).await.unwrap().is_some(), "blocked");
    // A success (after a block ends, or from the right password earlier) starts over.
    let (email, ip) = (unique_email(), unique_ip());
    fail(&g, &email, &ip, 2).await;
    assert_eq!(g.attempt(&email, &ip).await.unwrap(), None);
    g.succeeded(&email, &ip).await.unwrap();
    fail(&g, &email, &ip, 3).await; // three more: the count started over
                                    // The address: 2 failures + 1 success + 3 failures = 5 counted, its allowance; many
                                    // successful logins from a shared address never block it.
    for _ in 0..10 {
        let other = unique_email();
        assert_eq!(g.attempt(&other, &ip).await.unwrap(), None);
        g.succeeded(&other, &ip).await.unwrap();
    }
    // One more failure from it is still free (the 6th with base 1 s blocks the next).
    assert_eq!(g.attempt(&unique_email(), &ip).await.unwrap(), None);
    assert!(g.attempt(&unique_email(), &ip).await.unwrap().is_some());
    // Blocked now for every email, a right password included: nothing is verified.
    assert!(g.attempt(&unique_email(), &ip).await.unwrap().is_some());
}

#[tokio::test]
async fn an_address_guessing_at_many_accounts_gets_blocked() {
    let g = guard(LoginPolicy::default());
    let ip = unique_ip();
    for _ in 0..21 {
        assert_eq!(g.attempt(&unique_email(), &ip).await.unwrap(), None);
    }
    let blocked = g.attempt(&unique_email(), &ip).await.unwrap();
    assert!(
        blocked.is_some_and(|s| s >= 1),
        "any email from it: {blocked:?}"
    );
    assert_eq!(
        g.attempt(&unique_email(), &unique_ip()).await.unwrap(),
        None,
        "other addresses are not"
    );
}

#[tokio::test]
async fn an_unknown_email_is_treated_like_any_other() {
    // The guard knows no users: the same failures give the same answers whatever the email.
    let g = guard(small_policy());
    let ip = unique_ip();
    let a = unique_email();
    let b = format!(
        "never-registered-{}@example.invalid",
        Uuid::new_v4().simple()
    );
    fail(&g, &a, &ip, 3).await;
    fail(&g, &b, &ip, 1).await;
    let ip2 = unique_ip();
    fail(&g, &b, &ip2, 3).await;
    // Both blocked for the 3rd failure's 2 s (only the rounding of elapsed time may differ).
    for (e, at) in [(&a, &ip), (&b, &ip2)] {
        let s = g.attempt(e, at).await.unwrap();
        assert!(s.is_some_and(|s| (1..=2).contains(&s)), "{s:?}");
    }
}

#[tokio::test]
async fn login_keys_carry_the_prefix_and_never_the_email() {
    let p = prefix();
    let g = LoginGuard::new(&service_env("REDIS_URL"), &p, LoginPolicy::default()).unwrap();
    let (email, ip) = (unique_email(), unique_ip());
    fail(&g, &email.to_uppercase(), &ip, 1).await;
    fail(&g, &format!(" {email} "), &ip, 1).await;

    let keys = keys_under(&p).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&g.email_key(&email, &ip)));
    assert!(keys.contains(&format!("{p}login:ip:{ip}")));
    let local = email.split('@').next().unwrap();
    for k in &keys {
        assert!(
            !k.contains('@') && !k.contains(local),
            "{k} leaks the email"
        );
    }
    let mut c = raw().await;
    let n: u64 = redis::cmd("HGET")
        .arg(g.email_key(&email, &ip))
        .arg("n")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 2, "case and spaces do not make a new email");
    let ttl = testkit::pttl(&mut c, &g.email_key(&email, &ip)).await;
    assert!(
        ttl > 0 && ttl <= 900_000,
        "failures are forgotten: {ttl} ms"
    );
}

#[tokio::test]
async fn a_limiter_hands_out_a_guard_on_its_connection_and_prefix() {
    let rl = limiter();
    let g = rl.login_guard(LoginPolicy::default());
    assert!(g.email_key("a@b.c", "10.0.0.1").starts_with(rl.prefix()));
    fail(&g, "a@b.c", "10.0.0.1", 1).await;
    assert_eq!(keys_under(rl.prefix()).await.len(), 2);
}
