//! The API Gateway `@connections` management API, plus test control
//! endpoints, on the WebSocket listener.
//!
//! Functions find it through `WS_MANAGEMENT_URL=http://<ws addr>/<stage>`,
//! which is what `aws-sdk-apigatewaymanagement` takes as `endpoint_url` (it
//! appends `/@connections/{id}`, percent-encoding the id's `=` as `%3D`).
//! Both `/@connections/{id}` and `/{stage}/@connections/{id}` are served; a
//! wrong stage is 403 `ForbiddenException`. Signatures are not checked.
//! Connection ids are standard base64 and may contain `+` and `/` besides
//! the final `=`: in a URL they must be percent-encoded (the SDKs do), which
//! applies to the control endpoints below as well.
//!
//! - `POST` (body = data, at most 128 KB): queued for the client as one text
//!   message (binary if not UTF-8); 200 with an empty body. An unknown or
//!   closed connection is 410 `GoneException` (`{"message":null}`, as AWS
//!   sends it); a larger body is 413 `PayloadTooLargeException`.
//! - `GET`: 200 `{"connectedAt","identity":{"sourceIp","userAgent"},
//!   "lastActiveAt"}` (RFC 3339; camelCase is the wire format the SDKs read,
//!   the CLI shows them capitalized), or 410.
//! - `DELETE`: the client gets close code 1000, `$disconnect` follows; 204, or
//!   410 if unknown.
//!
//! Delivery never waits for the client: each connection has a queue of
//! [`OUTBOUND_QUEUE`] messages drained by its socket task. A full queue is a
//! client that does not keep up: the POST gets 410 and the connection is
//! closed with 1001 (API Gateway drops such clients too), which the backend
//! handles like any stale connection.
//!
//! Test control endpoints (not part of AWS):
//! - `POST /__control/vanish/{id}`: drop the client's TCP connection without
//!   a close frame and forget it *without* invoking `$disconnect` (a client
//!   lost without a disconnect event): the next POST to it is 410. 204, or
//!   404 if unknown.
//! - `GET /__control/stats`: `{"connections", "connects", "rejected_connects",
//!   "messages_in", "disconnects", "vanished", "posts" (POSTs delivered),
//!   "posts_gone" (POSTs answered 410), "gone_by_connection": {id: 410s}}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tracing::{info, warn};

use crate::body::{read_limited, BodyError};
use crate::runtime::lock;
use crate::ws_state::{Control, Outbound, WsState, MAX_MESSAGE_BYTES, OUTBOUND_QUEUE};

/// The routes of this module (state: the WebSocket API's).
pub(crate) fn routes() -> Router<Arc<WsState>> {
    Router::new()
        .route(
            "/@connections/{id}",
            post(post_to_connection)
                .get(get_connection)
                .delete(delete_connection),
        )
        .route(
            "/{stage}/@connections/{id}",
            post(post_to_connection)
                .get(get_connection)
                .delete(delete_connection),
        )
        .route("/__control/stats", get(stats))
        .route("/__control/vanish/{id}", post(vanish))
}

/// Path parameters of either form (`stage` absent in the short one).
#[derive(Debug, Deserialize)]
struct ConnPath {
    stage: Option<String>,
    id: String,
}

fn aws_error(status: StatusCode, error_type: &str, message: Value) -> Response {
    let mut resp = (status, axum::Json(json!({ "message": message }))).into_response();
    if let Ok(v) = HeaderValue::from_str(error_type) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp.headers_mut().insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("devstack")),
    );
    resp
}

fn gone() -> Response {
    aws_error(StatusCode::GONE, "GoneException", Value::Null)
}

/// The answer to a wrong stage in the URL, if it is wrong: API Gateway
/// answers 403 for an unknown stage.
fn wrong_stage(st: &WsState, path: &ConnPath) -> Option<Response> {
    match &path.stage {
        Some(stage) if stage != &st.settings.stage => Some(aws_error(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            json!("Forbidden"),
        )),
        _ => None,
    }
}

fn count_gone(st: &WsState, id: &str) {
    st.stats.posts_gone.fetch_add(1, Ordering::Relaxed);
    *lock(&st.stats.gone_by_connection)
        .entry(id.to_string())
        .or_insert(0) += 1;
}

async fn post_to_connection(
    State(st): State<Arc<WsState>>,
    Path(path): Path<ConnPath>,
    body: Body,
) -> Response {
    if let Some(resp) = wrong_stage(&st, &path) {
        return resp;
    }
    let id = path.id;
    let too_long = || {
        aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            json!("Message too long"),
        )
    };
    let data = match read_limited(body, MAX_MESSAGE_BYTES).await {
        Ok(d) => d,
        Err(BodyError::TooLong) => return too_long(),
        Err(BodyError::Broken) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                json!("Bad request body"),
            )
        }
    };
    let Some(conn) = st.get(&id) else {
        count_gone(&st, &id);
        info!("ws POST @connections/{id} 410 (gone)");
        return gone();
    };
    match conn.out.try_send(Outbound::from_data(data)) {
        Ok(()) => {
            st.stats.posts.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        Err(TrySendError::Full(_)) => {
            warn!("ws {id}: {OUTBOUND_QUEUE} messages queued; closing the slow client");
            if st.forget(&id).is_some() {
                let _ = conn.control.send(Control::Close {
                    code: 1001,
                    reason: "Going away",
                });
            }
            count_gone(&st, &id);
            gone()
        }
        Err(TrySendError::Closed(_)) => {
            count_gone(&st, &id);
            gone()
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn get_connection(State(st): State<Arc<WsState>>, Path(path): Path<ConnPath>) -> Response {
    if let Some(resp) = wrong_stage(&st, &path) {
        return resp;
    }
    let Some(conn) = st.get(&path.id) else {
        return gone();
    };
    let info = json!({
        "connectedAt": rfc3339(conn.connected_at),
        "identity": {
            "sourceIp": conn.source_ip,
            "userAgent": conn.user_agent,
        },
        "lastActiveAt": rfc3339(conn.last_active_at()),
    });
    (StatusCode::OK, axum::Json(info)).into_response()
}

async fn delete_connection(State(st): State<Arc<WsState>>, Path(path): Path<ConnPath>) -> Response {
    if let Some(resp) = wrong_stage(&st, &path) {
        return resp;
    }
    // Forgotten at once: POSTs from now on are 410 even while the close
    // handshake is still running.
    let Some(conn) = st.forget(&path.id) else {
        return gone();
    };
    info!("ws DELETE @connections/{}", path.id);
    let _ = conn.control.send(Control::Close {
        code: 1000,
        reason: "Connection closed by the server",
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn vanish(State(st): State<Arc<WsState>>, Path(id): Path<String>) -> Response {
    let Some(conn) = st.forget(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "no such connection"})),
        )
            .into_response();
    };
    st.stats.vanished.fetch_add(1, Ordering::Relaxed);
    let _ = conn.control.send(Control::Vanish);
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(st): State<Arc<WsState>>) -> Response {
    (StatusCode::OK, axum::Json(st.stats_json())).into_response()
}
