//! Closing positions: `DELETE /v2/positions/{symbol}` (all, `qty`, or `percentage`) and
//! `DELETE /v2/positions` (every position, optionally canceling open orders first); the use
//! cases are `app::close`.

use alpaca::order_json;
use app::close::CloseAmount;
use app::ApiError;
use domain::decimal::parse_decimal;
use domain::RejectCode;
use domain::RuleViolation;
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use serde_json::json;

use crate::auth::authenticate;
use crate::Deps;
use rest::{json, query, query_bool};

/// `DELETE /v2/positions/{symbol}?qty=…|percentage=…` → 200 with the closing order.
pub async fn close(deps: &Deps, req: &Request, symbol: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let number = |name: &str, code: RejectCode| -> Result<Option<Decimal>, ApiError> {
        query(req, name)
            .map(|v| {
                parse_decimal(&v)
                    .map_err(|e| ApiError::rule(RuleViolation::new(code, format!("{name}: {e}"))))
            })
            .transpose()
    };
    let amount = || {
        Ok(CloseAmount {
            qty: number("qty", RejectCode::InvalidQty)?,
            percentage: number("percentage", RejectCode::InvalidPercentage)?,
        })
    };
    let order = app::close::close(deps, p.account_id, symbol, amount).await?;
    Ok(json(200, &order_json(&order)))
}

/// `DELETE /v2/positions?cancel_orders=true|false` → 207 with one `{symbol, status, body}`
/// per position.
pub async fn close_all(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let cancel_orders = query_bool(req, "cancel_orders")?;
    let closes = app::close::close_all(deps, p.account_id, cancel_orders).await?;
    // Alpaca's shape: `body` is the order, or the failure with a numeric `code` (here the
    // HTTP status; the rule's name is in `reason` and leads the message).
    let results = closes
        .iter()
        .map(|c| match &c.outcome {
            Ok(o) => {
                json!({"symbol": c.symbol, "status": 200, "order_id": o.id, "body": order_json(o)})
            }
            Err(e) => json!({"symbol": c.symbol, "status": e.status, "body": {
                "code": e.status, "reason": e.code, "message": format!("{}: {}", e.code, e.message),
                "symbol": c.symbol, "existing_qty": domain::decimal::to_text(&c.held),
            }}),
        })
        .collect();
    Ok(json(207, &serde_json::Value::Array(results)))
}
