//! TradingView alerts become orders.
//!
//! TradingView cannot set headers, so the webhook id in the URL is a secret (256 random
//! bits) and the alert body carries the passphrase. An unknown id and a wrong passphrase get
//! the same 401 after the same work: one lookup and one constant-time comparison (against a
//! dummy digest when there is no webhook). An alert is only validated and enqueued, through
//! the order path every order takes ([`crate::orders::submit`]: the same pre-trade and risk
//! checks, idempotent on `client_order_id`), so it answers in milliseconds; TradingView
//! gives up after 3 s.
//!
//! Every alert that proves the secret URL and the passphrase is recorded as a delivery (body
//! with the passphrase redacted, status, outcome, order id); nothing is recorded, and
//! nothing about the webhook is answered, before that. Refused alerts count against the
//! sender's address ([`AUTH_FAILURES`]).

use adapters::auth::digest;
use adapters::ratelimit::{BucketSpec, Decision};
use adapters::webhooks::{is_webhook_id, passphrase_matches, Delivery, Webhook};
use chrono::Utc;
use domain::order::NewOrder;
use domain::RejectCode;
use rust_decimal::Decimal;
use serde_json::json;
use tradingview::{client_order_id, parse_alert, redact_passphrase, Alert};
use uuid::Uuid;

use crate::{ApiError, Deps};

/// TradingView alert messages are short; API Gateway would take 10 MB.
pub const MAX_ALERT_BYTES: usize = 16 * 1024;

/// What was decided about an alert, as recorded and answered.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub body: serde_json::Value,
    code: Option<String>,
    message: Option<String>,
    order_id: Option<Uuid>,
    client_order_id: Option<String>,
    /// The refusal, answered as every error is (with `Retry-After` on a 429 or 503).
    pub error: Option<ApiError>,
}

impl Outcome {
    fn error(e: &ApiError) -> Outcome {
        Outcome {
            status: e.status,
            body: json!({ "code": e.code, "message": e.message }),
            code: Some(e.code.to_string()),
            message: Some(e.message.clone()),
            order_id: None,
            client_order_id: None,
            error: Some(e.clone()),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::unauthenticated("unknown webhook or wrong passphrase")
}

/// Compared against when the webhook does not exist, so that both cases do the same work.
fn dummy_digest() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| digest("no webhook has this passphrase"))
}

/// An alert as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The webhook id of the URL (its secret).
    pub webhook_id: &'a str,
    /// The sender's address as API Gateway saw it.
    pub source_ip: &'a str,
    pub content_type: Option<&'a str>,
    /// `None`: a body that is not UTF-8 text.
    pub body: Option<&'a str>,
}

/// Unknown webhooks and wrong passphrases an address may send: a burst of 20, then 10 a
/// minute; past that the address is refused (429) before any lookup, except TradingView's
/// own addresses, which every TradingView user's alerts come from (one abuser there must
/// not block everyone's alerts; TradingView limits its users' alert rates itself).
pub const AUTH_FAILURES: BucketSpec = BucketSpec {
    burst: 20,
    per_minute: 10,
};

/// Decides about one alert and records the delivery. In this order, so that nothing about
/// a webhook is read or written for a sender who has not proved the secret URL and the
/// passphrase: the size (413; a body that is not UTF-8 text, 400), the sender's failure
/// budget (429), the lookup and the body's JSON (400 with the template it needs), the
/// passphrase (one 401 for an unknown webhook or a wrong or missing passphrase; refusals
/// count against the sender and are not recorded); then, recorded as deliveries, the
/// address allowlist (403), the alert's validity and the order.
pub async fn receive(deps: &Deps, alert: Received<'_>) -> Result<Outcome, ApiError> {
    let Received {
        webhook_id: id,
        source_ip: ip,
        body,
        ..
    } = alert;
    let text = match body {
        Some(text) if text.len() <= MAX_ALERT_BYTES => text,
        Some(_) => {
            return Err(ApiError::new(
                413,
                RejectCode::AlertTooLarge,
                format!("an alert body must be at most {MAX_ALERT_BYTES} bytes"),
            ))
        }
        // Not too large, just not text: malformed, like a body that is not JSON.
        None => {
            return Err(ApiError::new(
                400,
                RejectCode::NotJson,
                "an alert body must be UTF-8 text: the JSON of an alert template",
            ))
        }
    };
    let shared_sender = crate::webhooks::TRADINGVIEW_IPS.contains(&ip);
    if !shared_sender {
        if let Decision::Limited { retry_after_secs } = deps
            .limiter
            .peek("hook_failures", ip, AUTH_FAILURES)
            .await?
        {
            return Err(too_many_failures(retry_after_secs));
        }
    }
    // A body that is not JSON cannot carry a readable passphrase: refused with the JSON it
    // needs (TradingView's default message is plain text), before any lookup, so the same
    // for every webhook id.
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        if !shared_sender {
            deps.limiter
                .take("hook_failures", ip, AUTH_FAILURES)
                .await?;
        }
        return Err(match parse_alert(text) {
            Err(v) => ApiError::new(400, v.code, v.message),
            Ok(_) => ApiError::malformed("the alert body is not JSON"),
        });
    }
    // An id that cannot name a webhook is not looked up (a NUL in it would fail the query
    // as if the database were down); it is refused like an unknown one.
    let webhook = if is_webhook_id(id) {
        deps.ledger.webhook(id).await?
    } else {
        None
    };
    let passphrase = tradingview::alert_passphrase(text).unwrap_or_default();
    let stored = webhook
        .as_ref()
        .map_or(dummy_digest(), |w| w.passphrase_hash.as_str());
    // Compared whether or not the webhook exists, so that both 401s do the same work.
    let passphrase_ok = passphrase_matches(&passphrase, stored) && !passphrase.is_empty();
    let webhook = match webhook {
        Some(w) if passphrase_ok => w,
        _ => {
            if !shared_sender {
                deps.limiter
                    .take("hook_failures", ip, AUTH_FAILURES)
                    .await?;
            }
            tracing::warn!(%ip, "alert refused: unknown webhook or wrong passphrase");
            return Err(unauthorized());
        }
    };
    let outcome = if !webhook.allows(ip) {
        Outcome::error(&ApiError::forbidden(format!(
            "alerts to this webhook are only accepted from its allowed addresses; {ip} is not one"
        )))
    } else {
        match place(deps, &webhook, text).await {
            Ok(o) => o,
            Err(e) => Outcome::error(&e),
        }
    };
    record(deps, &alert, &webhook, text, &outcome).await;
    Ok(outcome)
}

fn too_many_failures(retry_after_secs: u64) -> ApiError {
    ApiError::rate_limited(
        RejectCode::RateLimited,
        format!(
            "too many alerts to unknown webhooks or with wrong passphrases from this address; retry in {retry_after_secs} s"
        ),
        retry_after_secs,
    )
}

/// Records the delivery; a failure to record does not change the answer (the order, if
/// any, is queued), it is logged.
async fn record(deps: &Deps, alert: &Received<'_>, webhook: &Webhook, text: &str, o: &Outcome) {
    let delivery = Delivery {
        id: Uuid::new_v4(),
        webhook_id: webhook.id.clone(),
        account_id: webhook.account_id,
        received_at: Utc::now(),
        source_ip: Some(alert.source_ip.to_string()).filter(|s| !s.is_empty()),
        content_type: alert.content_type.map(str::to_string),
        body: redact_passphrase(text),
        status: o.status,
        outcome: if o.status < 300 {
            "accepted"
        } else {
            "rejected"
        }
        .to_string(),
        code: o.code.clone(),
        message: o.message.clone(),
        order_id: o.order_id,
        client_order_id: o.client_order_id.clone(),
    };
    if let Err(e) = deps.ledger.record_delivery(&delivery).await {
        tracing::warn!(error = %e, "could not record a webhook delivery");
    }
}

/// Maps the alert to an order and submits it.
async fn place(deps: &Deps, webhook: &Webhook, text: &str) -> Result<Outcome, ApiError> {
    let alert: Alert = parse_alert(text).map_err(|v| {
        let status = if v.code == "not_json" { 400 } else { 422 };
        ApiError::new(status, v.code, v.message)
    })?;
    let principal = adapters::auth::Principal {
        user_id: Uuid::nil(),
        account_id: webhook.account_id,
        via_session: false,
    };
    crate::auth::take(deps, "orders", &principal, deps.config.rates.orders).await?;
    let coid = client_order_id(&webhook.id, &alert, text);
    // Target-position mode orders the difference from the position as the ledger has it.
    let current = if matches!(alert.size, tradingview::AlertSize::TargetPosition(_)) {
        deps.ledger
            .position(webhook.account_id, &alert.symbol)
            .await?
            .map_or(Decimal::ZERO, |p| p.position.qty)
    } else {
        Decimal::ZERO
    };
    let Some(request) = alert.to_order_request(current, coid.clone())? else {
        return Ok(Outcome {
            status: 200,
            body: json!({
                "status": "no_change",
                "message": format!("the {} position is already {}", alert.symbol, current.normalize()),
                "client_order_id": coid,
            }),
            code: Some("no_change".into()),
            message: Some("already at the target position".into()),
            order_id: None,
            client_order_id: Some(coid),
            error: None,
        });
    };
    let (valid, inst) = request.validate(deps.catalog)?;
    let order = NewOrder::new(webhook.account_id, valid, inst.asset_id, Utc::now());
    let placed = crate::orders::submit(deps, order).await?;
    Ok(Outcome {
        status: 200,
        body: json!({
            "status": "accepted",
            "order_id": placed.id,
            "client_order_id": placed.client_order_id,
            "order_status": placed.status.as_str(),
            "symbol": placed.symbol,
            "side": placed.side.as_str(),
            "qty": placed.qty.map(|q| q.normalize().to_string()),
            "notional": placed.notional.map(|n| n.normalize().to_string()),
        }),
        code: None,
        message: None,
        order_id: Some(placed.id),
        client_order_id: Some(placed.client_order_id),
        error: None,
    })
}
