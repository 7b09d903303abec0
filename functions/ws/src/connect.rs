//! `$connect`: authenticate, enforce the per-account limit, register.

use adapters::auth::Credentials;
use adapters::now_ms;
use app::auth::resolve;
use app::ApiError;
use domain::realtime::{Connection, ConnectionChange, PositionsSnapshot, SnapshotPosition};
use domain::RejectCode;
use uuid::Uuid;

use crate::{announce, is_connection_id, Deps, WsRequest, WsResponse};

const MISSING: &str = "missing credentials: connect with ?token=<session token>, or ?key_id=<API key id>&secret_key=<API secret>";

/// Seconds a client refused for too many connections should wait: one of its others has to
/// close first, so retrying at once is pointless.
const LIMIT_RETRY_AFTER_SECS: u32 = 10;

fn credentials(req: &WsRequest) -> Credentials {
    let q = |k: &str| req.query.get(k).map(|v| v.trim().to_string());
    let h = |k: &str| req.headers.get(k).map(|v| v.trim().to_string());
    let bearer = h("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
    });
    Credentials::from_parts(
        q("token").or(bearer),
        q("key_id").or_else(|| h("apca-api-key-id")),
        q("secret_key").or_else(|| h("apca-api-secret-key")),
    )
}

/// Accepts the connection (200) or refuses it with 401, 429 or 503.
pub async fn connect(deps: &Deps, req: &WsRequest) -> WsResponse {
    match register(deps, req).await {
        Ok(()) => WsResponse::ok(),
        Err(e) => WsResponse::error(&e),
    }
}

async fn register(deps: &Deps, req: &WsRequest) -> Result<(), ApiError> {
    if !is_connection_id(&req.connection_id) {
        return Err(ApiError::malformed(
            "the event has no connectionId of API Gateway's",
        ));
    }
    if let Some(origin) = req.headers.get("origin") {
        let cors = &deps.config.cors;
        if cors.check_websocket_origin && !cors.allows(origin) {
            return Err(ApiError::forbidden(
                "this origin may not open the WebSocket from a browser (CORS_ALLOWED_ORIGINS)",
            ));
        }
    }
    let credentials = credentials(req);
    // A key id with a NUL cannot name a key and is not looked up (PostgreSQL's text cannot
    // hold one, so the query would fail as if the database were down).
    if matches!(&credentials, Credentials::ApiKey { key_id, .. } if key_id.contains('\0')) {
        return Err(ApiError::unauthenticated("invalid API key or secret"));
    }
    let who = resolve(
        &deps.ledger,
        &deps.cache,
        deps.config.sessions.ttl_secs,
        &credentials,
        MISSING,
    )
    .await?;
    let now = now_ms();
    // Two connects racing past this check can exceed the limit by one each; the limit guards
    // against runaway clients, not against a determined one, and a conditional counter would
    // cost a write per connect and a repair path for lost disconnects.
    let open = deps.table.by_account(who.account_id, now).await?;
    let limit = deps.config.websocket.max_connections_per_user;
    if open.len() >= limit {
        let mut e = ApiError::new(
            429,
            RejectCode::TooManyConnections,
            format!(
                "an account may hold at most {limit} WebSocket connections; {} are open",
                open.len()
            ),
        );
        e.retry_after = Some(LIMIT_RETRY_AFTER_SECS);
        return Err(e);
    }
    let connection =
        Connection::new(&req.connection_id, who.account_id, now).opened_by(credentials.reference());
    deps.table.put(&connection).await?;
    announce(deps, &ConnectionChange::Put { connection }).await;
    if let Err(e) = ensure_snapshot(deps, who.account_id, now).await {
        tracing::warn!(error = %e, "no positions snapshot for the new connection; PnL waits for the next fill");
    }
    Ok(())
}

/// The fan-out values an account from its snapshot in Redis, which the executor writes after
/// each fill. An account that has not traded since Redis was last emptied has none: read it
/// from the ledger once, and store it unless the executor got there first.
async fn ensure_snapshot(
    deps: &Deps,
    account_id: Uuid,
    now: i64,
) -> Result<(), adapters::DependencyError> {
    if !deps.cache.snapshots(&[account_id]).await?.is_empty() {
        return Ok(());
    }
    let Some(account) = deps.ledger.account(account_id).await? else {
        return Ok(());
    };
    let positions = deps.ledger.positions(account_id).await?;
    let snapshot = PositionsSnapshot {
        account_id,
        cash: account.cash,
        positions: positions
            .into_iter()
            .map(|p| SnapshotPosition {
                symbol: p.symbol,
                position: p.position,
            })
            .collect(),
        at: now,
    };
    deps.cache.put_snapshot_if_absent(&snapshot).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &[(&str, &str)], headers: &[(&str, &str)]) -> WsRequest {
        WsRequest {
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_come_from_the_query_or_the_headers() {
        assert_eq!(
            credentials(&req(&[("token", "t")], &[])),
            Credentials::Session("t".into())
        );
        assert_eq!(
            credentials(&req(&[("key_id", "PK1"), ("secret_key", "s")], &[])),
            Credentials::ApiKey {
                key_id: "PK1".into(),
                secret: "s".into()
            }
        );
        assert_eq!(
            credentials(&req(
                &[],
                &[("apca-api-key-id", "PK1"), ("apca-api-secret-key", "s")]
            )),
            Credentials::ApiKey {
                key_id: "PK1".into(),
                secret: "s".into()
            }
        );
        assert_eq!(
            credentials(&req(&[], &[("authorization", "Bearer abc")])),
            Credentials::Session("abc".into())
        );
        assert_eq!(
            credentials(&req(&[("key_id", "PK1")], &[])),
            Credentials::IncompleteKey
        );
        assert_eq!(credentials(&req(&[], &[])), Credentials::None);
    }
}
