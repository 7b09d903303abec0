//! Closing positions: `DELETE /v2/positions/{symbol}` (all, `qty`, or `percentage`) and
//! `DELETE /v2/positions` (every position, optionally canceling open orders first). A close
//! is a market sell of the position (spot accounts are long only), placed like any order.

use adapters::ApiError;
use chrono::Utc;
use domain::catalog::Instrument;
use domain::decimal::parse_decimal;
use domain::order::{NewOrder, OrderType, Side, TimeInForce, ValidOrder};
use domain::RejectCode;
use domain::RuleViolation;
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::auth::authenticate;
use crate::http::{json, query, query_bool};
use crate::orders::{cancel_open_orders, submit_checked};
use crate::Deps;

/// The market sell that closes `qty` of a position.
fn close_order(account_id: Uuid, inst: &Instrument, qty: Decimal) -> Result<NewOrder, ApiError> {
    let qty = domain::amount::Quantity::new(qty)
        .map_err(|e| ApiError::rule(RuleViolation::new(RejectCode::InvalidQty, e.to_string())))?;
    let valid = ValidOrder {
        symbol: inst.symbol.clone(),
        side: Side::Sell,
        order_type: OrderType::Market,
        time_in_force: TimeInForce::Gtc,
        qty: Some(qty),
        notional: None,
        limit_price: None,
        stop_price: None,
        trail: None,
        order_class: domain::order::OrderClass::Simple,
        legs: Vec::new(),
        client_order_id: None,
    };
    Ok(NewOrder::new(account_id, valid, inst.asset_id, Utc::now()))
}

/// `DELETE /v2/positions/{symbol}?qty=…|percentage=…` → 200 with the closing order.
pub async fn close(deps: &Deps, req: &Request, symbol: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let inst = deps
        .catalog
        .get(symbol)
        .ok_or_else(|| ApiError::not_found(format!("no open position in {symbol}")))?;
    let held = deps
        .ledger
        .position(p.account_id, &inst.symbol)
        .await?
        .map(|pos| pos.position.qty)
        .filter(|q| *q > Decimal::ZERO)
        .ok_or_else(|| ApiError::not_found(format!("no open position in {}", inst.symbol)))?;
    let number = |name: &str, code: RejectCode| -> Result<Option<Decimal>, ApiError> {
        query(req, name)
            .map(|v| {
                parse_decimal(&v)
                    .map_err(|e| ApiError::rule(RuleViolation::new(code, format!("{name}: {e}"))))
            })
            .transpose()
    };
    let qty = match (
        number("qty", RejectCode::InvalidQty)?,
        number("percentage", RejectCode::InvalidPercentage)?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::rule(RuleViolation::new(
                RejectCode::QtyAndPercentage,
                "give either qty or percentage, not both",
            )))
        }
        (Some(q), None) => {
            if q <= Decimal::ZERO || q > held {
                return Err(ApiError::rule(RuleViolation::new(
                    RejectCode::InvalidQty,
                    format!(
                        "qty must be greater than 0 and at most the position, {}",
                        held.normalize()
                    ),
                )));
            }
            q
        }
        (None, Some(pct)) => {
            if pct <= Decimal::ZERO || pct > Decimal::ONE_HUNDRED {
                return Err(ApiError::rule(RuleViolation::new(
                    RejectCode::InvalidPercentage,
                    "percentage must be greater than 0 and at most 100",
                )));
            }
            if pct == Decimal::ONE_HUNDRED {
                held
            } else {
                inst.floor_to_step(held * pct / Decimal::ONE_HUNDRED)
            }
        }
        (None, None) => held,
    };
    inst.check_qty(qty, true).map_err(RuleViolation::from)?;
    let order = close_order(p.account_id, inst, qty)?;
    Ok(json(
        200,
        &submit_checked(deps, order, true).await?.to_alpaca_json(),
    ))
}

/// `DELETE /v2/positions?cancel_orders=true|false` → 207 with one `{symbol, status, body}`
/// per position. With `cancel_orders`, the cancels are queued first in the account's FIFO
/// group, so the closing sells apply after them and find the quantity free.
pub async fn close_all(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let cancel_orders = query_bool(req, "cancel_orders")?;
    if cancel_orders {
        cancel_open_orders(deps, p.account_id).await?;
    }
    let mut results = Vec::new();
    for pos in deps.ledger.positions(p.account_id).await? {
        let qty = pos.position.qty;
        let Some(inst) = deps
            .catalog
            .get(&pos.symbol)
            .filter(|_| qty > Decimal::ZERO)
        else {
            continue;
        };
        let outcome = match close_order(p.account_id, inst, qty) {
            Ok(order) => submit_checked(deps, order, !cancel_orders).await,
            Err(e) => Err(e),
        };
        // Alpaca's shape: `body` is the order, or the failure with a numeric `code` (here
        // the HTTP status; the rule's name is in `reason` and leads the message).
        results.push(match outcome {
            Ok(o) => json!({"symbol": pos.symbol, "status": 200, "order_id": o.id, "body": o.to_alpaca_json()}),
            Err(e) => json!({"symbol": pos.symbol, "status": e.status, "body": {
                "code": e.status, "reason": e.code, "message": format!("{}: {}", e.code, e.message),
                "symbol": pos.symbol, "existing_qty": domain::decimal::to_text(&qty),
            }}),
        });
    }
    Ok(json(207, &serde_json::Value::Array(results)))
}
