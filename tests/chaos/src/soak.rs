//! The soak's sampler: every 10 s, the resident memory of every process of the stack and of
//! its services, the Redis key count, the sizes of the tables that grow, and the latency of
//! the clients' requests in the window, as one CSV row; at the end, the growth of each
//! series over the run's later two thirds, so that "nothing grows without bound" is a figure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::procfs::{processes_with, rss_kib};
use e2e::Stack;

/// The tables sampled (bytes, indexes and TOAST included).
pub const TABLES: [&str; 6] = [
    "orders",
    "fills",
    "positions",
    "processed_commands",
    "webhook_deliveries",
    "dead_letters",
];

/// The function binaries the devstack runs, sampled as a sum over their instances.
const FUNCTIONS: [&str; 4] = ["api", "executor", "ws", "webhook"];

/// Request latencies of the current window, in microseconds (the clients push, the sampler
/// takes).
#[derive(Debug, Default)]
pub struct Latencies(Mutex<Vec<u64>>);

impl Latencies {
    pub fn add(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(us);
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub t_s: f64,
    /// (series name, value): RSS in MiB, keys, table sizes in MiB.
    pub values: Vec<(String, f64)>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The port of a URL (`redis://…:56381/`), as text.
fn port_of(url: &str) -> String {
    url.rsplit(':')
        .next()
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// Takes one sample.
async fn sample(
    stack: &Stack,
    pool: &sqlx::PgPool,
    redis: &mut redis::aio::MultiplexedConnection,
    latencies: &Latencies,
    t_s: f64,
) -> Sample {
    let mut values = Vec::new();
    for name in ["feed", "ingest", "devstack"] {
        let kib = stack.pid_of(name).map_or(0, rss_kib);
        values.push((format!("{name}_rss_mib"), mib(kib)));
    }
    for f in FUNCTIONS {
        let kib: u64 = stack.function_pids(f).into_iter().map(rss_kib).sum();
        values.push((format!("{f}_rss_mib"), mib(kib)));
    }
    let services = [
        ("postgres", "/chaos/pg".to_string()),
        (
            "redis",
            format!("127.0.0.1:{}", port_of(&testkit::service_env("REDIS_URL"))),
        ),
        (
            "moto",
            format!(
                "moto_server.py -H 127.0.0.1 -p {}",
                port_of(&testkit::service_env("AWS_ENDPOINT_URL"))
            ),
        ),
    ];
    for (name, needle) in services {
        let kib: u64 = processes_with(&needle).into_iter().map(rss_kib).sum();
        values.push((format!("{name}_rss_mib"), mib(kib)));
    }
    let keys: i64 = redis::cmd("DBSIZE").query_async(redis).await.unwrap_or(-1);
    values.push(("redis_keys".into(), keys as f64));
    for t in TABLES {
        let bytes: i64 = sqlx::query_scalar(&format!("SELECT pg_total_relation_size('{t}')"))
            .fetch_one(pool)
            .await
            .unwrap_or(-1);
        values.push((format!("{t}_mib"), bytes as f64 / 1024.0 / 1024.0));
    }
    let mut window = latencies.take();
    window.sort_unstable();
    let pct = |p: f64| -> f64 {
        if window.is_empty() {
            return 0.0;
        }
        let i = ((window.len() as f64 - 1.0) * p).round() as usize;
        window[i.min(window.len() - 1)] as f64 / 1000.0
    };
    values.push(("requests".into(), window.len() as f64));
    values.push(("p50_ms".into(), pct(0.50)));
    values.push(("p99_ms".into(), pct(0.99)));
    Sample { t_s, values }
}

/// Samples every `every` until `stop`, appending each row to `csv` as it goes.
pub async fn sampler(
    stack: Arc<Stack>,
    latencies: Arc<Latencies>,
    every: Duration,
    csv: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Sample>> {
    let pool = sqlx::PgPool::connect(&stack.database_url).await?;
    let mut redis = testkit::try_redis_connection()
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some(dir) = csv.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut out = String::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        let s = sample(
            &stack,
            &pool,
            &mut redis,
            &latencies,
            started.elapsed().as_secs_f64(),
        )
        .await;
        if out.is_empty() {
            out.push_str("t_s");
            for (k, _) in &s.values {
                out.push(',');
                out.push_str(k);
            }
            out.push('\n');
        }
        out.push_str(&format!("{:.0}", s.t_s));
        for (_, v) in &s.values {
            out.push_str(&format!(",{v:.3}"));
        }
        out.push('\n');
        std::fs::write(&csv, &out)?;
        samples.push(s);
    }
    Ok(samples)
}

/// A series' growth over the later two thirds of the run (the first third is warm-up):
/// (first value of that span, last value, least-squares slope per hour).
pub fn growth(samples: &[Sample], series: &str) -> Option<(f64, f64, f64)> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| {
            s.values
                .iter()
                .find(|(k, _)| k == series)
                .map(|(_, v)| (s.t_s, *v))
        })
        .collect();
    let later = &points[points.len() / 3..];
    if later.len() < 2 {
        return None;
    }
    let n = later.len() as f64;
    let mean_t = later.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = later.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = later.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    let var: f64 = later.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    let slope = if var > 0.0 { cov / var * 3600.0 } else { 0.0 };
    Some((later[0].1, later[later.len() - 1].1, slope))
}

/// The names of every sampled series, in CSV order.
pub fn series(samples: &[Sample]) -> Vec<String> {
    samples
        .first()
        .map(|s| s.values.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default()
}
