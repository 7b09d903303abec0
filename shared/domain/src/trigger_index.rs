//! The in-memory trigger index of the ingest task: every resting order's [`Watch`], arranged
//! so that a flush of new quotes visits only the orders those quotes crossed.
//!
//! Per symbol and side:
//! - limits and stops sit in ordered sets keyed by `(level, order id)`, so finding the
//!   crossed ones is a range scan (a buy limit fires at `ask ≤ level`, a sell limit at
//!   `bid ≥ level`, a buy stop at `ask ≥ level`, a sell stop at `bid ≤ level`);
//! - trailing stops sit in a dense vector updated on every quote of their symbol: the
//!   high-water mark follows the touch (a sell's highest bid, a buy's lowest ask) and the
//!   order fires when the touch crosses the stop that trails it. Moved marks are collected
//!   for the caller to persist ([`TriggerIndex::take_moved_marks`]).
//!
//! Expiry: orders with `expires_at_ms <= now` come back as [`FiredKind::Expire`] (and never
//! as triggers), from an ordered set by expiry time.
//!
//! In-flight suppression: an order that fired is not fired again until `cooldown_ms` has
//! passed (the executor fills it and removes it, or finds its condition unmet on the current
//! price and leaves it resting, to fire again after the cooldown). Each time it fires again
//! unchanged the wait doubles, up to [`MAX_COOLDOWN_MS`]: when the executor lags (an outage,
//! a backlog), an order that stays crossed is not sent again every cooldown, which flooded
//! the queue with repeated triggers and deepened the lag (found by the chaos suite). Removing
//! an order forgets it; upserting it with a changed condition, side, symbol or expiry lifts
//! the suppression and the backoff.
//!
//! The semantics are those of [`Condition::is_met`] applied to every quote in order; the
//! property test at the bottom checks the index against that linear scan.
//!
//! Speed: the hot comparisons run on prices as `i128` on a grid of 10^-18 (the finest scale
//! [`crate::decimal::parse_decimal`] accepts), rounded towards the side that keeps each
//! comparison exact for quotes on that grid (see [`fixed`]); decimal arithmetic happens only
//! when a trailing mark moves.

use std::collections::{BTreeSet, HashMap, HashSet};

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::command::Command;
use crate::order::{Side, Trail};
use crate::quote::Quote;
use crate::trigger::{next_hwm, trailing_stop, Condition, Watch};

/// How long a fired order stays suppressed unless told otherwise.
pub const DEFAULT_COOLDOWN_MS: i64 = 2_000;

/// The longest an order that keeps firing unchanged waits before it fires again.
pub const MAX_COOLDOWN_MS: i64 = 60_000;

/// The wait after an order's `fires`-th firing: `cooldown_ms × 2^(fires − 1)`, at most
/// [`MAX_COOLDOWN_MS`] (and never less than `cooldown_ms`).
pub fn cooldown_after(cooldown_ms: i64, fires: u32) -> i64 {
    let doublings = fires.saturating_sub(1).min(16);
    cooldown_ms
        .saturating_mul(1i64 << doublings)
        .min(MAX_COOLDOWN_MS.max(cooldown_ms))
}

/// "Never fired": an order with this `cool_until` is eligible at any time.
const NOT_COOLING: i64 = i64::MIN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FiredKind {
    /// The price met the order's condition: send a trigger command.
    Trigger,
    /// The order's `expires_at_ms` has passed: send an expire command.
    Expire,
}

/// An order the index found crossed or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    /// The high-water mark at the moment it fired (trailing stops only).
    pub hwm: Option<Decimal>,
    pub kind: FiredKind,
}

impl Fired {
    /// The command to send for it.
    pub fn command(&self) -> Command {
        match self.kind {
            FiredKind::Trigger => {
                Command::trigger(self.account_id, self.order_id, &self.symbol, self.hwm)
            }
            FiredKind::Expire => Command::expire(self.account_id, self.order_id),
        }
    }
}

/// A price on the grid of 10^-18.
type Fixed = i128;

const FIXED_SCALE: u32 = 18;

/// `d` on the grid of 10^-18, rounded down (`up == false`) or up; saturating far beyond any
/// price (±1.7·10^20).
///
/// Exactness: for `t` on the grid, `t ≤ x ⟺ t ≤ floor(x)`, `t ≥ x ⟺ t ≥ ceil(x)`,
/// `t > x ⟺ t > floor(x)` and `t < x ⟺ t < ceil(x)`. Quotes parsed from text have at most
/// 18 decimal places, so they are on the grid and every comparison below is exact.
fn fixed(d: Decimal, up: bool) -> Fixed {
    let m = d.mantissa();
    let scale = d.scale();
    if scale <= FIXED_SCALE {
        let factor = 10i128.pow(FIXED_SCALE - scale);
        m.checked_mul(factor)
            .unwrap_or(if m < 0 { Fixed::MIN } else { Fixed::MAX })
    } else {
        let divisor = 10i128.pow(scale - FIXED_SCALE);
        let q = m.div_euclid(divisor);
        if up && m.rem_euclid(divisor) != 0 {
            q + 1
        } else {
            q
        }
    }
}

/// Rounded so that the order's firing comparison stays exact: down where it fires at
/// `touch ≤ level` (buy limit, sell stop, sell trailing stop), up where at `touch ≥ level`.
fn level_key(side: Side, condition: &Condition) -> Fixed {
    let level = condition.level(side);
    match (condition, side) {
        (Condition::Limit { .. }, Side::Buy) | (Condition::Stop { .. }, Side::Sell) => {
            fixed(level, false)
        }
        (Condition::Limit { .. }, Side::Sell) | (Condition::Stop { .. }, Side::Buy) => {
            fixed(level, true)
        }
        (Condition::Trailing { .. }, Side::Sell) => fixed(level, false),
        (Condition::Trailing { .. }, Side::Buy) => fixed(level, true),
    }
}

type Key = (Fixed, Uuid);

#[derive(Debug, Clone)]
struct TrailSlot {
    order_id: Uuid,
    trail: Trail,
    hwm: Decimal,
    /// `hwm` on the grid: rounded down for sells (moved by `bid > hwm`), up for buys
    /// (moved by `ask < hwm`).
    hwm_key: Fixed,
    /// The stop level for `hwm`, on the grid (see [`level_key`]).
    level_key: Fixed,
    /// The mark moved since the last `take_moved_marks`.
    moved: bool,
}

impl TrailSlot {
    fn new(order_id: Uuid, side: Side, trail: Trail, hwm: Decimal, moved: bool) -> TrailSlot {
        TrailSlot {
            order_id,
            trail,
            hwm,
            hwm_key: fixed(hwm, side == Side::Buy),
            level_key: level_key(side, &Condition::Trailing { trail, hwm }),
            moved,
        }
    }

    /// Moves the mark to `touch` (already known to be better).
    fn move_to(&mut self, side: Side, touch: Decimal, touch_key: Fixed, moved: &mut Vec<Uuid>) {
        self.hwm = touch;
        self.hwm_key = touch_key;
        self.level_key = fixed(trailing_stop(side, self.trail, touch), side == Side::Buy);
        if !self.moved {
            self.moved = true;
            moved.push(self.order_id);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Book {
    buy_limits: BTreeSet<Key>,
    sell_limits: BTreeSet<Key>,
    buy_stops: BTreeSet<Key>,
    sell_stops: BTreeSet<Key>,
    buy_trails: Vec<TrailSlot>,
    sell_trails: Vec<TrailSlot>,
}

impl Book {
    fn levels_mut(&mut self, side: Side, condition: &Condition) -> Option<&mut BTreeSet<Key>> {
        match (condition, side) {
            (Condition::Limit { .. }, Side::Buy) => Some(&mut self.buy_limits),
            (Condition::Limit { .. }, Side::Sell) => Some(&mut self.sell_limits),
            (Condition::Stop { .. }, Side::Buy) => Some(&mut self.buy_stops),
            (Condition::Stop { .. }, Side::Sell) => Some(&mut self.sell_stops),
            (Condition::Trailing { .. }, _) => None,
        }
    }

    fn trails_mut(&mut self, side: Side) -> &mut Vec<TrailSlot> {
        match side {
            Side::Buy => &mut self.buy_trails,
            Side::Sell => &mut self.sell_trails,
        }
    }

    fn is_empty(&self) -> bool {
        self.buy_limits.is_empty()
            && self.sell_limits.is_empty()
            && self.buy_stops.is_empty()
            && self.sell_stops.is_empty()
            && self.buy_trails.is_empty()
            && self.sell_trails.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The watch as upserted; for trailing stops the current mark lives in the slot.
    watch: Watch,
    /// Suppressed while `now < cool_until`.
    cool_until: i64,
    /// How many times it fired unchanged (the backoff's exponent).
    fires: u32,
    /// Position in its book's trailing vector (trailing stops only).
    trail_at: usize,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct TriggerIndex {
    cooldown_ms: i64,
    max_quote_age_ms: Option<i64>,
    entries: HashMap<Uuid, Entry>,
    books: HashMap<String, Book>,
    expiries: BTreeSet<(i64, Uuid)>,
    moved: Vec<Uuid>,
}

impl Default for TriggerIndex {
    fn default() -> Self {
        TriggerIndex::new(DEFAULT_COOLDOWN_MS)
    }
}

/// Equal but for the high-water mark of a trailing stop.
fn same_but_mark(a: &Watch, b: &Watch) -> bool {
    let conditions = match (a.condition, b.condition) {
        (Condition::Trailing { trail: ta, .. }, Condition::Trailing { trail: tb, .. }) => ta == tb,
        (ca, cb) => ca == cb,
    };
    conditions
        && a.account_id == b.account_id
        && a.symbol == b.symbol
        && a.side == b.side
        && a.expires_at_ms == b.expires_at_ms
}

impl TriggerIndex {
    pub fn new(cooldown_ms: i64) -> TriggerIndex {
        TriggerIndex {
            cooldown_ms: cooldown_ms.max(0),
            max_quote_age_ms: None,
            entries: HashMap::new(),
            books: HashMap::new(),
            expiries: BTreeSet::new(),
            moved: Vec::new(),
        }
    }

    /// Quotes older than this at evaluation time are ignored (`None`: no limit).
    pub fn with_max_quote_age_ms(mut self, max_age_ms: Option<i64>) -> TriggerIndex {
        self.max_quote_age_ms = max_age_ms;
        self
    }

    pub fn cooldown_ms(&self) -> i64 {
        self.cooldown_ms
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, order_id: Uuid) -> bool {
        self.entries.contains_key(&order_id)
    }

    /// The watch of an order, with its current high-water mark.
    pub fn get(&self, order_id: Uuid) -> Option<Watch> {
        let e = self.entries.get(&order_id)?;
        Some(self.current(e))
    }

    /// Every watch, with current marks, in no particular order.
    pub fn watches(&self) -> Vec<Watch> {
        self.entries.values().map(|e| self.current(e)).collect()
    }

    /// True while a fired order is suppressed.
    pub fn is_cooling(&self, order_id: Uuid, now_ms: i64) -> bool {
        self.entries
            .get(&order_id)
            .is_some_and(|e| now_ms < e.cool_until)
    }

    fn current(&self, e: &Entry) -> Watch {
        let mut w = e.watch.clone();
        if let Condition::Trailing { .. } = w.condition {
            if let Some(slot) = self.books.get(&w.symbol).and_then(|b| {
                match w.side {
                    Side::Buy => &b.buy_trails,
                    Side::Sell => &b.sell_trails,
                }
                .get(e.trail_at)
            }) {
                w.condition = Condition::Trailing {
                    trail: slot.trail,
                    hwm: slot.hwm,
                };
            }
        }
        w
    }

    /// Adds or replaces an order's watch.
    ///
    /// Replacing a trailing stop with the same trail keeps the better of the two marks (the
    /// mark only ever moves in the order's favour; a copy from the ledger or the Redis index
    /// may lag the one tracked here), and reports it as moved when the kept mark is not the
    /// one given. A replacement that differs only in the mark keeps the order's suppression;
    /// any other change lifts it.
    pub fn upsert(&mut self, mut watch: Watch) {
        let (mut cool_until, mut fires) = (NOT_COOLING, 0);
        let mut moved = false;
        if let Some(old) = self.remove_entry(watch.order_id) {
            if same_but_mark(&old.watch, &watch) {
                (cool_until, fires) = (old.cool_until, old.fires);
                if let (
                    Condition::Trailing { hwm: kept, .. },
                    Condition::Trailing { hwm: given, .. },
                ) = (old.watch.condition, &mut watch.condition)
                {
                    let better = next_hwm(watch.side, *given, kept);
                    moved = better != *given;
                    *given = better;
                }
            }
        }
        self.insert(watch, cool_until, fires, moved);
    }

    /// Forgets an order; returns its watch (with the current mark) if it was there.
    pub fn remove(&mut self, order_id: Uuid) -> Option<Watch> {
        self.remove_entry(order_id).map(|e| e.watch)
    }

    /// Makes the index hold exactly `watches` (a rebuild): orders not among them are removed,
    /// the others upserted, so orders that are in flight and unchanged stay suppressed.
    pub fn replace_all(&mut self, watches: Vec<Watch>) {
        let keep: HashSet<Uuid> = watches.iter().map(|w| w.order_id).collect();
        let stale: Vec<Uuid> = self
            .entries
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in stale {
            self.remove_entry(id);
        }
        for w in watches {
            self.upsert(w);
        }
    }

    /// The watches of trailing stops whose mark moved since the last call, with their new
    /// marks, for the caller to persist.
    pub fn take_moved_marks(&mut self) -> Vec<Watch> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.moved) {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if !matches!(e.watch.condition, Condition::Trailing { .. }) {
                continue;
            }
            let Some(book) = self.books.get_mut(&e.watch.symbol) else {
                continue;
            };
            let Some(slot) = book.trails_mut(e.watch.side).get_mut(e.trail_at) else {
                continue;
            };
            if slot.moved && slot.order_id == id {
                slot.moved = false;
                let mut w = e.watch.clone();
                w.condition = Condition::Trailing {
                    trail: slot.trail,
                    hwm: slot.hwm,
                };
                out.push(w);
            }
        }
        out
    }

    fn insert(&mut self, watch: Watch, cool_until: i64, fires: u32, moved: bool) {
        let id = watch.order_id;
        let side = watch.side;
        let book = self.books.entry(watch.symbol.clone()).or_default();
        let mut trail_at = 0;
        match watch.condition {
            Condition::Limit { .. } | Condition::Stop { .. } => {
                let key = level_key(side, &watch.condition);
                if let Some(set) = book.levels_mut(side, &watch.condition) {
                    set.insert((key, id));
                }
            }
            Condition::Trailing { trail, hwm } => {
                let trails = book.trails_mut(side);
                trail_at = trails.len();
                trails.push(TrailSlot::new(id, side, trail, hwm, moved));
                if moved {
                    self.moved.push(id);
                }
            }
        }
        if let Some(t) = watch.expires_at_ms {
            self.expiries.insert((t, id));
        }
        self.entries.insert(
            id,
            Entry {
                watch,
                cool_until,
                fires,
                trail_at,
            },
        );
    }

    /// Takes an order out of every structure; its watch carries the current mark.
    fn remove_entry(&mut self, order_id: Uuid) -> Option<Entry> {
        let mut entry = self.entries.remove(&order_id)?;
        if let Some(t) = entry.watch.expires_at_ms {
            self.expiries.remove(&(t, order_id));
        }
        let side = entry.watch.side;
        let mut empty = false;
        if let Some(book) = self.books.get_mut(&entry.watch.symbol) {
            match entry.watch.condition {
                Condition::Limit { .. } | Condition::Stop { .. } => {
                    let key = level_key(side, &entry.watch.condition);
                    if let Some(set) = book.levels_mut(side, &entry.watch.condition) {
                        set.remove(&(key, order_id));
                    }
                }
                Condition::Trailing { .. } => {
                    let trails = book.trails_mut(side);
                    if entry.trail_at < trails.len() {
                        let slot = trails.swap_remove(entry.trail_at);
                        debug_assert_eq!(slot.order_id, order_id);
                        if let Some(shifted) = trails.get(entry.trail_at) {
                            if let Some(e) = self.entries.get_mut(&shifted.order_id) {
                                e.trail_at = entry.trail_at;
                            }
                        }
                        entry.watch.condition = Condition::Trailing {
                            trail: slot.trail,
                            hwm: slot.hwm,
                        };
                    }
                }
            }
            empty = book.is_empty();
        }
        if empty {
            self.books.remove(&entry.watch.symbol);
        }
        Some(entry)
    }

    /// Finds the orders that expired by `now_ms` and those the quotes (applied in order)
    /// crossed, moving trailing marks on the way. Suppressed orders are skipped; every order
    /// returned is suppressed for the cooldown. Quotes with a non-positive bid or ask, or
    /// older than the maximum quote age, are ignored.
    pub fn evaluate(&mut self, quotes: &[Quote], now_ms: i64) -> Vec<Fired> {
        let mut out = Vec::new();
        let cooldown_ms = self.cooldown_ms;
        let TriggerIndex {
            entries,
            books,
            expiries,
            moved,
            max_quote_age_ms,
            ..
        } = self;

        let mut fire = |id: Uuid, kind: FiredKind, hwm: Option<Decimal>, out: &mut Vec<Fired>| {
            if let Some(e) = entries.get_mut(&id) {
                if now_ms >= e.cool_until {
                    e.fires = e.fires.saturating_add(1);
                    e.cool_until = now_ms.saturating_add(cooldown_after(cooldown_ms, e.fires));
                    out.push(Fired {
                        order_id: id,
                        account_id: e.watch.account_id,
                        symbol: e.watch.symbol.clone(),
                        hwm,
                        kind,
                    });
                }
            }
        };

        for &(_, id) in expiries.range(..=(now_ms, Uuid::max())) {
            fire(id, FiredKind::Expire, None, &mut out);
        }

        for q in quotes {
            if q.bid <= Decimal::ZERO || q.ask <= Decimal::ZERO {
                continue;
            }
            if max_quote_age_ms.is_some_and(|max| q.age_ms(now_ms) > max) {
                continue;
            }
            let Some(book) = books.get_mut(q.symbol.as_str()) else {
                continue;
            };
            let (bid, ask) = (fixed(q.bid, false), fixed(q.ask, false));
            for &(_, id) in book.buy_limits.range((ask, Uuid::nil())..) {
                fire(id, FiredKind::Trigger, None, &mut out);
            }
            for &(_, id) in book.sell_limits.range(..=(bid, Uuid::max())) {
                fire(id, FiredKind::Trigger, None, &mut out);
            }
            for &(_, id) in book.buy_stops.range(..=(ask, Uuid::max())) {
                fire(id, FiredKind::Trigger, None, &mut out);
            }
            for &(_, id) in book.sell_stops.range((bid, Uuid::nil())..) {
                fire(id, FiredKind::Trigger, None, &mut out);
            }
            for slot in book.sell_trails.iter_mut() {
                if bid > slot.hwm_key {
                    slot.move_to(Side::Sell, q.bid, bid, moved);
                }
                if bid <= slot.level_key {
                    fire(slot.order_id, FiredKind::Trigger, Some(slot.hwm), &mut out);
                }
            }
            for slot in book.buy_trails.iter_mut() {
                if ask < slot.hwm_key {
                    slot.move_to(Side::Buy, q.ask, ask, moved);
                }
                if ask >= slot.level_key {
                    fire(slot.order_id, FiredKind::Trigger, Some(slot.hwm), &mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::touch;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use std::collections::BTreeMap;

    const ACCOUNT: Uuid = Uuid::from_u128(7);

    fn watch(n: u128, symbol: &str, side: Side, condition: Condition) -> Watch {
        Watch {
            order_id: Uuid::from_u128(n),
            account_id: ACCOUNT,
            symbol: symbol.into(),
            side,
            condition,
            expires_at_ms: None,
        }
    }

    fn quote(symbol: &str, bid: Decimal, ask: Decimal) -> Quote {
        Quote::new(symbol, bid, ask, 0)
    }

    fn ids(fired: &[Fired]) -> Vec<u128> {
        let mut v: Vec<u128> = fired.iter().map(|f| f.order_id.as_u128()).collect();
        v.sort();
        v
    }

    fn limit(price: Decimal) -> Condition {
        Condition::Limit { price }
    }
    fn stop(price: Decimal) -> Condition {
        Condition::Stop { price }
    }

    #[test]
    fn only_crossed_limits_and_stops_fire_inclusive_of_the_level() {
        let mut ix = TriggerIndex::new(1_000);
        ix.upsert(watch(1, "BTC", Side::Buy, limit(dec!(100))));
        ix.upsert(watch(2, "BTC", Side::Buy, limit(dec!(99))));
        ix.upsert(watch(3, "BTC", Side::Sell, limit(dec!(102))));
        ix.upsert(watch(4, "BTC", Side::Sell, limit(dec!(101.0))));
        ix.upsert(watch(5, "BTC", Side::Buy, stop(dec!(101))));
        ix.upsert(watch(6, "BTC", Side::Buy, stop(dec!(103))));
        ix.upsert(watch(7, "BTC", Side::Sell, stop(dec!(100.00))));
        ix.upsert(watch(8, "BTC", Side::Sell, stop(dec!(98))));
        ix.upsert(watch(9, "ETH", Side::Buy, limit(dec!(1000))));
        assert_eq!(ix.len(), 9);
        // Nothing crossed.
        assert!(ix
            .evaluate(&[quote("BTC", dec!(100.5), dec!(100.6))], 0)
            .is_empty());
        // ask 100 meets buy limit 100 and nothing else on the buy side; bid 100 meets the
        // sell stop 100.00 (scale does not matter).
        let f = ix.evaluate(&[quote("BTC", dec!(100), dec!(100))], 1);
        assert_eq!(ids(&f), vec![1, 7]);
        assert!(f
            .iter()
            .all(|f| f.kind == FiredKind::Trigger && f.hwm.is_none()));
        // A gap up through everything on the other side.
        let f = ix.evaluate(&[quote("BTC", dec!(110), dec!(110.1))], 2);
        assert_eq!(ids(&f), vec![3, 4, 5, 6]);
        assert_eq!(f[0].symbol, "BTC");
        assert_eq!(f[0].account_id, ACCOUNT);
    }

    /// An order that stays crossed while the executor lags fires after 1, 2, 4, ... cooldowns,
    /// at most a minute apart, instead of every cooldown; a change starts over.
    #[test]
    fn an_order_that_keeps_firing_unchanged_backs_off() {
        let mut ix = TriggerIndex::new(1_000);
        let w = watch(1, "BTC", Side::Buy, limit(dec!(100)));
        ix.upsert(w.clone());
        let q = [quote("BTC", dec!(99), dec!(99.5))];
        let mut fired_at = Vec::new();
        for t in (0..200_000).step_by(100) {
            if !ix.evaluate(&q, t).is_empty() {
                fired_at.push(t);
            }
        }
        assert_eq!(
            fired_at,
            [0, 1_000, 3_000, 7_000, 15_000, 31_000, 63_000, 123_000, 183_000],
            "waits of 1, 2, 4, 8, 16, 32 s, then 60 s"
        );
        // A replay of the same watch keeps the backoff; a changed one starts over.
        ix.upsert(w);
        assert!(ix.evaluate(&q, 200_000).is_empty());
        ix.upsert(watch(1, "BTC", Side::Buy, limit(dec!(99.5))));
        assert_eq!(ids(&ix.evaluate(&q, 200_001)), vec![1]);
        assert_eq!(
            ids(&ix.evaluate(&q, 201_001)),
            vec![1],
            "one cooldown again"
        );
    }

    #[test]
    fn a_fired_order_is_suppressed_for_the_cooldown_unless_changed() {
        let mut ix = TriggerIndex::new(1_000);
        let w = watch(1, "BTC", Side::Buy, limit(dec!(100)));
        ix.upsert(w.clone());
        let q = [quote("BTC", dec!(99), dec!(99.5))];
        assert_eq!(ids(&ix.evaluate(&q, 10_000)), vec![1]);
        assert!(ix.is_cooling(w.order_id, 10_999));
        assert!(ix.evaluate(&q, 10_500).is_empty());
        assert!(ix.evaluate(&q, 10_999).is_empty());
        // The same watch again (e.g. replayed from the change log) keeps it suppressed.
        ix.upsert(w.clone());
        assert!(ix.evaluate(&q, 10_999).is_empty());
        // The cooldown passed: still resting and crossed, so it fires again.
        assert_eq!(ids(&ix.evaluate(&q, 11_000)), vec![1]);
        // A changed condition lifts the suppression.
        ix.upsert(watch(1, "BTC", Side::Buy, limit(dec!(99.5))));
        assert_eq!(ids(&ix.evaluate(&q, 11_001)), vec![1]);
        // Removed orders never fire.
        assert!(ix.remove(w.order_id).is_some());
        assert!(ix.remove(w.order_id).is_none());
        assert!(ix.evaluate(&q, 99_999).is_empty());
        assert!(ix.is_empty());
        // Removing and adding again starts afresh.
        ix.upsert(w.clone());
        assert_eq!(ids(&ix.evaluate(&q, 11_002)), vec![1]);
    }

    #[test]
    fn trailing_stops_follow_the_mark_and_report_moves() {
        let mut ix = TriggerIndex::new(1_000);
        let sell = watch(
            1,
            "BTC",
            Side::Sell,
            Condition::Trailing {
                trail: Trail::Price(dec!(5)),
                hwm: dec!(100),
            },
        );
        let buy = watch(
            2,
            "BTC",
            Side::Buy,
            Condition::Trailing {
                trail: Trail::Percent(dec!(10)),
                hwm: dec!(200),
            },
        );
        ix.upsert(sell.clone());
        ix.upsert(buy.clone());
        assert!(ix.take_moved_marks().is_empty());
        // Bid rises to 110: the sell's mark moves to 110 (stop 105); ask falls to 150: the
        // buy's mark moves to 150 (stop 165).
        assert!(ix
            .evaluate(&[quote("BTC", dec!(110), dec!(150))], 0)
            .is_empty());
        let mut marks = ix.take_moved_marks();
        marks.sort_by_key(|w| w.order_id);
        assert_eq!(marks.len(), 2);
        assert_eq!(
            marks[0].condition,
            Condition::Trailing {
                trail: Trail::Price(dec!(5)),
                hwm: dec!(110)
            }
        );
        assert_eq!(
            marks[1].condition,
            Condition::Trailing {
                trail: Trail::Percent(dec!(10)),
                hwm: dec!(150)
            }
        );
        assert!(ix.take_moved_marks().is_empty(), "taken once");
        assert_eq!(ix.get(sell.order_id).unwrap().condition, marks[0].condition);
        // 106 is above the moved stop 105: nothing; 105 fires the sell with its mark.
        assert!(ix
            .evaluate(&[quote("BTC", dec!(106), dec!(160))], 1)
            .is_empty());
        let f = ix.evaluate(&[quote("BTC", dec!(105), dec!(165))], 2);
        assert_eq!(ids(&f), vec![1, 2]);
        let hwms: BTreeMap<u128, Option<Decimal>> =
            f.iter().map(|f| (f.order_id.as_u128(), f.hwm)).collect();
        assert_eq!(hwms[&1], Some(dec!(110)));
        assert_eq!(hwms[&2], Some(dec!(150)));
        // A stale copy of the watch (the old mark) does not move the mark back, keeps the
        // suppression, and is reported as moved so the caller writes the better mark back.
        ix.upsert(sell.clone());
        assert_eq!(ix.get(sell.order_id).unwrap().condition, marks[0].condition);
        assert!(ix.is_cooling(sell.order_id, 2));
        let again = ix.take_moved_marks();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].condition, marks[0].condition);
    }

    #[test]
    fn trailing_marks_move_within_one_flush_before_the_check() {
        let mut ix = TriggerIndex::new(1_000);
        ix.upsert(watch(
            1,
            "BTC",
            Side::Sell,
            Condition::Trailing {
                trail: Trail::Price(dec!(5)),
                hwm: dec!(100),
            },
        ));
        // Up to 120 then down to 114: the stop trailed to 115, so the second quote fires.
        let f = ix.evaluate(
            &[
                quote("BTC", dec!(120), dec!(121)),
                quote("BTC", dec!(114), dec!(115)),
            ],
            0,
        );
        assert_eq!(ids(&f), vec![1]);
        assert_eq!(f[0].hwm, Some(dec!(120)));
    }

    #[test]
    fn expiry_fires_on_time_without_quotes_and_beats_a_trigger() {
        let mut ix = TriggerIndex::new(1_000);
        let mut w = watch(1, "BTC", Side::Buy, limit(dec!(100)));
        w.expires_at_ms = Some(5_000);
        ix.upsert(w);
        let mut gtc = watch(2, "BTC", Side::Buy, limit(dec!(100)));
        gtc.expires_at_ms = Some(9_000);
        ix.upsert(gtc);
        assert!(ix.evaluate(&[], 4_999).is_empty());
        let f = ix.evaluate(&[quote("BTC", dec!(90), dec!(90))], 5_000);
        assert_eq!(f.len(), 2);
        let by_id: BTreeMap<u128, FiredKind> =
            f.iter().map(|f| (f.order_id.as_u128(), f.kind)).collect();
        assert_eq!(by_id[&1], FiredKind::Expire);
        assert_eq!(by_id[&2], FiredKind::Trigger);
        assert!(matches!(f[0].command(), Command::ExpireOrder { .. }));
        // Still there after the cooldown (the expire command was lost): expire again.
        assert!(ix.evaluate(&[], 5_999).is_empty());
        let f = ix.evaluate(&[quote("BTC", dec!(90), dec!(90))], 6_000);
        assert_eq!(
            f.iter()
                .map(|f| (f.order_id.as_u128(), f.kind))
                .collect::<Vec<_>>(),
            vec![(1, FiredKind::Expire), (2, FiredKind::Trigger)]
        );
    }

    #[test]
    fn bad_and_stale_quotes_and_unknown_symbols_are_ignored() {
        let mut ix = TriggerIndex::new(1_000).with_max_quote_age_ms(Some(5_000));
        ix.upsert(watch(1, "BTC", Side::Buy, limit(dec!(100))));
        ix.upsert(watch(2, "BTC", Side::Sell, stop(dec!(100))));
        assert!(ix.evaluate(&[quote("BTC", dec!(0), dec!(0))], 0).is_empty());
        let mut old = quote("BTC", dec!(90), dec!(90));
        old.ts = 1_000;
        assert!(ix.evaluate(&[old.clone()], 6_001).is_empty());
        assert!(ix
            .evaluate(&[quote("ETH", dec!(1), dec!(1))], 6_001)
            .is_empty());
        assert_eq!(ix.evaluate(&[old], 6_000).len(), 2);
    }

    #[test]
    fn replace_all_drops_missing_orders_and_keeps_suppression_of_unchanged_ones() {
        let mut ix = TriggerIndex::new(10_000);
        let a = watch(1, "BTC", Side::Buy, limit(dec!(100)));
        let b = watch(2, "BTC", Side::Buy, limit(dec!(100)));
        let c = watch(3, "BTC", Side::Buy, limit(dec!(100)));
        ix.upsert(a.clone());
        ix.upsert(b.clone());
        let q = [quote("BTC", dec!(99), dec!(99))];
        assert_eq!(ids(&ix.evaluate(&q, 0)), vec![1, 2]);
        ix.replace_all(vec![a.clone(), c.clone()]);
        assert_eq!(ix.len(), 2);
        assert!(!ix.contains(b.order_id));
        // a is in flight and unchanged: still suppressed; c is new.
        assert_eq!(ids(&ix.evaluate(&q, 1)), vec![3]);
        let mut all = ix.watches();
        all.sort_by_key(|w| w.order_id);
        assert_eq!(all, vec![a, c]);
    }

    #[test]
    fn swap_removal_keeps_trailing_positions_right() {
        let mut ix = TriggerIndex::new(0);
        for n in 0..10u128 {
            ix.upsert(watch(
                n,
                "BTC",
                Side::Sell,
                Condition::Trailing {
                    trail: Trail::Price(Decimal::from(n as u64 + 1)),
                    hwm: dec!(100),
                },
            ));
        }
        for n in [0u128, 5, 9, 3] {
            assert!(ix.remove(Uuid::from_u128(n)).is_some());
        }
        for n in [1u128, 2, 4, 6, 7, 8] {
            let w = ix.get(Uuid::from_u128(n)).unwrap();
            assert_eq!(
                w.condition,
                Condition::Trailing {
                    trail: Trail::Price(Decimal::from(n as u64 + 1)),
                    hwm: dec!(100)
                }
            );
        }
        // bid 94 is at or below the stops 100-n-1 for n+1 ≤ 6.
        let f = ix.evaluate(&[quote("BTC", dec!(94), dec!(94.1))], 0);
        assert_eq!(ids(&f), vec![1, 2, 4]);
        for n in [1u128, 2, 4, 6, 7, 8] {
            ix.remove(Uuid::from_u128(n));
        }
        assert!(ix.is_empty());
        assert!(ix.books.is_empty(), "empty books are dropped");
    }

    #[test]
    fn fixed_point_rounds_towards_exact_comparisons() {
        assert_eq!(fixed(dec!(1), false), 10i128.pow(18));
        assert_eq!(fixed(dec!(-1.5), true), -15 * 10i128.pow(17));
        let third = dec!(1) / dec!(3); // 28 places
        assert_eq!(fixed(third, false), 333_333_333_333_333_333);
        assert_eq!(fixed(third, true), 333_333_333_333_333_334);
        assert_eq!(fixed(-third, false), -333_333_333_333_333_334);
        assert_eq!(fixed(-third, true), -333_333_333_333_333_333);
        assert_eq!(fixed(Decimal::MAX, false), Fixed::MAX);
        assert_eq!(fixed(Decimal::MIN, true), Fixed::MIN);
    }

    #[test]
    fn levels_beyond_18_places_compare_exactly_with_touches_next_to_them() {
        let third = dec!(100) / dec!(3);
        let conditions = [
            Condition::Limit { price: third },
            Condition::Stop { price: third },
            Condition::Trailing {
                trail: Trail::Percent(dec!(10) / dec!(3)),
                hwm: dec!(100),
            },
            Condition::Trailing {
                trail: Trail::Price(dec!(1) / dec!(7)),
                hwm: dec!(100),
            },
        ];
        let tick = Decimal::new(1, 18);
        for condition in conditions {
            for side in [Side::Buy, Side::Sell] {
                let level = condition.level(side);
                let mut down = level;
                down.rescale(18); // rounds half away from zero
                for touch in [
                    down - tick - tick,
                    down - tick,
                    down,
                    down + tick,
                    down + tick + tick,
                ] {
                    let mut ix = TriggerIndex::new(0);
                    ix.upsert(watch(1, "X", side, condition));
                    let fired = !ix.evaluate(&[quote("X", touch, touch)], 0).is_empty();
                    assert_eq!(
                        fired,
                        condition.is_met(side, touch),
                        "{condition:?} {side:?} level {level} touch {touch}"
                    );
                }
            }
        }
    }

    // ---- property: the index fires what a linear scan with `Condition::is_met` fires ----

    /// The reference: every order checked against every quote of its symbol.
    #[derive(Default)]
    struct Naive {
        cooldown: i64,
        orders: BTreeMap<Uuid, (Watch, i64, u32)>,
    }

    impl Naive {
        fn upsert(&mut self, mut w: Watch) {
            let (mut cool, mut fires) = (NOT_COOLING, 0);
            if let Some((old, old_cool, old_fires)) = self.orders.remove(&w.order_id) {
                if same_but_mark(&old, &w) {
                    (cool, fires) = (old_cool, old_fires);
                    if let (
                        Condition::Trailing { hwm: kept, .. },
                        Condition::Trailing { hwm, .. },
                    ) = (old.condition, &mut w.condition)
                    {
                        *hwm = next_hwm(w.side, *hwm, kept);
                    }
                }
            }
            self.orders.insert(w.order_id, (w, cool, fires));
        }

        fn evaluate(
            &mut self,
            quotes: &[Quote],
            now: i64,
        ) -> Vec<(Uuid, FiredKind, Option<Decimal>)> {
            let mut out = Vec::new();
            for (id, (w, cool, fires)) in self.orders.iter_mut() {
                if w.expires_at_ms.is_some_and(|t| t <= now) && now >= *cool {
                    *fires += 1;
                    *cool = now + cooldown_after(self.cooldown, *fires);
                    out.push((*id, FiredKind::Expire, None));
                }
            }
            for q in quotes {
                for (id, (w, cool, fires)) in self.orders.iter_mut() {
                    if w.symbol != q.symbol {
                        continue;
                    }
                    let t = touch(w.side, q.bid, q.ask);
                    let met = w.condition.is_met(w.side, t);
                    let mut hwm = None;
                    if let Condition::Trailing { trail, hwm: h } = w.condition {
                        let h = next_hwm(w.side, h, t);
                        w.condition = Condition::Trailing { trail, hwm: h };
                        hwm = Some(h);
                    }
                    if met && now >= *cool {
                        *fires += 1;
                        *cool = now + cooldown_after(self.cooldown, *fires);
                        out.push((*id, FiredKind::Trigger, hwm));
                    }
                }
            }
            out.sort();
            out
        }
    }

    const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];

    fn price() -> impl Strategy<Value = Decimal> {
        (900i64..1100).prop_map(|n| Decimal::new(n, 1))
    }

    fn condition() -> impl Strategy<Value = Condition> {
        prop_oneof![
            price().prop_map(|price| Condition::Limit { price }),
            price().prop_map(|price| Condition::Stop { price }),
            (
                prop_oneof![
                    (0i64..60).prop_map(|n| Trail::Price(Decimal::new(n, 1))),
                    (1i64..100).prop_map(|n| Trail::Percent(Decimal::new(n, 1))),
                    // Levels with more than 18 decimal places: rounding of the grid.
                    (1i64..100).prop_map(|n| Trail::Percent(Decimal::new(n, 1) / Decimal::from(3))),
                ],
                price()
            )
                .prop_map(|(trail, hwm)| Condition::Trailing { trail, hwm }),
        ]
    }

    fn a_watch() -> impl Strategy<Value = Watch> {
        (
            0u128..24,
            0usize..SYMBOLS.len(),
            any::<bool>(),
            condition(),
            proptest::option::weighted(0.2, 0i64..4_000),
        )
            .prop_map(|(n, s, buy, condition, exp)| Watch {
                order_id: Uuid::from_u128(n),
                account_id: Uuid::from_u128(1_000 + n % 3),
                symbol: SYMBOLS[s].to_string(),
                side: if buy { Side::Buy } else { Side::Sell },
                condition,
                expires_at_ms: exp,
            })
    }

    fn a_quote() -> impl Strategy<Value = Quote> {
        (0usize..SYMBOLS.len(), price(), 0i64..20, 1u32..=18, 0i64..3).prop_map(
            |(s, bid, spread, scale, nudge)| {
                // Any scale up to 18, and now and then a hair off the 0.1 grid of the orders.
                let mut bid = bid + Decimal::new(nudge - 1, 18);
                let mut ask = bid + Decimal::new(spread, 1);
                bid.rescale(scale.max(bid.scale()));
                ask.rescale(scale.max(ask.scale()));
                Quote::new(SYMBOLS[s], bid, ask, 0)
            },
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(Watch),
        Remove(u128),
        Evaluate(Vec<Quote>, i64),
        TakeMarks,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => a_watch().prop_map(Op::Upsert),
            1 => (0u128..24).prop_map(Op::Remove),
            4 => (proptest::collection::vec(a_quote(), 0..6), 0i64..700)
                .prop_map(|(q, dt)| Op::Evaluate(q, dt)),
            1 => Just(Op::TakeMarks),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fires_exactly_what_a_linear_scan_fires(ops in proptest::collection::vec(op(), 1..60)) {
            let cooldown = 1_000;
            let mut ix = TriggerIndex::new(cooldown);
            let mut naive = Naive { cooldown, ..Naive::default() };
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Upsert(w) => {
                        ix.upsert(w.clone());
                        naive.upsert(w);
                    }
                    Op::Remove(n) => {
                        let id = Uuid::from_u128(n);
                        let got = ix.remove(id);
                        let want = naive.orders.remove(&id).map(|(w, _, _)| w);
                        prop_assert_eq!(got, want);
                    }
                    Op::Evaluate(quotes, dt) => {
                        now += dt;
                        let mut got: Vec<(Uuid, FiredKind, Option<Decimal>)> = ix
                            .evaluate(&quotes, now)
                            .into_iter()
                            .map(|f| (f.order_id, f.kind, f.hwm))
                            .collect();
                        got.sort();
                        prop_assert_eq!(got, naive.evaluate(&quotes, now));
                    }
                    Op::TakeMarks => {
                        for w in ix.take_moved_marks() {
                            prop_assert_eq!(Some(&w), naive.orders.get(&w.order_id).map(|(w, _, _)| w));
                        }
                    }
                }
                let mut all = ix.watches();
                all.sort_by_key(|w| w.order_id);
                let want: Vec<Watch> = naive.orders.values().map(|(w, _, _)| w.clone()).collect();
                prop_assert_eq!(all, want);
            }
        }
    }
}
