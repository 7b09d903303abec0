//! Alpaca's wire formats, at the edge: the order object of the Trading API v2 and the
//! `trade_updates` events of its stream, rendered from the domain's orders. The REST `api`
//! answers with them and the `executor` pushes them to WebSocket clients, so both show an
//! order the same way. Amounts are decimal strings.
//!
//! Depends on `domain` only; no I/O.

use domain::decimal::to_text;
use domain::order::{Order, OrderStatus};
use rust_decimal::Decimal;
use serde_json::{json, Value};

fn text(d: Option<Decimal>) -> Value {
    d.map(|d| Value::String(to_text(&d))).unwrap_or(Value::Null)
}

/// Alpaca's order object. Amounts are decimal strings.
pub fn order_json(order: &Order) -> Value {
    let legs: Vec<Value> = order.legs.iter().map(order_json).collect();
    json!({
        "id": order.id,
        "client_order_id": order.client_order_id,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "submitted_at": order.submitted_at,
        "filled_at": order.filled_at,
        "expired_at": order.expired_at,
        "expires_at": order.expires_at,
        "canceled_at": order.canceled_at,
        "failed_at": order.failed_at,
        "replaced_at": order.replaced_at,
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
        "asset_id": order.asset_id,
        "symbol": order.symbol,
        "asset_class": "crypto",
        "notional": text(order.notional),
        "qty": text(order.qty),
        "filled_qty": to_text(&order.filled_qty),
        "filled_avg_price": text(order.filled_avg_price),
        "order_class": order.order_class,
        "order_type": order.order_type,
        "type": order.order_type,
        "side": order.side,
        "position_intent": null,
        "time_in_force": order.time_in_force,
        "limit_price": text(order.limit_price),
        "stop_price": text(order.stop_price),
        "status": order.status,
        "extended_hours": false,
        "legs": if legs.is_empty() { Value::Null } else { Value::Array(legs) },
        "trail_percent": text(order.trail_percent()),
        "trail_price": text(order.trail_price()),
        "hwm": text(order.hwm),
        "reject_reason": order.reject_reason,
    })
}

/// One execution of an order, as a `fill`/`partial_fill` event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillEvent {
    pub qty: Decimal,
    pub price: Decimal,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The account's position in the symbol after this fill (signed).
    pub position_qty: Decimal,
    /// The order's remaining quantity after this fill.
    pub leaves_qty: Decimal,
}

/// The `trade_updates` events (Alpaca's names) of one order a commit created or changed, in
/// the order they happened: `new` for an order created here (unless it was rejected on
/// arrival), a `fill` or `partial_fill` per execution, then its terminal state if it reached
/// one (`canceled`, `expired`, `rejected`, `replaced`).
pub fn trade_updates(
    order: &Order,
    created: bool,
    fills: &[FillEvent],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Value> {
    let order_json = order_json(order);
    let event = |name: &str, at: chrono::DateTime<chrono::Utc>| json!({ "event": name, "timestamp": at, "order": order_json });
    let mut out = Vec::new();
    if created && order.status != OrderStatus::Rejected {
        out.push(event("new", order.submitted_at));
    }
    for f in fills {
        let name = if f.leaves_qty.is_zero() {
            "fill"
        } else {
            "partial_fill"
        };
        let mut e = event(name, f.time);
        if let Some(obj) = e.as_object_mut() {
            obj.insert("price".into(), Value::String(to_text(&f.price)));
            obj.insert("qty".into(), Value::String(to_text(&f.qty)));
            obj.insert(
                "position_qty".into(),
                Value::String(to_text(&f.position_qty)),
            );
        }
        out.push(e);
    }
    let terminal = match order.status {
        OrderStatus::Canceled => Some(("canceled", order.canceled_at)),
        OrderStatus::Expired => Some(("expired", order.expired_at)),
        OrderStatus::Rejected => Some(("rejected", order.failed_at)),
        OrderStatus::Replaced => Some(("replaced", order.replaced_at)),
        _ => None,
    };
    if let Some((name, at)) = terminal {
        out.push(event(name, at.unwrap_or(now)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::catalog::Catalog;
    use domain::order::{NewOrder, OrderRequest};
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    fn req(json: &str) -> OrderRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn legs_and_trails_render_as_alpaca_shows_them() {
        let (v, _) = req(r#"{"symbol":"BTCUSDT","qty":"0.01","side":"sell","type":"limit","time_in_force":"gtc","order_class":"oco","take_profit":{"limit_price":"52000"},"stop_loss":{"stop_price":"49000"}}"#)
            .validate(Catalog::builtin())
            .unwrap();
        let o = NewOrder::new(Uuid::new_v4(), v, Uuid::nil(), Utc::now()).pending();
        let json = order_json(&o);
        assert_eq!(json["legs"][0]["stop_price"], "49000", "{json}");
        let (v, _) = req(r#"{"symbol":"BTCUSDT","qty":"0.01","side":"sell","type":"trailing_stop","trail_percent":"2.5","time_in_force":"day"}"#)
            .validate(Catalog::builtin())
            .unwrap();
        let o = NewOrder::new(Uuid::new_v4(), v, Uuid::nil(), Utc::now()).pending();
        let json = order_json(&o);
        assert_eq!(json["trail_percent"], "2.5");
        assert!(json["expires_at"].is_string(), "{json}");
    }

    #[test]
    fn trade_updates_follow_alpacas_event_names() {
        let now = chrono::Utc::now();
        let order: Order = serde_json::from_value::<NewOrder>(json!({
            "id": Uuid::new_v4(), "account_id": Uuid::new_v4(), "client_order_id": "c1",
            "symbol": "BTCUSDT", "asset_id": Uuid::new_v4(), "side": "buy", "order_type": "market",
            "time_in_force": "gtc", "qty": "1", "submitted_at": now
        }))
        .map(|n| n.pending())
        .unwrap_or_else(|e| panic!("{e}"));
        let names = |o: &Order, created: bool, fills: &[FillEvent]| {
            trade_updates(o, created, fills, now)
                .iter()
                .map(|e| e["event"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        let fill = |leaves: Decimal| FillEvent {
            qty: dec!(1),
            price: dec!(60000.10),
            time: now,
            position_qty: dec!(1),
            leaves_qty: leaves,
        };
        let mut filled = order.clone();
        filled.status = OrderStatus::Filled;
        assert_eq!(names(&filled, true, &[fill(dec!(0))]), ["new", "fill"]);
        assert_eq!(names(&filled, false, &[fill(dec!(0.5))]), ["partial_fill"]);
        let e = &trade_updates(&filled, false, &[fill(dec!(0))], now)[0];
        assert_eq!(e["price"], "60000.1");
        assert_eq!(e["position_qty"], "1");
        assert_eq!(e["order"]["symbol"], "BTCUSDT");
        let mut rejected = order.clone();
        rejected.status = OrderStatus::Rejected;
        assert_eq!(names(&rejected, true, &[]), ["rejected"]);
        for (status, name) in [
            (OrderStatus::Canceled, "canceled"),
            (OrderStatus::Expired, "expired"),
            (OrderStatus::Replaced, "replaced"),
        ] {
            let mut o = order.clone();
            o.status = status;
            assert_eq!(names(&o, false, &[]), [name]);
        }
        assert!(names(&order, false, &[]).is_empty());
    }
}
