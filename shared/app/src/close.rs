//! Closing positions: all of one, a quantity or a percentage of it, or every position
//! (optionally canceling open orders first). A close is a market sell of the position (spot
//! accounts are long only), placed like any order.

use chrono::Utc;
use domain::catalog::Instrument;
use domain::order::{NewOrder, Order, OrderSpec, OrderType, Side, TimeInForce, ValidOrder};
use domain::RejectCode;
use domain::RuleViolation;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::orders::{cancel_open_orders, submit_checked};
use crate::{ApiError, Deps};

/// The market sell that closes `qty` of a position.
fn close_order(account_id: Uuid, inst: &Instrument, qty: Decimal) -> Result<NewOrder, ApiError> {
    let qty = domain::amount::Quantity::new(qty)
        .map_err(|e| ApiError::rule(RuleViolation::new(RejectCode::InvalidQty, e.to_string())))?;
    let spec = OrderSpec {
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
    };
    let valid = ValidOrder {
        spec,
        client_order_id: None,
    };
    Ok(NewOrder::new(account_id, valid, inst.asset_id, Utc::now()))
}

/// How much of a position to close.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CloseAmount {
    pub qty: Option<Decimal>,
    pub percentage: Option<Decimal>,
}

/// Closes all of the position in `symbol`, or `qty` of it, or `percentage` of it; answers
/// the closing order. `amount` reads the request once the position is known to exist.
pub async fn close(
    deps: &Deps,
    account_id: Uuid,
    symbol: &str,
    amount: impl FnOnce() -> Result<CloseAmount, ApiError>,
) -> Result<Order, ApiError> {
    let inst = deps
        .catalog
        .get(symbol)
        .ok_or_else(|| ApiError::not_found(format!("no open position in {symbol}")))?;
    let held = deps
        .ledger
        .position(account_id, &inst.symbol)
        .await?
        .map(|pos| pos.position.qty)
        .filter(|q| *q > Decimal::ZERO)
        .ok_or_else(|| ApiError::not_found(format!("no open position in {}", inst.symbol)))?;
    let amount = amount()?;
    let qty = match (amount.qty, amount.percentage) {
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
    let order = close_order(account_id, inst, qty)?;
    submit_checked(deps, order, true).await
}

/// One position's close: the closing order or why it was refused.
#[derive(Debug)]
pub struct PositionClose {
    pub symbol: String,
    /// The quantity held when the close was placed.
    pub held: Decimal,
    pub outcome: Result<Order, ApiError>,
}

/// Closes every position. With `cancel_orders`, the cancels are queued first in the
/// account's FIFO group, so the closing sells apply after them and find the quantity free.
pub async fn close_all(
    deps: &Deps,
    account_id: Uuid,
    cancel_orders: bool,
) -> Result<Vec<PositionClose>, ApiError> {
    if cancel_orders {
        cancel_open_orders(deps, account_id).await?;
    }
    let mut results = Vec::new();
    for pos in deps.ledger.positions(account_id).await? {
        let qty = pos.position.qty;
        let Some(inst) = deps
            .catalog
            .get(&pos.symbol)
            .filter(|_| qty > Decimal::ZERO)
        else {
            continue;
        };
        let outcome = match close_order(account_id, inst, qty) {
            Ok(order) => submit_checked(deps, order, !cancel_orders).await,
            Err(e) => Err(e),
        };
        results.push(PositionClose {
            symbol: pos.symbol,
            held: qty,
            outcome,
        });
    }
    Ok(results)
}
