//! Risk controls: `GET`/`PATCH /v2/account/risk` (the account's limits) and the kill
//! switch, `POST`/`DELETE /v2/account/kill`; the use cases (and why the switch bypasses the
//! queue) are `app::risk`.

use app::risk::KillRequest;
use app::ApiError;
use domain::risk::{Kill, RiskPatch, RiskState};
use lambda_http::{Body, Request, Response};
use rest::{json, json_body, optional_json_body};
use serde_json::{json, Value};

use crate::auth::authenticate;
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

/// `GET /v2/account/risk`
pub async fn get(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    Ok(json(
        200,
        &risk_json(&app::risk::state(deps, p.account_id).await?),
    ))
}

/// `PATCH /v2/account/risk` with any of the limits: an absent field keeps its value, `null`
/// switches the limit off.
pub async fn patch(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let patch: RiskPatch = json_body(req)?;
    Ok(json(
        200,
        &risk_json(&app::risk::patch(deps, &p, patch).await?),
    ))
}

/// `POST /v2/account/kill {"flatten"?: bool, "reason"?: text}` → 200 with the risk state.
/// Killing an account already killed keeps the first time and reason (and may still
/// flatten).
pub async fn kill(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let body: KillRequest = optional_json_body(req)?;
    let killed = app::risk::kill(deps, p.account_id, body).await?;
    let mut out = risk_json(&killed.state);
    out["flatten"] = Value::Bool(killed.flatten);
    Ok(json(200, &out))
}

/// `DELETE /v2/account/kill` → 200 with the risk state, the switch off.
pub async fn reset(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    Ok(json(200, &risk_json(&app::risk::reset(deps, &p).await?)))
}
