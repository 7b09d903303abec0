//! What the ws integration tests share: an account with a session and an API key on the
//! real PostgreSQL, Redis and a fresh connection table in moto, and the sample events.

// Each test binary uses a part of it.
#![allow(dead_code)]

use adapters::auth::{digest, new_key_id, random_secret};
use adapters::cache::{Cache, Session};
use adapters::config::SessionSettings;
use adapters::connections::ConnectionTable;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use rust_decimal_macros::dec;
use uuid::Uuid;
use ws::Deps;

pub struct Fixture {
    pub deps: Deps,
    pub account_id: Uuid,
    pub token: String,
    pub key_id: String,
    pub secret: String,
}

/// The services, an account holding 1000 USDT with a session token and an API key, at most
/// `max_connections` connections per account and 3 symbols per connection.
pub async fn fixture(max_connections: usize) -> Fixture {
    let ledger = testkit::ledger().await;
    let (user_id, account_id) = testkit::account_with_cash(&ledger, dec!(1000)).await;
    let cache = testkit::cache();
    let token = random_secret();
    cache
        .put_session(
            &digest(&token),
            &Session {
                user_id,
                account_id,
            },
            &SessionSettings {
                ttl_secs: 3600,
                max_lifetime_secs: 3600,
            },
        )
        .await
        .expect("session stored");
    let (key_id, secret) = (new_key_id(), random_secret());
    ledger
        .insert_api_key(&key_id, user_id, account_id, &digest(&secret))
        .await
        .expect("api key stored");
    let mut config = testkit::config();
    config.redis.key_prefix = cache.prefix().to_string();
    config.connections.table = testkit::connection_table();
    config.websocket.max_connections_per_user = max_connections;
    config.websocket.max_symbols = 3;
    let deps = Deps {
        table: ConnectionTable::new(&config.connections.table),
        ledger,
        cache: Cache::new(&config.redis.url, &config.redis.key_prefix).expect("cache"),
        catalog: domain::catalog::Catalog::builtin(),
        config,
    };
    Fixture {
        deps,
        account_id,
        token,
        key_id,
        secret,
    }
}

/// The text of a sample event of `events/` (`ws-connect.json`, …).
pub fn event_text(file: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/").to_string() + file;
    std::fs::read_to_string(&path).expect("sample event")
}

/// A sample event of `events/`, as API Gateway sends it.
pub fn event(file: &str) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_str(&event_text(file))
        .unwrap_or_else(|e| panic!("{file} is not a WebSocket event: {e}"))
}
