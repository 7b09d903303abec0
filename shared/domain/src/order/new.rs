//! The validated order ([`ValidOrder`]) and the order ready for the executor ([`NewOrder`]):
//! both carry the same [`OrderSpec`].

use super::*;
use crate::amount::{Money, Price, Quantity};

/// What an order asks for: the trade and its conditions, as validated, without the ids and
/// times an account and a submission give it. [`ValidOrder`] and [`NewOrder`] both carry one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    #[serde(default)]
    pub qty: Option<Quantity>,
    #[serde(default)]
    pub notional: Option<Money>,
    #[serde(default)]
    pub limit_price: Option<Price>,
    #[serde(default)]
    pub stop_price: Option<Price>,
    #[serde(default)]
    pub trail: Option<Trail>,
    #[serde(default = "simple")]
    pub order_class: OrderClass,
    #[serde(default)]
    pub legs: Vec<Leg>,
}

/// An order request that passed every rule that needs no price or account state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub spec: OrderSpec,
    pub client_order_id: Option<String>,
}

fn simple() -> OrderClass {
    OrderClass::Simple
}

/// An order ready for the executor: validated, with its ids fixed. On the queue and in the
/// cache it is one flat JSON object (the spec's fields beside the ids), as it always was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub id: Uuid,
    pub account_id: Uuid,
    pub client_order_id: String,
    pub asset_id: Uuid,
    #[serde(flatten)]
    pub spec: OrderSpec,
    /// The order this one replaces (`PATCH /v2/orders/{id}`).
    #[serde(default)]
    pub replaces: Option<Uuid>,
    pub submitted_at: DateTime<Utc>,
}

impl NewOrder {
    /// This order of its account.
    pub fn order_ref(&self) -> OrderRef {
        OrderRef {
            account_id: self.account_id,
            order_id: self.id,
        }
    }

    /// Builds the order for `account_id`; without a client order id, a fresh one is made up.
    pub fn new(
        account_id: Uuid,
        valid: ValidOrder,
        asset_id: Uuid,
        now: DateTime<Utc>,
    ) -> NewOrder {
        let client_order_id = valid
            .client_order_id
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        NewOrder {
            id: order_id_for(account_id, &client_order_id),
            account_id,
            client_order_id,
            asset_id,
            spec: valid.spec,
            replaces: None,
            submitted_at: now,
        }
    }

    /// True when `other` asks for the same trade (ids and times aside): a retry, not a conflict.
    pub fn same_parameters(&self, other: &NewOrder) -> bool {
        self.matches_stored(&other.pending())
    }

    /// True when `stored` is this order as the ledger or the cache holds it: the same trade,
    /// compared on what the client sent. A filled notional order has its computed quantity
    /// stored, which the client never sent.
    pub fn matches_stored(&self, stored: &Order) -> bool {
        let mine = self.pending();
        let qty_matches =
            mine.qty == stored.qty || (self.spec.qty.is_none() && self.spec.notional.is_some());
        let legs_match = mine.legs.len() == stored.legs.len()
            && mine.legs.iter().all(|a| {
                stored.legs.iter().any(|b| {
                    a.leg_role == b.leg_role
                        && a.order_type == b.order_type
                        && a.limit_price == b.limit_price
                        && a.stop_price == b.stop_price
                        && a.trail == b.trail
                })
            });
        mine.symbol == stored.symbol
            && mine.side == stored.side
            && mine.order_type == stored.order_type
            && mine.time_in_force == stored.time_in_force
            && mine.notional == stored.notional
            && mine.limit_price == stored.limit_price
            && mine.stop_price == stored.stop_price
            && mine.trail == stored.trail
            && mine.order_class == stored.order_class
            && (stored.legs.is_empty() || legs_match)
            && qty_matches
    }

    /// The order as clients see it before the executor has taken it, legs included.
    pub fn pending(&self) -> Order {
        let expires_at =
            (self.spec.time_in_force == TimeInForce::Day).then(|| day_expiry(self.submitted_at));
        let parent = Order {
            id: self.id,
            client_order_id: self.client_order_id.clone(),
            account_id: self.account_id,
            created_at: self.submitted_at,
            updated_at: self.submitted_at,
            submitted_at: self.submitted_at,
            filled_at: None,
            canceled_at: None,
            failed_at: None,
            expired_at: None,
            expires_at,
            replaced_at: None,
            replaced_by: None,
            replaces: self.replaces,
            asset_id: self.asset_id,
            symbol: self.spec.symbol.clone(),
            notional: self.spec.notional.map(Money::get),
            qty: self.spec.qty.map(Quantity::get),
            filled_qty: Decimal::ZERO,
            filled_avg_price: None,
            order_type: self.spec.order_type,
            order_class: self.spec.order_class,
            side: self.spec.side,
            time_in_force: self.spec.time_in_force,
            limit_price: self.spec.limit_price.map(Price::get),
            stop_price: self.spec.stop_price.map(Price::get),
            trail: self.spec.trail,
            hwm: None,
            parent_id: None,
            leg_role: None,
            triggered_at: None,
            status: OrderStatus::PendingNew,
            reject_reason: None,
            legs: Vec::new(),
        };
        let legs = self
            .spec
            .legs
            .iter()
            .map(|leg| {
                let id = leg_id(self.id, leg.role);
                Order {
                    id,
                    client_order_id: id.to_string(),
                    parent_id: Some(self.id),
                    leg_role: Some(leg.role),
                    side: if self.spec.order_class == OrderClass::Oco {
                        self.spec.side
                    } else {
                        self.spec.side.opposite()
                    },
                    order_type: leg.order_type,
                    limit_price: leg.prices.limit_price.map(Price::get),
                    stop_price: leg.prices.stop_price.map(Price::get),
                    trail: leg.prices.trail,
                    // Legs wait for their parent (bracket, OTO); an OCO pair is live at once.
                    status: if self.spec.order_class == OrderClass::Oco {
                        OrderStatus::PendingNew
                    } else {
                        OrderStatus::Held
                    },
                    replaces: None,
                    ..parent.clone()
                }
            })
            .collect();
        Order { legs, ..parent }
    }

    /// The order as clients see it while its command waits in the dead-letter queue: it
    /// never reached the ledger and will not trade unless an operator redrives it
    /// (`suspended`, Alpaca's status for an order not eligible for trading), with the
    /// reason and the time it was given up on.
    pub fn suspended(&self, at: DateTime<Utc>, reason: &str) -> Order {
        let stop = |o: Order| Order {
            status: OrderStatus::Suspended,
            updated_at: at,
            failed_at: Some(at),
            reject_reason: Some(reason.to_string()),
            ..o
        };
        let pending = self.pending();
        let legs = pending.legs.iter().cloned().map(stop).collect();
        Order {
            legs,
            ..stop(pending)
        }
    }
}
