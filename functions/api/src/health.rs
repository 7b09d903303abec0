//! `GET /health`: Postgres, Redis and the queue, checked concurrently.

use app::ApiError;
use lambda_http::{Body, Response};
use serde_json::json;

use crate::Deps;
use rest::{error_response, json};

pub async fn health(deps: &Deps) -> Response<Body> {
    let (pg, redis, queue) = tokio::join!(deps.ledger.ping(), deps.cache.ping(), deps.queue.ping());
    let checks = [("postgres", pg), ("redis", redis), ("queue", queue)];
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    for (name, r) in &checks {
        if let Err(e) = r {
            tracing::warn!(dependency = name, error = %e, "health check failed");
        }
    }
    if down.is_empty() {
        json(
            200,
            &json!({ "status": "ok", "checks": { "postgres": "ok", "redis": "ok", "queue": "ok" } }),
        )
    } else {
        let mut e = ApiError::unavailable(&down.join(", "));
        e.message = format!("down: {}", down.join(", "));
        error_response(&e)
    }
}
