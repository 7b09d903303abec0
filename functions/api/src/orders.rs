//! Orders: `POST /v2/orders`, `GET /v2/orders[/{id}]`, `GET /v2/orders:by_client_order_id`,
//! `PATCH` and `DELETE /v2/orders/{id}`, `DELETE /v2/orders`. The use cases are
//! `app::orders`; this module reads the requests and writes Alpaca's JSON.

use adapters::ledger::{OrderQuery, StatusFilter};
use alpaca::order_json;
use app::orders::ReplaceRequest;
use app::ApiError;
use domain::order::OrderRequest;
use lambda_http::{Body, Request, Response};
use serde_json::Value;

use crate::auth::authenticate;
use crate::Deps;
use rest::{
    invalid_query, json, json_body, no_content, query, query_ascending, query_bool, query_int,
    query_time,
};

/// `POST /v2/orders` → 200 with the order in `pending_new` (or the existing order for a
/// repeated `client_order_id` with the same parameters; 422 for different parameters).
pub async fn place(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let order = app::orders::place(deps, &p, || json_body::<OrderRequest>(req)).await?;
    Ok(json(200, &order_json(&order)))
}

/// `GET /v2/orders/{id}`: another account's order is as absent as a missing one (404).
pub async fn get(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let order = app::orders::get(deps, p.account_id, id).await?;
    Ok(json(200, &order_json(&order)))
}

/// `GET /v2/orders:by_client_order_id?client_order_id=…`
pub async fn by_client_order_id(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let coid = query(req, "client_order_id");
    let order = app::orders::by_client_order_id(deps, p.account_id, coid).await?;
    Ok(json(200, &order_json(&order)))
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
        nested: query_bool(req, "nested")?,
    };
    let orders = app::orders::list(deps, p.account_id, &q).await?;
    Ok(json(
        200,
        &Value::Array(orders.iter().map(order_json).collect()),
    ))
}

/// `DELETE /v2/orders/{id}` → 204 once the cancel is queued; 422 when the order is closed.
pub async fn cancel(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    app::orders::cancel(deps, p.account_id, id).await?;
    Ok(no_content())
}

/// `PATCH /v2/orders/{id}` (Alpaca's replace) → 200 with the new order (`pending_new`,
/// `replaces` set); see `app::orders::replace`.
pub async fn replace(deps: &Deps, req: &Request, id: &str) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let order = app::orders::replace(deps, &p, id, || json_body::<ReplaceRequest>(req)).await?;
    Ok(json(200, &order_json(&order)))
}

/// `DELETE /v2/orders`: cancels every open order; 207 with one `{id, status, body}` per order,
/// as Alpaca answers.
pub async fn cancel_all(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let p = authenticate(deps, req).await?;
    let canceled = app::orders::cancel_open_orders(deps, p.account_id).await?;
    let results = canceled
        .iter()
        .map(|o| serde_json::json!({"id": o.id, "status": 200, "body": order_json(o)}))
        .collect();
    Ok(json(207, &Value::Array(results)))
}
