//! Handler-level fuzz test of the webhook (`make fuzz` runs it with many more cases): hostile
//! webhook ids, bodies, content types and senders through `webhook::handle`, against the
//! real PostgreSQL, Redis and moto (`make test`). Nothing is a 5xx; every refusal is the
//! documented `{"code","message"}` with a `RejectCode`.

use std::sync::OnceLock;

use adapters::auth::{digest, random_secret};
use app::Deps;
use proptest::prelude::*;
use rust_decimal_macros::dec;
use testkit::events::RestEvent;
use testkit::fuzz::{self, json_text, number_text, object_with, text};
use testkit::{account_with_cash, put_quote};

/// The services and one account's webhook with a known passphrase, shared by the cases.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    deps: Deps,
    webhook_id: String,
    passphrase: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let (deps, webhook_id, passphrase) = runtime.block_on(async {
            let deps = testkit::app_deps().await;
            let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
            let passphrase = random_secret();
            let hook = deps
                .ledger
                .create_webhook(account, "fuzz", &digest(&passphrase), None, 1)
                .await
                .expect("the ledger")
                .expect("the account's first webhook");
            put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000.5)).await;
            (deps, hook.id, passphrase)
        });
        Fixture {
            runtime,
            deps,
            webhook_id,
            passphrase,
        }
    })
}

/// The fields of TradingView alerts (shared/tradingview), for objects that mostly parse.
const ALERT_FIELDS: &[&str] = &[
    "passphrase",
    "action",
    "symbol",
    "ticker",
    "qty",
    "contracts",
    "notional",
    "position_size",
    "type",
    "price",
    "take_profit",
    "stop_loss",
    "time_in_force",
    "id",
    "alert_id",
    "comment",
];

/// An alert body: with the right passphrase (the paths past the check), hostile objects,
/// any JSON, or text.
fn body(passphrase: &'static str) -> BoxedStrategy<String> {
    let with_passphrase = (object_with(ALERT_FIELDS), number_text(), text()).prop_map(
        move |(object, qty, symbol)| {
            let mut v: serde_json::Value =
                serde_json::from_str(&object).unwrap_or_else(|_| serde_json::json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("passphrase".into(), passphrase.into());
                o.insert("action".into(), "buy".into());
                o.insert("symbol".into(), symbol.into());
                o.insert("qty".into(), qty.into());
            }
            v.to_string()
        },
    );
    prop_oneof![
        3 => with_passphrase,
        2 => object_with(ALERT_FIELDS),
        1 => json_text(),
        1 => text(),
    ]
    .boxed()
}

/// A Content-Type header as HTTP can carry it (a value with a NUL or a newline never
/// reaches API Gateway, let alone the function).
fn content_type() -> BoxedStrategy<String> {
    prop_oneof![
        Just("application/json".to_string()),
        Just("text/plain; charset=utf-8".to_string()),
        text().prop_filter("a valid header value", |t| {
            lambda_http::http::HeaderValue::from_str(t).is_ok()
        }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(fuzz::config_divided(8))]

    #[test]
    fn fuzz_webhook_alerts_never_5xx(
        known_id in any::<bool>(),
        hostile_id in text(),
        body in body(&fixture().passphrase),
        content_type in content_type(),
        from_tradingview in any::<bool>(),
    ) {
        let f = fixture();
        let id = if known_id { f.webhook_id.clone() } else { hostile_id };
        // TradingView's own address is exempt from the failure budget, so most cases reach
        // the lookup; the others come from one address and soon meet its 429.
        let ip = if from_tradingview { app::webhooks::TRADINGVIEW_IPS[0] } else { "10.20.30.40" };
        let event = RestEvent::new(
            lambda_http::http::Method::POST,
            "/v2/hooks/tradingview/webhook",
        )
        .path_parameter("webhook_id", id.clone())
        .header("Content-Type", &content_type)
        .source_ip(ip)
        .body(&body);
        // A request that is no valid event never reaches the function.
        let Ok(req) = lambda_http::request::from_str(&event.to_json()) else {
            return Ok(());
        };
        let response = f.runtime.block_on(webhook::handle(&f.deps, req));
        let wrong = fuzz::undocumented_response(&response);
        prop_assert!(wrong.is_none(), "{id:?} {body} → {wrong:?}");
    }
}

#[test]
fn a_webhook_id_with_a_nul_is_refused_as_unknown() {
    // Found by fuzz_webhook_alerts_never_5xx: the id reached PostgreSQL, whose text cannot
    // hold a NUL, and the answer was a 503 as if the database were down.
    let response = send_json("\0BTCUSDT", "10.20.30.41", "[]");
    assert_eq!(response.status(), 401);
}

/// One alert with a JSON content type through `webhook::handle`.
fn send_json(
    webhook_id: &str,
    source_ip: &str,
    body: impl AsRef<[u8]>,
) -> lambda_http::Response<lambda_http::Body> {
    let f = fixture();
    let event = RestEvent::new(
        lambda_http::http::Method::POST,
        "/v2/hooks/tradingview/webhook",
    )
    .path_parameter("webhook_id", webhook_id)
    .header("Content-Type", "application/json")
    .source_ip(source_ip)
    .body(body);
    let req = lambda_http::request::from_str(&event.to_json()).expect("an event");
    f.runtime.block_on(webhook::handle(&f.deps, req))
}

#[test]
fn a_body_that_is_not_utf8_is_malformed_not_too_large() {
    // Found by Schemathesis (tests/python/test_schemathesis.py): a short body of random bytes
    // was answered 413 alert_too_large, as if it were over the size limit.
    let body = [0xff, 0xfe, b'K', 0x1e, 0xc3, b'G'];
    let response = send_json(&fixture().webhook_id, "10.20.30.42", body);
    assert_eq!(response.status(), 400);
    assert_eq!(fuzz::undocumented_response(&response), None);
}
