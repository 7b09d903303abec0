//! The `webhook` Lambda: `POST /v2/hooks/tradingview/{webhook_id}`, where TradingView alerts
//! become orders. A thin edge over `app::alerts` (the secret URL, the passphrase check, the
//! order path every order takes, the recorded deliveries): it reads the request and answers.
//!
//! Depends on `app`, `rest` (the REST edge) and `domain`; no crate depends on it.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)
)]

use app::alerts::{receive, Received};
use app::Deps;
use lambda_http::{Body, Request, RequestExt, Response};
use rest::{body_text, error_response, header, json, source_ip};

pub use app::alerts::MAX_ALERT_BYTES;

fn webhook_id(req: &Request) -> String {
    req.path_parameters_ref()
        .and_then(|p| p.first("webhook_id"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            req.uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
}

/// Handles one alert.
pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    let started = std::time::Instant::now();
    let id = webhook_id(&req);
    let ip = source_ip(&req);
    let content_type = header(&req, "content-type");
    let alert = Received {
        webhook_id: &id,
        source_ip: &ip,
        content_type: content_type.as_deref(),
        body: body_text(&req),
    };
    let response = match app::panics::guarded("webhook", receive(deps, alert)).await {
        Ok(outcome) => match &outcome.error {
            Some(e) => error_response(e),
            None => json(outcome.status, &outcome.body),
        },
        Err(e) => error_response(&e),
    };
    // The id is the URL's secret: only a prefix goes to the log.
    let id_prefix: String = id.chars().take(8).collect();
    tracing::info!(webhook = %id_prefix, %ip, status = response.status().as_u16(), us = started.elapsed().as_micros() as u64, "alert");
    response
}
