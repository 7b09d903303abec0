//! Handler-level fuzz test of the ws function (`make fuzz` runs it with many more cases):
//! hostile `$connect` query strings and headers, `$default` messages and `$disconnect`s, in
//! events shaped as API Gateway sends them (`events/ws-*.json`), through `ws::handle` against
//! the real PostgreSQL, Redis and moto (`make test`). Nothing panics and nothing is a 5xx: a
//! refused `$connect` is the documented `{"code","message"}` with a `RejectCode`, and every
//! answer to a message is a `snapshot`, a `pong` or an `error` message with such a code.

mod common;

use std::sync::OnceLock;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use domain::RejectCode;
use proptest::prelude::*;
use proptest::sample::select;
use rust_decimal_macros::dec;
use serde_json::Value;
use testkit::fuzz::{self, json_text, number_text, object_with, text, tricky_char};
use ws::{handle, WsRequest, WsResponse};

/// The services, an account with a session and an API key, and one connection of it that
/// the `$default` cases talk on, shared by the cases.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    services: common::Fixture,
    registered: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let (services, registered) = runtime.block_on(async {
            // Every connect that is accepted is disconnected at once; the limit only has to
            // leave room for the registered connection and the one being tried.
            let services = common::fixture(4).await;
            testkit::put_quote(&services.deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
            let registered = "fuzzRegistered0=".to_string();
            let query = [("token", services.token.clone())];
            let connect = event(
                "ws-connect.json",
                &registered,
                &[("queryStringParameters", query_object(&query))],
                None,
            )
            .expect("a valid event");
            let answer = handle(&services.deps, connect).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            (services, registered)
        });
        Fixture {
            runtime,
            services,
            registered,
        }
    })
}

/// The sample event `file` with `connection_id`, `body` and the top-level `parts` (JSON
/// text, so that keys can repeat) in place of the sample's, as the function reads it; `None`
/// for an event API Gateway could not have sent.
fn event(
    file: &str,
    connection_id: &str,
    parts: &[(&str, String)],
    body: Option<&str>,
) -> Option<WsRequest> {
    let mut sample: Value = serde_json::from_str(&common::event_text(file)).expect("JSON");
    sample["requestContext"]["connectionId"] = connection_id.into();
    let object = sample.as_object_mut().expect("an object");
    object.remove("body");
    if let Some(body) = body {
        object.insert("body".into(), body.into());
    }
    for (name, _) in parts {
        object.remove(*name);
    }
    let mut text = sample.to_string();
    text.pop();
    for (name, part) in parts {
        text.push_str(&format!(",{}:{part}", Value::String(name.to_string())));
    }
    text.push('}');
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_str(&text).ok()?;
    Some(WsRequest::from(event))
}

/// A query-string map as JSON text, keys repeated as sent.
fn query_object(entries: &[(&str, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                Value::String(k.to_string()),
                Value::String(v.clone())
            )
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// The multi-value twin of [`query_object`]: `{"k":["v"],"k":["w"]}`.
fn multi_value_object(entries: &[(&str, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:[{}]",
                Value::String(k.to_string()),
                Value::String(v.clone())
            )
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A very long value: past every length a store keys or indexes by (DynamoDB's 2048-byte
/// keys, PostgreSQL's 8 KB pages, the message limit).
fn huge() -> BoxedStrategy<String> {
    (
        prop_oneof![tricky_char(), Just("a".to_string()), Just("PK".to_string())],
        1_000usize..40_000,
    )
        .prop_map(|(piece, n)| piece.repeat(n))
        .boxed()
}

/// A credential as an attacker sends it: the account's real ones, as they are or with a
/// character added, hostile text, huge values.
fn credential(f: &'static Fixture) -> BoxedStrategy<String> {
    let s = &f.services;
    let known = vec![s.token.clone(), s.key_id.clone(), s.secret.clone()];
    prop_oneof![
        3 => select(known.clone()),
        2 => (select(known), tricky_char(), any::<bool>()).prop_map(|(k, c, before)| {
            if before { c + &k } else { k + &c }
        }),
        3 => text(),
        1 => huge(),
    ]
    .boxed()
}

/// A connection id: API Gateway's shape, unknown ones, hostile text.
fn connection_id() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[A-Za-z0-9+/]{15}=",
        2 => text(),
        1 => huge(),
    ]
    .boxed()
}

/// `$connect`'s query string: the credential parameters (repeated) and others.
fn query(f: &'static Fixture) -> BoxedStrategy<Vec<(&'static str, String)>> {
    let name = prop_oneof![
        6 => select(&["token", "key_id", "secret_key"][..]),
        1 => select(&["Token", "key_id ", "", "\0", "token\0", "secret_key[]", "é"][..]),
    ];
    proptest::collection::vec((name, credential(f)), 0..6).boxed()
}

/// `$connect`'s headers, as HTTP can carry them (a value with a NUL or a newline never
/// reaches API Gateway, let alone the function).
fn headers(f: &'static Fixture) -> BoxedStrategy<Vec<(String, String)>> {
    let name = prop_oneof![
        6 => select(&[
            "Authorization",
            "authorization",
            "APCA-API-KEY-ID",
            "apca-api-key-id",
            "APCA-API-SECRET-KEY",
            "apca-api-secret-key",
            "Sec-WebSocket-Protocol",
            "X-Forwarded-For",
            "Host",
        ][..])
        .prop_map(str::to_string),
        1 => text(),
    ];
    let value = prop_oneof![
        3 => credential(f),
        3 => (select(&["Bearer ", "bearer ", "Bearer", "Basic ", "Bearer  ", "Bearer \t"][..]), credential(f))
            .prop_map(|(scheme, c)| format!("{scheme}{c}")),
        1 => text(),
    ];
    proptest::collection::vec((name, value), 0..5)
        .prop_map(|headers| {
            headers
                .into_iter()
                .filter(|(n, v)| {
                    http::HeaderName::from_bytes(n.as_bytes()).is_ok()
                        && http::HeaderValue::from_str(v).is_ok()
                })
                .collect()
        })
        .boxed()
}

/// The fields of the client's messages (`domain::realtime`).
const MESSAGE_FIELDS: &[&str] = &["action", "symbols", "max_rate_ms"];

/// A symbol list entry: catalog symbols in any case, hostile text, now and then a value of
/// another type (or no JSON at all, which spoils the whole message).
fn symbol() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(&["BTCUSDT", "ethusdt", " BNBUSDT ", "XRPUSDT", "BTC/USDT", "NOPEUSDT", ""][..])
            .prop_map(|s| Value::String(s.to_string()).to_string()),
        6 => text().prop_map(|s| Value::String(s).to_string()),
        1 => select(&["null", "1", "[]", "{}", "true", "[\"BTCUSDT\"]"][..]).prop_map(str::to_string),
        1 => json_text(),
    ]
    .boxed()
}

/// A `$default` message: subscribe/unsubscribe/ping with hostile symbol lists and rates,
/// objects of the protocol's fields with hostile values and duplicate keys, any JSON (deep
/// nesting included), text, or no body.
fn message() -> BoxedStrategy<Option<String>> {
    let action = prop_oneof![
        6 => select(&["subscribe", "unsubscribe", "ping"][..])
            .prop_map(|a| Value::String(a.to_string()).to_string()),
        1 => select(&["Subscribe", "SUBSCRIBE", "subscribe\0", " ping", ""][..])
            .prop_map(|a| Value::String(a.to_string()).to_string()),
        1 => json_text(),
    ];
    let symbols = prop_oneof![
        6 => proptest::collection::vec(symbol(), 0..6).prop_map(|s| format!("[{}]", s.join(","))),
        // Huge arrays, up to the message limit and past it.
        1 => (select(&["\"A\"", "\"BTCUSDT\"", "1", "null", "[]"][..]), 100usize..2_000)
            .prop_map(|(item, n)| format!("[{}]", vec![item; n].join(","))),
        1 => json_text(),
    ];
    let rate = prop_oneof![
        3 => Just(None),
        2 => select(&["100", "250", "60000", "99", "60001", "0", "-1", "100.0", "1e3", "\"250\"", "null"][..])
            .prop_map(|r| Some(r.to_string())),
        1 => number_text().prop_map(Some),
        1 => json_text().prop_map(Some),
    ];
    let protocol =
        (action, symbols, rate, any::<bool>()).prop_map(|(action, symbols, rate, twice)| {
            let mut fields = vec![
                format!(r#""action":{action}"#),
                format!(r#""symbols":{symbols}"#),
            ];
            if let Some(rate) = rate {
                fields.push(format!(r#""max_rate_ms":{rate}"#));
            }
            if twice {
                // Duplicate keys: serde_json keeps the last.
                fields.push(r#""action":"ping""#.to_string());
            }
            format!("{{{}}}", fields.join(","))
        });
    prop_oneof![
        6 => protocol.prop_map(Some),
        3 => object_with(MESSAGE_FIELDS).prop_map(Some),
        2 => json_text().prop_map(Some),
        1 => text().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// Why a `$connect` or `$disconnect` answer is not what the WebSocket API documents.
fn undocumented_status(answer: &WsResponse) -> Option<String> {
    fuzz::undocumented_answer(answer.status, answer.body.as_deref().unwrap_or_default())
}

/// Why an answer to a client message is not what the protocol documents, if it is not: a
/// 200 whose body is a `snapshot`, a `pong`, or an `error` with a `RejectCode` that does not
/// stand for a failure of the service.
fn undocumented_message(answer: &WsResponse) -> Option<String> {
    let text = answer.body.as_deref().unwrap_or_default();
    if answer.status != 200 {
        return Some(
            undocumented_status(answer).unwrap_or_else(|| format!("a {}: {text}", answer.status)),
        );
    }
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
        return Some(format!("a message that is not a JSON object: {text}"));
    };
    match m.get("type").and_then(Value::as_str) {
        Some("snapshot" | "pong") => None,
        Some("error") => {
            let code = m.get("code").and_then(Value::as_str).unwrap_or_default();
            if matches!(
                RejectCode::parse(code),
                Some(RejectCode::ServiceUnavailable | RejectCode::Internal)
            ) {
                return Some(format!("a failure of the service: {text}"));
            }
            if m.len() != 4 || !m.get("ts").is_some_and(Value::is_i64) {
                return Some(format!(
                    "an error that is not {{type, ts, code, message}}: {text}"
                ));
            }
            let refusal = serde_json::json!({ "code": m["code"], "message": m["message"] });
            fuzz::undocumented_answer(400, &refusal.to_string())
        }
        _ => Some(format!("a message of no documented type: {text}")),
    }
}

/// `$disconnect` of `connection_id`, which must be answered as documented.
fn disconnect(f: &Fixture, connection_id: &str) -> Result<(), TestCaseError> {
    let Some(req) = event("ws-disconnect.json", connection_id, &[], None) else {
        return Ok(());
    };
    let answer = f.runtime.block_on(handle(&f.services.deps, req));
    let wrong = undocumented_status(&answer);
    prop_assert!(wrong.is_none(), "$disconnect {connection_id:?} → {wrong:?}");
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config_divided(8))]

    #[test]
    fn fuzz_ws_connect_never_5xx(
        connection_id in connection_id(),
        query in query(fixture()),
        headers in headers(fixture()),
    ) {
        let f = fixture();
        let header_entries: Vec<(&str, String)> =
            headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let parts = [
            ("queryStringParameters", query_object(&query)),
            ("multiValueQueryStringParameters", multi_value_object(&query)),
            ("headers", query_object(&header_entries)),
            ("multiValueHeaders", multi_value_object(&header_entries)),
        ];
        // An event that is no valid event never reaches the function.
        let Some(req) = event("ws-connect.json", &connection_id, &parts, None) else {
            return Ok(());
        };
        let answer = f.runtime.block_on(handle(&f.services.deps, req));
        let wrong = undocumented_status(&answer);
        prop_assert!(wrong.is_none(), "$connect {connection_id:?} {query:?} {headers:?} → {wrong:?}");
        if answer.status == 200 {
            disconnect(f, &connection_id)?;
        }
    }

    #[test]
    fn fuzz_ws_messages_never_5xx(
        registered in any::<bool>(),
        connection_id in connection_id(),
        body in message(),
    ) {
        let f = fixture();
        let id = if registered { f.registered.clone() } else { connection_id };
        let Some(req) = event("ws-message.json", &id, &[], body.as_deref()) else {
            return Ok(());
        };
        let answer = f.runtime.block_on(handle(&f.services.deps, req));
        let wrong = undocumented_message(&answer);
        prop_assert!(wrong.is_none(), "{id:?} {body:?} → {wrong:?}");
    }

    #[test]
    fn fuzz_ws_disconnect_of_unknown_connections_never_5xx(
        connection_id in connection_id(),
    ) {
        let f = fixture();
        // Never the registered connection: the message cases talk on it.
        if connection_id != f.registered {
            disconnect(f, &connection_id)?;
        }
    }
}

/// `$connect` of `connection_id` with the query parameters `query`.
fn connect(connection_id: &str, query: &[(&str, String)]) -> WsResponse {
    let f = fixture();
    let parts = [("queryStringParameters", query_object(query))];
    let req = event("ws-connect.json", connection_id, &parts, None).expect("a valid event");
    f.runtime.block_on(handle(&f.services.deps, req))
}

#[test]
fn a_key_id_with_a_nul_is_refused_as_unknown() {
    // Found by fuzz_ws_connect_never_5xx: ?key_id=%00… reached PostgreSQL, whose text cannot
    // hold a NUL, and the handshake was refused with a 503 as if the database were down.
    let s = &fixture().services;
    let query = [
        ("key_id", format!("{}\0", s.key_id)),
        ("secret_key", s.secret.clone()),
    ];
    let answer = connect("nulKeyId0000000=", &query);
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(undocumented_status(&answer), None);
}

#[test]
fn a_connection_id_api_gateway_never_gives_is_not_stored_or_looked_up() {
    // Found by fuzz_ws_connect_never_5xx and fuzz_ws_messages_never_5xx: a connection id
    // DynamoDB cannot key an item by (an empty one, or one past its 2048 bytes) failed the
    // write or the read, answered as if DynamoDB were down (a 503 on $connect, a
    // service_unavailable error message on a subscribe).
    let f = fixture();
    let token = [("token", f.services.token.clone())];
    let answer = connect(&"a".repeat(3000), &token);
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(undocumented_status(&answer), None);

    let subscribe = r#"{"action":"subscribe","symbols":["BTCUSDT"]}"#;
    let req = event("ws-message.json", "", &[], Some(subscribe)).expect("a valid event");
    let answer = f.runtime.block_on(handle(&f.services.deps, req));
    let v: Value = serde_json::from_str(answer.body.as_deref().unwrap_or_default()).expect("JSON");
    assert_eq!(v["code"], "connection_unknown", "{answer:?}");
    assert_eq!(undocumented_message(&answer), None);

    let req = event("ws-disconnect.json", "", &[], None).expect("a valid event");
    let answer = f.runtime.block_on(handle(&f.services.deps, req));
    assert_eq!(
        answer.status, 200,
        "nothing can be registered under it: {answer:?}"
    );
}
