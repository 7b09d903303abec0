//! Risk controls: the account's limits and the kill switch.
//!
//! The limits and the switch are written to the ledger directly, not through the queue: a
//! kill switch must stop the commands already queued too, and every executor batch that
//! starts after the write sees it (the executor reads both under the account lock). The
//! flatten a kill may ask for does go through the queue, after the account's earlier
//! commands, so it sells what they bought.

use domain::command::Command;
use domain::risk::{RiskPatch, RiskState};
use domain::RejectCode;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::session_only;
use crate::{ApiError, Deps, Principal};

/// The account's limits, kill switch and realized PnL of the day.
pub async fn state(deps: &Deps, account_id: Uuid) -> Result<RiskState, ApiError> {
    deps.ledger
        .risk(account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))
}

/// Applies a patch of the limits: an absent field keeps its value, `null` switches the
/// limit off. Tightening is open to API keys; loosening (raising a limit, switching one off)
/// needs a login session.
pub async fn patch(deps: &Deps, p: &Principal, patch: RiskPatch) -> Result<RiskState, ApiError> {
    let current = state(deps, p.account_id).await?;
    let limits = patch.apply(&current.limits)?;
    let loosened = current.limits.loosened_by(&limits);
    if !loosened.is_empty() {
        session_only(p, &format!("loosen risk limits ({})", loosened.join(", ")))?;
    }
    deps.ledger.set_risk_limits(p.account_id, &limits).await?;
    Ok(RiskState { limits, ..current })
}

/// The body of a kill.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Cancel every open order and sell every position (default: the account's
    /// `flatten_on_kill`).
    pub flatten: Option<bool>,
    pub reason: Option<String>,
}

const MAX_REASON: usize = 200;

/// A tripped switch, and whether a flatten was queued with it.
#[derive(Debug)]
pub struct Killed {
    pub state: RiskState,
    pub flatten: bool,
}

/// Trips the kill switch. Killing an account already killed keeps the first time and
/// reason (and may still flatten).
pub async fn kill(deps: &Deps, account_id: Uuid, body: KillRequest) -> Result<Killed, ApiError> {
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
    let current = state(deps, account_id).await?;
    let kill = deps.ledger.kill(account_id, &reason).await?;
    let flatten = body.flatten.unwrap_or(current.limits.flatten_on_kill);
    if flatten {
        deps.queue.send(&Command::flatten(account_id)).await?;
    }
    Ok(Killed {
        state: RiskState {
            kill: Some(kill),
            ..current
        },
        flatten,
    })
}

/// Switches the kill switch off: a login session only (engaging it is open to API keys).
pub async fn reset(deps: &Deps, p: &Principal) -> Result<RiskState, ApiError> {
    session_only(p, "reset the kill switch")?;
    deps.ledger.reset_kill(p.account_id).await?;
    state(deps, p.account_id).await
}
