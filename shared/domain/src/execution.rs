//! Paper execution: what the executor does with an order, given the latest quote and the
//! account's state. Buys fill at the ask, sells at the bid, with a fee in USDT; a marketable
//! limit order fills at the better of its limit and the touch; a quote older than the bound
//! is no quote at all.

use rust_decimal::Decimal;

use crate::accounting::fee;
use crate::amount::{Money, Price, Quantity};
use crate::catalog::Instrument;
use crate::order::{NewOrder, OrderType, Side, TimeInForce};
use crate::quote::Quote;
use crate::RuleViolation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionParams {
    /// Paper fee in basis points of the fill notional (default 10 = 0.1 %).
    pub fee_bps: Decimal,
    /// A quote older than this many milliseconds is treated as no quote.
    pub max_price_age_ms: i64,
}

impl Default for ExecutionParams {
    fn default() -> Self {
        ExecutionParams {
            fee_bps: Decimal::TEN,
            max_price_age_ms: 5_000,
        }
    }
}

/// What the ledger knows of the account when the order arrives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountState {
    pub cash: Decimal,
    /// Cash held for resting buy orders (their notional at the limit plus the fee).
    pub reserved_cash: Decimal,
    /// The current position quantity in the order's symbol (signed).
    pub position_qty: Decimal,
    /// Quantity held for resting sell orders in the order's symbol.
    pub reserved_qty: Decimal,
}

impl AccountState {
    pub fn buying_power(&self) -> Decimal {
        self.cash - self.reserved_cash
    }

    pub fn qty_available(&self) -> Decimal {
        self.position_qty - self.reserved_qty
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Fill {
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
    },
    /// A limit order that is not marketable rests as `new`.
    Rest {
        qty: Decimal,
    },
    /// An immediate-or-cancel order that could not fill.
    Cancel {
        reason: String,
    },
    Reject(RuleViolation),
}

/// Cash a resting buy of `qty` at `limit` holds back: its notional plus the fee on it.
pub fn reserve_for_buy(qty: Decimal, limit: Decimal, params: &ExecutionParams) -> Decimal {
    let notional = qty * limit;
    notional + fee(notional, params.fee_bps)
}

/// Decides the fate of a newly placed order. Spot semantics: accounts hold USDT, buys
/// need the cash (fee included), sells need the quantity (no shorting).
pub fn decide(
    order: &NewOrder,
    inst: &Instrument,
    quote: Option<&Quote>,
    now_ms: i64,
    account: &AccountState,
    params: &ExecutionParams,
) -> Decision {
    let quote = match quote {
        Some(q) if q.is_fresh(now_ms, params.max_price_age_ms) => q,
        Some(q) => {
            return Decision::Reject(RuleViolation::new(
                "stale_price",
                format!(
                    "the latest {} price is {} ms old, older than the {} ms bound; not filling at a stale price",
                    order.symbol,
                    q.age_ms(now_ms),
                    params.max_price_age_ms
                ),
            ))
        }
        None => {
            return Decision::Reject(RuleViolation::new(
                "no_price",
                format!("there is no current price for {}", order.symbol),
            ))
        }
    };
    let touch = match order.side {
        Side::Buy => quote.ask,
        Side::Sell => quote.bid,
    };
    if touch <= Decimal::ZERO {
        return Decision::Reject(RuleViolation::new(
            "no_price",
            format!(
                "no {} side quoted for {}",
                order.side.as_str(),
                order.symbol
            ),
        ));
    }

    let qty = match (order.qty.map(Quantity::get), order.notional.map(Money::get)) {
        (Some(q), _) => q,
        (None, Some(n)) => {
            let q = inst.floor_to_step(n / touch);
            if let Err(v) = inst.check_qty(q, true) {
                return Decision::Reject(RuleViolation::new(
                    v.filter,
                    format!(
                        "notional {n} buys {q} {} at {touch}: {}",
                        inst.base_asset, v.message
                    ),
                ));
            }
            q
        }
        (None, None) => {
            return Decision::Reject(RuleViolation::new(
                "missing_qty",
                "qty or notional is required",
            ))
        }
    };

    let marketable = match (order.order_type, order.limit_price.map(Price::get)) {
        (OrderType::Market, _) => true,
        (OrderType::Limit, Some(limit)) => match order.side {
            Side::Buy => touch <= limit,
            Side::Sell => touch >= limit,
        },
        _ => {
            return Decision::Reject(RuleViolation::new(
                "unsupported_order_type",
                format!("{} orders are not supported yet", order.order_type),
            ))
        }
    };

    if !marketable {
        if order.time_in_force == TimeInForce::Ioc || order.time_in_force == TimeInForce::Fok {
            return Decision::Cancel {
                reason: format!(
                    "{} limit {} not marketable at {touch}",
                    order.side.as_str(),
                    order.limit_price.map(Price::get).unwrap_or_default()
                ),
            };
        }
        // A resting order must be covered now, so that all resting orders together stay funded.
        let limit = order.limit_price.map(Price::get).unwrap_or(touch);
        return match check_funds(order.side, qty, limit, account, params) {
            Ok(()) => Decision::Rest { qty },
            Err(v) => Decision::Reject(v),
        };
    }

    // Marketable: the touch is at least as good as the limit, so the fill is at the touch.
    if let Err(v) = inst.check_notional(qty, touch, order.order_type == OrderType::Market) {
        return Decision::Reject(v.into());
    }
    if let Err(v) = check_funds(order.side, qty, touch, account, params) {
        return Decision::Reject(v);
    }
    let notional = qty * touch;
    Decision::Fill {
        qty,
        price: touch,
        fee: fee(notional, params.fee_bps),
    }
}

fn check_funds(
    side: Side,
    qty: Decimal,
    price: Decimal,
    account: &AccountState,
    params: &ExecutionParams,
) -> Result<(), RuleViolation> {
    match side {
        Side::Buy => {
            let need = reserve_for_buy(qty, price, params);
            let have = account.buying_power();
            if need > have {
                return Err(RuleViolation::new(
                    "insufficient_buying_power",
                    format!("buying {qty} at {price} needs {} USDT including the fee; buying power is {} USDT", need.normalize(), have.normalize()),
                ));
            }
        }
        Side::Sell => {
            let have = account.qty_available();
            if qty > have {
                return Err(RuleViolation::new(
                    "insufficient_qty",
                    format!("selling {qty} needs that quantity available; available is {} (spot accounts cannot short)", have.normalize()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::order::{NewOrder, OrderRequest};
    use rust_decimal_macros::dec;

    fn order(json: &str) -> (NewOrder, Instrument) {
        let req: OrderRequest = serde_json::from_str(json).unwrap();
        let (v, inst) = req.validate(Catalog::builtin()).unwrap();
        (
            NewOrder::new(uuid::Uuid::new_v4(), v, inst.asset_id, chrono::Utc::now()),
            inst,
        )
    }

    fn quote(bid: Decimal, ask: Decimal, ts: i64) -> Quote {
        Quote {
            symbol: "BTCUSDT".into(),
            bid,
            ask,
            last: None,
            ts,
        }
    }

    fn rich() -> AccountState {
        AccountState {
            cash: dec!(100000),
            ..Default::default()
        }
    }

    #[test]
    fn market_buy_fills_at_ask_with_fee() {
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"market","time_in_force":"gtc"}"#,
        );
        let d = decide(
            &o,
            &i,
            Some(&quote(dec!(60000), dec!(60000.5), 1000)),
            1000,
            &rich(),
            &ExecutionParams::default(),
        );
        assert_eq!(
            d,
            Decision::Fill {
                qty: dec!(0.01),
                price: dec!(60000.5),
                fee: dec!(0.600005)
            }
        );
    }

    #[test]
    fn stale_or_missing_price_rejects() {
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"market","time_in_force":"gtc"}"#,
        );
        let p = ExecutionParams::default();
        let d = decide(
            &o,
            &i,
            Some(&quote(dec!(1), dec!(2), 0)),
            5_001,
            &rich(),
            &p,
        );
        assert!(
            matches!(d, Decision::Reject(ref v) if v.code == "stale_price"),
            "{d:?}"
        );
        assert!(
            matches!(decide(&o, &i, None, 0, &rich(), &p), Decision::Reject(ref v) if v.code == "no_price")
        );
    }

    #[test]
    fn limits_fill_at_the_better_price_or_rest() {
        let p = ExecutionParams::default();
        let q = quote(dec!(60000), dec!(60001), 0);
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"60100","time_in_force":"gtc"}"#,
        );
        assert!(
            matches!(decide(&o, &i, Some(&q), 0, &rich(), &p), Decision::Fill { price, .. } if price == dec!(60001))
        );
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"59000","time_in_force":"gtc"}"#,
        );
        assert_eq!(
            decide(&o, &i, Some(&q), 0, &rich(), &p),
            Decision::Rest { qty: dec!(0.01) }
        );
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"59000","time_in_force":"ioc"}"#,
        );
        assert!(matches!(
            decide(&o, &i, Some(&q), 0, &rich(), &p),
            Decision::Cancel { .. }
        ));
    }

    #[test]
    fn funds_are_checked_exactly_at_the_boundary() {
        let p = ExecutionParams::default();
        let q = quote(dec!(60000), dec!(60000), 0);
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"1","side":"buy","type":"market","time_in_force":"gtc"}"#,
        );
        let exact = AccountState {
            cash: dec!(60060),
            ..Default::default()
        };
        assert!(matches!(
            decide(&o, &i, Some(&q), 0, &exact, &p),
            Decision::Fill { .. }
        ));
        let short = AccountState {
            cash: dec!(60059.99999999),
            ..Default::default()
        };
        assert!(
            matches!(decide(&o, &i, Some(&q), 0, &short, &p), Decision::Reject(ref v) if v.code == "insufficient_buying_power")
        );
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","qty":"1","side":"sell","type":"market","time_in_force":"gtc"}"#,
        );
        let holds = AccountState {
            position_qty: dec!(1),
            ..Default::default()
        };
        assert!(matches!(
            decide(&o, &i, Some(&q), 0, &holds, &p),
            Decision::Fill { .. }
        ));
        let held = AccountState {
            position_qty: dec!(1),
            reserved_qty: dec!(0.5),
            ..Default::default()
        };
        assert!(
            matches!(decide(&o, &i, Some(&q), 0, &held, &p), Decision::Reject(ref v) if v.code == "insufficient_qty")
        );
    }

    #[test]
    fn notional_orders_size_down_to_the_lot_step() {
        let (o, i) = order(
            r#"{"symbol":"BTCUSDT","notional":"100","side":"buy","type":"market","time_in_force":"gtc"}"#,
        );
        let d = decide(
            &o,
            &i,
            Some(&quote(dec!(60000), dec!(60000), 0)),
            0,
            &rich(),
            &ExecutionParams::default(),
        );
        assert!(
            matches!(d, Decision::Fill { qty, .. } if qty == dec!(0.00166)),
            "{d:?}"
        );
    }
}
