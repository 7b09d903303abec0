//! The `api` Lambda: Alpaca Trading API v2 over API Gateway REST, plus sign-up, login and
//! API keys. A route table over the use cases of `app` (which validate, run the cheap
//! pre-trade checks and enqueue commands); it never writes the ledger's orders, fills,
//! positions or cash.
//!
//! Depends on `app`, `rest` (the REST edge), `adapters` and `domain`; no crate depends on it.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

pub mod assets;
pub mod auth;
pub mod close;
pub mod health;
pub mod orders;
pub mod portfolio;
pub mod risk;
pub mod webhooks;

use app::ApiError;
use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};

use rest::error_response;

/// Everything a handler needs, built once per process: the use cases' own.
pub use app::Deps;

/// Largest request body accepted (API Gateway itself allows 10 MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Handles one API Gateway REST request.
pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    serve(deps, req, route).await
}

/// Serves one request with the given route table (the api's is [`route`]; a test adds a
/// deliberately panicking route of its own): the body limit, the panic backstop, the one
/// error rendering and the access log are the same whatever the table.
pub async fn serve(
    deps: &Deps,
    req: Request,
    routes: impl AsyncFn(&Deps, &Method, &str, Request) -> Result<Response<Body>, ApiError>,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = route_path(&req);
    let origin = rest::cors::origin(&req).map(str::to_string);
    let mut response = match app::panics::guarded("api", async {
        if method == Method::OPTIONS {
            return rest::cors::preflight(&deps.config.cors, &req);
        }
        if body_len(&req) > MAX_BODY_BYTES {
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        rest::refuse_nul_in_query(&req)?;
        routes(deps, &method, &path, req).await
    })
    .await
    {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    rest::cors::decorate(&deps.config.cors, origin.as_deref(), &mut response);
    let route = route_template(&path);
    tracing::info!(%method, %route, status = response.status().as_u16(), us = started.elapsed().as_micros() as u64, "request");
    response
}

/// The words of the route table's paths; any other segment is a parameter.
const ROUTE_WORDS: &[&str] = &[
    "health",
    "openapi.yaml",
    "v2",
    "auth",
    "signup",
    "login",
    "logout",
    "logout_all",
    "password",
    "api_keys",
    "account",
    "risk",
    "kill",
    "webhooks",
    "rotate",
    "deliveries",
    "activities",
    "positions",
    "orders",
    "orders:by_client_order_id",
    "assets",
    "clock",
    // The webhook function's route, in the same document.
    "hooks",
    "tradingview",
];

/// The path as a route template (`/v2/webhooks/{}/rotate`): what the access log shows, so
/// that ids, symbols and secrets in paths (a webhook's id is its URL's secret) never reach
/// a log. Only the route table's own words are kept.
pub fn route_template(path: &str) -> String {
    let mut t = String::with_capacity(path.len());
    for segment in path.trim_start_matches('/').split('/') {
        t.push('/');
        t.push_str(if ROUTE_WORDS.contains(&segment) {
            segment
        } else {
            "{}"
        });
    }
    t
}

/// The request path without the API Gateway stage.
fn route_path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let p = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    p.trim_end_matches('/').to_string()
}

/// The api's route table: method and path segments to a handler.
pub async fn route(
    deps: &Deps,
    method: &Method,
    path: &str,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = method.clone();
    match (m, segments.as_slice()) {
        (Method::GET, ["health"]) => Ok(health::health(deps).await),
        (Method::GET, ["openapi.yaml"]) | (Method::GET, ["v2", "openapi.yaml"]) => Ok(openapi()),
        (Method::POST, ["v2", "auth", "signup"]) => auth::signup(deps, &req).await,
        (Method::POST, ["v2", "auth", "login"]) => auth::login(deps, &req).await,
        (Method::POST, ["v2", "auth", "logout"]) => auth::logout(deps, &req).await,
        (Method::POST, ["v2", "auth", "logout_all"]) => auth::logout_all(deps, &req).await,
        (Method::POST, ["v2", "auth", "password"]) => auth::change_password(deps, &req).await,
        (Method::POST, ["v2", "api_keys"]) => auth::create_api_key(deps, &req).await,
        (Method::GET, ["v2", "api_keys"]) => auth::list_api_keys(deps, &req).await,
        (Method::DELETE, ["v2", "api_keys", key_id]) => {
            auth::delete_api_key(deps, &req, key_id).await
        }
        (Method::GET, ["v2", "account"]) => portfolio::account(deps, &req).await,
        (Method::GET, ["v2", "account", "risk"]) => risk::get(deps, &req).await,
        (Method::PATCH, ["v2", "account", "risk"]) => risk::patch(deps, &req).await,
        (Method::POST, ["v2", "account", "kill"]) => risk::kill(deps, &req).await,
        (Method::DELETE, ["v2", "account", "kill"]) => risk::reset(deps, &req).await,
        (Method::POST, ["v2", "webhooks"]) => webhooks::create(deps, &req).await,
        (Method::GET, ["v2", "webhooks"]) => webhooks::list(deps, &req).await,
        (Method::DELETE, ["v2", "webhooks", id]) => webhooks::delete(deps, &req, id).await,
        (Method::POST, ["v2", "webhooks", id, "rotate"]) => webhooks::rotate(deps, &req, id).await,
        (Method::GET, ["v2", "webhooks", id, "deliveries"]) => {
            webhooks::deliveries(deps, &req, id).await
        }
        (Method::GET, ["v2", "account", "activities"]) => {
            portfolio::activities(deps, &req, None).await
        }
        (Method::GET, ["v2", "account", "activities", kind]) => {
            portfolio::activities(deps, &req, Some(kind)).await
        }
        (Method::GET, ["v2", "positions"]) => portfolio::positions(deps, &req).await,
        (Method::GET, ["v2", "positions", symbol]) => portfolio::position(deps, &req, symbol).await,
        (Method::GET, ["v2", "positions", base, quote]) => {
            portfolio::position(deps, &req, &format!("{base}{quote}")).await
        }
        (Method::POST, ["v2", "orders"]) => orders::place(deps, &req).await,
        (Method::GET, ["v2", "orders"]) => orders::list(deps, &req).await,
        (Method::GET, ["v2", "orders:by_client_order_id"]) => {
            orders::by_client_order_id(deps, &req).await
        }
        (Method::GET, ["v2", "orders", id]) => orders::get(deps, &req, id).await,
        (Method::DELETE, ["v2", "orders", id]) => orders::cancel(deps, &req, id).await,
        (Method::PATCH, ["v2", "orders", id]) => orders::replace(deps, &req, id).await,
        (Method::DELETE, ["v2", "orders"]) => orders::cancel_all(deps, &req).await,
        (Method::DELETE, ["v2", "positions"]) => close::close_all(deps, &req).await,
        (Method::DELETE, ["v2", "positions", symbol]) => close::close(deps, &req, symbol).await,
        (Method::DELETE, ["v2", "positions", base, quote]) => {
            close::close(deps, &req, &format!("{base}{quote}")).await
        }
        (Method::GET, ["v2", "assets"]) => assets::list(deps, &req).await,
        (Method::GET, ["v2", "assets", symbol]) => assets::get(deps, &req, symbol).await,
        (Method::GET, ["v2", "assets", base, quote]) => {
            assets::get(deps, &req, &format!("{base}{quote}")).await
        }
        (Method::GET, ["v2", "clock"]) => assets::clock(deps, &req).await,
        _ => Err(ApiError::not_found(format!("no route for {method} {path}"))),
    }
}

/// The OpenAPI document of this API.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

fn openapi() -> Response<Body> {
    let mut r = Response::new(Body::Text(OPENAPI_YAML.to_string()));
    r.headers_mut().insert(
        lambda_http::http::header::CONTENT_TYPE,
        lambda_http::http::HeaderValue::from_static("application/yaml"),
    );
    r
}

fn body_len(req: &Request) -> usize {
    match req.body() {
        Body::Empty => 0,
        Body::Text(t) => t.len(),
        Body::Binary(b) => b.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_shows_route_templates_never_parameters() {
        let id = "wh_5ecretSecretSecret";
        assert_eq!(
            route_template(&format!("/v2/webhooks/{id}/rotate")),
            "/v2/webhooks/{}/rotate"
        );
        assert_eq!(
            route_template("/v2/positions/BTC/USDT"),
            "/v2/positions/{}/{}"
        );
        assert_eq!(route_template("/v2/orders"), "/v2/orders");
        assert_eq!(route_template("/é€𝄞/../x"), "/{}/{}/{}");
        assert_eq!(route_template(""), "/{}");
    }

    /// Every word of every path in the OpenAPI document is a route word, so a new route's
    /// words are logged and not hidden as parameters (and the list cannot go stale).
    #[test]
    fn the_route_words_are_the_documents_words() {
        let paths: Vec<&str> = OPENAPI_YAML
            .lines()
            .filter_map(|l| l.strip_prefix("  /"))
            .filter_map(|l| l.strip_suffix(':'))
            .collect();
        assert!(paths.len() > 20, "{paths:?}");
        for p in paths {
            for segment in p.split('/') {
                if !segment.starts_with('{') {
                    assert!(
                        ROUTE_WORDS.contains(&segment),
                        "{segment} of /{p} is not in ROUTE_WORDS"
                    );
                }
            }
        }
    }
}
