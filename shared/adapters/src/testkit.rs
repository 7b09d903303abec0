//! Used by tests only; compiled always so integration tests in every crate can share it.
//! Helpers for integration tests against the real services that `make test` starts
//! (PostgreSQL, Redis, moto). A missing service address is an error, never a skipped test.

use domain::quote::Quote;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::cache::Cache;
use crate::ledger::Ledger;

/// Reads a service address exported by `make test`; panics with a clear message without it.
pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run the tests with `make test`, which starts PostgreSQL, Redis and moto and exports their addresses"),
    }
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
        ts: crate::now_ms(),
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
