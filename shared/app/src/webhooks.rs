//! TradingView webhook management: create (the passphrase shown once), list, rotate (a new
//! passphrase, the id stays), delete, and the latest deliveries. The alerts themselves are
//! [`crate::alerts`].

use std::net::IpAddr;

use adapters::auth::{digest, random_secret};
use adapters::webhooks::{Delivery, Webhook};
use domain::RejectCode;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::session_only;
use crate::{ApiError, Deps, Principal};

/// TradingView's published webhook sender addresses (`"allowed_ips": "tradingview"`).
pub const TRADINGVIEW_IPS: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

/// Webhooks per account: enough for one per strategy, few enough to list at once.
pub const MAX_WEBHOOKS: i64 = 20;
const MAX_NAME: usize = 100;
const MAX_IPS: usize = 32;

/// The body of a create.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub name: Option<String>,
    /// `null`/absent: any sender; `"tradingview"`: TradingView's addresses; or a list.
    pub allowed_ips: Option<Value>,
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

/// A webhook with the passphrase just set: the only time the passphrase is known.
#[derive(Debug)]
pub struct WithPassphrase {
    pub webhook: Webhook,
    pub passphrase: String,
}

/// Creates a webhook for the account.
pub async fn create(
    deps: &Deps,
    p: &Principal,
    body: CreateWebhook,
) -> Result<WithPassphrase, ApiError> {
    session_only(p, "create webhooks")?;
    let name = body.name.unwrap_or_default().trim().to_string();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            422,
            RejectCode::InvalidName,
            format!("name must be at most {MAX_NAME} printable characters"),
        ));
    }
    let ips = allowed_ips(body.allowed_ips.as_ref())?;
    let passphrase = random_secret();
    let webhook = deps
        .ledger
        .create_webhook(
            p.account_id,
            &name,
            &digest(&passphrase),
            ips.as_deref(),
            MAX_WEBHOOKS,
        )
        .await?
        .ok_or_else(|| {
            ApiError::new(
                422,
                RejectCode::MaxWebhooks,
                format!("an account may have at most {MAX_WEBHOOKS} webhooks; delete one first"),
            )
        })?;
    Ok(WithPassphrase {
        webhook,
        passphrase,
    })
}

/// The account's webhooks.
pub async fn list(deps: &Deps, account_id: Uuid) -> Result<Vec<Webhook>, ApiError> {
    Ok(deps.ledger.webhooks(account_id).await?)
}

fn no_webhook(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook {id}"))
}

/// A new passphrase; the old one stops working.
pub async fn rotate(deps: &Deps, p: &Principal, id: &str) -> Result<WithPassphrase, ApiError> {
    session_only(p, "rotate webhooks")?;
    let passphrase = random_secret();
    match deps
        .ledger
        .rotate_webhook(p.account_id, id, &digest(&passphrase))
        .await?
    {
        Some(webhook) => Ok(WithPassphrase {
            webhook,
            passphrase,
        }),
        None => Err(no_webhook(id)),
    }
}

/// Deletes a webhook; alerts to it are refused from now on.
pub async fn delete(deps: &Deps, account_id: Uuid, id: &str) -> Result<(), ApiError> {
    if deps.ledger.delete_webhook(account_id, id).await? {
        Ok(())
    } else {
        Err(no_webhook(id))
    }
}

/// The webhook's latest `limit` deliveries, newest first. Another account's webhook is as
/// absent as a missing one.
pub async fn deliveries(
    deps: &Deps,
    account_id: Uuid,
    id: &str,
    limit: i64,
) -> Result<Vec<Delivery>, ApiError> {
    if !deps
        .ledger
        .webhooks(account_id)
        .await?
        .iter()
        .any(|w| w.id == id)
    {
        return Err(no_webhook(id));
    }
    Ok(deps.ledger.deliveries(account_id, id, limit).await?)
}
