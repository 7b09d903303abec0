//! CORS through `api::handle` against the real services: the preflight of every route of
//! the OpenAPI document from an allowed origin, a refused origin, and what answers carry.

mod common;

use adapters::config::CorsSettings;
use common::{call_with_headers, user, Answer, Auth};
use lambda_http::http::Method;
use rust_decimal_macros::dec;

const TERMINAL: &str = "https://terminal.example.com";

async fn deps_allowing(origins: &str) -> api::Deps {
    let mut config = testkit::config();
    config.cors = CorsSettings {
        allowed_origins: origins
            .split(',')
            .map(|o| o.parse().expect("an origin"))
            .collect(),
        check_websocket_origin: false,
    };
    testkit::app_deps_with(config).await
}

fn header<'a>(r: &'a Answer, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn cors_headers(r: &Answer) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(deps: &api::Deps, path: &str, origin: &str, method: &str) -> Answer {
    call_with_headers(
        deps,
        Method::OPTIONS,
        path,
        &Auth::None,
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            (
                "access-control-request-headers",
                "apca-api-key-id,apca-api-secret-key,content-type",
            ),
        ],
    )
    .await
}

/// `GET /v2/account` from a page on `origin`.
async fn account_from(deps: &api::Deps, auth: &Auth, origin: &str) -> Answer {
    call_with_headers(
        deps,
        Method::GET,
        "/v2/account",
        auth,
        None,
        &[("origin", origin)],
    )
    .await
}

/// The api's paths in its OpenAPI document, parameters filled in.
fn documented_paths() -> Vec<String> {
    let paths: Vec<String> = api::OPENAPI_YAML
        .lines()
        .filter_map(|l| l.strip_prefix("  /").and_then(|p| p.strip_suffix(':')))
        .filter(|p| !p.starts_with("v2/hooks/"))
        .map(|p| {
            let filled: Vec<&str> = p
                .split('/')
                .map(|s| if s.starts_with('{') { "x1" } else { s })
                .collect();
            format!("/{}", filled.join("/"))
        })
        .collect();
    assert!(paths.len() > 20, "the document's paths: {paths:?}");
    paths
}

#[tokio::test]
async fn every_route_answers_the_preflight_of_an_allowed_origin() {
    let deps = deps_allowing(&format!("{TERMINAL},http://127.0.0.1:*")).await;
    for path in documented_paths() {
        for (origin, method) in [(TERMINAL, "PATCH"), ("http://127.0.0.1:5173", "DELETE")] {
            let r = preflight(&deps, &path, origin, method).await;
            assert_eq!(r.status, 204, "{path} from {origin}: {r:?}");
            assert_eq!(
                header(&r, "access-control-allow-origin"),
                Some(origin),
                "{path}"
            );
            let methods = header(&r, "access-control-allow-methods").unwrap_or_default();
            assert!(methods.contains(method), "{path}: {methods}");
            let allowed = header(&r, "access-control-allow-headers")
                .unwrap_or_default()
                .to_ascii_lowercase();
            for h in [
                "authorization",
                "apca-api-key-id",
                "apca-api-secret-key",
                "content-type",
            ] {
                assert!(allowed.contains(h), "{path}: {h} in {allowed}");
            }
            assert_eq!(header(&r, "access-control-max-age"), Some("600"));
            assert_eq!(header(&r, "vary"), Some("Origin"));
        }
    }
}

#[tokio::test]
async fn a_refused_origin_gets_a_403_and_no_cors_headers() {
    let deps = deps_allowing(TERMINAL).await;
    for origin in [
        "https://evil.example.com",
        "https://terminal.example.com.evil.io",
        "http://terminal.example.com",
        "null",
    ] {
        let r = preflight(&deps, "/v2/orders", origin, "POST").await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{origin}: {r:?}");
        assert!(cors_headers(&r).is_empty(), "{origin}: {r:?}");
    }
    // Without any origin configured, no browser may call.
    let closed = testkit::app_deps().await;
    let r = preflight(&closed, "/v2/orders", TERMINAL, "POST").await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{r:?}");
    assert!(cors_headers(&r).is_empty(), "{r:?}");
    assert!(header(&r, "vary").is_none(), "{r:?}");
    // A plain OPTIONS (no Origin: not a browser's preflight) says what the API allows.
    let r = call_with_headers(&deps, Method::OPTIONS, "/v2/orders", &Auth::None, None, &[]).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(
        header(&r, "allow").is_some_and(|a| a.contains("POST")),
        "{r:?}"
    );
    assert!(cors_headers(&r).is_empty(), "{r:?}");
}

#[tokio::test]
async fn answers_to_an_allowed_origin_are_readable_by_its_scripts_and_others_are_not() {
    let deps = deps_allowing(TERMINAL).await;
    let alice = user(&deps, dec!(1000)).await;
    let r = account_from(&deps, &alice.key(), TERMINAL).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header(&r, "access-control-allow-origin"), Some(TERMINAL));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("Retry-After")
    );
    assert_eq!(header(&r, "vary"), Some("Origin"));
    assert!(header(&r, "access-control-allow-credentials").is_none());
    // An error is readable too: the terminal shows the rule it broke.
    let r = account_from(&deps, &Auth::None, TERMINAL).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{r:?}");
    assert_eq!(header(&r, "access-control-allow-origin"), Some(TERMINAL));
    // CORS is not authorization: another origin is served, without the headers its
    // scripts would need to read the answer.
    let r = account_from(&deps, &alice.key(), "https://evil.example.com").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(cors_headers(&r).is_empty(), "{r:?}");
    assert_eq!(header(&r, "vary"), Some("Origin"));
}
