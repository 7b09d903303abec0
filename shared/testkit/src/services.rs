//! Fixtures against the real services that `make test` starts (PostgreSQL, Redis, moto),
//! for integration tests and benchmarks: a missing service address is an error, never a
//! skipped test. Behind the `services` feature, so the event builders stay light.

use domain::quote::Quote;
use rust_decimal::Decimal;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use adapters::cache::Cache;
use adapters::config::Config;
use adapters::ledger::Ledger;
use adapters::queue::CommandQueue;

/// Reads a service address exported by `make test`; panics with a clear message without it.
pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run the tests with `make test`, which starts PostgreSQL, Redis and moto and exports their addresses"),
    }
}

/// The moto settings `make test` exports, for the environment of a child process:
/// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (each
/// required, as [`service_env`] reads them).
pub fn aws_env() -> [(&'static str, String); 4] {
    [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    .map(|name| (name, service_env(name)))
}

/// A migrated ledger on `DATABASE_URL`.
pub async fn ledger() -> Ledger {
    let ledger =
        Ledger::connect_lazy(&service_env("DATABASE_URL"), 10).expect("database url parses");
    ledger.migrate().await.expect("migrations apply");
    ledger
}

/// A cache on `REDIS_URL` under a key prefix of its own, so parallel tests never collide.
pub fn cache() -> Cache {
    Cache::new(
        &service_env("REDIS_URL"),
        &format!("t{}:", Uuid::new_v4().simple()),
    )
    .expect("redis url parses")
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

/// A new user with an account holding `cash` USDT: (user id, account id).
pub async fn account_with_cash(ledger: &Ledger, cash: Decimal) -> (Uuid, Uuid) {
    ledger
        .create_user(&unique_email(), "not-a-hash", cash)
        .await
        .expect("user created")
}

/// Puts a fresh quote for `symbol` into the cache.
pub async fn put_quote(cache: &Cache, symbol: &str, bid: Decimal, ask: Decimal) {
    let q = Quote {
        symbol: symbol.into(),
        bid,
        ask,
        last: Some(bid),
        ts: adapters::now_ms(),
    };
    cache.put_quote(&q, 60_000).await.expect("quote stored");
}

/// A fresh, empty connection table in moto, built by `infra/scripts/aws_setup.py` from
/// template.yaml's definition (so tests use the deployed schema): its name.
pub fn connection_table() -> String {
    let name = format!("test-{}", Uuid::new_v4().simple());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/scripts/aws_setup.py"
    );
    let status = std::process::Command::new(service_env("PYTHON"))
        .arg(script)
        .arg("table")
        .arg(service_env("AWS_ENDPOINT_URL"))
        .arg(&name)
        .status()
        .expect("running infra/scripts/aws_setup.py");
    assert!(
        status.success(),
        "creating the connection table {name} failed"
    );
    name
}

/// Benchmarks use it to time handlers without a queue's latency.
/// A loopback stand-in for SQS: answers every request with a `SendMessage` result at once
/// (HTTP/1.1 keep-alive, AWS JSON 1.0). The SDK does not check the MD5.
pub async fn sqs_stub() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::with_capacity(16384);
                let mut chunk = vec![0u8; 16384];
                loop {
                    // One request: headers, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    buf.drain(..head_end + len);
                    let body = format!(
                        r#"{{"MD5OfMessageBody":"00000000000000000000000000000000","MessageId":"{}","SequenceNumber":"1"}}"#,
                        Uuid::new_v4()
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: {}\r\nContent-Length: {}\r\n\r\n{body}",
                        Uuid::new_v4(),
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ---- benchmarks: sequential latency figures ------------------------------------------
// The floats below are latency statistics (quantiles, means, seconds), never money.

/// The most samples one figure takes.
pub const MAX_SAMPLES: usize = 3_000;

/// The `p` quantile (0..=1) of sorted samples.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub struct Figure {
    pub name: String,
    /// Latencies in µs, sorted.
    pub lat: Vec<u64>,
    pub status: String,
}

impl Figure {
    /// A markdown table row: name, n, mean, p50, p99, p99.9, statuses.
    pub fn row(&self) -> String {
        let mean = self.lat.iter().sum::<u64>() as f64 / self.lat.len().max(1) as f64;
        format!(
            "| {} | {} | {:.0} | **{}** | **{}** | {} | {} |",
            self.name,
            self.lat.len(),
            mean,
            pct(&self.lat, 0.5),
            pct(&self.lat, 0.99),
            pct(&self.lat, 0.999),
            self.status
        )
    }
}

/// Times `f` (which returns its own duration and an HTTP status) sequentially, as one Lambda
/// instance serves requests: 20 warm-up calls, then up to `secs` seconds or MAX_SAMPLES.
pub async fn measure<F, Fut>(name: &str, secs: f64, mut f: F) -> Figure
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = (Duration, u16)>,
{
    for i in 0..20 {
        f(1_000_000 + i).await;
    }
    let mut lat = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut i = 0;
    while Instant::now() < deadline && i < MAX_SAMPLES {
        let (d, status) = f(i).await;
        lat.push(d.as_micros() as u64);
        *statuses.entry(status).or_default() += 1;
        i += 1;
    }
    lat.sort_unstable();
    let status = statuses
        .iter()
        .map(|(s, n)| format!("{n}× {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fig = Figure {
        name: name.to_string(),
        lat,
        status,
    };
    eprintln!("{}", fig.row());
    fig
}

/// [`measure`] of a call that answers an HTTP status: what `f(i)` does before it returns
/// its future stays outside the timed region, the future itself is timed.
pub async fn measure_call<F, Fut>(name: &str, secs: f64, mut f: F) -> Figure
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    measure(name, secs, |i| {
        let call = f(i);
        async move {
            let t = Instant::now();
            let status = call.await;
            (t.elapsed(), status)
        }
    })
    .await
}

/// A FIFO queue of the caller's own on moto (`AWS_ENDPOINT_URL`), named `{stem}-{uuid}.fifo`:
/// the client and the queue URL.
pub async fn fifo_queue(stem: &str) -> (aws_sdk_sqs::Client, String) {
    let endpoint = service_env("AWS_ENDPOINT_URL");
    let config = adapters::aws::config_loader().load().await;
    let client = aws_sdk_sqs::Client::new(&config);
    let url = client
        .create_queue()
        .queue_name(format!("{stem}-{}.fifo", Uuid::new_v4().simple()))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        // Deduplication ids come from the commands, as on AWS.
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::ContentBasedDeduplication,
            "false",
        )
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating a FIFO queue on {endpoint}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })
        .queue_url
        .expect("moto answers a queue URL");
    (client, url)
}

/// The configuration of the environment `make test` exports, under a fresh key prefix.
pub fn config() -> Config {
    config_from(service_env, "t")
}

/// The environment's configuration with `read`'s PostgreSQL and Redis URLs and a fresh
/// key prefix starting with `prefix`.
fn config_from(read: fn(&str) -> String, prefix: &str) -> Config {
    let mut config = Config::from_env().expect("the environment is a valid configuration");
    config.database.url = read("DATABASE_URL");
    config.redis.url = read("REDIS_URL");
    config.redis.key_prefix = format!("{prefix}{}:", Uuid::new_v4().simple());
    config
}

/// The use cases' dependencies on the real services, with a FIFO queue of their own on
/// moto and a fresh key prefix (`app::Deps::for_test`, as every test and benchmark of the
/// REST edge builds it).
pub async fn app_deps() -> app::Deps {
    app_deps_with(config()).await
}

/// [`app_deps`] with a configuration of the caller's (its key prefix is kept).
pub async fn app_deps_with(config: Config) -> app::Deps {
    let (client, url) = fifo_queue("api").await;
    let cache = Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache");
    app::Deps::with(
        config,
        ledger().await,
        cache,
        CommandQueue::from_client(&url, client),
    )
    .expect("rate limiter")
}

/// A variable `make bench` exports; panics with a clear message without it.
pub fn bench_env(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!("{name} is not set: run `make bench` (infra/scripts/bench.sh), which starts the services and exports it")
    })
}

/// `BENCH_SECS` (default 5): how long each figure of a bench runs.
pub fn bench_secs() -> f64 {
    std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0)
}

/// A bench's configuration: the defaults, with `make bench`'s PostgreSQL and Redis and a
/// Redis key prefix of its own.
pub fn bench_config() -> Config {
    config_from(bench_env, "bench")
}

/// The quotes the benches trade at: BTCUSDT 60000/60000.01 and ETHUSDT 3000/3000.01.
pub async fn put_bench_quotes(cache: &Cache) {
    use rust_decimal_macros::dec;
    put_quote(cache, "BTCUSDT", dec!(60000), dec!(60000.01)).await;
    put_quote(cache, "ETHUSDT", dec!(3000), dec!(3000.01)).await;
}

/// Writes a benchmark's markdown to `BENCH_REPORT` (where bench.sh collects it), else
/// prints it.
pub fn write_report(md: &str) {
    match std::env::var("BENCH_REPORT") {
        Ok(path) if !path.is_empty() => std::fs::write(&path, md).expect("write BENCH_REPORT"),
        _ => println!("{md}"),
    }
}

/// A benchmark's `main`: runs `run` to the end on a runtime from `builder` (all drivers
/// enabled), then writes the markdown it returns with [`write_report`].
pub fn bench_main(
    mut builder: tokio::runtime::Builder,
    run: impl std::future::Future<Output = String>,
) {
    let rt = builder.enable_all().build().expect("runtime");
    let md = rt.block_on(run);
    write_report(&md);
}

/// A plain connection to the test Redis (`REDIS_URL`), for reading keys behind an adapter's
/// back.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    try_redis_connection()
        .await
        .unwrap_or_else(|e| panic!("the test Redis: {e}"))
}

/// [`redis_connection`], for the callers that must go on when Redis is down (the chaos
/// suite's faults and samplers).
pub async fn try_redis_connection() -> Result<redis::aio::MultiplexedConnection, String> {
    redis::Client::open(service_env("REDIS_URL"))
        .map_err(|e| format!("REDIS_URL: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("unreachable: {e}"))
}

/// The time `key` has left to live, in ms (Redis `PTTL`: -1 without an expiry, -2 when
/// there is no such key).
pub async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("PTTL {key}: {e}"))
}

/// A Redis ACL user of its own on the test Redis with `rules` (as ElastiCache RBAC gives a
/// function its access string, e.g. `Keyspace::functions_access`), and a random password;
/// its `REDIS_URL`. The admin connection creating it is the test Redis's default user.
pub async fn redis_acl_user(rules: &str) -> String {
    let name = format!("test-{}", Uuid::new_v4().simple());
    let password = Uuid::new_v4().simple().to_string();
    let admin = service_env("REDIS_URL");
    let (scheme, rest) = admin.split_once("://").expect("REDIS_URL is a URL");
    let url = format!("{scheme}://{name}:{password}@{rest}");
    redis_acl_user_restore(&url, rules)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    url
}

/// Creates (or resets) the Redis user that `url` logs in as, with `rules`: what
/// [`redis_acl_user`] did, again (after a Redis restart lost its users).
pub async fn redis_acl_user_restore(url: &str, rules: &str) -> Result<(), String> {
    let parsed = url_userinfo(url).ok_or(format!("no user:password in {url}"))?;
    let (name, password) = parsed;
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg(&name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"));
    for rule in rules.split_whitespace() {
        setuser.arg(rule);
    }
    let client = redis::Client::open(service_env("REDIS_URL")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connecting to Redis: {e}"))?;
    let () = setuser
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("ACL SETUSER with {rules}: {e}"))?;
    Ok(())
}

/// `(user, password)` of a `redis://user:password@host/` URL.
fn url_userinfo(url: &str) -> Option<(String, String)> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
