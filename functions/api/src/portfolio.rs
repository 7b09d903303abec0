//! Account, positions and fill activities, valued on cached prices. A position is marked at
//! the price it could be closed at now (bid for longs, ask for shorts); without a fresh
//! price its market fields are null and `price_stale` is true, never an old price shown as new.

use std::collections::HashMap;

use adapters::ledger::{FillQuery, PositionRecord};
use adapters::now_ms;
use app::ApiError;
use domain::accounting::PositionSide;
use domain::decimal::to_text;
use domain::engine::Book;
use domain::quote::Quote;
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::authenticate;
use crate::Deps;
use rest::{invalid_query, json, query, query_ascending, query_int, query_time};

fn s(d: Decimal) -> Value {
    Value::String(to_text(&d))
}

fn mark(p: &PositionRecord, quote: Option<&Quote>) -> Option<Decimal> {
    let q = quote?;
    Some(if p.position.qty > Decimal::ZERO {
        q.bid
    } else {
        q.ask
    })
}

async fn fresh_quotes(
    deps: &Deps,
    positions: &[PositionRecord],
) -> Result<HashMap<String, Quote>, ApiError> {
    let symbols: Vec<String> = positions.iter().map(|p| p.symbol.clone()).collect();
    let now = now_ms();
    let max_age = deps.config.trading.max_price_age_ms;
    Ok(deps
        .cache
        .quotes(&symbols)
        .await?
        .into_iter()
        .filter(|(_, q)| q.is_fresh(now, max_age))
        .collect())
}

/// What open orders hold back of `positions`, by the executor's rules. Quantities only: the
/// cash is left at zero since no caller of this reads buying power.
async fn holds_on(
    deps: &Deps,
    account_id: uuid::Uuid,
    positions: &[PositionRecord],
) -> Result<Book, ApiError> {
    Ok(deps
        .ledger
        .book_of(account_id, Decimal::ZERO, positions)
        .await?)
}

/// `qty_available` is the quantity not held for open sell orders (an OCO pair holds once).
fn position_json(p: &PositionRecord, quote: Option<&Quote>, qty_available: Decimal) -> Value {
    let pos = &p.position;
    let cost_basis = pos.cost_basis().unwrap_or_default();
    let side = match pos.side() {
        PositionSide::Short => "short",
        _ => "long",
    };
    let price = mark(p, quote);
    let (market_value, unrealized, plpc) = match price {
        Some(m) => {
            let mv = pos.market_value(m).unwrap_or_default();
            let upl = pos.unrealized_pnl(m).unwrap_or_default();
            let plpc = if cost_basis.is_zero() {
                Decimal::ZERO
            } else {
                (upl / cost_basis).round_dp(10)
            };
            (s(mv), s(upl), s(plpc))
        }
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!({
        "asset_id": p.asset_id,
        "symbol": p.symbol,
        "exchange": "CRYPTO",
        "asset_class": "crypto",
        "asset_marginable": false,
        "avg_entry_price": s(pos.avg_entry_price),
        "qty": s(pos.qty),
        "qty_available": s(qty_available.max(Decimal::ZERO).min(pos.qty.max(Decimal::ZERO))),
        "side": side,
        "market_value": market_value,
        "cost_basis": s(cost_basis),
        "unrealized_pl": unrealized,
        "unrealized_plpc": plpc,
        "unrealized_intraday_pl": null,
        "unrealized_intraday_plpc": null,
        "current_price": price.map(s).unwrap_or(Value::Null),
        "lastday_price": null,
        "change_today": null,
        "realized_pl": s(pos.realized_pnl),
        "price_stale": price.is_none(),
        "price_updated_at": quote.and_then(|q| chrono::DateTime::from_timestamp_millis(q.ts)),
    })
}

/// `GET /v2/positions`
pub async fn positions(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let positions = deps.ledger.positions(p.account_id).await?;
    let quotes = fresh_quotes(deps, &positions).await?;
    let book = holds_on(deps, p.account_id, &positions).await?;
    let list: Vec<Value> = positions
        .iter()
        .map(|pos| {
            position_json(
                pos,
                quotes.get(&pos.symbol),
                book.qty_available(&pos.symbol, None),
            )
        })
        .collect();
    Ok(json(200, &Value::Array(list)))
}

/// `GET /v2/positions/{symbol}` (404 when there is no open position).
pub async fn position(
    deps: &Deps,
    req: &Request,
    symbol: &str,
) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let symbol = deps
        .catalog
        .get(symbol)
        .map(|i| i.symbol.clone())
        .unwrap_or_else(|| symbol.to_uppercase());
    let Some(pos) = deps.ledger.position(p.account_id, &symbol).await? else {
        return Err(ApiError::not_found(format!("no open position in {symbol}")));
    };
    let quotes = fresh_quotes(deps, std::slice::from_ref(&pos)).await?;
    let available = holds_on(deps, p.account_id, std::slice::from_ref(&pos))
        .await?
        .qty_available(&symbol, None);
    Ok(json(
        200,
        &position_json(&pos, quotes.get(&symbol), available),
    ))
}

/// `GET /v2/account`: Alpaca's account object in USDT, valued on fresh cached prices.
pub async fn account(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let account = deps
        .ledger
        .account(p.account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    let positions = deps.ledger.positions(p.account_id).await?;
    let quotes = fresh_quotes(deps, &positions).await?;
    let book = deps
        .ledger
        .book_of(p.account_id, account.cash, &positions)
        .await?;
    let reserved = account.cash - book.buying_power(None, &deps.config.execution_params());

    let (mut long_mv, mut short_mv, mut unrealized) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    let mut stale = Vec::new();
    for pos in &positions {
        match mark(pos, quotes.get(&pos.symbol)) {
            Some(m) => {
                let mv = pos.position.market_value(m).unwrap_or_default();
                if mv >= Decimal::ZERO {
                    long_mv += mv
                } else {
                    short_mv += mv
                }
                unrealized += pos.position.unrealized_pnl(m).unwrap_or_default();
            }
            None => stale.push(pos.symbol.clone()),
        }
    }
    // Without a fresh price, a position is valued at its cost so equity is never made up.
    let at_cost: Decimal = positions
        .iter()
        .filter(|p| stale.contains(&p.symbol))
        .map(|p| p.position.qty * p.position.avg_entry_price)
        .sum();
    let equity = account.cash + long_mv + short_mv + at_cost;
    let buying_power = (account.cash - reserved).max(Decimal::ZERO);
    Ok(json(
        200,
        &json!({
            "id": account.id,
            "account_number": account.account_number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": account.currency,
            "cash": s(account.cash),
            "portfolio_value": s(equity),
            "equity": s(equity),
            "last_equity": s(account.initial_cash),
            "long_market_value": s(long_mv),
            "short_market_value": s(short_mv),
            "position_market_value": s(long_mv + short_mv),
            "buying_power": s(buying_power),
            "effective_buying_power": s(buying_power),
            "non_marginable_buying_power": s(buying_power),
            "regt_buying_power": s(buying_power),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "multiplier": "1",
            "shorting_enabled": false,
            "pattern_day_trader": false,
            "trading_blocked": false,
            "transfers_blocked": false,
            "account_blocked": false,
            "trade_suspended_by_user": false,
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "created_at": account.created_at,
            "initial_cash": s(account.initial_cash),
            "realized_pl": s(account.realized_pnl),
            "unrealized_pl": s(unrealized),
            "fees_paid": s(account.fees_paid),
            "stale_price_symbols": stale,
        }),
    ))
}

fn activity_id(time: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    format!("{}::{id}", time.format("%Y%m%d%H%M%S%3f"))
}

/// `GET /v2/account/activities/FILL` (and `/v2/account/activities?activity_types=FILL`).
/// Only fills exist on a paper account, so other activity types list nothing.
pub async fn activities(
    deps: &Deps,
    req: &Request,
    kind: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let types: Vec<String> = match kind {
        Some(k) => vec![k.to_uppercase()],
        None => query(req, "activity_types")
            .map(|t| t.split(',').map(|x| x.trim().to_uppercase()).collect())
            .unwrap_or_else(|| vec!["FILL".into()]),
    };
    let page_token = match query(req, "page_token") {
        None => None,
        Some(t) => {
            let uuid_part = t.rsplit("::").next().unwrap_or_default();
            Some(Uuid::parse_str(uuid_part).map_err(|_| {
                invalid_query("page_token", &t, "an activity id from a previous page")
            })?)
        }
    };
    let date = query_time(req, "date")?;
    // The end of the day `date` names (checked: chrono panics on overflowing arithmetic).
    let day_end =
        match date {
            None => None,
            Some(d) => Some(d.checked_add_days(chrono::Days::new(1)).ok_or_else(|| {
                invalid_query("date", &d.to_rfc3339(), "a date with a day after it")
            })?),
        };
    let q = FillQuery {
        after: query_time(req, "after")?.or(date),
        until: query_time(req, "until")?.or(day_end),
        ascending: query_ascending(req)?,
        page_size: query_int(req, "page_size", 100, 1, 100)?,
        page_token,
    };
    // Read (and refused when invalid) whatever the types, so a query is answered the same
    // way for every type.
    if !types.iter().any(|t| t == "FILL") {
        return Ok(json(200, &Value::Array(vec![])));
    }
    let fills = deps.ledger.fills(p.account_id, &q).await?;
    let list: Vec<Value> = fills
        .iter()
        .map(|f| {
            json!({
                "id": activity_id(f.transaction_time, f.id),
                "account_id": p.account_id,
                "activity_type": "FILL",
                "transaction_time": f.transaction_time,
                "type": if f.leaves_qty.is_zero() { "fill" } else { "partial_fill" },
                "price": s(f.price),
                "qty": s(f.qty),
                "side": f.side,
                "symbol": f.symbol,
                "leaves_qty": s(f.leaves_qty),
                "cum_qty": s(f.cum_qty),
                "order_id": f.order_id,
                "order_status": if f.leaves_qty.is_zero() { "filled" } else { "partially_filled" },
                "fee": s(f.fee),
                "realized_pl": s(f.realized_pnl),
            })
        })
        .collect();
    Ok(json(200, &Value::Array(list)))
}
