//! The container health check (`ingest health`, heartbeat file) and the `ingest
//! heartbeat` log line, against the in-process feed and a real Redis (`REDIS_URL`); the
//! binary is the one cargo built for these tests.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::*;
use market_data::health::{check_heartbeat, Unhealthy};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const INGEST: &str = env!("CARGO_BIN_EXE_ingest");
const SOON: Duration = Duration::from_secs(15);
const MAX_AGE: Duration = Duration::from_secs(15);

/// Runs `ingest health` (plus `args`) with only `envs` set; returns its exit code and what
/// it printed.
fn health_check(envs: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(INGEST)
        .env_clear()
        .envs(envs.iter().copied())
        .arg("health")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

fn age_file(path: &Path, by: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn the_binary_exit_code_follows_the_heartbeat_file() {
    let path = heartbeat_path(&unique_prefix("health-cli"));
    let _ = std::fs::remove_file(&path);
    let file = path.to_str().unwrap();

    let (code, out) = health_check(&[], &["--heartbeat-file", file]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unhealthy: no heartbeat file"), "{out}");

    std::fs::write(&path, "1\n").unwrap();
    let (code, out) = health_check(&[], &["--heartbeat-file", file]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("healthy: last flush to Redis"), "{out}");

    // Older than the default 15 s: unhealthy, and the output says how old.
    age_file(&path, Duration::from_secs(60));
    let (code, out) = health_check(&[], &["--heartbeat-file", file]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("more than the 15 s allowed"), "{out}");
    // A larger limit, by flag or by environment (as the task definition sets it).
    let (code, out) = health_check(
        &[],
        &["--heartbeat-file", file, "--health-max-age-secs", "120"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = health_check(
        &[("HEARTBEAT_FILE", file), ("HEALTH_MAX_AGE_SECS", "120")],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    // The flags may also come before the command.
    let out = std::process::Command::new(INGEST)
        .env_clear()
        .args([
            "--heartbeat-file",
            file,
            "--health-max-age-secs",
            "120",
            "health",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (code, out) = health_check(
        &[("HEARTBEAT_FILE", file), ("HEALTH_MAX_AGE_SECS", "30")],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn healthy_after_flushes_to_redis_and_unhealthy_once_they_stop() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("health-flush");
    let config = ingest_config(&feed, &["BTCUSDT"], &prefix);
    let path = config.heartbeat_file.clone();
    // A file left by an earlier process must not count: ingest removes it at start.
    std::fs::write(&path, "0\n").unwrap();
    let ingest = market_data::spawn(&config).unwrap();
    eventually(SOON, "the old heartbeat file is removed", || !path.exists()).await;
    assert!(matches!(
        check_heartbeat(&path, MAX_AGE, SystemTime::now()),
        Err(Unhealthy::Missing(_))
    ));

    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    eventually(SOON, "a heartbeat after a flush", || path.exists()).await;
    check_heartbeat(&path, MAX_AGE, SystemTime::now()).unwrap();
    let (code, out) = health_check(&[("HEARTBEAT_FILE", path.to_str().unwrap())], &[]);
    assert_eq!(code, 0, "{out}");
    // The content is the last flush's wall-clock ms, one the freshness tracker recorded.
    let written: i64 = std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(written > 0 && written <= now_ms());
    assert!(ingest.freshness.flushes() > 0);
    assert!(ingest.freshness.last_flush_ms() >= Some(written));
    // The scripted quote is re-sent every 100 ms: the freshest price is recent.
    assert!(ingest.freshness.price_age_ms(now_ms()) < SOON.as_millis() as i64);

    // Flushes stop with the process; once the file is older than the limit, unhealthy.
    drop(ingest);
    age_file(&path, MAX_AGE + Duration::from_secs(1));
    let err = check_heartbeat(&path, MAX_AGE, SystemTime::now()).unwrap_err();
    assert!(matches!(err, Unhealthy::Stale { .. }), "{err}");
    let (code, out) = health_check(&[("HEARTBEAT_FILE", path.to_str().unwrap())], &[]);
    assert_eq!(code, 1, "{out}");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn no_heartbeat_while_redis_refuses_writes() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("health-no-redis");
    let config = market_data::Config {
        // Nothing listens on port 1: every flush fails.
        redis_url: "redis://127.0.0.1:1/".into(),
        ..ingest_config(&feed, &["BTCUSDT"], &prefix)
    };
    let path = config.heartbeat_file.clone();
    let _ = std::fs::remove_file(&path);
    let ingest = market_data::spawn(&config).unwrap();
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    let failures = || {
        ingest
            .flush_stats
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually(SOON, "flushes fail", || failures() >= 2).await;
    // Prices arrive, writes fail: over more than one heartbeat period, nothing is written.
    tokio::time::sleep(market_data::health::HEARTBEAT_WRITE_INTERVAL * 2).await;
    assert!(failures() >= 3);
    assert!(matches!(
        check_heartbeat(&path, MAX_AGE, SystemTime::now()),
        Err(Unhealthy::Missing(_))
    ));
    assert_eq!(ingest.freshness.flushes(), 0);
    assert_eq!(ingest.freshness.last_flush_ms(), None);
}

/// The real binary with `LOG_FORMAT=json`: the `ingest heartbeat` line has the fields a
/// CloudWatch metric filter reads (`$.fields.message`, `$.fields.price_age_ms`).
#[tokio::test]
async fn the_json_heartbeat_line_carries_the_price_age() {
    let feed = quiet_feed(|_| {}).await;
    post_quote(&feed, r#"{"symbol":"BTCUSDT","bid":"100.1","ask":"100.2"}"#).await;
    let prefix = unique_prefix("health-json");
    let path = heartbeat_path(&prefix);
    let _ = std::fs::remove_file(&path);
    // Only what this test sets: no queue or connection table, so no triggers or fan-out.
    let mut child = tokio::process::Command::new(INGEST)
        .env_clear()
        .env("LOG_FORMAT", "json")
        .env("BINANCE_WS_URL", feed.ws_base_url())
        .env("SYMBOLS", "BTCUSDT")
        .env("REDIS_URL", redis_url())
        .env("KEY_PREFIX", &prefix)
        .env("STATS_INTERVAL_SECS", "0")
        .env("HEARTBEAT_INTERVAL_SECS", "1")
        .env("HEARTBEAT_FILE", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // The first line may come before the first flush; wait for one after flushes.
    let line = tokio::time::timeout(SOON, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("ingest exited");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if v["fields"]["message"] == "ingest heartbeat"
                && v["fields"]["flushes"].as_u64() > Some(0)
            {
                return v;
            }
        }
    })
    .await
    .expect("no `ingest heartbeat` line with flushes");
    assert_eq!(line["level"], "INFO");
    let fields = &line["fields"];
    let age = fields["price_age_ms"].as_i64();
    assert!(age.is_some_and(|a| a >= 0), "{line}");
    assert_eq!(fields["symbols"], 1, "{line}");
    assert_eq!(fields["stale"], 0, "{line}");
    assert_eq!(fields["flush_failures"], 0, "{line}");

    // The same process's heartbeat makes its health check pass.
    eventually(SOON, "the heartbeat file", || path.exists()).await;
    let (code, out) = health_check(&[("HEARTBEAT_FILE", path.to_str().unwrap())], &[]);
    assert_eq!(code, 0, "{out}");
    child.kill().await.unwrap();
    let _ = std::fs::remove_file(&path);
}
