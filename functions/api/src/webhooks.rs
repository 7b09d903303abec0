//! TradingView webhook management: `POST /v2/webhooks` (the URL and the passphrase, shown
//! once), `GET /v2/webhooks`, `POST /v2/webhooks/{id}/rotate` (a new passphrase, the URL
//! stays), `DELETE /v2/webhooks/{id}` and `GET /v2/webhooks/{id}/deliveries`.
//!
//! The alerts themselves go to the `webhook` function at `/v2/hooks/tradingview/{id}`.

use domain::RejectCode;
use std::net::IpAddr;

use adapters::auth::{digest, random_secret};
use adapters::webhooks::{Delivery, Webhook};
use adapters::ApiError;
use domain::alert::{template_with_passphrase, TEMPLATES};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::authenticate;
use crate::http::{header, json, json_body, no_content, query_int};
use crate::Deps;

/// TradingView's published webhook sender addresses (`"allowed_ips": "tradingview"`).
pub const TRADINGVIEW_IPS: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

/// Webhooks per account: enough for one per strategy, few enough to list at once.
pub const MAX_WEBHOOKS: usize = 20;
const MAX_NAME: usize = 100;
const MAX_IPS: usize = 32;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    name: Option<String>,
    /// `null`/absent: any sender; `"tradingview"`: TradingView's addresses; or a list.
    allowed_ips: Option<Value>,
}

fn allowed_ips(v: Option<&Value>) -> Result<Option<Vec<String>>, ApiError> {
    let invalid = |why: String| ApiError::new(422, RejectCode::InvalidAllowedIps, why);
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("tradingview") => Ok(Some(
            TRADINGVIEW_IPS.iter().map(|s| s.to_string()).collect(),
        )),
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_IPS {
                return Err(invalid(format!(
                    "allowed_ips must list 1 to {MAX_IPS} addresses (or be null for any sender)"
                )));
            }
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .and_then(|s| s.trim().parse::<IpAddr>().ok())
                        .map(|ip| ip.to_string())
                        .ok_or_else(|| invalid(format!("{i} is not an IP address")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Some(other) => Err(invalid(format!(
            "allowed_ips must be null, \"tradingview\" or a list of IP addresses; got {other}"
        ))),
    }
}

/// `POST /v2/webhooks {"name"?, "allowed_ips"?}` → 201 with the URL and the passphrase.
pub async fn create(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let body: CreateWebhook = match req.body() {
        Body::Empty => CreateWebhook::default(),
        Body::Text(t) if t.trim().is_empty() => CreateWebhook::default(),
        _ => json_body(req)?,
    };
    let name = body.name.unwrap_or_default().trim().to_string();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            422,
            RejectCode::InvalidName,
            format!("name must be at most {MAX_NAME} printable characters"),
        ));
    }
    let ips = allowed_ips(body.allowed_ips.as_ref())?;
    if deps.ledger.webhooks(p.account_id).await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::new(
            422,
            RejectCode::MaxWebhooks,
            format!("an account may have at most {MAX_WEBHOOKS} webhooks; delete one first"),
        ));
    }
    let passphrase = random_secret();
    let w = deps
        .ledger
        .create_webhook(p.account_id, &name, &digest(&passphrase), ips.as_deref())
        .await?;
    Ok(json(201, &with_passphrase(req, &w, &passphrase)))
}

/// `GET /v2/webhooks`: the account's webhooks, without passphrases.
pub async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let list: Vec<Value> = deps
        .ledger
        .webhooks(p.account_id)
        .await?
        .iter()
        .map(|w| webhook_json(req, w))
        .collect();
    Ok(json(200, &Value::Array(list)))
}

fn no_webhook(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook {id}"))
}

/// `POST /v2/webhooks/{id}/rotate` → 200 with a new passphrase; the old one stops working.
pub async fn rotate(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let passphrase = random_secret();
    match deps
        .ledger
        .rotate_webhook(p.account_id, id, &digest(&passphrase))
        .await?
    {
        Some(w) => Ok(json(200, &with_passphrase(req, &w, &passphrase))),
        None => Err(no_webhook(id)),
    }
}

/// `DELETE /v2/webhooks/{id}` → 204; alerts to it are refused from now on.
pub async fn delete(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    if deps.ledger.delete_webhook(p.account_id, id).await? {
        Ok(no_content())
    } else {
        Err(no_webhook(id))
    }
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
    // Another account's webhook is as absent as a missing one.
    if !deps
        .ledger
        .webhooks(p.account_id)
        .await?
        .iter()
        .any(|w| w.id == id)
    {
        return Err(no_webhook(id));
    }
    let list: Vec<Value> = deps
        .ledger
        .deliveries(p.account_id, id, limit)
        .await?
        .iter()
        .map(delivery_json)
        .collect();
    Ok(json(200, &Value::Array(list)))
}
