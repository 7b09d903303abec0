//! Risk controls: `GET`/`PATCH /v2/account/risk` (the account's limits) and the kill
//! switch, `POST`/`DELETE /v2/account/kill`.
//!
//! The limits and the switch are written to the ledger directly, not through the queue: a
//! kill switch must stop the commands already queued too, and every executor batch that
//! starts after the write sees it (the executor reads both under the account lock). The
//! flatten a kill may ask for does go through the queue, after the account's earlier
//! commands, so it sells what they bought.

use adapters::ApiError;
use domain::command::Command;
use domain::risk::{Kill, RiskPatch, RiskState};
use domain::RejectCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::authenticate;
use crate::http::{json, json_body};
use crate::Deps;

fn decimal(d: Option<rust_decimal::Decimal>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.normalize().to_string()))
}

fn kill_json(k: Option<&Kill>) -> Value {
    match k {
        Some(k) => json!({ "active": true, "since": k.at, "reason": k.reason }),
        None => json!({ "active": false, "since": null, "reason": null }),
    }
}

/// The limits, the kill switch and the day's realized PnL, as `GET /v2/account/risk`
/// shows them. Decimals are strings; a limit that is off is `null`.
pub fn risk_json(r: &RiskState) -> Value {
    let l = &r.limits;
    json!({
        "max_order_notional": decimal(l.max_order_notional),
        "max_position_notional": decimal(l.max_position_notional),
        "max_open_orders": l.max_open_orders,
        "max_gross_leverage": decimal(l.max_gross_leverage),
        "daily_loss_limit": decimal(l.daily_loss_limit),
        "flatten_on_kill": l.flatten_on_kill,
        "realized_pnl_today": r.realized_today.normalize().to_string(),
        "kill_switch": kill_json(r.kill.as_ref()),
    })
}

async fn state(deps: &Deps, account_id: uuid::Uuid) -> Result<RiskState, ApiError> {
    deps.ledger
        .risk(account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))
}

/// `GET /v2/account/risk`
pub async fn get(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    Ok(json(200, &risk_json(&state(deps, p.account_id).await?)))
}

/// `PATCH /v2/account/risk` with any of the limits: an absent field keeps its value, `null`
/// switches the limit off.
pub async fn patch(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let patch: RiskPatch = json_body(req)?;
    let current = state(deps, p.account_id).await?;
    let limits = patch.apply(&current.limits)?;
    deps.ledger.set_risk_limits(p.account_id, &limits).await?;
    Ok(json(200, &risk_json(&RiskState { limits, ..current })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillRequest {
    /// Cancel every open order and sell every position (default: the account's
    /// `flatten_on_kill`).
    flatten: Option<bool>,
    reason: Option<String>,
}

const MAX_REASON: usize = 200;

/// `POST /v2/account/kill {"flatten"?: bool, "reason"?: text}` → 200 with the risk state.
/// Killing an account already killed keeps the first time and reason (and may still
/// flatten).
pub async fn kill(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let body: KillRequest = match req.body() {
        Body::Empty => KillRequest::default(),
        Body::Text(t) if t.trim().is_empty() => KillRequest::default(),
        _ => json_body(req)?,
    };
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "tripped by hand".to_string());
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(ApiError::new(
            422,
            RejectCode::InvalidReason,
            format!("reason must be at most {MAX_REASON} printable characters"),
        ));
    }
    let current = state(deps, p.account_id).await?;
    let kill = deps.ledger.kill(p.account_id, &reason).await?;
    let flatten = body.flatten.unwrap_or(current.limits.flatten_on_kill);
    if flatten {
        deps.queue.send(&Command::flatten(p.account_id)).await?;
    }
    let mut out = risk_json(&RiskState {
        kill: Some(kill),
        ..current
    });
    out["flatten"] = Value::Bool(flatten);
    Ok(json(200, &out))
}

/// `DELETE /v2/account/kill` → 200 with the risk state, the switch off.
pub async fn reset(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    deps.ledger.reset_kill(p.account_id).await?;
    Ok(json(200, &risk_json(&state(deps, p.account_id).await?)))
}
