//! On AWS the trigger engine's ledger URL comes from a Secrets Manager secret
//! (`DATABASE_SECRET_ARN` + `DATABASE_HOST`), not `DATABASE_URL`. Runs the ingest binary
//! against moto's Secrets Manager (`AWS_ENDPOINT_URL`), the test Postgres (`DATABASE_URL`,
//! migrated here) and Redis.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::service_env as env;
use tokio::io::{AsyncBufReadExt, BufReader};

const INGEST: &str = env!("CARGO_BIN_EXE_ingest");
const SOON: Duration = Duration::from_secs(30);

/// Creates a secret in moto with one Secrets Manager call (moto routes on the credential
/// scope of the Authorization header and does not check the signature).
async fn create_secret(name: &str, value: &Value) {
    let resp = reqwest::Client::new()
        .post(env("AWS_ENDPOINT_URL"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "secretsmanager.CreateSecret")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/secretsmanager/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(json!({"Name": name, "SecretString": value.to_string()}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// The ingest binary with only the environment given here plus AWS's (moto's), JSON logs.
fn ingest_command(
    feed: &feed::Feed,
    prefix: &str,
    extra: &[(&str, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(INGEST);
    cmd.env_clear()
        .env("LOG_FORMAT", "json")
        .env("BINANCE_WS_URL", feed.ws_base_url())
        .env("SYMBOLS", "BTCUSDT")
        .env("REDIS_URL", redis_url())
        .env("KEY_PREFIX", prefix)
        .env("STATS_INTERVAL_SECS", "0")
        .env("HEARTBEAT_INTERVAL_SECS", "0")
        .env("HEARTBEAT_FILE", heartbeat_path(prefix))
        .env("COMMANDS_QUEUE_URL", env("COMMANDS_QUEUE_URL"));
    cmd.envs(testkit::aws_env())
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_ledger_for_rebuilds_comes_from_the_database_secret() {
    let database_url = env("DATABASE_URL");
    adapters::ledger::Ledger::connect_lazy(&database_url, 1)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let url = reqwest::Url::parse(&database_url).unwrap();
    let prefix = unique_prefix("db-secret");
    let secret = format!("{}db", prefix.trim_end_matches(':'));
    // The shape RDS writes; the host in it is not reachable, DATABASE_HOST wins (RDS Proxy).
    create_secret(
        &secret,
        &json!({
            "username": url.username(),
            "password": url.password().unwrap_or_default(),
            "host": "cluster.invalid",
            "port": url.port().unwrap_or(5432),
            "dbname": url.path().trim_start_matches('/'),
        }),
    )
    .await;

    let feed = quiet_feed(|_| {}).await;
    let mut child = ingest_command(
        &feed,
        &prefix,
        &[
            ("DATABASE_SECRET_ARN", secret.clone()),
            ("DATABASE_HOST", url.host_str().unwrap().to_string()),
            ("DATABASE_SSL_MODE", "disable".into()),
        ],
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // A fresh key prefix has no trigger index in Redis: it is rebuilt from the ledger,
    // which is only possible through the URL built from the secret.
    tokio::time::timeout(SOON, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("ingest exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            let message = v["fields"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("failed") && !message.contains("no ledger"),
                "{line}"
            );
            if message == "trigger index rebuilt from the ledger" {
                return;
            }
        }
    })
    .await
    .expect("the trigger index was never rebuilt");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_unreadable_database_secret_stops_ingest_at_start() {
    let feed = quiet_feed(|_| {}).await;
    let prefix = unique_prefix("db-secret-missing");
    let secret = format!("{}absent", prefix.trim_end_matches(':'));
    let out = ingest_command(
        &feed,
        &prefix,
        &[
            ("DATABASE_SECRET_ARN", secret.clone()),
            ("DATABASE_HOST", "127.0.0.1".into()),
        ],
    )
    .output();
    let out = tokio::time::timeout(SOON, out).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ingest failed") && stdout.contains(&secret),
        "{stdout}"
    );
}
