//! When a resting order fires: the price conditions of limit, stop, stop-limit and trailing
//! stop orders against a quote. The ingest task evaluates them on every flush to send
//! trigger commands; the executor evaluates them again on the current price before it fills.
//!
//! Buys look at the ask (what a buy pays), sells at the bid.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::{Order, OrderStatus, OrderType, Side, Trail};

/// The price condition of a resting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// Fires when the touch reaches the limit: a buy's ask at or below it, a sell's bid at
    /// or above it.
    Limit {
        #[serde(with = "crate::decimal::text")]
        price: Decimal,
    },
    /// Fires when the touch reaches the stop: a buy's ask at or above it, a sell's bid at or
    /// below it.
    Stop {
        #[serde(with = "crate::decimal::text")]
        price: Decimal,
    },
    /// A stop that follows the best price since the order went live (`hwm`: highest bid for
    /// a sell, lowest ask for a buy) at the trail's distance.
    Trailing {
        trail: Trail,
        #[serde(with = "crate::decimal::text")]
        hwm: Decimal,
    },
}

/// One entry of the trigger index: what the ingest task needs to watch a resting order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    pub side: Side,
    pub condition: Condition,
    /// Milliseconds since the epoch at which a `day` order expires.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

impl Watch {
    /// The watch of a live resting order (limit, stop, stop-limit, trailing stop), or of a
    /// `day` order of any kind that can still expire; `None` for orders nothing can fire.
    pub fn of(order: &Order) -> Option<Watch> {
        let condition = Condition::of(order)?;
        Some(Watch {
            order_id: order.id,
            account_id: order.account_id,
            symbol: order.symbol.clone(),
            side: order.side,
            condition,
            expires_at_ms: order.expires_at.map(|t| t.timestamp_millis()),
        })
    }
}

/// The stop level of a trailing stop with high-water mark `hwm`.
pub fn trailing_stop(side: Side, trail: Trail, hwm: Decimal) -> Decimal {
    let distance = match trail {
        Trail::Price(p) => p,
        Trail::Percent(pct) => hwm * pct / Decimal::ONE_HUNDRED,
    };
    match side {
        Side::Sell => hwm - distance,
        Side::Buy => hwm + distance,
    }
}

/// The high-water mark after seeing `touch`: higher for sells, lower for buys.
pub fn next_hwm(side: Side, hwm: Decimal, touch: Decimal) -> Decimal {
    match side {
        Side::Sell => hwm.max(touch),
        Side::Buy => hwm.min(touch),
    }
}

impl Condition {
    /// The condition a live order rests on, or `None` for orders that do not rest on a price
    /// (market orders, held legs, terminal orders).
    pub fn of(order: &Order) -> Option<Condition> {
        if !order.status.is_open() || order.status == OrderStatus::Held {
            return None;
        }
        match order.order_type {
            OrderType::Market => None,
            OrderType::Limit => order.limit_price.map(|price| Condition::Limit { price }),
            OrderType::Stop => order.stop_price.map(|price| Condition::Stop { price }),
            OrderType::StopLimit => {
                if order.triggered_at.is_some() {
                    order.limit_price.map(|price| Condition::Limit { price })
                } else {
                    order.stop_price.map(|price| Condition::Stop { price })
                }
            }
            OrderType::TrailingStop => match (order.trail, order.hwm) {
                (Some(trail), Some(hwm)) => Some(Condition::Trailing { trail, hwm }),
                _ => None,
            },
        }
    }

    /// True when `touch` (the ask for buys, the bid for sells) meets the condition. A
    /// trailing condition is checked against its stop after moving the mark to `touch`.
    pub fn is_met(&self, side: Side, touch: Decimal) -> bool {
        match (*self, side) {
            (Condition::Limit { price }, Side::Buy) => touch <= price,
            (Condition::Limit { price }, Side::Sell) => touch >= price,
            (Condition::Stop { price }, Side::Buy) => touch >= price,
            (Condition::Stop { price }, Side::Sell) => touch <= price,
            (Condition::Trailing { trail, hwm }, _) => {
                let stop = trailing_stop(side, trail, next_hwm(side, hwm, touch));
                match side {
                    Side::Buy => touch >= stop,
                    Side::Sell => touch <= stop,
                }
            }
        }
    }

    /// The price at which the condition starts to be met, for indexing: crossing it in the
    /// firing direction meets the condition.
    pub fn level(&self, side: Side) -> Decimal {
        match *self {
            Condition::Limit { price } | Condition::Stop { price } => price,
            Condition::Trailing { trail, hwm } => trailing_stop(side, trail, hwm),
        }
    }
}

/// The side of a quote an order of `side` trades against.
pub fn touch(side: Side, bid: Decimal, ask: Decimal) -> Decimal {
    match side {
        Side::Buy => ask,
        Side::Sell => bid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn limits_and_stops_fire_on_the_right_side() {
        let limit = Condition::Limit { price: dec!(100) };
        assert!(limit.is_met(Side::Buy, dec!(100)));
        assert!(
            limit.is_met(Side::Buy, dec!(95)),
            "a gap down fills a buy limit"
        );
        assert!(!limit.is_met(Side::Buy, dec!(100.01)));
        assert!(limit.is_met(Side::Sell, dec!(100)));
        assert!(!limit.is_met(Side::Sell, dec!(99.99)));
        let stop = Condition::Stop { price: dec!(100) };
        assert!(stop.is_met(Side::Sell, dec!(100)));
        assert!(stop.is_met(Side::Sell, dec!(90)), "a gap through the stop");
        assert!(!stop.is_met(Side::Sell, dec!(100.01)));
        assert!(stop.is_met(Side::Buy, dec!(100.5)));
        assert!(!stop.is_met(Side::Buy, dec!(99.5)));
    }

    #[test]
    fn trailing_stops_follow_their_mark() {
        let sell = Condition::Trailing {
            trail: Trail::Price(dec!(5)),
            hwm: dec!(100),
        };
        assert_eq!(sell.level(Side::Sell), dec!(95));
        assert!(!sell.is_met(Side::Sell, dec!(96)));
        assert!(sell.is_met(Side::Sell, dec!(95)));
        // A new high moves the stop up before the check: 110 → stop 105.
        assert!(!sell.is_met(Side::Sell, dec!(110)));
        assert_eq!(next_hwm(Side::Sell, dec!(100), dec!(110)), dec!(110));
        let buy = Condition::Trailing {
            trail: Trail::Percent(dec!(10)),
            hwm: dec!(200),
        };
        assert_eq!(buy.level(Side::Buy), dec!(220));
        assert!(buy.is_met(Side::Buy, dec!(220)));
        assert!(!buy.is_met(Side::Buy, dec!(219.99)));
        assert_eq!(next_hwm(Side::Buy, dec!(200), dec!(150)), dec!(150));
        assert_eq!(
            trailing_stop(Side::Buy, Trail::Percent(dec!(10)), dec!(150)),
            dec!(165)
        );
    }
}
