//! Least privilege in Redis: the rules ElastiCache RBAC gives the Lambda functions' user and
//! the ingest task's (`Keyspace::functions_access`, `Keyspace::ingest_access`), applied to
//! real ACL users on the test Redis. Only the ingest task writes prices.

use adapters::cache::Cache;
use adapters::keyspace::Keyspace;
use domain::quote::Quote;
use rust_decimal_macros::dec;
use testkit::redis_acl_user;
use uuid::Uuid;

fn prefix() -> String {
    format!("acl{}:", &Uuid::new_v4().simple().to_string()[..12])
}

fn quote(symbol: &str) -> Quote {
    Quote {
        symbol: symbol.into(),
        bid: dec!(100),
        ask: dec!(101),
        last: Some(dec!(100)),
        ts: adapters::now_ms(),
    }
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("URL parses")
        .get_multiplexed_async_connection()
        .await
        .expect("the ACL user logs in")
}

/// The error code Redis answers `args` with as this connection's user (`None`: allowed).
async fn refusal(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Option<String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    match cmd.query_async::<redis::Value>(conn).await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("?").to_string()),
    }
}

#[tokio::test]
async fn the_functions_read_prices_but_cannot_write_them() {
    let prefix = prefix();
    let keys = Keyspace::new(&prefix);
    let ingest = Cache::new(&redis_acl_user(&keys.ingest_access()).await, &prefix).unwrap();
    let functions_url = redis_acl_user(&keys.functions_access()).await;
    let functions = Cache::new(&functions_url, &prefix).unwrap();

    // The ingest task writes the price; the functions read it through the same adapter.
    ingest
        .put_quote(&quote("BTCUSDT"), 60_000)
        .await
        .expect("ingest writes prices");
    let read = functions
        .quote("BTCUSDT")
        .await
        .expect("functions read prices");
    assert_eq!(read.map(|q| q.bid), Some(dec!(100)));
    // Writing one is refused, through the adapter and by any command.
    let refused = functions.put_quote(&quote("BTCUSDT"), 60_000).await;
    assert!(refused.is_err(), "the functions' user wrote a price");
    let mut conn = connection(&functions_url).await;
    let price = keys.price("BTCUSDT");
    let stale = keys.stale("BTCUSDT");
    for args in [
        vec!["SET", price.as_str(), "{}"],
        vec!["DEL", price.as_str()],
        vec!["PEXPIRE", price.as_str(), "1"],
        vec!["SET", stale.as_str(), "1"],
        vec!["DEL", stale.as_str()],
    ] {
        assert_eq!(
            refusal(&mut conn, &args).await.as_deref(),
            Some("NOPERM"),
            "{args:?}"
        );
    }
    assert_eq!(refusal(&mut conn, &["GET", &price]).await, None);
    assert_eq!(refusal(&mut conn, &["MGET", &price, &stale]).await, None);
}

#[tokio::test]
async fn the_functions_write_their_own_keys_only_under_their_prefix() {
    let prefix = prefix();
    let keys = Keyspace::new(&prefix);
    let mut conn = connection(&redis_acl_user(&keys.functions_access()).await).await;
    let account = Uuid::new_v4();
    for key in [
        keys.session("digest"),
        keys.user_sessions(account),
        keys.pending_orders(account),
        keys.positions(account),
        keys.rate_bucket("orders", "subject"),
        keys.login_email("ff"),
        keys.login_ip("10.0.0.1"),
        keys.watch("BTCUSDT"),
        keys.watch_built(),
    ] {
        assert_eq!(refusal(&mut conn, &["SET", &key, "x"]).await, None, "{key}");
        assert_eq!(refusal(&mut conn, &["DEL", &key]).await, None, "{key}");
    }
    assert_eq!(
        refusal(&mut conn, &["PUBLISH", &keys.positions_channel(), "x"]).await,
        None
    );
    // Another deployment's keys and channels, and the commands that touch every key.
    let other = Keyspace::new("other:");
    for args in [
        vec!["SET", &other.session("digest"), "x"],
        vec!["GET", &other.price("BTCUSDT")],
        vec!["PUBLISH", &other.positions_channel(), "x"],
        vec!["FLUSHALL"],
        vec!["KEYS", "*"],
        vec!["CONFIG", "GET", "*"],
    ] {
        let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
        assert_eq!(
            refusal(&mut conn, &args).await.as_deref(),
            Some("NOPERM"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn the_ingest_task_writes_prices_and_nothing_outside_its_prefix() {
    let prefix = prefix();
    let keys = Keyspace::new(&prefix);
    let mut conn = connection(&redis_acl_user(&keys.ingest_access()).await).await;
    assert_eq!(
        refusal(&mut conn, &["SET", &keys.price("BTCUSDT"), "{}"]).await,
        None
    );
    assert_eq!(
        refusal(&mut conn, &["SET", &keys.stale("BTCUSDT"), "1"]).await,
        None
    );
    assert_eq!(
        refusal(
            &mut conn,
            &["SET", &Keyspace::new("other:").price("X"), "{}"]
        )
        .await
        .as_deref(),
        Some("NOPERM")
    );
    assert_eq!(
        refusal(&mut conn, &["FLUSHALL"]).await.as_deref(),
        Some("NOPERM")
    );
}

#[test]
fn the_template_gives_the_cache_users_exactly_these_rules() {
    // template.yaml writes the prefix as ${P} (`{trading}:` on Serverless, empty on nodes).
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"),
    )
    .expect("template.yaml");
    let keys = Keyspace::new("${P}");
    for rules in [keys.functions_access(), keys.ingest_access()] {
        let access_string = format!("\"on {rules}\"");
        assert!(
            template.contains(&access_string),
            "template.yaml has no access string {access_string}"
        );
    }
}
