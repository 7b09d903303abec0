//! The order state machine of one account: what placing, triggering, canceling and
//! expiring orders does to its orders, positions and cash, decided in memory.
//!
//! The executor loads an account's cash, positions and open orders (a [`Book`]), runs the
//! commands of a batch through it in order, and writes what changed. Everything here is
//! pure: prices come in as a [`Market`] snapshot.
//!
//! Rules (Alpaca v2 semantics on a paper venue without depth, so an order fills whole):
//! - market orders fill at the touch (buys at the ask, sells at the bid);
//! - limit orders fill at the touch when it is at their limit or better, else rest;
//! - stop orders fire when the touch reaches the stop and fill at the touch; a stop-limit
//!   becomes a limit order at its limit; a trailing stop's stop follows its high-water mark;
//! - `ioc`/`fok` orders that cannot fill at once are canceled; `day` orders expire at the
//!   next UTC midnight; `gtc` orders rest until filled or canceled;
//! - bracket and OTO legs are `held` until their parent fills, then go live for the filled
//!   quantity; OCO partners (the two legs of a bracket, the two halves of an OCO order) cancel
//!   each other when one fills; canceling or rejecting a parent cancels its held legs;
//! - a replacement (`replaces`) takes the place of an open order, which becomes `replaced`;
//!   if the old order is no longer open, the replacement is rejected: one of the fill and
//!   the replace wins, never both;
//! - every fill needs the cash (fee included) or, for sells, the quantity not held for other
//!   open sells; resting orders must be covered when they start to rest.

use crate::RejectCode;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::accounting::{self, Position};
use crate::catalog::Catalog;
use crate::decimal::DecimalText;
use crate::order::{
    NewOrder, Order, OrderClass, OrderRequest, OrderStatus, OrderType, Side, TimeInForce,
};
use crate::quote::Quote;
use crate::risk::{self, Kill, OrderExposure, RiskState};
use crate::trigger::{next_hwm, touch, Condition};
use crate::RuleViolation;

/// The venue's rules: the paper fee and how old a price may be.
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

/// Cash a resting buy of `qty` at `limit` holds back: its notional plus the fee on it.
pub fn reserve_for_buy(qty: Decimal, limit: Decimal, params: &ExecutionParams) -> Decimal {
    let notional = qty * limit;
    notional + accounting::fee(notional, params.fee_bps)
}

/// The prices and rules a batch is decided with.
pub struct Market<'a> {
    pub catalog: &'a Catalog,
    pub quotes: &'a HashMap<String, Quote>,
    pub now: DateTime<Utc>,
    pub now_ms: i64,
    pub params: &'a ExecutionParams,
}

impl Market<'_> {
    /// The quote of `symbol` if it is fresh enough to trade on.
    fn fresh_quote(&self, symbol: &str) -> Result<&Quote, RuleViolation> {
        match self.quotes.get(symbol) {
            Some(q) if q.is_fresh(self.now_ms, self.params.max_price_age_ms) => Ok(q),
            Some(q) => Err(RuleViolation::new(
                RejectCode::StalePrice,
                format!(
                    "the latest {symbol} price is {} ms old, older than the {} ms bound; not filling at a stale price",
                    q.age_ms(self.now_ms),
                    self.params.max_price_age_ms
                ),
            )),
            None => Err(RuleViolation::new(
                RejectCode::NoPrice,
                format!("there is no current price for {symbol}"),
            )),
        }
    }
}

/// One execution, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub order_id: Uuid,
    pub symbol: String,
    pub asset_id: Uuid,
    pub side: Side,
    pub qty: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
    pub realized_pnl: Decimal,
    pub time: DateTime<Utc>,
}

/// An account while a batch is decided: its state, and what changed.
#[derive(Debug, Default)]
pub struct Book {
    pub account_id: Uuid,
    /// Cash as loaded; the current cash is `cash + cash_delta`.
    pub cash: Decimal,
    pub cash_delta: Decimal,
    pub realized_delta: Decimal,
    pub fees_delta: Decimal,
    /// Positions by symbol, with the instrument's asset id.
    pub positions: HashMap<String, (Uuid, Position)>,
    /// Every order the batch knows: the open orders loaded, and every order created or
    /// changed since. Legs are separate entries (their `legs` list is empty).
    pub orders: HashMap<Uuid, Order>,
    /// Orders created in this batch, in creation order.
    pub inserted: Vec<Uuid>,
    /// Loaded orders changed in this batch, in first-change order.
    pub updated: Vec<Uuid>,
    pub executions: Vec<Execution>,
    /// Symbols whose position changed.
    pub touched: HashSet<String>,
    /// Limits, the kill switch and the day's realized PnL (no limits unless loaded).
    pub risk: RiskState,
    /// Orders the book placed itself to flatten the account: exempt from the limits.
    exempt: HashSet<Uuid>,
}

/// What a command did to its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The order changed (or was created).
    Changed,
    /// Nothing to do: the order is not open, not known, or its condition is not met.
    Unchanged,
}

impl Book {
    pub fn new(account_id: Uuid, cash: Decimal) -> Book {
        Book {
            account_id,
            cash,
            ..Book::default()
        }
    }

    /// Adds an open order read from the ledger.
    pub fn load(&mut self, order: Order) {
        self.orders.insert(order.id, order);
    }

    pub fn current_cash(&self) -> Decimal {
        self.cash + self.cash_delta
    }

    /// The order with its legs nested, as clients see it.
    pub fn with_legs(&self, id: Uuid) -> Option<Order> {
        let mut order = self.orders.get(&id)?.clone();
        let mut legs: Vec<Order> = self
            .orders
            .values()
            .filter(|o| o.parent_id == Some(id))
            .cloned()
            .collect();
        legs.sort_by_key(|l| l.leg_role.map(|r| r.as_str()));
        order.legs = legs;
        Some(order)
    }

    fn order(&self, id: Uuid) -> Option<&Order> {
        self.orders.get(&id)
    }

    fn mark_changed(&mut self, id: Uuid, now: DateTime<Utc>) {
        if let Some(o) = self.orders.get_mut(&id) {
            o.updated_at = now;
        }
        if !self.inserted.contains(&id) && !self.updated.contains(&id) {
            self.updated.push(id);
        }
    }

    fn insert(&mut self, order: Order) {
        self.inserted.push(order.id);
        self.orders.insert(order.id, order);
    }

    /// True for an order that is open and not waiting for its parent.
    fn is_live(o: &Order) -> bool {
        o.status.is_open() && o.status != OrderStatus::Held
    }

    /// The group of orders of which at most one can fill (OCO pairs, bracket legs); an
    /// order outside any group is its own group.
    fn group(o: &Order) -> Uuid {
        match (o.order_class, o.parent_id) {
            (OrderClass::Oco, Some(parent)) => parent,
            (OrderClass::Bracket, Some(parent)) => parent,
            _ => o.id,
        }
    }

    /// The other members of `o`'s OCO group that are still open.
    fn partners(&self, o: &Order) -> Vec<Uuid> {
        let group = Self::group(o);
        let oco_parent = o.order_class == OrderClass::Oco;
        self.orders
            .values()
            .filter(|p| p.id != o.id && p.status.is_open())
            .filter(|p| {
                if oco_parent {
                    // An OCO parent is in its own group, with its leg.
                    p.id == group || p.parent_id == Some(group)
                } else {
                    o.parent_id.is_some() && p.parent_id == o.parent_id
                }
            })
            .filter(|p| Self::group(p) == group || p.id == group)
            .map(|p| p.id)
            .collect()
    }

    /// The price a resting order is reserved at: its limit, its stop, or its trailing stop.
    fn reserve_price(o: &Order) -> Option<Decimal> {
        match o.order_type {
            OrderType::Limit | OrderType::StopLimit => o.limit_price,
            OrderType::Stop => o.stop_price,
            OrderType::TrailingStop => Condition::of(o).map(|c| c.level(o.side)),
            OrderType::Market => None,
        }
    }

    /// What live orders matching `applies` hold back (`held(order)`), leaving out the group
    /// of `exclude`. In a group at most one order fills, so a group holds its largest amount.
    fn held_by_groups(
        &self,
        exclude: Option<Uuid>,
        applies: impl Fn(&Order) -> bool,
        held: impl Fn(&Order) -> Option<Decimal>,
    ) -> Decimal {
        let mut by_group: HashMap<Uuid, Decimal> = HashMap::new();
        for o in self.orders.values() {
            if !Self::is_live(o) || !applies(o) || Some(Self::group(o)) == exclude {
                continue;
            }
            if let Some(amount) = held(o) {
                let e = by_group.entry(Self::group(o)).or_default();
                *e = (*e).max(amount);
            }
        }
        by_group.values().copied().sum()
    }

    /// Cash not held for live buy orders, leaving out the group of `exclude`.
    pub fn buying_power(&self, exclude: Option<Uuid>, params: &ExecutionParams) -> Decimal {
        let held = self.held_by_groups(
            exclude,
            |o| o.side == Side::Buy,
            |o| Self::reserve_price(o).map(|p| reserve_for_buy(o.remaining(), p, params)),
        );
        self.current_cash() - held
    }

    /// Position quantity in `symbol` not held for live sell orders, leaving out the group of
    /// `exclude`.
    pub fn qty_available(&self, symbol: &str, exclude: Option<Uuid>) -> Decimal {
        let held = self.held_by_groups(
            exclude,
            |o| o.side == Side::Sell && o.symbol == symbol,
            |o| Some(o.remaining()),
        );
        self.position_qty(symbol) - held
    }

    pub fn position_qty(&self, symbol: &str) -> Decimal {
        self.positions
            .get(symbol)
            .map(|(_, p)| p.qty)
            .unwrap_or_default()
    }

    /// The pre-trade rule of a new order of `qty` at `price` (the price it would pay at
    /// worst), the one both the api's pre-check and the executor apply: the kill switch, then
    /// the funds it needs (an order the account cannot pay for says so before any limit),
    /// then the account's risk limits. A replacement is checked as if the order it replaces
    /// were gone, as it will be when the executor applies it.
    pub fn pre_check(
        &self,
        o: &Order,
        qty: Decimal,
        price: Decimal,
        m: &Market,
    ) -> Result<(), RuleViolation> {
        risk::check_kill(self.risk.kill.as_ref())?;
        let exclude = o
            .replaces
            .and_then(|id| self.orders.get(&id))
            .map_or_else(|| Self::group(o), Self::group);
        self.funds(o, qty, price, m.params, exclude)?;
        self.check_risk(o, qty, price, m)
    }

    /// [`Book::funds`] of an order, its own group (its OCO partner) left out.
    fn check_funds(
        &self,
        o: &Order,
        qty: Decimal,
        price: Decimal,
        params: &ExecutionParams,
    ) -> Result<(), RuleViolation> {
        self.funds(o, qty, price, params, Self::group(o))
    }

    /// Whether the account can pay for `qty` of `o` at `price` (buys: cash with the fee;
    /// sells: the quantity, no shorting), leaving out what the group `exclude` holds.
    fn funds(
        &self,
        o: &Order,
        qty: Decimal,
        price: Decimal,
        params: &ExecutionParams,
        exclude: Uuid,
    ) -> Result<(), RuleViolation> {
        let group = Some(exclude);
        match o.side {
            Side::Buy => {
                let need = reserve_for_buy(qty, price, params);
                let have = self.buying_power(group, params);
                if need > have {
                    return Err(RuleViolation::new(
                        RejectCode::InsufficientBuyingPower,
                        format!(
                            "buying {qty} {} at {price} needs {} USDT including the fee; buying power is {} USDT",
                            o.symbol,
                            need.normalize(),
                            have.normalize()
                        ),
                    ));
                }
            }
            Side::Sell => {
                let have = self.qty_available(&o.symbol, group);
                if qty > have {
                    return Err(RuleViolation::new(
                        RejectCode::InsufficientQty,
                        format!(
                            "selling {qty} {} needs that quantity available; available is {} (spot accounts cannot short)",
                            o.symbol,
                            have.normalize()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The mark of a position: the bid of a fresh-enough quote (what selling it would get),
    /// else its average entry price.
    fn mark(&self, symbol: &str, avg_entry: Decimal, m: &Market) -> Decimal {
        match m.quotes.get(symbol) {
            Some(q) if q.bid > Decimal::ZERO => q.bid,
            _ => avg_entry,
        }
    }

    /// Gross exposure (Σ |qty| × mark) and equity (cash + Σ qty × mark).
    pub fn exposure(&self, m: &Market) -> (Decimal, Decimal) {
        let mut gross = Decimal::ZERO;
        let mut net = Decimal::ZERO;
        for (symbol, (_, p)) in &self.positions {
            let value = p.qty * self.mark(symbol, p.avg_entry_price, m);
            gross += value.abs();
            net += value;
        }
        (gross, self.current_cash() + net)
    }

    /// Checks a new order of `qty` at `price` against the account's limits and kill switch.
    pub fn check_risk(
        &self,
        o: &Order,
        qty: Decimal,
        price: Decimal,
        m: &Market,
    ) -> Result<(), RuleViolation> {
        let (gross, equity) = self.exposure(m);
        let notional = qty * price;
        let open_orders = self
            .orders
            .values()
            .filter(|x| x.id != o.id && x.status.is_open() && x.status != OrderStatus::Held)
            .count();
        let x = OrderExposure {
            side: o.side,
            symbol: o.symbol.clone(),
            notional,
            position_after: (self.position_qty(&o.symbol) + qty) * price,
            open_orders,
            gross,
            equity,
            replaces: o.replaces.is_some(),
        };
        risk::check_order(&self.risk, &x)
    }

    /// Turns the kill switch on; with `flatten_on_kill` every open order is canceled and
    /// every position sold at market.
    pub fn trip(&mut self, reason: String, m: &Market) {
        if self.risk.kill.is_some() {
            return;
        }
        self.risk.kill = Some(Kill { at: m.now, reason });
        self.risk.tripped = true;
        if self.risk.limits.flatten_on_kill {
            self.flatten(m);
        }
    }

    /// Cancels every open order and sells every position at market (the kill switch's
    /// flatten). A position below the instrument's minimum quantity cannot be sold and stays.
    pub fn flatten(&mut self, m: &Market) {
        // Every open order, live exit legs included: what they hold back could not be sold.
        let mut open: Vec<Uuid> = self
            .orders
            .values()
            .filter(|o| o.status.is_open())
            .map(|o| o.id)
            .collect();
        open.sort();
        for id in open {
            self.finish(
                id,
                OrderStatus::Canceled,
                Some("kill switch: flatten".into()),
                m.now,
            );
        }
        let mut held: Vec<(String, Decimal)> = self
            .positions
            .iter()
            .filter(|(_, (_, p))| p.qty > Decimal::ZERO)
            .map(|(s, (_, p))| (s.clone(), p.qty))
            .collect();
        held.sort();
        for (symbol, qty) in held {
            let request = OrderRequest {
                symbol: Some(symbol),
                qty: Some(DecimalText(qty.normalize().to_string())),
                side: Some("sell".into()),
                order_type: Some("market".into()),
                time_in_force: Some("gtc".into()),
                client_order_id: Some(format!("flatten-{}", Uuid::new_v4().simple())),
                ..OrderRequest::default()
            };
            let Ok((valid, inst)) = request.validate(m.catalog) else {
                continue;
            };
            let order = NewOrder::new(self.account_id, valid, inst.asset_id, m.now);
            self.exempt.insert(order.id);
            self.place(&order, m);
        }
    }

    // ---- commands --------------------------------------------------------------------------

    /// Places `new` (and its legs) and decides it at once. Returns the order's id.
    pub fn place(&mut self, new: &NewOrder, m: &Market) -> Uuid {
        let mut parent = new.pending();
        let legs = std::mem::take(&mut parent.legs);
        parent.created_at = m.now;
        parent.updated_at = m.now;
        let id = parent.id;

        if let Some(old_id) = new.replaces {
            let old = self
                .order(old_id)
                .filter(|o| o.status.is_open() && o.account_id == new.account_id)
                .cloned();
            let Some(old) = old else {
                self.insert(parent);
                self.finish(
                    id,
                    OrderStatus::Rejected,
                    Some(RuleViolation::new(
                        RejectCode::OrderNotOpen,
                        format!("order {old_id} is no longer open (filled, canceled or replaced), so it cannot be replaced"),
                    ).to_string()),
                    m.now,
                );
                return id;
            };
            // The replacement takes the old order's place in its family.
            parent.parent_id = old.parent_id;
            parent.leg_role = old.leg_role;
            parent.order_class = old.order_class;
            parent.hwm = old.hwm;
            if old.status == OrderStatus::Held {
                parent.status = OrderStatus::Held;
            }
            if let Some(o) = self.orders.get_mut(&old_id) {
                o.status = OrderStatus::Replaced;
                o.replaced_at = Some(m.now);
                o.replaced_by = Some(id);
            }
            self.mark_changed(old_id, m.now);
            let children: Vec<Uuid> = self
                .orders
                .values()
                .filter(|o| o.parent_id == Some(old_id) && o.status.is_open())
                .map(|o| o.id)
                .collect();
            for c in children {
                if let Some(o) = self.orders.get_mut(&c) {
                    o.parent_id = Some(id);
                }
                self.mark_changed(c, m.now);
            }
            let held = parent.status == OrderStatus::Held;
            self.insert(parent);
            if !held {
                self.go_live(id, m);
            }
            return id;
        }

        let oco = parent.order_class == OrderClass::Oco;
        self.insert(parent);
        let leg_ids: Vec<Uuid> = legs.iter().map(|l| l.id).collect();
        for mut leg in legs {
            leg.created_at = m.now;
            leg.updated_at = m.now;
            self.insert(leg);
        }
        self.go_live(id, m);
        if oco {
            for leg in leg_ids {
                let parent_status = self.orders[&id].status;
                if Self::is_live(&self.orders[&id]) {
                    self.go_live(leg, m);
                } else if parent_status == OrderStatus::Rejected {
                    // The pair stands or falls together.
                    self.finish(
                        leg,
                        OrderStatus::Rejected,
                        Some("its OCO partner was rejected".into()),
                        m.now,
                    );
                }
                // A filled or canceled parent has already canceled its leg.
            }
        }
        id
    }

    /// Cancels an open order with its held legs and OCO partners.
    pub fn cancel(&mut self, order_id: Uuid, m: &Market) -> Effect {
        match self.order(order_id) {
            Some(o) if o.status.is_open() => {
                self.finish(order_id, OrderStatus::Canceled, None, m.now);
                Effect::Changed
            }
            _ => Effect::Unchanged,
        }
    }

    /// Expires an open order whose `expires_at` has passed.
    pub fn expire(&mut self, order_id: Uuid, m: &Market) -> Effect {
        match self.order(order_id) {
            Some(o) if o.status.is_open() && o.expires_at.is_some_and(|t| t <= m.now) => {
                self.finish(order_id, OrderStatus::Expired, None, m.now);
                Effect::Changed
            }
            _ => Effect::Unchanged,
        }
    }

    /// Re-checks a resting order against the current price and fills it if its condition is
    /// met. `hwm` is the high-water mark the trigger saw (trailing stops). A trigger for an
    /// order that is no longer live, or on a stale price, changes nothing.
    pub fn trigger(&mut self, order_id: Uuid, hwm: Option<Decimal>, m: &Market) -> Effect {
        let Some(o) = self.order(order_id).filter(|o| Self::is_live(o)).cloned() else {
            return Effect::Unchanged;
        };
        let Ok(quote) = m.fresh_quote(&o.symbol) else {
            return Effect::Unchanged;
        };
        let px = touch(o.side, quote.bid, quote.ask);
        if px <= Decimal::ZERO {
            return Effect::Unchanged;
        }
        let mut effect = Effect::Unchanged;
        if o.order_type == OrderType::TrailingStop {
            let stored = o.hwm.unwrap_or(px);
            let seen = hwm.map_or(stored, |h| next_hwm(o.side, stored, h));
            let moved = next_hwm(o.side, seen, px);
            if Some(moved) != o.hwm {
                if let Some(x) = self.orders.get_mut(&order_id) {
                    x.hwm = Some(moved);
                }
                self.mark_changed(order_id, m.now);
                effect = Effect::Changed;
            }
        }
        let o = self.orders[&order_id].clone();
        let Some(condition) = Condition::of(&o) else {
            return effect;
        };
        if !condition.is_met(o.side, px) {
            return effect;
        }
        match o.order_type {
            OrderType::StopLimit => {
                if let Some(x) = self.orders.get_mut(&order_id) {
                    x.triggered_at = Some(m.now);
                }
                self.mark_changed(order_id, m.now);
                self.limit_logic(order_id, px, m);
            }
            OrderType::Stop | OrderType::TrailingStop => {
                if let Some(x) = self.orders.get_mut(&order_id) {
                    x.triggered_at = Some(m.now);
                }
                self.fill(order_id, o.remaining(), px, true, m);
            }
            _ => {
                self.fill(order_id, o.remaining(), px, false, m);
            }
        }
        Effect::Changed
    }

    // ---- transitions ----------------------------------------------------------------------

    /// Decides an order that has just become live (placed, or a leg whose parent filled).
    fn go_live(&mut self, id: Uuid, m: &Market) {
        let Some(o) = self.order(id).cloned() else {
            return;
        };
        if !o.status.is_open() {
            return;
        }
        let Some(inst) = m.catalog.get(&o.symbol) else {
            let v = RuleViolation::new(
                RejectCode::UnknownSymbol,
                format!("{} is not a known instrument", o.symbol),
            );
            return self.finish(id, OrderStatus::Rejected, Some(v.to_string()), m.now);
        };
        let quote = match m.fresh_quote(&o.symbol) {
            Ok(q) => q,
            Err(v) => return self.finish(id, OrderStatus::Rejected, Some(v.to_string()), m.now),
        };
        let px = touch(o.side, quote.bid, quote.ask);
        if px <= Decimal::ZERO {
            let v = RuleViolation::new(
                RejectCode::NoPrice,
                format!("no {} side quoted for {}", o.side.as_str(), o.symbol),
            );
            return self.finish(id, OrderStatus::Rejected, Some(v.to_string()), m.now);
        }
        // A notional order buys what the notional buys at the touch, down to the lot step.
        if o.qty.is_none() {
            let n = o.notional.unwrap_or_default();
            let q = inst.floor_to_step(n / px);
            if let Err(v) = inst.check_qty(q, true) {
                let v = RuleViolation::new(
                    v.filter,
                    format!(
                        "notional {n} buys {q} {} at {px}: {}",
                        inst.base_asset, v.message
                    ),
                );
                return self.finish(id, OrderStatus::Rejected, Some(v.to_string()), m.now);
            }
            if let Some(x) = self.orders.get_mut(&id) {
                x.qty = Some(q);
            }
        }
        let qty = self.orders[&id].remaining();
        // Legs carry their parent's exposure out of the market; they are not new risk (and
        // their funds are checked when they rest or fill).
        if o.parent_id.is_none() && !self.exempt.contains(&id) {
            let price = match o.order_type {
                OrderType::Limit | OrderType::StopLimit => o.limit_price.unwrap_or(px),
                OrderType::Stop => o.stop_price.unwrap_or(px),
                OrderType::Market | OrderType::TrailingStop => px,
            };
            if let Err(v) = self.pre_check(&self.orders[&id], qty, price, m) {
                return self.finish(id, OrderStatus::Rejected, Some(v.to_string()), m.now);
            }
        }
        match o.order_type {
            OrderType::Market => self.fill(id, qty, px, true, m),
            OrderType::Limit => self.limit_logic(id, px, m),
            OrderType::Stop | OrderType::StopLimit => {
                let stop = o.stop_price.unwrap_or_default();
                if (Condition::Stop { price: stop }).is_met(o.side, px) {
                    if let Some(x) = self.orders.get_mut(&id) {
                        x.triggered_at = Some(m.now);
                    }
                    if o.order_type == OrderType::Stop {
                        self.fill(id, qty, px, true, m)
                    } else {
                        self.limit_logic(id, px, m)
                    }
                } else {
                    self.rest(id, m)
                }
            }
            OrderType::TrailingStop => {
                if let Some(x) = self.orders.get_mut(&id) {
                    x.hwm = Some(px);
                }
                self.rest(id, m)
            }
        }
    }

    /// A limit order (or a triggered stop-limit) at touch `px`: fill if marketable, else
    /// rest, or cancel if it may not rest.
    fn limit_logic(&mut self, id: Uuid, px: Decimal, m: &Market) {
        let o = self.orders[&id].clone();
        let limit = o.limit_price.unwrap_or_default();
        if (Condition::Limit { price: limit }).is_met(o.side, px) {
            self.fill(id, o.remaining(), px, false, m)
        } else {
            self.rest(id, m)
        }
    }

    /// Leaves an order resting (`new`) if it may rest and is covered; `ioc`/`fok` orders are
    /// canceled instead.
    fn rest(&mut self, id: Uuid, m: &Market) {
        let o = self.orders[&id].clone();
        if matches!(o.time_in_force, TimeInForce::Ioc | TimeInForce::Fok) {
            let reason = format!(
                "{} {} order could not fill at once ({}): canceled",
                o.time_in_force,
                o.order_type,
                o.side.as_str()
            );
            return self.finish(id, OrderStatus::Canceled, Some(reason), m.now);
        }
        if let Some(price) = Self::reserve_price(&o) {
            if let Err(v) = self.check_funds(&o, o.remaining(), price, m.params) {
                return self.finish(id, OrderStatus::Rejected, Some(v.to_string()), m.now);
            }
        }
        if o.status != OrderStatus::New {
            if let Some(x) = self.orders.get_mut(&id) {
                x.status = OrderStatus::New;
            }
            self.mark_changed(id, m.now);
        }
    }

    /// Fills `qty` of an order at `price`, if the account can pay for it; then its OCO
    /// partners are canceled and its held legs go live.
    fn fill(&mut self, id: Uuid, qty: Decimal, price: Decimal, at_market: bool, m: &Market) {
        let o = self.orders[&id].clone();
        let was_resting = o.status == OrderStatus::New;
        // A failure of an order that was resting cancels it; a new order is rejected.
        let fail = |book: &mut Book, v: RuleViolation| {
            let status = if was_resting {
                OrderStatus::Canceled
            } else {
                OrderStatus::Rejected
            };
            book.finish(id, status, Some(v.to_string()), m.now)
        };
        if let Some(inst) = m.catalog.get(&o.symbol) {
            if let Err(v) = inst.check_notional(qty, price, at_market) {
                return fail(self, v.into());
            }
        }
        if let Err(v) = self.check_funds(&o, qty, price, m.params) {
            return fail(self, v);
        }
        // A resting buy triggered while the kill switch is on would add exposure.
        if o.side == Side::Buy && !self.exempt.contains(&id) {
            if let Err(v) = risk::check_kill(self.risk.kill.as_ref()) {
                return fail(self, v);
            }
        }
        let fee = accounting::fee(qty * price, m.params.fee_bps);
        let entry = self
            .positions
            .entry(o.symbol.clone())
            .or_insert((o.asset_id, Position::default()));
        let effect = match entry.1.apply(&accounting::Fill {
            side: o.side,
            qty,
            price,
            fee,
        }) {
            Ok(e) => e,
            Err(e) => {
                let v = RuleViolation::new(RejectCode::FillOutOfRange, e.to_string());
                return fail(self, v);
            }
        };
        self.touched.insert(o.symbol.clone());
        self.cash_delta += effect.cash_delta;
        self.realized_delta += effect.realized_pnl;
        let trips = risk::record_realized(&mut self.risk, effect.realized_pnl);
        self.fees_delta += fee;
        self.executions.push(Execution {
            order_id: id,
            symbol: o.symbol.clone(),
            asset_id: o.asset_id,
            side: o.side,
            qty,
            price,
            fee,
            realized_pnl: effect.realized_pnl,
            time: m.now,
        });
        let filled_before = o.filled_qty;
        let total = filled_before + qty;
        let avg = match o.filled_avg_price {
            Some(p) if filled_before > Decimal::ZERO => (p * filled_before + price * qty) / total,
            _ => price,
        };
        if let Some(x) = self.orders.get_mut(&id) {
            x.filled_qty = total;
            x.filled_avg_price = Some(avg);
            x.filled_at = Some(m.now);
            x.status = if x.remaining().is_zero() {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
        }
        self.mark_changed(id, m.now);

        // One fill in an OCO group cancels the rest of it, exactly once.
        let o = self.orders[&id].clone();
        for p in self.partners(&o) {
            let reason = format!("OCO: {} filled", o.id);
            self.finish(p, OrderStatus::Canceled, Some(reason), m.now);
        }
        // Held legs go live for the filled quantity.
        if o.status == OrderStatus::Filled {
            let mut legs: Vec<Order> = self
                .orders
                .values()
                .filter(|l| l.parent_id == Some(id) && l.status == OrderStatus::Held)
                .cloned()
                .collect();
            legs.sort_by_key(|l| l.leg_role.map(|r| r.as_str()));
            for leg in legs {
                match self.orders.get_mut(&leg.id) {
                    // An earlier leg that filled at once (a stop already crossed) canceled
                    // this one, its OCO partner: it stays canceled.
                    Some(x) if x.status == OrderStatus::Held => {
                        x.qty = Some(o.filled_qty);
                        x.status = OrderStatus::PendingNew;
                    }
                    _ => continue,
                }
                self.mark_changed(leg.id, m.now);
                self.go_live(leg.id, m);
            }
        }
        // Tripped by this fill's loss: after the fill's own consequences are settled.
        if let Some(reason) = trips {
            self.trip(reason, m);
        }
    }

    /// Ends an order without a (further) fill, with its held legs and open OCO partners.
    fn finish(
        &mut self,
        id: Uuid,
        status: OrderStatus,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) {
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        if !o.status.is_open() {
            return;
        }
        o.status = status;
        match status {
            OrderStatus::Canceled => o.canceled_at = Some(now),
            OrderStatus::Expired => o.expired_at = Some(now),
            OrderStatus::Rejected => o.failed_at = Some(now),
            _ => {}
        }
        if reason.is_some() {
            o.reject_reason = reason;
        }
        let o = o.clone();
        self.mark_changed(id, now);
        let held: Vec<Uuid> = self
            .orders
            .values()
            .filter(|l| l.parent_id == Some(id) && l.status.is_open())
            .filter(|l| l.status == OrderStatus::Held || o.order_class == OrderClass::Oco)
            .map(|l| l.id)
            .collect();
        let partners = if o.parent_id.is_some() || o.order_class == OrderClass::Oco {
            self.partners(&o)
        } else {
            Vec::new()
        };
        for other in held.into_iter().chain(partners) {
            let why = format!("{} {}", o.id, status.as_str());
            self.finish(other, OrderStatus::Canceled, Some(why), now);
        }
    }
}

#[cfg(test)]
mod tests;
