//! Fuzz tests of the REST edge's readers (`make fuzz` runs them with many more cases): every
//! query parameter the api parses, JSON bodies of every route that takes one, and the
//! credentials headers. Nothing panics; a refusal is the documented 4xx JSON
//! `{"code","message"}` with a `RejectCode`; an accepted time is one PostgreSQL can store.

use app::ApiError;
use chrono::Datelike;
use domain::RejectCode;
use lambda_http::{Body, Request};
use proptest::prelude::*;
use rest::{
    credentials, error_response, json_body, optional_json_body, query, query_ascending, query_bool,
    query_int, query_time,
};
use serde_json::Value;
use testkit::events::{Method, RestEvent};
use testkit::fuzz::{self, date_text, json_text, number_text, object_with, text};

/// Every query parameter a route of the api reads.
const PARAMETERS: &[&str] = &[
    "limit",
    "after",
    "until",
    "date",
    "page_token",
    "page_size",
    "direction",
    "status",
    "symbols",
    "nested",
    "qty",
    "percentage",
    "cancel_orders",
    "activity_types",
    "client_order_id",
    "asset_class",
];

fn request(query: &[(String, String)], headers: &[(&str, String)], body: &[u8]) -> Request {
    let mut event = RestEvent::new(Method::GET, "/v2/orders").body(body);
    for (name, value) in query {
        event = event.query(name, value);
    }
    for (name, value) in headers {
        // HTTP cannot carry control characters in a header; API Gateway never sends them.
        if !value.chars().any(|c| c.is_control()) {
            event = event.header(name, value);
        }
    }
    lambda_http::request::from_str(&event.to_json()).expect("a REST proxy event")
}

/// The documented refusal: a 4xx whose body is exactly `{"code","message"}` with a known code.
fn assert_documented(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!((400..500).contains(&e.status), "{e:?}");
    let response = error_response(e);
    prop_assert_eq!(response.status().as_u16(), e.status);
    let Body::Text(text) = response.body() else {
        return Err(TestCaseError::fail("an error body is text"));
    };
    let body: Value = serde_json::from_str(text).expect("an error body is JSON");
    let object = body.as_object().expect("an error body is an object");
    prop_assert_eq!(object.len(), 2, "{}", text);
    prop_assert!(object["message"].is_string());
    let code = object["code"].as_str().expect("a code");
    prop_assert!(RejectCode::parse(code).is_some(), "{}", code);
    Ok(())
}

fn value() -> BoxedStrategy<String> {
    prop_oneof![text(), number_text(), date_text()].boxed()
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn fuzz_query_parameters_never_panic(
        params in proptest::collection::vec((proptest::sample::select(PARAMETERS).prop_map(str::to_string), value()), 0..6)
    ) {
        let req = request(&params, &[], b"");
        for name in PARAMETERS {
            let _ = query(&req, name);
        }
        for name in ["after", "until", "date"] {
            match query_time(&req, name) {
                Ok(Some(t)) => {
                    // PostgreSQL's timestamps run from 4713 BC to 294276 AD, and the api
                    // adds a day to a `date`.
                    prop_assert!((-4713..=294_276).contains(&t.year()), "{name}: {t}");
                    prop_assert!(t.checked_add_days(chrono::Days::new(1)).is_some());
                }
                Ok(None) => {}
                Err(e) => {
                    prop_assert_eq!(e.code, RejectCode::InvalidParameter);
                    assert_documented(&e)?;
                }
            }
        }
        for (name, default, min, max) in [("limit", 50, 1, 500), ("page_size", 100, 1, 100)] {
            match query_int(&req, name, default, min, max) {
                Ok(n) => prop_assert!((min..=max).contains(&n)),
                Err(e) => assert_documented(&e)?,
            }
        }
        if let Err(e) = query_ascending(&req) {
            assert_documented(&e)?;
        }
        for name in ["nested", "cancel_orders"] {
            if let Err(e) = query_bool(&req, name) {
                assert_documented(&e)?;
            }
        }
    }

    #[test]
    fn fuzz_json_bodies_never_panic(
        body in prop_oneof![
            3 => json_text(),
            2 => object_with(&["symbol", "qty", "side", "type", "limit_price", "trail", "max_order_notional", "max_open_orders", "flatten", "reason", "name", "allowed_ips", "email", "password"]),
            1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        binary in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        for bytes in [body.as_bytes(), &binary] {
            let req = request(&[], &[], bytes);
            let results: Vec<Result<(), ApiError>> = vec![
                json_body::<domain::order::OrderRequest>(&req).map(drop),
                json_body::<app::orders::ReplaceRequest>(&req).map(drop),
                json_body::<domain::risk::RiskPatch>(&req).map(drop),
                optional_json_body::<app::risk::KillRequest>(&req).map(drop),
                optional_json_body::<app::webhooks::CreateWebhook>(&req).map(drop),
                json_body::<Value>(&req).map(drop),
            ];
            for e in results.into_iter().filter_map(Result::err) {
                prop_assert_eq!(e.status, 400);
                assert_documented(&e)?;
            }
        }
    }

    #[test]
    fn fuzz_credential_headers_never_panic(
        authorization in prop_oneof![text(), text().prop_map(|t| format!("Bearer {t}")), text().prop_map(|t| format!("bearer  {t} "))],
        key_id in text(),
        secret in text(),
    ) {
        let req = request(&[], &[("authorization", authorization), ("apca-api-key-id", key_id), ("apca-api-secret-key", secret)], b"");
        let _ = credentials(&req);
        let _ = rest::source_ip(&req);
        let _ = rest::body_text(&req);
    }
}

#[test]
fn dates_beyond_four_digit_years_are_refused_as_invalid_parameters() {
    // Found by fuzz_query_parameters_never_panic (generated years around 262,143 with a
    // sign): chrono reads `+262142-12-31` as its last day, and the api's day after it (the
    // `date` of the activities) panicked; `-5000-01-01` reached PostgreSQL, which refuses
    // years before 4713 BC (a 503 instead of a 4xx).
    for bad in [
        "+262142-12-31",
        "+99999-01-01",
        "-5000-01-01",
        "-262143-01-01",
        "-0001-01-01",
    ] {
        let req = request(&[("date".into(), bad.into())], &[], b"");
        let e = query_time(&req, "date").expect_err(bad);
        assert_eq!(e.status, 422, "{bad}");
        assert_eq!(e.code, RejectCode::InvalidParameter, "{bad}");
    }
    for good in [
        "0000-01-01",
        "9999-12-31",
        "9999-12-31T23:59:59Z",
        "2024-02-29",
    ] {
        let req = request(&[("date".into(), good.into())], &[], b"");
        assert!(query_time(&req, "date").unwrap().is_some(), "{good}");
    }
}
