//! What the api's handler-level tests share: users with a login session and an API key on
//! the real PostgreSQL and Redis, requests built as API Gateway sends them, and clients
//! pointed at a closed port to stand for a dependency that is down.

// Each test binary uses a part of it.
#![allow(dead_code)]

use adapters::auth::{digest, new_key_id, random_secret};
use adapters::cache::{Cache, Session};
use adapters::queue::CommandQueue;
use api::{handle, Deps};
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest};
use lambda_http::http::{HeaderMap, Method};
use lambda_http::Body;
use rust_decimal::Decimal;
use serde_json::Value;
use testkit::events::RestEvent;
use uuid::Uuid;

/// A user of the tests: its account, a live login session and a live API key.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub token: String,
    pub key_id: String,
    pub secret: String,
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Key(String, String),
}

impl User {
    pub fn bearer(&self) -> Auth {
        Auth::Bearer(self.token.clone())
    }

    pub fn key(&self) -> Auth {
        Auth::Key(self.key_id.clone(), self.secret.clone())
    }
}

/// A new user holding `cash` USDT, with a session (as a login opens it) and an API key.
pub async fn user(deps: &Deps, cash: Decimal) -> User {
    let (user_id, account_id) = testkit::account_with_cash(&deps.ledger, cash).await;
    let token = random_secret();
    deps.cache
        .put_session(
            &digest(&token),
            &Session {
                user_id,
                account_id,
            },
            &deps.config.sessions,
        )
        .await
        .expect("session stored");
    let (key_id, secret) = (new_key_id(), random_secret());
    deps.ledger
        .insert_api_key(&key_id, user_id, account_id, &digest(&secret))
        .await
        .expect("api key stored");
    User {
        user_id,
        account_id,
        token,
        key_id,
        secret,
    }
}

/// An answer of the handler.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or_default()
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// Asserts a 503 `service_unavailable` with a `Retry-After` of at least a second.
    pub fn expect_unavailable(&self, what: &str) {
        assert_eq!(self.status, 503, "{what}: {self:?}");
        assert_eq!(self.code(), "service_unavailable", "{what}: {self:?}");
        assert!(
            self.retry_after().is_some_and(|s| s >= 1),
            "{what}: a 503 says when to retry: {self:?}"
        );
    }
}

/// Sends one request through `api::handle`, built as API Gateway's REST proxy sends it.
pub async fn call(
    deps: &Deps,
    method: Method,
    path: &str,
    auth: &Auth,
    body: Option<&Value>,
) -> Answer {
    call_with_headers(deps, method, path, auth, body, &[]).await
}

/// [`call`] with more request headers (`origin`, `access-control-request-method`).
pub async fn call_with_headers(
    deps: &Deps,
    method: Method,
    path: &str,
    auth: &Auth,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut event = RestEvent::new(method, path).header("accept", "application/json");
    for (name, value) in headers {
        event = event.header(*name, *value);
    }
    match auth {
        Auth::None => {}
        Auth::Bearer(token) => event = event.header("authorization", format!("Bearer {token}")),
        Auth::Key(id, secret) => {
            event = event
                .header("apca-api-key-id", id)
                .header("apca-api-secret-key", secret)
        }
    }
    if let Some(b) = body {
        event = event
            .header("content-type", "application/json")
            .json_body(b);
    }
    let req = lambda_http::request::from_str(&event.to_json()).expect("a REST proxy event");
    // Boxed: the handler's future is large, and a test awaiting many is deeper than the
    // test thread's stack in a debug build.
    let r = Box::pin(handle(deps, req)).await;
    let json = match r.body() {
        Body::Text(t) if !t.is_empty() => serde_json::from_str(t).unwrap_or(Value::Null),
        Body::Binary(b) if !b.is_empty() => serde_json::from_slice(b).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        json,
    }
}

/// A port on loopback that nothing listens on: connecting to it is refused at once.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// A Redis client of a Redis that is down.
pub fn redis_down() -> Cache {
    Cache::new(&format!("redis://127.0.0.1:{}/", closed_port()), "down:").expect("a cache")
}

/// A PostgreSQL pool of a database that is down.
pub fn postgres_down() -> adapters::ledger::Ledger {
    adapters::ledger::Ledger::connect_lazy(
        &format!(
            "postgres://trading:trading@127.0.0.1:{}/trading",
            closed_port()
        ),
        1,
    )
    .expect("a lazy pool")
}

/// An SQS client of an endpoint that is down (no retries: the first refusal is the answer).
pub async fn sqs_down_client() -> aws_sdk_sqs::Client {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let config = adapters::aws::config_loader()
        .endpoint_url(&endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// A port on loopback whose listener accepts every connection and never answers (a paused
/// or black-holed dependency), for as long as the test's runtime lives.
pub async fn silent_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = l.local_addr().expect("its address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = l.accept().await {
            held.push(stream);
        }
    });
    port
}

/// An SQS client with the production configuration (its time bounds and retries) of an
/// endpoint that accepts and never answers.
pub async fn sqs_silent_client() -> aws_sdk_sqs::Client {
    let endpoint = format!("http://127.0.0.1:{}", silent_port().await);
    let config = adapters::aws::config_loader()
        .endpoint_url(&endpoint)
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// The queue of `deps` (its URL), reached through an SQS that is down.
pub async fn queue_down(deps: &Deps) -> CommandQueue {
    CommandQueue::from_client(deps.queue.url(), sqs_down_client().await)
}

/// Takes every command off the queue of `deps` (received and deleted, so that the next
/// call sees only what was sent after this one, and the FIFO groups are free again).
pub async fn drain(deps: &Deps) -> Vec<Command> {
    let client = deps.queue.client().await;
    let mut out = Vec::new();
    loop {
        let r = client
            .receive_message()
            .queue_url(deps.queue.url())
            .max_number_of_messages(10)
            .send()
            .await
            .expect("moto answers");
        let batch = r.messages.unwrap_or_default();
        if batch.is_empty() {
            return out;
        }
        for m in &batch {
            out.push(
                serde_json::from_str(m.body.as_deref().unwrap_or_default()).expect("a command"),
            );
            client
                .delete_message()
                .queue_url(deps.queue.url())
                .receipt_handle(m.receipt_handle.as_deref().unwrap_or_default())
                .send()
                .await
                .expect("moto deletes it");
        }
    }
}

/// Asserts that a refused request (`why`) left nothing behind for `account`: no command on
/// the queue and no pending copy of an order in the cache.
pub async fn assert_nothing_enqueued(deps: &Deps, account: Uuid, why: &str) {
    let queued = drain(deps).await;
    assert!(queued.is_empty(), "{why}: enqueued {queued:?}");
    let pending = deps.cache.pending_orders(account).await.expect("the cache");
    assert!(pending.is_empty(), "{why}: pending copies {pending:?}");
}

/// Applies `request` (an order's JSON) for `account` straight in the ledger, as the executor
/// would have, at the cached quote of its symbol; returns the order's id.
pub async fn order_in_ledger(deps: &Deps, account: Uuid, request: Value) -> Uuid {
    let req: OrderRequest = serde_json::from_value(request).expect("an order request");
    let (valid, inst) = req.validate(deps.catalog).expect("a valid order");
    let order = NewOrder::new(account, valid, inst.asset_id, chrono::Utc::now());
    let quote = deps
        .cache
        .quote(&order.spec.symbol)
        .await
        .expect("the cache");
    deps.ledger
        .place_order(
            order.id,
            &order,
            quote.as_ref(),
            adapters::now_ms(),
            &deps.config.execution_params(),
        )
        .await
        .expect("the ledger applies it");
    order.id
}

/// A resting limit buy of 0.01 BTCUSDT at 50000 for `account`, applied in the ledger.
pub async fn resting_buy(deps: &Deps, account: Uuid) -> Uuid {
    order_in_ledger(
        deps,
        account,
        serde_json::json!({"symbol": "BTCUSDT", "qty": "0.01", "side": "buy", "type": "limit", "time_in_force": "gtc", "limit_price": "50000"}),
    )
    .await
}
