//! Orders: `POST /v2/orders` validates, pre-checks and enqueues; reads merge the ledger with
//! orders accepted but not yet applied by the executor.

use adapters::cache::PendingPut;
use adapters::ledger::{OrderQuery, StatusFilter};
use adapters::{now_ms, ApiError};
use chrono::Utc;
use domain::amount::{Price, Quantity};
use domain::command::Command;
use domain::execution::reserve_for_buy;
use domain::order::{order_id_for, NewOrder, Order, OrderRequest, OrderType, Side};
use domain::RuleViolation;
use lambda_http::{Body, Request, Response};
use uuid::Uuid;

use crate::auth::authenticate;
use crate::http::{
    invalid_query, json, json_body, no_content, query, query_ascending, query_int, query_time,
};
use crate::Deps;

/// `POST /v2/orders` → 200 with the order in `pending_new` (or the existing order for a
/// repeated `client_order_id` with the same parameters; 422 for different parameters).
pub async fn place(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let request: OrderRequest = json_body(req)?;
    let (valid, inst) = request.validate(deps.catalog)?;
    let order = NewOrder::new(p.account_id, valid, inst.asset_id, Utc::now());
    Ok(json(200, &submit(deps, order).await?.to_alpaca_json()))
}

/// Idempotent submission of a validated order; the answer is the order as it stands.
pub async fn submit(deps: &Deps, order: NewOrder) -> Result<Order, ApiError> {
    // Already applied by the executor?
    if let Some(existing) = deps.ledger.order(order.account_id, order.id).await? {
        return stored_or_conflict(&order, existing);
    }
    pre_trade_checks(deps, &order).await?;
    // A retry gets the order the first request recorded (its id and submission time).
    let (order, created) = match deps.cache.put_pending_order(&order).await? {
        PendingPut::Created => {
            // The executor may have committed this order and cleared its pending copy
            // between the ledger read above and this put; it commits before it clears,
            // so a second read settles it.
            if let Some(existing) = deps.ledger.order(order.account_id, order.id).await? {
                let _ = deps
                    .cache
                    .clear_pending_order(order.account_id, order.id)
                    .await;
                return stored_or_conflict(&order, existing);
            }
            (order, true)
        }
        PendingPut::Exists(pending) if pending.same_parameters(&order) => (pending, false),
        PendingPut::Exists(_) => return Err(conflict(&order)),
    };
    // Sent again on a retry too: SQS deduplicates within 5 minutes and the executor on the
    // command id forever, so a retry after a lost answer can never be lost or doubled.
    if let Err(e) = deps.queue.send(&Command::place(order.clone())).await {
        if created {
            // Best effort: a failed clean-up only leaves a pending copy that expires.
            let _ = deps
                .cache
                .clear_pending_order(order.account_id, order.id)
                .await;
        }
        return Err(e.into());
    }
    Ok(order.pending())
}

fn stored_or_conflict(order: &NewOrder, existing: Order) -> Result<Order, ApiError> {
    if order.matches_stored(&existing) {
        Ok(existing)
    } else {
        Err(conflict(order))
    }
}

fn conflict(order: &NewOrder) -> ApiError {
    ApiError::rule(RuleViolation::new(
        "client_order_id_conflict",
        format!(
            "client_order_id '{}' was already used for an order with different parameters",
            order.client_order_id
        ),
    ))
}

/// Cheap checks on cached data so obvious mistakes answer at once; the executor's checks,
/// on the ledger itself, are the authoritative ones.
async fn pre_trade_checks(deps: &Deps, order: &NewOrder) -> Result<(), ApiError> {
    let Some(inst) = deps.catalog.get(&order.symbol) else {
        return Ok(());
    };
    let quote = deps
        .cache
        .quote(&order.symbol)
        .await?
        .filter(|q| q.is_fresh(now_ms(), deps.config.max_price_age_ms));
    let reference = match (order.order_type, order.limit_price.map(Price::get), &quote) {
        (OrderType::Limit, Some(limit), _) => Some(limit),
        (_, _, Some(q)) => Some(if order.side == Side::Buy {
            q.ask
        } else {
            q.bid
        }),
        _ => None,
    };
    let (Some(price), Some(qty)) = (reference, order.qty.map(Quantity::get)) else {
        return Ok(());
    };
    if order.order_type == OrderType::Market {
        inst.check_notional(qty, price, true)
            .map_err(RuleViolation::from)?;
    }
    match order.side {
        Side::Buy => {
            let need = reserve_for_buy(qty, price, &deps.config.execution_params());
            if let Some(account) = deps.ledger.account(order.account_id).await? {
                if need > account.cash {
                    return Err(ApiError::rule(RuleViolation::new(
                        "insufficient_buying_power",
                        format!("buying {qty} {} at about {price} needs {} USDT including the fee; cash is {} USDT", order.symbol, need.normalize(), account.cash.normalize()),
                    )));
                }
            }
        }
        Side::Sell => {
            let held = deps
                .ledger
                .position(order.account_id, &order.symbol)
                .await?
                .map(|p| p.position.qty)
                .unwrap_or_default();
            if qty > held {
                return Err(ApiError::rule(RuleViolation::new(
                    "insufficient_qty",
                    format!("selling {qty} {} needs that quantity; the position is {} (spot accounts cannot short)", order.symbol, held.normalize()),
                )));
            }
        }
    }
    Ok(())
}

/// Finds an order of the account in the ledger or among those not yet applied. The ledger
/// is read again after a miss in the cache: the executor clears the pending copy only after
/// its commit, so an order moving between the two is still found.
async fn find(deps: &Deps, account_id: Uuid, order_id: Uuid) -> Result<Option<Order>, ApiError> {
    if let Some(o) = deps.ledger.order(account_id, order_id).await? {
        return Ok(Some(o));
    }
    if let Some(p) = deps.cache.pending_order(account_id, order_id).await? {
        return Ok(Some(p.pending()));
    }
    Ok(deps.ledger.order(account_id, order_id).await?)
}

fn parse_order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("order {id} not found")))
}

/// `GET /v2/orders/{id}`: another account's order is as absent as a missing one (404).
pub async fn get(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let order_id = parse_order_id(id)?;
    match find(deps, p.account_id, order_id).await? {
        Some(o) => Ok(json(200, &o.to_alpaca_json())),
        None => Err(ApiError::not_found(format!("order {id} not found"))),
    }
}

/// `GET /v2/orders:by_client_order_id?client_order_id=…`
pub async fn by_client_order_id(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let coid = query(req, "client_order_id")
        .ok_or_else(|| ApiError::new(422, "missing_parameter", "client_order_id is required"))?;
    match find(deps, p.account_id, order_id_for(p.account_id, &coid)).await? {
        Some(o) => Ok(json(200, &o.to_alpaca_json())),
        None => Err(ApiError::not_found(format!(
            "no order with client_order_id '{coid}'"
        ))),
    }
}

/// `GET /v2/orders?status=open|closed|all&limit=&after=&until=&direction=&symbols=`
pub async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let status = match query(req, "status").as_deref() {
        None | Some("open") => StatusFilter::Open,
        Some("closed") => StatusFilter::Closed,
        Some("all") => StatusFilter::All,
        Some(v) => return Err(invalid_query("status", v, "open, closed or all")),
    };
    let symbols = query(req, "symbols").map(|s| {
        s.split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| {
                deps.catalog
                    .get(x.trim())
                    .map(|i| i.symbol.clone())
                    .unwrap_or_else(|| x.trim().to_uppercase())
            })
            .collect::<Vec<_>>()
    });
    let q = OrderQuery {
        status,
        limit: query_int(req, "limit", 50, 1, 500)?,
        after: query_time(req, "after")?,
        until: query_time(req, "until")?,
        ascending: query_ascending(req)?,
        symbols,
    };
    let mut orders = deps.ledger.orders(p.account_id, &q).await?;
    if status != StatusFilter::Closed {
        let known: std::collections::HashSet<Uuid> = orders.iter().map(|o| o.id).collect();
        let pending = deps.cache.pending_orders(p.account_id).await?;
        for o in pending.into_iter().filter(|o| !known.contains(&o.id)) {
            let in_window = q.after.is_none_or(|a| o.submitted_at > a)
                && q.until.is_none_or(|u| o.submitted_at < u);
            let in_symbols = q.symbols.as_ref().is_none_or(|s| s.contains(&o.symbol));
            // The ledger may have taken it since our read; then it is already listed or closed.
            if in_window && in_symbols {
                orders.push(o.pending());
            }
        }
        orders.sort_by_key(|o| (o.submitted_at, o.id));
        if !q.ascending {
            orders.reverse();
        }
        orders.truncate(q.limit as usize);
    }
    Ok(json(
        200,
        &serde_json::Value::Array(orders.iter().map(Order::to_alpaca_json).collect()),
    ))
}

/// `DELETE /v2/orders/{id}` → 204 once the cancel is queued; 422 when the order is closed.
pub async fn cancel(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let order_id = parse_order_id(id)?;
    let order = find(deps, p.account_id, order_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("order {id} not found")))?;
    if !order.status.is_open() {
        return Err(ApiError::rule(RuleViolation::new(
            "order_not_cancelable",
            format!("order {id} is {} and cannot be canceled", order.status),
        )));
    }
    deps.queue
        .send(&Command::cancel(p.account_id, order_id))
        .await?;
    Ok(no_content())
}
