//! The auditor can fail: fed a ledger with one doubled fill and one lost order, it reports
//! both, naming the account, the order and the rule; fed the same ledger without them, it
//! reports nothing. (Pure: the rows are built here as `Snapshot::load` returns them.)

use chaos::audit::{audit, PriceRules};
use chaos::record::{Accepted, Published, Record};
use chaos::snapshot::{AccountRow, FillRow, OrderRow, PositionRow, Snapshot};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

const RULES: PriceRules = PriceRules {
    max_price_age_ms: 5_000,
    slack_ms: 1_000,
};

fn order(account: Uuid, coid: &str, side: &str, qty: Decimal) -> OrderRow {
    OrderRow {
        id: Uuid::new_v4(),
        account_id: account,
        client_order_id: coid.into(),
        symbol: "BTCUSDT".into(),
        side: side.into(),
        order_type: "market".into(),
        order_class: "simple".into(),
        qty: Some(qty),
        filled_qty: qty,
        status: "filled".into(),
        parent_id: None,
    }
}

fn fill(o: &OrderRow, price: Decimal, at_ms: i64) -> FillRow {
    let qty = o.qty.unwrap_or_default();
    FillRow {
        id: Uuid::new_v4(),
        account_id: o.account_id,
        order_id: o.id,
        symbol: o.symbol.clone(),
        side: o.side.clone(),
        qty,
        price,
        fee: (qty * price / dec!(1000)).round_dp(8),
        at_ms,
    }
}

/// A consistent ledger: buy 0.1 BTC at the ask 60000.5, sell 0.04 at the bid 61000, with
/// the record of a driver that had both accepted and scripted both quotes.
fn consistent() -> (Snapshot, Record, Uuid) {
    let account = Uuid::new_v4();
    let t0 = 1_800_000_000_000;
    let buy = order(account, "c1-buy", "buy", dec!(0.1));
    let sell = order(account, "c1-sell", "sell", dec!(0.04));
    let f1 = fill(&buy, dec!(60000.5), t0 + 100);
    let f2 = fill(&sell, dec!(61000), t0 + 2_100);
    let cash = dec!(100000) - f1.qty * f1.price - f1.fee + f2.qty * f2.price - f2.fee;
    let realized = -f1.fee + (f2.price - f1.price) * f2.qty - f2.fee;
    let snapshot = Snapshot {
        accounts: vec![AccountRow {
            id: account,
            initial_cash: dec!(100000),
            cash,
            realized_pnl: realized,
            fees_paid: f1.fee + f2.fee,
        }],
        orders: vec![buy, sell],
        positions: vec![PositionRow {
            account_id: account,
            symbol: "BTCUSDT".into(),
            qty: dec!(0.06),
            avg_entry_price: dec!(60000.5),
            realized_pnl: realized,
        }],
        fills: vec![f1, f2],
        dead_letters: Vec::new(),
        applied_commands: 2,
    };
    let record = Record::default();
    for coid in ["c1-buy", "c1-sell"] {
        record.accept(Accepted {
            account_id: account,
            client_order_id: coid.into(),
            via: "market",
            at_ms: t0,
        });
    }
    record.publish(
        "BTCUSDT",
        Published {
            at_ms: t0,
            bid: dec!(60000),
            ask: dec!(60000.5),
        },
    );
    record.publish(
        "BTCUSDT",
        Published {
            at_ms: t0 + 2_000,
            bid: dec!(61000),
            ask: dec!(61000.5),
        },
    );
    (snapshot, record, account)
}

#[test]
fn a_consistent_ledger_passes() {
    let (snapshot, record, _) = consistent();
    let a = audit(&snapshot, &record, RULES);
    assert!(a.violations.is_empty(), "{:#?}", a.violations);
    assert_eq!((a.accepted_found, a.lost, a.doubled), (2, 0, 0));
}

#[test]
fn a_doubled_fill_and_a_lost_order_are_both_reported() {
    let (mut snapshot, record, account) = consistent();
    // The buy's fill booked twice (a redelivery applied again, say)...
    let mut again = snapshot.fills[0].clone();
    again.id = Uuid::new_v4();
    snapshot.fills.insert(1, again);
    let buy = snapshot.orders[0].id;
    // ...and an order the API accepted that the ledger never got.
    record.accept(Accepted {
        account_id: account,
        client_order_id: "c1-lost".into(),
        via: "limit",
        at_ms: 1_800_000_000_500,
    });

    let a = audit(&snapshot, &record, RULES);
    assert_eq!((a.lost, a.doubled), (1, 1), "{:#?}", a.violations);
    let rule = |name: &str| {
        a.violations
            .iter()
            .filter(|v| v.rule == name)
            .collect::<Vec<_>>()
    };
    let lost = rule("accepted_order_missing");
    assert_eq!(lost.len(), 1, "{:#?}", a.violations);
    assert_eq!(lost[0].account_id, Some(account));
    assert_eq!(lost[0].order.as_deref(), Some("c1-lost"));
    let doubled = rule("fill_doubled");
    assert_eq!(doubled.len(), 1, "{:#?}", a.violations);
    assert_eq!(doubled[0].account_id, Some(account));
    assert!(doubled[0]
        .order
        .as_deref()
        .is_some_and(|o| o.contains(&buy.to_string())));
    // The books no longer add up either: the extra fill moved the recomputed cash.
    assert_eq!(rule("cash_mismatch").len(), 1, "{:#?}", a.violations);
    // Each violation prints the account, the order and the rule.
    let line = lost[0].to_string();
    assert!(
        line.contains("accepted_order_missing")
            && line.contains("c1-lost")
            && line.contains(&account.to_string()),
        "{line}"
    );
}

#[test]
fn a_fill_at_a_price_never_published_or_stale_is_reported() {
    let (mut snapshot, record, _) = consistent();
    snapshot.fills[1].price = dec!(61000.01);
    let a = audit(&snapshot, &record, RULES);
    assert!(
        a.violations.iter().any(|v| v.rule == "fill_price_not_live"),
        "{:#?}",
        a.violations
    );

    let (mut snapshot, record, _) = consistent();
    // The buy filled at the first quote's ask long after the second replaced it.
    snapshot.fills[0].at_ms += 60_000;
    let a = audit(&snapshot, &record, RULES);
    assert!(
        a.violations.iter().any(|v| v.rule == "fill_price_not_live"),
        "{:#?}",
        a.violations
    );
}

#[test]
fn both_exits_of_an_oco_pair_filled_is_reported() {
    let (mut snapshot, record, account) = consistent();
    let mut parent = order(account, "c1-oco", "sell", dec!(0.01));
    parent.order_class = "oco".into();
    parent.order_type = "limit".into();
    let mut leg = order(account, "c1-oco-leg", "sell", dec!(0.01));
    leg.parent_id = Some(parent.id);
    leg.order_type = "stop".into();
    snapshot
        .fills
        .push(fill(&parent, dec!(61000), 1_800_000_002_200));
    snapshot
        .fills
        .push(fill(&leg, dec!(61000), 1_800_000_002_300));
    snapshot.orders.extend([parent, leg]);
    let a = audit(&snapshot, &record, RULES);
    assert!(
        a.violations.iter().any(|v| v.rule == "both_exits_filled"),
        "{:#?}",
        a.violations
    );
}
