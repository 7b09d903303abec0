//! The order record: as the ledger stores it and clients see it.

use super::*;

/// An order as stored in the ledger and shown to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub client_order_id: String,
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: DateTime<Utc>,
    pub filled_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    /// When a `day` order expires (the next UTC midnight after submission).
    pub expires_at: Option<DateTime<Utc>>,
    pub replaced_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<Uuid>,
    pub replaces: Option<Uuid>,
    pub asset_id: Uuid,
    pub symbol: String,
    pub notional: Option<Decimal>,
    pub qty: Option<Decimal>,
    pub filled_qty: Decimal,
    pub filled_avg_price: Option<Decimal>,
    pub order_type: OrderType,
    pub order_class: OrderClass,
    pub side: Side,
    pub time_in_force: TimeInForce,
    pub limit_price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub trail: Option<Trail>,
    /// High-water mark of a trailing stop: the best price since it went live (highest bid
    /// for a sell, lowest ask for a buy).
    pub hwm: Option<Decimal>,
    /// The parent of a leg (bracket, OCO, OTO).
    pub parent_id: Option<Uuid>,
    pub leg_role: Option<LegRole>,
    /// When a stop or stop-limit order's stop was reached (a triggered stop-limit rests as a
    /// limit order).
    pub triggered_at: Option<DateTime<Utc>>,
    pub status: OrderStatus,
    /// Why the order was rejected (our addition to Alpaca's order object).
    pub reject_reason: Option<String>,
    /// The legs of a parent order, as Alpaca nests them (empty for legs and simple orders).
    pub legs: Vec<Order>,
}

impl Order {
    /// This order of its account.
    pub fn order_ref(&self) -> OrderRef {
        OrderRef {
            account_id: self.account_id,
            order_id: self.id,
        }
    }

    pub fn trail_price(&self) -> Option<Decimal> {
        match self.trail {
            Some(Trail::Price(p)) => Some(p),
            _ => None,
        }
    }

    pub fn trail_percent(&self) -> Option<Decimal> {
        match self.trail {
            Some(Trail::Percent(p)) => Some(p),
            _ => None,
        }
    }

    /// Quantity still to fill.
    pub fn remaining(&self) -> Decimal {
        (self.qty.unwrap_or_default() - self.filled_qty).max(Decimal::ZERO)
    }
}
