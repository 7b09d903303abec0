//! The `ws` Lambda behind API Gateway's WebSocket API.
//!
//! A route table over `app` (credentials, errors) and `adapters` (the connection table, the
//! cache), with `domain`; no crate depends on it, and its `main.rs` only wires.
//!
//! - `$connect`: authenticates by `?token=<session>` or `?key_id=…&secret_key=…` (or the REST
//!   API's headers, for clients that can set them) before the connection is accepted: 401
//!   otherwise, 429 past the per-account connection limit. Stores the connection in the
//!   connection table and announces it to the fan-out.
//! - `$default`: `subscribe`, `unsubscribe` and `ping` (see `domain::realtime`); the answer is
//!   API Gateway's route response, sent back to the client. A message that breaks a rule gets
//!   an `error` message and the connection stays open.
//! - `$disconnect`: deletes the item and announces it.
//!
//! The connection table is the record; the Redis notifications only spare the fan-out from
//! reading it. A notification that fails to publish is logged and repaired by the fan-out's
//! periodic re-scan, so it never fails the client's request.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

mod connect;
mod message;

use std::collections::HashMap;

use adapters::cache::Cache;
use adapters::config::Config;
use adapters::connections::ConnectionTable;
use adapters::ledger::Ledger;
use app::ApiError;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use domain::catalog::Catalog;
use domain::realtime::ConnectionChange;

pub use connect::connect;
pub use message::message;

pub struct Deps {
    pub config: Config,
    pub ledger: Ledger,
    pub cache: Cache,
    pub table: ConnectionTable,
    pub catalog: &'static Catalog,
}

impl Deps {
    /// Builds clients without connecting: connections open on first use.
    pub fn from_config(config: Config) -> anyhow::Result<Deps> {
        Ok(Deps {
            ledger: Ledger::connect_lazy(&config.database.url, config.database.max_connections)?,
            cache: Cache::new(&config.redis.url, &config.redis.key_prefix)?,
            table: ConnectionTable::new(&config.connections.table),
            catalog: Catalog::builtin(),
            config,
        })
    }
}

/// The request as the handlers need it.
#[derive(Debug, Clone, Default)]
pub struct WsRequest {
    pub route_key: String,
    pub connection_id: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: Option<String>,
}

impl From<ApiGatewayWebsocketProxyRequest> for WsRequest {
    fn from(e: ApiGatewayWebsocketProxyRequest) -> Self {
        let query = e
            .query_string_parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let headers = e
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect();
        WsRequest {
            route_key: e.request_context.route_key.unwrap_or_default(),
            connection_id: e.request_context.connection_id.unwrap_or_default(),
            query,
            headers,
            body: e.body,
        }
    }
}

/// What the function answers API Gateway: a status (decisive on `$connect`) and an optional
/// body (sent to the client as the route response on `$default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsResponse {
    pub status: u16,
    pub body: Option<String>,
    pub retry_after: Option<u32>,
}

impl WsResponse {
    pub fn ok() -> Self {
        WsResponse {
            status: 200,
            body: None,
            retry_after: None,
        }
    }

    pub fn message(body: String) -> Self {
        WsResponse {
            status: 200,
            body: Some(body),
            retry_after: None,
        }
    }

    pub fn error(e: &ApiError) -> Self {
        WsResponse {
            status: e.status,
            body: Some(e.body()),
            retry_after: e.retry_after,
        }
    }

    pub fn into_proxy_response(self) -> ApiGatewayProxyResponse {
        let mut r = ApiGatewayProxyResponse::default();
        r.status_code = i64::from(self.status);
        r.body = self.body.map(Body::Text);
        r.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            r.headers
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        r
    }
}

/// The longest connection id taken. API Gateway's are 16 characters (`L0SM9cOFvHcCIhw=`);
/// DynamoDB cannot key an item by more than 2048 bytes.
const MAX_CONNECTION_ID_CHARS: usize = 128;

/// Whether `id` can be a connection id of API Gateway's: 1 to 128 characters of base64's
/// and base64url's alphabets. `$connect` registers no other, so no other is looked up or
/// deleted either (an empty or oversized key fails DynamoDB's validation, which would read
/// as an outage).
pub(crate) fn is_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONNECTION_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Routes one event.
pub async fn handle(deps: &Deps, req: WsRequest) -> WsResponse {
    let route = async {
        Ok(match req.route_key.as_str() {
            "$connect" => connect(deps, &req).await,
            "$disconnect" => disconnect(deps, &req).await,
            _ => message(deps, &req).await,
        })
    };
    match app::panics::guarded("ws", route).await {
        Ok(response) => response,
        Err(e) => WsResponse::error(&e),
    }
}

/// Deletes the item. A failure is answered 503 (API Gateway ignores it); the TTL removes the
/// item eventually and the fan-out drops it at the first 410.
pub async fn disconnect(deps: &Deps, req: &WsRequest) -> WsResponse {
    if !is_connection_id(&req.connection_id) {
        // Nothing can be registered under it.
        return WsResponse::ok();
    }
    if let Err(e) = deps.table.delete(&req.connection_id).await {
        return WsResponse::error(&ApiError::from(e));
    }
    announce(
        deps,
        &ConnectionChange::Delete {
            connection_id: req.connection_id.clone(),
        },
    )
    .await;
    WsResponse::ok()
}

/// Tells the fan-out about a change of the table (best effort, see the module docs).
pub(crate) async fn announce(deps: &Deps, change: &ConnectionChange) {
    if let Err(e) = deps.cache.publish_connection_change(change).await {
        tracing::warn!(error = %e, "could not announce a connection change; the fan-out re-scan will catch up");
    }
}
