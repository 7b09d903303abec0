//! Orders: validation, the cheap pre-trade checks and idempotent submission to the queue;
//! reads merge the ledger with orders accepted but not yet applied by the executor.

use adapters::cache::PendingPut;
use adapters::ledger::{OrderQuery, StatusFilter};
use adapters::now_ms;
use chrono::Utc;
use domain::amount::Price;
use domain::command::Command;
use domain::decimal::DecimalText;
use domain::order::{
    order_id_for, NewOrder, Order, OrderRef, OrderRequest, OrderStatus, OrderType, Side, Trail,
};
use domain::RejectCode;
use domain::RuleViolation;
use uuid::Uuid;

use crate::auth::{take, Principal};
use crate::{ApiError, Deps};

/// Places an order (`POST /v2/orders`): the account's order budget, validation, then
/// [`submit`]. The answer is the order in `pending_new`, or the existing order for a
/// repeated `client_order_id` with the same parameters (422 for different parameters).
/// `request` reads the body once the budget is taken, so malformed bodies count against it.
pub async fn place(
    deps: &Deps,
    p: &Principal,
    request: impl FnOnce() -> Result<OrderRequest, ApiError>,
) -> Result<Order, ApiError> {
    take(deps, "orders", p, deps.config.rates.orders).await?;
    let request = request()?;
    let (valid, inst) = request.validate(deps.catalog)?;
    let order = NewOrder::new(p.account_id, valid, inst.asset_id, Utc::now());
    submit(deps, order).await
}

/// Idempotent submission of a validated order; the answer is the order as it stands.
pub async fn submit(deps: &Deps, order: NewOrder) -> Result<Order, ApiError> {
    submit_checked(deps, order, true).await
}

/// [`submit`], with or without the pre-trade checks (skipped when commands queued just
/// before, such as cancels, will change what is available by the time this one applies).
pub async fn submit_checked(
    deps: &Deps,
    order: NewOrder,
    check_first: bool,
) -> Result<Order, ApiError> {
    // Already applied by the executor? Asked at the same time as the pre-trade reads; an
    // order already there is the answer whatever the checks say now.
    let checks = async {
        if check_first {
            pre_trade_checks(deps, &order).await
        } else {
            Ok(())
        }
    };
    let (existing, checked) = tokio::join!(deps.ledger.order(order.order_ref()), checks);
    if let Some(existing) = existing? {
        return stored_or_conflict(&order, existing);
    }
    checked?;
    // A retry gets the order the first request recorded (its id and submission time).
    let (order, created) = match deps.cache.put_pending_order(&order).await? {
        PendingPut::Created => {
            // The executor may have committed this order and cleared its pending copy
            // between the ledger read above and this put; it commits before it clears,
            // so a second read settles it.
            if let Some(existing) = deps.ledger.order(order.order_ref()).await? {
                let _ = deps.cache.clear_pending_order(order.order_ref()).await;
                return stored_or_conflict(&order, existing);
            }
            (order, true)
        }
        PendingPut::Exists(pending) if pending.same_parameters(&order) => (*pending, false),
        PendingPut::Exists(_) => return Err(conflict(&order)),
    };
    // Sent again on a retry too: SQS deduplicates within 5 minutes and the executor on the
    // command id forever, so a retry after a lost answer can never be lost or doubled.
    if let Err(e) = deps.queue.send(&Command::place(order.clone())).await {
        if created {
            // Best effort: a failed clean-up only leaves a pending copy that expires.
            let _ = deps.cache.clear_pending_order(order.order_ref()).await;
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
        RejectCode::ClientOrderIdConflict,
        format!(
            "client_order_id '{}' was already used for an order with different parameters",
            order.client_order_id
        ),
    ))
}

/// Cheap checks on cached data so obvious mistakes answer at once; the executor's checks,
/// on the ledger itself, are the authoritative ones. Reservations and risk limits follow
/// the executor's own rules (`domain::engine::Book`, `domain::risk`), so both agree on what
/// is refused.
pub async fn pre_trade_checks(deps: &Deps, order: &NewOrder) -> Result<(), ApiError> {
    let Some(inst) = deps.catalog.get(&order.spec.symbol) else {
        return Ok(());
    };
    let Some(book) = deps.ledger.book(order.account_id).await? else {
        return Ok(());
    };
    // The kill switch needs no price: refused even when the rest cannot be checked here.
    domain::risk::check_kill(book.risk.kill.as_ref())?;
    // The order's quote, and those marking the positions for the gross exposure limit.
    let mut symbols: Vec<String> = book.positions.keys().cloned().collect();
    symbols.push(order.spec.symbol.clone());
    symbols.sort();
    symbols.dedup();
    let now = now_ms();
    let quotes: std::collections::HashMap<String, domain::quote::Quote> = deps
        .cache
        .quotes(&symbols)
        .await?
        .into_iter()
        .filter(|(_, q)| q.is_fresh(now, deps.config.trading.max_price_age_ms))
        .collect();
    let touch = quotes
        .get(&order.spec.symbol)
        .map(|q| match order.spec.side {
            Side::Buy => q.ask,
            Side::Sell => q.bid,
        });
    // The price the order would pay at worst, as far as we can tell before it runs.
    let reference = match order.spec.order_type {
        OrderType::Limit | OrderType::StopLimit => order.spec.limit_price.map(Price::get),
        OrderType::Stop => order.spec.stop_price.map(Price::get),
        OrderType::Market | OrderType::TrailingStop => touch,
    };
    let Some(price) = reference.filter(|p| *p > rust_decimal::Decimal::ZERO) else {
        return Ok(());
    };
    // A notional order buys what its notional buys at the touch.
    let qty = match (order.spec.qty, order.spec.notional) {
        (Some(q), _) => q.get(),
        (None, Some(n)) => inst.floor_to_step(n.get() / price),
        (None, None) => return Ok(()),
    };
    let params = deps.config.execution_params();
    let market = domain::engine::Market {
        catalog: deps.catalog,
        quotes: &quotes,
        now: Utc::now(),
        now_ms: now,
        params: &params,
    };
    if order.spec.order_type == OrderType::Market {
        inst.check_notional(qty, price, true)
            .map_err(RuleViolation::from)?;
    }
    book.pre_check(&order.pending(), qty, price, &market)?;
    Ok(())
}

/// Finds an order of the account in the ledger or among those not yet applied. The ledger
/// is read again after a miss in the cache: the executor clears the pending copy only after
/// its commit, so an order moving between the two is still found.
pub async fn find(deps: &Deps, order: OrderRef) -> Result<Option<Order>, ApiError> {
    if let Some(o) = deps.ledger.order(order).await? {
        return Ok(Some(o));
    }
    // Given up on by the executor (its command is in the dead-letter queue): `suspended`,
    // whatever its pending copy still says.
    if let Some(o) = deps.ledger.dead_order(order).await? {
        return Ok(Some(o));
    }
    if let Some(p) = deps.cache.pending_order(order).await? {
        return Ok(Some(p.pending()));
    }
    Ok(deps.ledger.order(order).await?)
}

fn parse_order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("order {id} not found")))
}

/// One order of the account by its id as the client wrote it: another account's order is
/// as absent as a missing one (404).
pub async fn get(deps: &Deps, account_id: Uuid, id: &str) -> Result<Order, ApiError> {
    let order_id = parse_order_id(id)?;
    find(
        deps,
        OrderRef {
            account_id,
            order_id,
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("order {id} not found")))
}

/// One order of the account by its `client_order_id`.
pub async fn by_client_order_id(
    deps: &Deps,
    account_id: Uuid,
    client_order_id: Option<String>,
) -> Result<Order, ApiError> {
    let coid = client_order_id.ok_or_else(|| {
        ApiError::new(
            422,
            RejectCode::MissingParameter,
            "client_order_id is required",
        )
    })?;
    find(
        deps,
        OrderRef {
            account_id,
            order_id: order_id_for(account_id, &coid),
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no order with client_order_id '{coid}'")))
}

/// The account's orders as the query selects them, those not yet applied included (unless
/// only closed ones are asked for).
pub async fn list(deps: &Deps, account_id: Uuid, q: &OrderQuery) -> Result<Vec<Order>, ApiError> {
    let (orders, dead) = tokio::join!(
        deps.ledger.orders(account_id, q),
        deps.ledger.dead_orders(account_id)
    );
    let mut orders = orders?;
    let dead = dead?;
    let selected = |o: &Order| {
        q.after.is_none_or(|a| o.submitted_at > a)
            && q.until.is_none_or(|u| o.submitted_at < u)
            && q.symbols.as_ref().is_none_or(|s| s.contains(&o.symbol))
    };
    let dead_ids: std::collections::HashSet<Uuid> = dead.iter().map(|o| o.id).collect();
    let before = orders.len();
    // Dead-lettered orders are closed (`suspended`): listed unless only open ones are asked
    // for. The ledger does not hold them (the query leaves out those it does).
    if q.status != StatusFilter::Open {
        orders.extend(dead.into_iter().filter(|o| selected(o)));
    }
    if q.status != StatusFilter::Closed {
        let known: std::collections::HashSet<Uuid> = orders.iter().map(|o| o.id).collect();
        let pending = deps.cache.pending_orders(account_id).await?;
        for o in pending
            .into_iter()
            .filter(|o| !known.contains(&o.id) && !dead_ids.contains(&o.id))
        {
            // The ledger may have taken it since our read; then it is already listed or closed.
            let o = o.pending();
            if selected(&o) {
                orders.push(o);
            }
        }
    }
    if orders.len() != before {
        orders.sort_by_key(|o| (o.submitted_at, o.id));
        if !q.ascending {
            orders.reverse();
        }
        orders.truncate(q.limit as usize);
    }
    Ok(orders)
}

/// Queues the cancel of an open order; 422 when the order is closed.
pub async fn cancel(deps: &Deps, account_id: Uuid, id: &str) -> Result<(), ApiError> {
    let order = get(deps, account_id, id).await?;
    if !order.status.is_open() {
        return Err(ApiError::rule(RuleViolation::new(
            RejectCode::OrderNotCancelable,
            format!("order {id} is {} and cannot be canceled", order.status),
        )));
    }
    deps.queue.send(&Command::cancel(order.order_ref())).await?;
    Ok(())
}

/// What may change when an order is replaced (the body of `PATCH /v2/orders/{id}`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ReplaceRequest {
    pub qty: Option<DecimalText>,
    pub time_in_force: Option<String>,
    pub limit_price: Option<DecimalText>,
    pub stop_price: Option<DecimalText>,
    pub trail: Option<DecimalText>,
    pub client_order_id: Option<String>,
}

/// Alpaca's replace: a new order with the changed `qty`, `limit_price`, `stop_price`, `trail`
/// or `time_in_force` takes the place of the open order, which becomes `replaced`. Answers
/// with the new order (`pending_new`, `replaces` set). If the old order fills before the
/// executor takes the replacement, the replacement is rejected with `order_not_open`: one of
/// the two wins, never both. `patch` reads the body once the id is known to be one.
pub async fn replace(
    deps: &Deps,
    p: &Principal,
    id: &str,
    patch: impl FnOnce() -> Result<ReplaceRequest, ApiError>,
) -> Result<Order, ApiError> {
    take(deps, "orders", p, deps.config.rates.orders).await?;
    let order_id = parse_order_id(id)?;
    let patch = patch()?;
    let old = deps
        .ledger
        .order(OrderRef {
            account_id: p.account_id,
            order_id,
        })
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "order {id} not found (an order not yet accepted cannot be replaced)"
            ))
        })?;
    if !old.status.is_open() {
        return Err(ApiError::rule(RuleViolation::new(
            RejectCode::OrderNotOpen,
            format!("order {id} is {} and cannot be replaced", old.status),
        )));
    }
    if old.order_type == OrderType::Market {
        return Err(ApiError::rule(RuleViolation::new(
            RejectCode::OrderNotReplaceable,
            "market orders cannot be replaced",
        )));
    }
    let text = |d: Option<rust_decimal::Decimal>| d.map(|d| DecimalText(d.to_string()));
    let (trail_price, trail_percent) = match (patch.trail.clone(), old.trail) {
        (Some(t), Some(Trail::Price(_))) => (Some(t), None),
        (Some(t), Some(Trail::Percent(_))) => (None, Some(t)),
        (Some(_), None) => {
            return Err(ApiError::rule(RuleViolation::new(
                RejectCode::InvalidField,
                "trail is only valid for trailing_stop orders",
            )))
        }
        (None, _) => (text(old.trail_price()), text(old.trail_percent())),
    };
    let request = OrderRequest {
        symbol: Some(old.symbol.clone()),
        qty: patch.qty.or_else(|| text(old.qty)),
        side: Some(old.side.as_str().into()),
        order_type: Some(old.order_type.as_str().into()),
        time_in_force: Some(
            patch
                .time_in_force
                .unwrap_or_else(|| old.time_in_force.as_str().into()),
        ),
        limit_price: patch.limit_price.or_else(|| text(old.limit_price)),
        stop_price: patch.stop_price.or_else(|| text(old.stop_price)),
        trail_price,
        trail_percent,
        client_order_id: patch.client_order_id,
        ..OrderRequest::default()
    };
    let (valid, inst) = request.validate(deps.catalog)?;
    let mut order = NewOrder::new(p.account_id, valid, inst.asset_id, Utc::now());
    order.spec.order_class = old.order_class;
    order.replaces = Some(old.id);
    submit(deps, order).await
}

/// Queues a cancel for every open order of the account (legs follow their parents), in the
/// account's FIFO group, so whatever the account sends next is applied after them. Answers
/// the orders the cancels were queued for, in `pending_cancel`.
pub async fn cancel_open_orders(deps: &Deps, account_id: Uuid) -> Result<Vec<Order>, ApiError> {
    let mut open = deps.ledger.open_orders(account_id).await?;
    let known: std::collections::HashSet<Uuid> = open.iter().map(|o| o.id).collect();
    for pending in deps.cache.pending_orders(account_id).await? {
        if !known.contains(&pending.id) {
            open.push(pending.pending());
        }
    }
    open.sort_by_key(|o| (o.submitted_at, o.id));
    // A leg whose parent is open goes with its parent; a live leg (its parent filled) is
    // canceled on its own, and its OCO partner with it.
    let open_ids: std::collections::HashSet<Uuid> = open.iter().map(|o| o.id).collect();
    let targets: Vec<&Order> = open
        .iter()
        .filter(|o| o.parent_id.is_none_or(|p| !open_ids.contains(&p)))
        .collect();
    // Batches of ten keep the account's FIFO order and take one round trip per ten cancels.
    let cancels: Vec<Command> = targets
        .iter()
        .map(|o| Command::cancel(o.order_ref()))
        .collect();
    deps.queue.send_batch(&cancels).await?;
    Ok(targets
        .into_iter()
        .map(|o| Order {
            status: OrderStatus::PendingCancel,
            ..o.clone()
        })
        .collect())
}
