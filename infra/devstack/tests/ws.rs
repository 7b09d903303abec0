//! API Gateway WebSocket + `@connections` emulation end to end: real
//! WebSocket clients (tokio-tungstenite), the real
//! `aws-sdk-apigatewaymanagement` client, and a real lambda_runtime function
//! (`devstack-ws-echo`) running under the devstack's Lambda Runtime API.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::get_connection::GetConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::{
    PostToConnectionError, PostToConnectionOutput,
};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use devstack::{Config, Devstack, FunctionConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use testkit::wait::poll;
use testkit::web::{get, get_json, post};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WS_ECHO: &str = env!("CARGO_BIN_EXE_devstack-ws-echo");
/// Generous upper bound for anything that should happen "soon".
const WAIT: Duration = Duration::from_secs(15);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Mgmt = aws_sdk_apigatewaymanagement::Client;

struct Stack {
    stack: Devstack,
    events: PathBuf,
}

async fn start(tune: impl FnOnce(&mut Config)) -> Stack {
    let events = std::env::temp_dir().join(format!(
        "devstack-ws-events-{}-{}.jsonl",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut ws = FunctionConfig::new("ws", WS_ECHO, 2);
    ws.env.push((
        "ECHO_EVENTS_FILE".into(),
        events.to_string_lossy().into_owned(),
    ));
    let mut config = Config::new();
    config.ws = Some(ws);
    config.ws_timeout = Duration::from_secs(10);
    tune(&mut config);
    let stack = devstack::start(config).await.expect("devstack starts");
    common::wait_idle(stack.ws(), 2).await;
    Stack { stack, events }
}

impl Stack {
    async fn shutdown(self) {
        self.stack.shutdown().await;
        let _ = std::fs::remove_file(&self.events);
    }

    fn ws_url(&self) -> String {
        self.stack.ws_url().expect("ws listener bound")
    }

    /// Connect to `ws://<addr>/local?<query>`.
    async fn connect(&self, query: &str) -> Result<Client, tungstenite::Error> {
        let addr = self.stack.ws_addr().expect("ws listener bound");
        let url = format!("ws://{addr}/local?{query}");
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake answered")
            .map(|(client, _)| client)
    }

    /// A connected client and its connection id (from an echo).
    async fn connected(&self) -> (Client, String) {
        let mut client = self.connect("token=ok").await.expect("connect accepted");
        send(&mut client, "whoami").await;
        let echo = recv_json(&mut client).await;
        let id = echo["connectionId"].as_str().unwrap().to_string();
        (client, id)
    }

    fn mgmt(&self) -> aws_sdk_apigatewaymanagement::Client {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDDEVSTACK",
                "secret",
                None,
                None,
                "test",
            ))
            .endpoint_url(format!("{}/local", self.ws_url()))
            .build();
        aws_sdk_apigatewaymanagement::Client::from_conf(conf)
    }

    async fn stats(&self) -> Value {
        get_json(format!("{}/__control/stats", self.ws_url())).await
    }

    /// Wait for an event line matching `route` and `connection_id`.
    async fn wait_event(&self, route: &str, connection_id: &str) -> Value {
        poll(WAIT, Duration::from_millis(50), async || {
            find_event(&self.events, route, connection_id)
                .ok_or(format!("no {route} event for {connection_id}"))
        })
        .await
    }
}

/// A connection id in a URL path: `+`, `/` and `=` percent-encoded, as the
/// AWS SDK sends it (about one id in five contains a `/`).
fn enc(id: &str) -> String {
    id.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn find_event(path: &Path, route: &str, connection_id: &str) -> Option<Value> {
    events(path)
        .into_iter()
        .find(|e| e["routeKey"] == route && e["connectionId"] == connection_id)
        .map(|e| e["event"].clone())
}

async fn send(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.expect("send");
}

/// Next data or close message (pings and pongs are skipped).
async fn recv(client: &mut Client) -> Option<Message> {
    loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Err(_) => panic!("nothing received within {WAIT:?}"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
        }
    }
}

async fn recv_text(client: &mut Client) -> String {
    match recv(client).await {
        Some(Message::Text(t)) => t.as_str().to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn recv_json(client: &mut Client) -> Value {
    let text = recv_text(client).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Read until the server's close frame; returns its code and reason.
async fn expect_close(client: &mut Client) -> (u16, String) {
    loop {
        match recv(client).await {
            Some(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Message::Close(None)) => return (1005, String::new()),
            Some(_) => continue,
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// `POST @connections/{id}` with `data`, through the AWS SDK.
async fn post_to(
    mgmt: &Mgmt,
    id: &str,
    data: impl Into<Vec<u8>>,
) -> Result<PostToConnectionOutput, SdkError<PostToConnectionError>> {
    mgmt.post_to_connection()
        .connection_id(id)
        .data(Blob::new(data))
        .send()
        .await
}

/// The management API's errors that can say GoneException.
trait Gone {
    fn gone(&self) -> bool;
}

impl Gone for PostToConnectionError {
    fn gone(&self) -> bool {
        self.is_gone_exception()
    }
}

impl Gone for GetConnectionError {
    fn gone(&self) -> bool {
        self.is_gone_exception()
    }
}

impl Gone for DeleteConnectionError {
    fn gone(&self) -> bool {
        self.is_gone_exception()
    }
}

/// Asserts that a management API call failed with GoneException.
#[track_caller]
fn assert_gone<E: Gone + std::fmt::Debug, T: std::fmt::Debug>(result: Result<T, SdkError<E>>) {
    let err = result.expect_err("gone");
    assert!(err.as_service_error().is_some_and(Gone::gone), "{err:?}");
}

fn http_status(err: &tungstenite::Error) -> (u16, String) {
    match err {
        tungstenite::Error::Http(resp) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP rejection, got {other}"),
    }
}

#[tokio::test]
async fn connect_is_rejected_or_accepted_by_the_function() {
    let s = start(|_| {}).await;

    let err = s.connect("").await.expect_err("no token: rejected");
    let (status, body) = http_status(&err);
    assert_eq!(status, 401);
    assert!(body.contains("Unauthorized"), "{body}");

    let err = s.connect("token=full").await.expect_err("full: rejected");
    assert_eq!(http_status(&err).0, 429);
    if let tungstenite::Error::Http(resp) = &err {
        assert_eq!(resp.headers()["x-echo-reason"], "full");
    }

    let err = s.connect("token=error").await.expect_err("function error");
    let (status, body) = http_status(&err);
    assert_eq!(status, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"message": "Internal server error"})
    );

    let (mut client, id) = s.connected().await;
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.ends_with('='), "{id}");

    // The $connect event, as the function received it.
    let ev = s.wait_event("$connect", &id).await;
    let rc = &ev["requestContext"];
    assert_eq!(rc["eventType"], "CONNECT");
    assert_eq!(rc["messageDirection"], "IN");
    assert_eq!(rc["stage"], "local");
    assert_eq!(rc["apiId"], "local");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["domainName"], s.stack.ws_addr().unwrap().to_string());
    assert!(rc["connectedAt"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(ev["queryStringParameters"]["token"], "ok");
    assert_eq!(ev["multiValueQueryStringParameters"]["token"][0], "ok");
    assert_eq!(ev["headers"]["upgrade"], "websocket");
    assert_eq!(ev["isBase64Encoded"], false);
    let parsed: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev.clone()).unwrap();
    assert_eq!(parsed.request_context.connection_id.as_deref(), Some(&*id));
    assert_eq!(
        parsed.request_context.route_key.as_deref(),
        Some("$connect")
    );

    let stats = s.stats().await;
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["connects"], 1);
    assert_eq!(stats["rejected_connects"], 3);

    client.close(None).await.unwrap();
    s.wait_event("$disconnect", &id).await;
    s.shutdown().await;
}

#[tokio::test]
async fn messages_get_route_responses_in_order() {
    let s = start(|_| {}).await;
    let (mut client, id) = s.connected().await;

    send(&mut client, "hello").await;
    let echo = recv_json(&mut client).await;
    assert_eq!(echo["echo"], "hello");
    assert_eq!(echo["connectionId"], id.as_str());
    let rc = &echo["requestContext"];
    assert_eq!(rc["routeKey"], "$default");
    assert_eq!(rc["eventType"], "MESSAGE");
    assert_eq!(rc["messageId"].as_str().unwrap().len(), 16);
    assert_ne!(rc["requestId"], rc["messageId"]);
    let msg_event = s.wait_event("$default", &id).await;
    assert!(msg_event.get("queryStringParameters").is_none());
    let _: ApiGatewayWebsocketProxyRequest = serde_json::from_value(msg_event).unwrap();

    // No body in the response: no route response. The next reply is "after"'s.
    send(&mut client, "silent").await;
    send(&mut client, "after").await;
    assert_eq!(recv_json(&mut client).await["echo"], "after");

    // A function error is reported to the client the way AWS does.
    send(&mut client, "error").await;
    let err = recv_json(&mut client).await;
    assert_eq!(err["message"], "Internal server error");
    assert_eq!(err["connectionId"], id.as_str());
    assert!(err["requestId"].is_string());

    // The function knows where the management API is.
    send(&mut client, "env").await;
    assert_eq!(
        recv_text(&mut client).await,
        format!("{}/local", s.ws_url())
    );

    // One connection's messages run one at a time, in order, even when the
    // first is slow and two instances are free.
    for m in ["sleep:400", "sleep:0", "sleep:100", "sleep:0"] {
        send(&mut client, m).await;
    }
    for m in ["sleep:400", "sleep:0", "sleep:100", "sleep:0"] {
        assert_eq!(recv_json(&mut client).await["echo"], m);
    }

    // Binary frames: UTF-8 is treated as text, anything else is base64.
    let frames: [(&[u8], &str, bool); 2] = [
        (b"bin-text", "bin-text", false),
        (&[0, 159, 255], "AJ//", true),
    ];
    for (frame, body, base64) in frames {
        client.send(Message::binary(frame.to_vec())).await.unwrap();
        let echo = recv_json(&mut client).await;
        assert_eq!(echo["echo"], body);
        assert_eq!(echo["isBase64Encoded"], base64);
    }

    // Pings are answered.
    client
        .send(Message::Ping(b"p".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, client.next()).await.unwrap();
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if p.as_ref() == b"p"),
        "{pong:?}"
    );

    // A client close frame: $disconnect with its code and reason.
    client
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let ev = s.wait_event("$disconnect", &id).await;
    assert_eq!(ev["requestContext"]["eventType"], "DISCONNECT");
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], 1000);
    assert_eq!(ev["requestContext"]["disconnectReason"], "bye");
    let parsed: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).unwrap();
    assert_eq!(parsed.request_context.disconnect_status_code, Some(1000));

    let stats = s.stats().await;
    assert_eq!(stats["messages_in"], 12);
    s.shutdown().await;
}

#[tokio::test]
async fn management_api_through_the_aws_sdk() {
    let s = start(|_| {}).await;
    let (mut client, id) = s.connected().await;
    let mgmt = s.mgmt();

    // POST: delivered as one message (ids contain '=', sent as %3D).
    post_to(&mgmt, &id, r#"{"type":"quote","price":"1.5"}"#)
        .await
        .expect("post delivered");
    assert_eq!(
        recv_text(&mut client).await,
        r#"{"type":"quote","price":"1.5"}"#
    );
    // Not UTF-8: a binary frame.
    post_to(&mgmt, &id, vec![0u8, 255, 1]).await.unwrap();
    match recv(&mut client).await {
        Some(Message::Binary(b)) => assert_eq!(b.as_ref(), [0u8, 255, 1]),
        other => panic!("expected binary, got {other:?}"),
    }
    // Exactly 128 KB is fine, one byte more is PayloadTooLarge.
    let max = "x".repeat(devstack::ws::MAX_MESSAGE_BYTES);
    post_to(&mgmt, &id, max.clone())
        .await
        .expect("128 KB is allowed");
    assert_eq!(recv_text(&mut client).await.len(), max.len());
    let err = post_to(&mgmt, &id, format!("{max}y"))
        .await
        .expect_err("too large");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_payload_too_large_exception()),
        "{err:?}"
    );

    // GET: connection info.
    let info = mgmt
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    let identity = info.identity().expect("identity");
    assert_eq!(identity.source_ip(), Some("127.0.0.1"));
    assert!(identity.user_agent().is_some());
    let connected = info.connected_at().expect("connectedAt");
    let active = info.last_active_at().expect("lastActiveAt");
    assert!(active >= connected);

    // Unknown connection: GoneException, counted per id.
    let unknown = "AAAAAAAAAAAAAAA=";
    assert_gone(post_to(&mgmt, unknown, "x").await);
    // An id with `/` and `+` (which real ids can have) gets there too.
    assert_gone(post_to(&mgmt, "AB/CD+EFGHIJKLM=", "x").await);
    assert_gone(mgmt.get_connection().connection_id(unknown).send().await);

    // The raw 410 is what AWS sends.
    let resp = post(format!("{}/local/@connections/{unknown}", s.ws_url()), "x").await;
    assert_eq!(resp.status(), 410);
    assert_eq!(resp.headers()["x-amzn-errortype"], "GoneException");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"message": null})
    );

    // DELETE: close 1000, then $disconnect; the id is gone at once.
    mgmt.delete_connection()
        .connection_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_close(&mut client).await.0, 1000);
    assert_gone(post_to(&mgmt, &id, "late").await);
    let ev = s.wait_event("$disconnect", &id).await;
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], 1000);
    assert_gone(mgmt.delete_connection().connection_id(&id).send().await);

    let stats = s.stats().await;
    assert_eq!(stats["posts"], 3);
    assert_eq!(stats["posts_gone"], 4);
    assert_eq!(stats["gone_by_connection"][unknown], 2);
    assert_eq!(stats["gone_by_connection"][id.as_str()], 1);
    assert_eq!(stats["connections"], 0);

    // The short path form (no stage) works too; a wrong stage is 403.
    let resp = get(format!("{}/@connections/{unknown}", s.ws_url())).await;
    assert_eq!(resp.status(), 410);
    let resp = get(format!("{}/prod/@connections/{unknown}", s.ws_url())).await;
    assert_eq!(resp.status(), 403);
    // Ids with `/` and `+` (percent-encoded) reach the API, not a 404.
    let resp = get(format!(
        "{}/local/@connections/{}",
        s.ws_url(),
        enc("AB/CD+EFGHIJKLM=")
    ))
    .await;
    assert_eq!(resp.status(), 410);
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_inbound_message_closes_with_1009() {
    let s = start(|_| {}).await;
    let (mut client, id) = s.connected().await;
    // Exactly the limit goes through.
    let max = "m".repeat(devstack::ws::MAX_MESSAGE_BYTES);
    send(&mut client, &max).await;
    assert_eq!(
        recv_json(&mut client).await["echo"].as_str().unwrap().len(),
        max.len()
    );
    send(&mut client, &format!("{max}!")).await;
    assert_eq!(expect_close(&mut client).await.0, 1009);
    let ev = s.wait_event("$disconnect", &id).await;
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], 1009);
    assert_eq!(s.stats().await["messages_in"], 2);
    s.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_with_1001_but_pings_keep_them() {
    let s = start(|c| c.ws_idle_timeout = Duration::from_secs(2)).await;
    let (mut client, id) = s.connected().await;

    // Client pings count as activity, for well over the idle timeout.
    for _ in 0..20 {
        client.send(Message::Ping(Vec::new().into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    send(&mut client, "still here").await;
    assert_eq!(recv_json(&mut client).await["echo"], "still here");

    // Server pushes do not: the connection is closed although they keep coming.
    let mgmt = s.mgmt();
    let pusher = tokio::spawn({
        let id = id.clone();
        async move {
            for _ in 0..40 {
                let _ = post_to(&mgmt, &id, "tick").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let (code, reason) = expect_close(&mut client).await;
    assert_eq!(code, 1001);
    assert_eq!(reason, "Going away");
    let ev = s.wait_event("$disconnect", &id).await;
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], 1001);
    pusher.abort();
    s.shutdown().await;
}

#[tokio::test]
async fn maximum_connection_duration_closes_with_1001() {
    let s = start(|c| c.ws_max_connection = Duration::from_secs(2)).await;
    let (mut client, id) = s.connected().await;
    assert_eq!(expect_close(&mut client).await.0, 1001);
    let ev = s.wait_event("$disconnect", &id).await;
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], 1001);
    s.shutdown().await;
}

#[tokio::test]
async fn vanished_client_is_gone_without_disconnect() {
    let s = start(|_| {}).await;
    let (mut client, id) = s.connected().await;
    let resp = post(format!("{}/__control/vanish/{}", s.ws_url(), enc(&id)), "").await;
    assert_eq!(resp.status(), 204);
    // The client loses the connection without a close frame.
    match recv(&mut client).await {
        None => {}
        other => panic!("expected the connection to drop, got {other:?}"),
    }
    assert_gone(post_to(&s.mgmt(), &id, "anyone?").await);

    // A client that drops its TCP connection does get a $disconnect ...
    let (client2, id2) = s.connected().await;
    drop(client2);
    let ev = s.wait_event("$disconnect", &id2).await;
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], 1006);
    // ... which by now the vanished one would have had too: it has none.
    assert!(find_event(&s.events, "$disconnect", &id).is_none());

    let stats = s.stats().await;
    assert_eq!(stats["gone_by_connection"][id.as_str()], 1);
    assert_eq!(stats["vanished"], 1);
    s.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_ws_listener_is_not_an_upgrade() {
    let s = start(|_| {}).await;
    let resp = get(format!("{}/local", s.ws_url())).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    s.shutdown().await;
}
