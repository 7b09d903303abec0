//! What the webhook's handler-level tests share: an account's webhook with a known
//! passphrase on the real PostgreSQL, Redis and moto, alerts built as API Gateway sends
//! them, and clients pointed at a closed port to stand for a dependency that is down.

// Each test binary uses a part of it.
#![allow(dead_code)]

use adapters::auth::{digest, random_secret};
use app::Deps;
use lambda_http::http::HeaderMap;
use lambda_http::Body;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use testkit::events::RestEvent;
use uuid::Uuid;

/// A sender that is not one of TradingView's addresses.
pub const SENDER: &str = "203.0.113.9";

pub struct Hook {
    pub account_id: Uuid,
    pub id: String,
    pub passphrase: String,
}

/// A webhook of a new account holding 100000 USDT.
pub async fn hook(deps: &Deps) -> Hook {
    let (_, account_id) = testkit::account_with_cash(&deps.ledger, dec!(100000)).await;
    let passphrase = random_secret();
    let w = deps
        .ledger
        .create_webhook(account_id, "test", &digest(&passphrase), None, 1)
        .await
        .expect("the ledger")
        .expect("the account's first webhook");
    Hook {
        account_id,
        id: w.id,
        passphrase,
    }
}

/// A market buy alert carrying `passphrase` (none with `None`).
pub fn alert(passphrase: Option<&str>, client_order_id: &str) -> String {
    let mut a = json!({"action": "buy", "symbol": "BINANCE:BTCUSDT", "qty": "0.001", "client_order_id": client_order_id});
    if let Some(p) = passphrase {
        a["passphrase"] = json!(p);
    }
    a.to_string()
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Asserts a 503 `service_unavailable` with a `Retry-After` of at least a second.
    pub fn expect_unavailable(&self, what: &str) {
        assert_eq!(self.status, 503, "{what}: {self:?}");
        assert_eq!(
            self.json()["code"],
            "service_unavailable",
            "{what}: {self:?}"
        );
        let retry = self
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(retry.is_some_and(|s| s >= 1), "{what}: {self:?}");
    }
}

/// Sends one alert through `webhook::handle`, as API Gateway's REST proxy sends it.
pub async fn send(deps: &Deps, webhook_id: &str, body: &str, source_ip: &str) -> Answer {
    let event = RestEvent::new(
        lambda_http::http::Method::POST,
        &format!("/v2/hooks/tradingview/{webhook_id}"),
    )
    .path_parameter("webhook_id", webhook_id)
    .header("Content-Type", "application/json")
    .source_ip(source_ip)
    .body(body);
    let req = lambda_http::request::from_str(&event.to_json()).expect("an event");
    let r = Box::pin(webhook::handle(deps, req)).await;
    let text = match r.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text,
    }
}

/// A port on loopback that nothing listens on: connecting to it is refused at once.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}
