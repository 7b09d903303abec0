//! `$default`: the client's messages. Every answer is one message (the route response).

use adapters::{now_ms, DependencyError};
use domain::realtime::{
    error_message, parse_action, pong_message, snapshot_message, ClientAction, ConnectionChange,
    ProtocolError, Subscription,
};
use domain::RejectCode;

use crate::{announce, is_connection_id, Deps, WsRequest, WsResponse};

/// The largest client message read. API Gateway lets 128 KB through; a subscribe to the
/// maximum of symbols takes well under 2 KB, so anything near this is not a real request.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

fn error(now: i64, code: RejectCode, message: &str) -> WsResponse {
    WsResponse::message(error_message(now, code, message))
}

fn unavailable(now: i64, e: &DependencyError) -> WsResponse {
    tracing::warn!(dependency = e.dependency, detail = %e.detail, "dependency error");
    error(
        now,
        RejectCode::ServiceUnavailable,
        &format!("{} is unavailable; retry in a second", e.dependency),
    )
}

/// Answers one client message.
pub async fn message(deps: &Deps, req: &WsRequest) -> WsResponse {
    let now = now_ms();
    let body = req.body.as_deref().unwrap_or_default();
    if body.len() > MAX_MESSAGE_BYTES {
        return error(
            now,
            RejectCode::MessageTooLarge,
            &format!(
                "a message may be at most {MAX_MESSAGE_BYTES} bytes; this one is {}",
                body.len()
            ),
        );
    }
    match parse_action(body) {
        Err(e) => error(now, e.code, &e.message),
        Ok(ClientAction::Ping) => WsResponse::message(pong_message(now)),
        Ok(ClientAction::Subscribe {
            symbols,
            max_rate_ms,
        }) => {
            let (catalog, cap) = (deps.catalog, deps.config.websocket.max_symbols);
            change_subscription(deps, req, now, |s| {
                s.subscribe(&symbols, max_rate_ms, catalog, cap)
            })
            .await
        }
        Ok(ClientAction::Unsubscribe { symbols }) => {
            change_subscription(deps, req, now, |s| {
                s.unsubscribe(&symbols);
                Ok(())
            })
            .await
        }
    }
}

/// Reads the connection, changes its subscription, writes it back (only if it still exists)
/// and answers with a snapshot of the prices it now follows.
async fn change_subscription(
    deps: &Deps,
    req: &WsRequest,
    now: i64,
    change: impl FnOnce(&mut Subscription) -> Result<(), ProtocolError>,
) -> WsResponse {
    let gone = || {
        error(
            now,
            RejectCode::ConnectionUnknown,
            "this connection is not registered (expired or disconnected); reconnect",
        )
    };
    if !is_connection_id(&req.connection_id) {
        return gone();
    }
    let mut connection = match deps.table.get(&req.connection_id, now).await {
        Ok(Some(c)) => c,
        Ok(None) => return gone(),
        Err(e) => return unavailable(now, &e),
    };
    let mut subscription = connection.subscription();
    if let Err(e) = change(&mut subscription) {
        return error(now, e.code, &e.message);
    }
    connection.set_subscription(&subscription);
    match deps.table.update(&connection).await {
        Ok(true) => {}
        Ok(false) => return gone(),
        Err(e) => return unavailable(now, &e),
    }
    announce(deps, &ConnectionChange::Put { connection }).await;
    let symbols: Vec<String> = subscription.symbols.iter().cloned().collect();
    let quotes = match deps.cache.quotes(&symbols).await {
        Ok(q) => q,
        Err(e) => return unavailable(now, &e),
    };
    // BTreeSet order: the snapshot lists prices by symbol.
    let prices: Vec<_> = symbols
        .iter()
        .filter_map(|s| quotes.get(s).cloned())
        .collect();
    WsResponse::message(snapshot_message(now, &subscription, &prices))
}
