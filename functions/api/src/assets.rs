//! Assets from the instrument catalog, in Alpaca's asset shape, and the (always open) clock.

use app::ApiError;
use chrono::Utc;
use domain::catalog::Instrument;
use domain::decimal::to_text;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

use crate::auth::authenticate;
use crate::Deps;
use rest::{invalid_query, json, query};

fn asset_json(i: &Instrument) -> Value {
    json!({
        "id": i.asset_id,
        "class": "crypto",
        "exchange": "CRYPTO",
        "symbol": i.symbol,
        "name": format!("{}/{}", i.base_asset, i.quote_asset),
        "status": if i.is_tradable() { "active" } else { "inactive" },
        "tradable": i.is_tradable(),
        "marginable": false,
        "shortable": false,
        "easy_to_borrow": false,
        "fractionable": true,
        "min_order_size": to_text(&i.lot.min_qty),
        "min_trade_increment": to_text(&i.lot.step_size),
        "price_increment": to_text(&i.price.tick_size),
        "min_notional": to_text(&i.notional.min_notional),
        "attributes": [],
    })
}

/// `GET /v2/assets?status=active|inactive&asset_class=crypto`: USDT-quoted instruments.
pub async fn list(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    authenticate(deps, req).await?;
    let status = query(req, "status");
    if let Some(s) = status.as_deref() {
        if s != "active" && s != "inactive" {
            return Err(invalid_query("status", s, "active or inactive"));
        }
    }
    if let Some(c) = query(req, "asset_class") {
        if c != "crypto" {
            return Ok(json(200, &Value::Array(vec![])));
        }
    }
    let mut list: Vec<&Instrument> = deps.catalog.tradable();
    if status.as_deref() != Some("active") {
        // Listed but not tradable right now (halted or delisted USDT pairs).
        let mut inactive: Vec<&Instrument> = deps
            .catalog
            .all()
            .filter(|i| i.quote_asset == domain::catalog::ACCOUNT_CURRENCY && !i.is_tradable())
            .collect();
        inactive.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        if status.as_deref() == Some("inactive") {
            list = inactive;
        } else {
            list.extend(inactive);
        }
    }
    Ok(json(
        200,
        &Value::Array(list.into_iter().map(asset_json).collect()),
    ))
}

/// `GET /v2/assets/{symbol}` (also `BTC/USDT`).
pub async fn get(deps: &Deps, req: &Request, symbol: &str) -> Result<Response<Body>, ApiError> {
    authenticate(deps, req).await?;
    let decoded = symbol.replace("%2F", "/").replace("%2f", "/");
    match deps.catalog.get(&decoded) {
        Some(i) => Ok(json(200, &asset_json(i))),
        None => Err(ApiError::not_found(format!("asset {decoded} not found"))),
    }
}

/// `GET /v2/clock`: crypto trades around the clock.
pub async fn clock(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    authenticate(deps, req).await?;
    let now = Utc::now();
    Ok(json(
        200,
        &json!({ "timestamp": now, "is_open": true, "next_open": now, "next_close": now + chrono::Duration::days(365) }),
    ))
}
