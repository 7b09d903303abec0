//! JSON bodies: every route's body is an object, and nothing else is read as one.

use domain::RejectCode;
use lambda_http::Request;
use rest::json_body;
use testkit::events::{Method, RestEvent};

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Kill {
    flatten: Option<bool>,
    reason: Option<String>,
}

fn request(body: &str) -> Request {
    let event = RestEvent::new(Method::POST, "/v2/account/kill").body(body.as_bytes());
    lambda_http::request::from_str(&event.to_json()).expect("a REST proxy event")
}

#[test]
fn a_body_is_a_json_object() {
    assert!(json_body::<Kill>(&request(r#" {"flatten":true}"#)).is_ok());
    // serde reads a struct from an array of its fields in order: refused before it can.
    for body in [
        "[null, null]",
        "[true, \"why\"]",
        "[]",
        "null",
        "5",
        "\"x\"",
        "",
        "  ",
    ] {
        let e = json_body::<Kill>(&request(body)).expect_err(body);
        assert_eq!(
            (e.status, e.code),
            (400, RejectCode::MalformedJson),
            "{body}: {e:?}"
        );
    }
}
