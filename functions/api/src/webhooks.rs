//! TradingView webhook management: `POST /v2/webhooks` (the URL and the passphrase, shown
//! once), `GET /v2/webhooks`, `POST /v2/webhooks/{id}/rotate` (a new passphrase, the URL
//! stays), `DELETE /v2/webhooks/{id}` and `GET /v2/webhooks/{id}/deliveries`.
//!
//! The use cases are `app::webhooks`; the alerts themselves go to the `webhook` function at
//! `/v2/hooks/tradingview/{id}`.

use adapters::webhooks::{Delivery, Webhook};
use app::webhooks::CreateWebhook;
use app::ApiError;
use lambda_http::{Body, Request, RequestExt, Response};
use rest::{header, json, no_content, optional_json_body, query_int};
use serde_json::{json, Value};
use tradingview::{template_with_passphrase, TEMPLATES};

use crate::auth::authenticate;
use crate::Deps;

/// The base URL clients reached this API at: API Gateway's own domain carries the stage in
/// the path; a custom domain or the devstack does not.
fn base_url(req: &Request) -> String {
    let host = header(req, "host").unwrap_or_else(|| "localhost".into());
    let scheme = header(req, "x-forwarded-proto").unwrap_or_else(|| "https".into());
    let stage = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        _ => None,
    };
    match stage {
        Some(stage) if host.ends_with(".amazonaws.com") => format!("{scheme}://{host}/{stage}"),
        _ => format!("{scheme}://{host}"),
    }
}

fn webhook_json(req: &Request, w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "url": format!("{}/v2/hooks/tradingview/{}", base_url(req), w.id),
        "name": w.name,
        "allowed_ips": w.allowed_ips,
        "created_at": w.created_at,
        "rotated_at": w.rotated_at,
    })
}

/// The webhook with its new passphrase and the alert templates filled with it: the only
/// time the passphrase is shown.
fn with_passphrase(req: &Request, w: &Webhook, passphrase: &str) -> Value {
    let mut v = webhook_json(req, w);
    v["passphrase"] = Value::String(passphrase.to_string());
    let templates: serde_json::Map<String, Value> = TEMPLATES
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                Value::String(template_with_passphrase(t, passphrase)),
            )
        })
        .collect();
    v["alert_templates"] = Value::Object(templates);
    v
}

/// `POST /v2/webhooks {"name"?, "allowed_ips"?}` → 201 with the URL and the passphrase.
pub async fn create(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let body: CreateWebhook = optional_json_body(req)?;
    let w = app::webhooks::create(deps, &p, body).await?;
    Ok(json(201, &with_passphrase(req, &w.webhook, &w.passphrase)))
}

/// `GET /v2/webhooks`: the account's webhooks, without passphrases.
pub async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let list: Vec<Value> = app::webhooks::list(deps, p.account_id)
        .await?
        .iter()
        .map(|w| webhook_json(req, w))
        .collect();
    Ok(json(200, &Value::Array(list)))
}

/// `POST /v2/webhooks/{id}/rotate` → 200 with a new passphrase; the old one stops working.
pub async fn rotate(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let w = app::webhooks::rotate(deps, &p, id).await?;
    Ok(json(200, &with_passphrase(req, &w.webhook, &w.passphrase)))
}

/// `DELETE /v2/webhooks/{id}` → 204; alerts to it are refused from now on.
pub async fn delete(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    app::webhooks::delete(deps, p.account_id, id).await?;
    Ok(no_content())
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "received_at": d.received_at,
        "source_ip": d.source_ip,
        "content_type": d.content_type,
        "body": d.body,
        "status": d.status,
        "outcome": d.outcome,
        "code": d.code,
        "message": d.message,
        "order_id": d.order_id,
        "client_order_id": d.client_order_id,
    })
}

/// `GET /v2/webhooks/{id}/deliveries?limit=` (default 50, at most 500): the latest alerts,
/// newest first.
pub async fn deliveries(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let limit = query_int(req, "limit", 50, 1, 500)?;
    let list: Vec<Value> = app::webhooks::deliveries(deps, p.account_id, id, limit)
        .await?
        .iter()
        .map(delivery_json)
        .collect();
    Ok(json(200, &Value::Array(list)))
}
