//! The state machine, order type by order type, on a fixed clock and hand-set quotes.

use super::*;
use crate::order::OrderRequest;
use rust_decimal_macros::dec;

const NOW_MS: i64 = 1_800_000_000_000;

struct World {
    book: Book,
    quotes: HashMap<String, Quote>,
    params: ExecutionParams,
    now_ms: i64,
}

impl World {
    fn new(cash: Decimal) -> World {
        World {
            book: Book::new(Uuid::new_v4(), cash),
            quotes: HashMap::new(),
            params: ExecutionParams::default(),
            now_ms: NOW_MS,
        }
    }

    /// A book with `cash`, BTCUSDT quoted at 60000 / 60001.
    fn quoted(cash: Decimal) -> World {
        let mut w = World::new(cash);
        w.quote(dec!(60000), dec!(60001));
        w
    }

    /// No cash, 0.01 BTCUSDT held at 50000, quoted at 60000 / 60001.
    fn holding() -> World {
        let mut w = World::new(dec!(0));
        w.book.positions.insert(
            "BTCUSDT".into(),
            (Uuid::nil(), position(dec!(0.01), dec!(50000))),
        );
        w.quote(dec!(60000), dec!(60001));
        w
    }

    fn quote(&mut self, bid: Decimal, ask: Decimal) {
        self.quotes.insert(
            "BTCUSDT".into(),
            Quote::new("BTCUSDT", bid, ask, self.now_ms),
        );
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms).unwrap()
    }

    /// Runs `f` on the book with the world's market, borrowing each part separately.
    fn run<R>(&mut self, f: impl FnOnce(&mut Book, &Market) -> R) -> R {
        let m = Market {
            catalog: Catalog::builtin(),
            quotes: &self.quotes,
            now: DateTime::from_timestamp_millis(self.now_ms).unwrap(),
            now_ms: self.now_ms,
            params: &self.params,
        };
        f(&mut self.book, &m)
    }

    fn new_order(&self, json: &str) -> NewOrder {
        let req: OrderRequest = serde_json::from_str(json).unwrap();
        let (v, inst) = req.validate(Catalog::builtin()).unwrap();
        NewOrder::new(self.book.account_id, v, inst.asset_id, self.now())
    }

    fn place(&mut self, json: &str) -> Uuid {
        let new = self.new_order(json);
        self.run(|b, m| b.place(&new, m))
    }

    /// Places a gtc order of 0.01 BTCUSDT with these `kind` fields and nothing else.
    fn place_kind(&mut self, kind: &str) -> Uuid {
        self.place(&order(kind, ""))
    }

    fn trigger(&mut self, id: Uuid) -> Effect {
        self.run(|b, m| b.trigger(id, None, m))
    }

    fn expire(&mut self, id: Uuid) -> Effect {
        self.run(|b, m| b.expire(id, m))
    }

    fn cancel(&mut self, id: Uuid) -> Effect {
        self.run(|b, m| b.cancel(id, m))
    }

    fn status(&self, id: Uuid) -> OrderStatus {
        self.book.orders[&id].status
    }

    fn leg(&self, parent: Uuid, role: crate::order::LegRole) -> Uuid {
        crate::order::leg_id(parent, role)
    }

    /// The take-profit and stop-loss legs of `parent`.
    fn legs(&self, parent: Uuid) -> (Uuid, Uuid) {
        (
            self.leg(parent, crate::order::LegRole::TakeProfit),
            self.leg(parent, crate::order::LegRole::StopLoss),
        )
    }

    fn reject_reason(&self, id: Uuid) -> &str {
        self.book.orders[&id].reject_reason.as_deref().unwrap()
    }

    fn fills(&self) -> Vec<(Uuid, Decimal, Decimal)> {
        self.book
            .executions
            .iter()
            .map(|e| (e.order_id, e.qty, e.price))
            .collect()
    }
}

fn order(kind: &str, extra: &str) -> String {
    format!(r#"{{"symbol":"BTCUSDT","qty":"0.01","time_in_force":"gtc",{kind}{extra}}}"#)
}

#[test]
fn a_stop_rests_until_the_touch_reaches_it_and_fills_at_the_touch_after_a_gap() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place_kind(r#""side":"buy","type":"stop","stop_price":"61000""#);
    assert_eq!(w.status(id), OrderStatus::New);
    assert_eq!(
        w.trigger(id),
        Effect::Unchanged,
        "the ask is below the stop"
    );
    // The ask gaps through the stop: the fill is at the touch, not at the stop.
    w.quote(dec!(61499), dec!(61500));
    assert_eq!(w.trigger(id), Effect::Changed);
    assert_eq!(w.status(id), OrderStatus::Filled);
    assert_eq!(w.fills(), vec![(id, dec!(0.01), dec!(61500))]);
    // A second trigger changes nothing.
    assert_eq!(w.trigger(id), Effect::Unchanged);
    assert_eq!(w.fills().len(), 1);
}

#[test]
fn limits_fill_at_their_limit_or_better_and_stale_prices_trigger_nothing() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place_kind(r#""side":"buy","type":"limit","limit_price":"59000""#);
    assert_eq!(w.status(id), OrderStatus::New);
    // Reserved: 0.01 × 59000 + 0.1 % fee.
    assert_eq!(
        w.book.buying_power(None, &w.params),
        dec!(100000) - dec!(590.59)
    );
    w.quote(dec!(58000), dec!(58500));
    w.now_ms += 10_000; // the quote is now 10 s old
    assert_eq!(w.trigger(id), Effect::Unchanged, "stale price");
    w.now_ms -= 10_000;
    assert_eq!(w.trigger(id), Effect::Changed);
    assert_eq!(
        w.fills(),
        vec![(id, dec!(0.01), dec!(58500))],
        "the better price"
    );
}

#[test]
fn stop_limits_become_limits_and_rest_when_the_limit_is_passed() {
    let mut w = World::holding();
    let id = w.place_kind(
        r#""side":"sell","type":"stop_limit","stop_price":"59000","limit_price":"58900""#,
    );
    assert_eq!(w.status(id), OrderStatus::New);
    // The bid gaps below the limit: triggered, but it rests as a limit at 58900.
    w.quote(dec!(58000), dec!(58001));
    assert_eq!(w.trigger(id), Effect::Changed);
    assert_eq!(w.status(id), OrderStatus::New);
    assert!(w.book.orders[&id].triggered_at.is_some());
    assert!(w.fills().is_empty());
    // Back above the limit (though above the stop too): the limit fills.
    w.quote(dec!(59500), dec!(59501));
    assert_eq!(w.trigger(id), Effect::Changed);
    assert_eq!(w.fills(), vec![(id, dec!(0.01), dec!(59500))]);
}

#[test]
fn a_trailing_stop_follows_its_high_water_mark() {
    let mut w = World::holding();
    let id = w.place_kind(r#""side":"sell","type":"trailing_stop","trail_price":"500""#);
    assert_eq!(w.book.orders[&id].hwm, Some(dec!(60000)));
    w.quote(dec!(62000), dec!(62001));
    assert_eq!(w.trigger(id), Effect::Changed, "the mark moves up");
    assert_eq!(w.book.orders[&id].hwm, Some(dec!(62000)));
    w.quote(dec!(61600), dec!(61601));
    w.trigger(id);
    assert_eq!(w.status(id), OrderStatus::New, "61600 is above 62000 - 500");
    w.quote(dec!(61500), dec!(61501));
    w.trigger(id);
    assert_eq!(w.fills(), vec![(id, dec!(0.01), dec!(61500))]);
}

#[test]
fn ioc_and_fok_cancel_what_cannot_fill_at_once() {
    let mut w = World::quoted(dec!(100000));
    for tif in ["ioc", "fok"] {
        let id = w.place(&format!(
            r#"{{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"59000","time_in_force":"{tif}"}}"#
        ));
        assert_eq!(w.status(id), OrderStatus::Canceled, "{tif}");
    }
    let id = w.place(
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"60001","time_in_force":"fok"}"#,
    );
    assert_eq!(w.status(id), OrderStatus::Filled);
}

#[test]
fn day_orders_expire_at_the_next_utc_midnight_only() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place(
        r#"{"symbol":"BTCUSDT","qty":"0.01","side":"buy","type":"limit","limit_price":"59000","time_in_force":"day"}"#,
    );
    let expires = w.book.orders[&id].expires_at.unwrap();
    assert_eq!(expires, crate::order::day_expiry(w.now()));
    assert_eq!(w.expire(id), Effect::Unchanged, "not yet");
    w.now_ms = expires.timestamp_millis() - 1;
    assert_eq!(w.expire(id), Effect::Unchanged, "1 ms early");
    w.now_ms += 1;
    assert_eq!(w.expire(id), Effect::Changed);
    assert_eq!(w.status(id), OrderStatus::Expired);
    assert_eq!(
        w.book.buying_power(None, &w.params),
        dec!(100000),
        "nothing held"
    );
}

#[test]
fn bracket_legs_wait_for_the_entry_then_cancel_each_other() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place(&order(
        r#""side":"buy","type":"limit","limit_price":"59000","order_class":"bracket""#,
        r#","take_profit":{"limit_price":"62000"},"stop_loss":{"stop_price":"58000","limit_price":"57900"}"#,
    ));
    let (tp, sl) = w.legs(id);
    assert_eq!(w.status(id), OrderStatus::New);
    assert_eq!(w.status(tp), OrderStatus::Held);
    assert_eq!(w.status(sl), OrderStatus::Held);
    assert_eq!(w.trigger(tp), Effect::Unchanged, "held legs do not trigger");
    let with_legs = w.book.with_legs(id).unwrap();
    assert_eq!(with_legs.legs.len(), 2, "{with_legs:?}");
    assert_eq!(with_legs.order_class, crate::order::OrderClass::Bracket);

    // The entry fills at 59000; both legs go live for 0.01.
    w.quote(dec!(58990), dec!(59000));
    w.trigger(id);
    assert_eq!(w.status(id), OrderStatus::Filled);
    assert_eq!(w.status(tp), OrderStatus::New);
    assert_eq!(w.status(sl), OrderStatus::New);
    // Both legs sell the same 0.01: held once.
    assert_eq!(w.book.qty_available("BTCUSDT", None), dec!(0));

    // Take-profit fills → stop-loss canceled, once.
    w.quote(dec!(62100), dec!(62101));
    assert_eq!(w.trigger(tp), Effect::Changed);
    assert_eq!(w.status(tp), OrderStatus::Filled);
    assert_eq!(w.status(sl), OrderStatus::Canceled);
    assert_eq!(w.trigger(sl), Effect::Unchanged);
    assert_eq!(w.fills().len(), 2);
    assert_eq!(w.book.position_qty("BTCUSDT"), dec!(0));
}

#[test]
fn bracket_stop_loss_fills_and_cancels_the_take_profit() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place(&order(
        r#""side":"buy","type":"market","order_class":"bracket""#,
        r#","take_profit":{"limit_price":"62000"},"stop_loss":{"trail_percent":"1"}"#,
    ));
    let (tp, sl) = w.legs(id);
    assert_eq!(w.status(id), OrderStatus::Filled);
    assert_eq!(w.book.orders[&sl].order_type, OrderType::TrailingStop);
    assert_eq!(w.book.orders[&sl].hwm, Some(dec!(60000)));
    w.quote(dec!(59400), dec!(59401)); // 1 % below 60000
    w.trigger(sl);
    assert_eq!(w.status(sl), OrderStatus::Filled);
    assert_eq!(w.status(tp), OrderStatus::Canceled);
}

/// Found by the chaos suite: a market bracket applied after the price fell below its
/// stop-loss (the command waited out an outage in the queue). The stop-loss goes live first
/// and fills at once, canceling the take-profit, which was still held: the take-profit must
/// stay canceled, not go live after it (it did, and later filled too: two exits of one entry).
#[test]
fn a_stop_loss_that_fills_as_it_goes_live_leaves_the_take_profit_canceled() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place(&order(
        r#""side":"buy","type":"market","order_class":"bracket""#,
        r#","take_profit":{"limit_price":"62000"},"stop_loss":{"stop_price":"60500","limit_price":"59000"}"#,
    ));
    let (tp, sl) = w.legs(id);
    assert_eq!(w.status(id), OrderStatus::Filled);
    assert_eq!(
        w.status(sl),
        OrderStatus::Filled,
        "the stop was crossed: it fills at once"
    );
    assert_eq!(
        w.status(tp),
        OrderStatus::Canceled,
        "and cancels its partner for good"
    );
    assert!(w.book.orders[&tp].canceled_at.is_some());
    // Later prices through the take-profit fill nothing more.
    w.quote(dec!(62100), dec!(62101));
    assert_eq!(w.trigger(tp), Effect::Unchanged);
    assert_eq!(w.fills().len(), 2, "the entry and one exit");
    assert_eq!(w.book.position_qty("BTCUSDT"), dec!(0));
}

#[test]
fn oco_halves_are_live_together_and_one_fill_cancels_the_other() {
    let mut w = World::holding();
    let id = w.place(&order(
        r#""side":"sell","type":"limit","order_class":"oco""#,
        r#","take_profit":{"limit_price":"65000"},"stop_loss":{"stop_price":"55000"}"#,
    ));
    let sl = w.leg(id, crate::order::LegRole::StopLoss);
    assert_eq!(w.status(id), OrderStatus::New);
    assert_eq!(w.status(sl), OrderStatus::New);
    w.quote(dec!(54000), dec!(54001));
    w.trigger(sl);
    assert_eq!(w.status(sl), OrderStatus::Filled);
    assert_eq!(w.status(id), OrderStatus::Canceled);
    assert_eq!(w.trigger(id), Effect::Unchanged);
    assert_eq!(w.fills(), vec![(sl, dec!(0.01), dec!(54000))]);
}

#[test]
fn oto_leg_goes_live_after_the_parent_and_a_canceled_parent_cancels_it() {
    let mut w = World::quoted(dec!(100000));
    let id = w.place(&order(
        r#""side":"buy","type":"limit","limit_price":"59000","order_class":"oto""#,
        r#","stop_loss":{"stop_price":"58000"}"#,
    ));
    let sl = w.leg(id, crate::order::LegRole::StopLoss);
    assert_eq!(w.status(sl), OrderStatus::Held);
    assert_eq!(w.cancel(id), Effect::Changed);
    assert_eq!(w.status(id), OrderStatus::Canceled);
    assert_eq!(w.status(sl), OrderStatus::Canceled);
    assert_eq!(w.cancel(id), Effect::Unchanged);
}

#[test]
fn a_replace_loses_to_an_earlier_fill_and_wins_over_a_resting_order() {
    let mut w = World::quoted(dec!(100000));
    let old = w.place_kind(r#""side":"buy","type":"limit","limit_price":"59000""#);
    let mut new = w.new_order(&order(
        r#""side":"buy","type":"limit","limit_price":"59500""#,
        "",
    ));
    new.replaces = Some(old);
    let id = w.run(|b, m| b.place(&new, m));
    let params = w.params.clone();
    let book = &mut w.book;
    assert_eq!(book.orders[&old].status, OrderStatus::Replaced);
    assert_eq!(book.orders[&old].replaced_by, Some(id));
    assert_eq!(book.orders[&id].replaces, Some(old));
    assert_eq!(book.orders[&id].status, OrderStatus::New);
    // Only the replacement is held for.
    assert_eq!(
        book.buying_power(None, &params),
        dec!(100000) - dec!(595.595)
    );
    // Replacing the replaced order again: rejected, nothing else changes.
    let mut again = new.clone();
    again.id = Uuid::new_v4();
    again.client_order_id = "again".into();
    let id2 = w.run(|b, m| b.place(&again, m));
    let book = &w.book;
    assert_eq!(book.orders[&id2].status, OrderStatus::Rejected);
    assert!(w.reject_reason(id2).contains("order_not_open"));
    assert_eq!(book.orders[&id].status, OrderStatus::New);
}

#[test]
fn resting_orders_must_be_covered() {
    let mut w = World::quoted(dec!(1000));
    let id = w.place_kind(r#""side":"buy","type":"stop","stop_price":"99999""#);
    assert_eq!(
        w.status(id),
        OrderStatus::Rejected,
        "0.01 × 99999 plus the fee > 1000"
    );
    let id = w.place_kind(r#""side":"sell","type":"limit","limit_price":"70000""#);
    assert_eq!(w.status(id), OrderStatus::Rejected, "nothing to sell");
    assert!(w.reject_reason(id).contains("insufficient_qty"));
}

fn position(qty: Decimal, avg: Decimal) -> Position {
    Position {
        qty,
        avg_entry_price: avg,
        realized_pnl: Decimal::ZERO,
    }
}

#[test]
fn a_fill_and_a_replace_or_cancel_race_one_wins_nothing_doubles() {
    // The fill first: the replacement is rejected and the cancel changes nothing.
    let mut w = World::quoted(dec!(100000));
    let id = w.place_kind(r#""side":"buy","type":"limit","limit_price":"59000""#);
    w.quote(dec!(58900), dec!(58950));
    assert_eq!(w.trigger(id), Effect::Changed);
    let mut replacement = w.new_order(&order(
        r#""side":"buy","type":"limit","limit_price":"59500""#,
        "",
    ));
    replacement.replaces = Some(id);
    let new = w.run(|b, m| b.place(&replacement, m));
    assert_eq!(w.status(new), OrderStatus::Rejected);
    assert_eq!(w.cancel(id), Effect::Unchanged);
    assert_eq!(w.status(id), OrderStatus::Filled);
    assert_eq!(w.fills().len(), 1);

    // The cancel first: a trigger that arrives after it fills nothing.
    let id = w.place_kind(r#""side":"buy","type":"limit","limit_price":"58000""#);
    assert_eq!(w.cancel(id), Effect::Changed);
    w.quote(dec!(57000), dec!(57001));
    assert_eq!(w.trigger(id), Effect::Unchanged);
    assert_eq!(w.status(id), OrderStatus::Canceled);
    assert_eq!(w.fills().len(), 1);
}
